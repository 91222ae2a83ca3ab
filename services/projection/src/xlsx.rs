//! A [`Table`] as an Excel workbook (`.xlsx`, rust_xlsxwriter), laid out as the printed form:
//! the title, the reporting unit (agency and filters), the period and the unit of the figures
//! above the table; the column headings in the form's Vietnamese wording under their group
//! headings, then the columns' numbers `(1)`, `(2)`…; a row number (STT) on tables of groups.
//! Counts are numbers, rates are numbers with a percentage format (blank when the denominator
//! is 0), and the total row of a table that has one holds `SUM` formulas over the rows above,
//! with the totals stored as their cached values (a reader that does not calculate sees them).
//! The header is frozen. No I/O: the bytes are built in memory.

use chrono::{DateTime, Days, NaiveDate, Utc};
use rust_xlsxwriter::utility::cell_range;
use rust_xlsxwriter::{Format, FormatAlign, FormatBorder, Formula, Workbook, XlsxError};
use stats::{Query, SliceFilter};

use crate::forms::{self, Cell, Form, TOTAL_KEY, Table, TotalRow};
use crate::scope::Source;

/// What the title block says besides the table's title.
#[derive(Debug, Clone)]
pub struct Heading {
    pub query: Query,
    pub as_recorded_at: Option<DateTime<Utc>>,
    /// The date of the agency structure the figures are counted in (`structure_at`).
    pub structure_at: Option<NaiveDate>,
}

impl Heading {
    pub fn new(query: &Query, source: Source, structure_at: Option<NaiveDate>) -> Heading {
        Heading {
            query: query.clone(),
            as_recorded_at: match source {
                Source::Live => None,
                Source::AsRecordedAt(at) => Some(at),
            },
            structure_at,
        }
    }
}

/// The percentage format of rates (built-in number format 10).
pub const PERCENT_FORMAT: &str = "0.00%";
/// The format of counts: thousands grouped by the reader's locale.
pub const COUNT_FORMAT: &str = "#,##0";
/// The format of points and means: two decimals.
pub const DECIMAL_FORMAT: &str = "0.00";

/// The sheet's name: the form's slug, or `chi-so` for the indicator table.
pub fn sheet_name(table: &Table) -> &'static str {
    table.form.map_or("chi-so", Form::slug)
}

fn vn_date(d: NaiveDate) -> String {
    d.format("%d/%m/%Y").to_string()
}

/// "Đơn vị báo cáo: …": the agency, or every agency, then the other filters.
pub fn reporting_unit(filter: &SliceFilter) -> String {
    let mut text = format!(
        "Đơn vị báo cáo: {}",
        filter
            .agency
            .as_ref()
            .map_or("tất cả cơ quan, đơn vị".to_owned(), |a| a
                .as_str()
                .to_owned())
    );
    let mut more = Vec::new();
    if let Some(l) = filter.level {
        more.push(format!("cấp {}", l.as_str()));
    }
    if let Some(s) = &filter.sector {
        more.push(format!("lĩnh vực {}", s.as_str()));
    }
    if let Some(p) = &filter.procedure {
        more.push(format!("thủ tục {}", p.as_str()));
    }
    if let Some(c) = filter.channel {
        more.push(format!("hình thức nộp {}", c.as_str()));
    }
    if let Some(a) = filter.applicant_type {
        more.push(format!("đối tượng {}", a.as_str()));
    }
    if !more.is_empty() {
        text.push_str(&format!(" ({})", more.join("; ")));
    }
    text
}

/// "Kỳ báo cáo: từ ngày … đến ngày …" (the last day included), and the instant the figures
/// are as recorded at.
pub fn period(heading: &Heading) -> String {
    let last = heading
        .query
        .to
        .checked_sub_days(Days::new(1))
        .unwrap_or(heading.query.to);
    let mut text = format!(
        "Kỳ báo cáo: từ ngày {} đến ngày {}",
        vn_date(heading.query.from),
        vn_date(last)
    );
    if let Some(at) = heading.as_recorded_at {
        text.push_str(&format!(
            " — số liệu như đã ghi nhận lúc {}",
            at.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    if let Some(d) = heading.structure_at {
        text.push_str(&format!(" — theo cơ cấu tổ chức ngày {}", vn_date(d)));
    }
    text
}

/// The workbook's bytes.
pub fn to_xlsx(table: &Table, heading: &Heading) -> Result<Vec<u8>, XlsxError> {
    let mut workbook = Workbook::new();
    let sheet = workbook.add_worksheet();
    sheet.set_name(sheet_name(table))?;

    let title = Format::new().set_bold().set_font_size(13);
    let plain = Format::new();
    let unit = Format::new().set_italic().set_align(FormatAlign::Right);
    let head = Format::new()
        .set_bold()
        .set_text_wrap()
        .set_align(FormatAlign::Center)
        .set_align(FormatAlign::VerticalCenter)
        .set_border(FormatBorder::Thin);
    let number = Format::new()
        .set_italic()
        .set_align(FormatAlign::Center)
        .set_border(FormatBorder::Thin);
    let text = Format::new().set_border(FormatBorder::Thin);
    let count = Format::new()
        .set_num_format(COUNT_FORMAT)
        .set_border(FormatBorder::Thin);
    let rate = Format::new()
        .set_num_format(PERCENT_FORMAT)
        .set_border(FormatBorder::Thin);
    let decimal = Format::new()
        .set_num_format(DECIMAL_FORMAT)
        .set_border(FormatBorder::Thin);
    let bold = |f: &Format| f.clone().set_bold();

    // STT (row number) on tables of groups; then the table's own columns.
    let stt = u16::from(table.total_row != TotalRow::None);
    let width = stt + u16::try_from(table.columns.len()).unwrap_or(u16::MAX);
    let last_col = width - 1;
    let col = |i: usize| stt + i as u16;

    let mut row: u32 = 0;
    for (line, format) in [
        (table.title.to_owned(), &title),
        (reporting_unit(&heading.query.filter), &plain),
        (period(heading), &plain),
    ] {
        merged(sheet, row, 0, row, last_col, &line, format)?;
        row += 1;
    }
    merged(sheet, row, 0, row, last_col, table.unit, &unit)?;
    row += 2;

    // Headings: group headings over their columns, the other headings over both lines.
    let grouped = !table.column_groups.is_empty();
    let label_row = if grouped { row + 1 } else { row };
    if stt == 1 {
        merged(sheet, row, 0, label_row, 0, "STT", &head)?;
    }
    for g in &table.column_groups {
        merged(sheet, row, col(g.first), row, col(g.last), g.label, &head)?;
    }
    for (i, c) in table.columns.iter().enumerate() {
        let in_group = table
            .column_groups
            .iter()
            .any(|g| (g.first..=g.last).contains(&i));
        let top = if in_group { label_row } else { row };
        merged(sheet, top, col(i), label_row, col(i), &c.label, &head)?;
    }
    row = label_row + 1;
    for c in 0..width {
        sheet.write_string_with_format(row, c, format!("({})", c + 1), &number)?;
    }
    row += 1;
    let first_data = row;
    sheet.set_freeze_panes(first_data, stt + table.key_columns as u16)?;

    for (r, cells) in table.rows.iter().enumerate() {
        let total = table.is_total(r);
        let sums = total && table.total_row == TotalRow::Sum;
        let (text, count, rate, decimal) = if total {
            (bold(&text), bold(&count), bold(&rate), bold(&decimal))
        } else {
            (text.clone(), count.clone(), rate.clone(), decimal.clone())
        };
        if stt == 1 {
            if total {
                sheet.write_blank(row, 0, &text)?;
            } else {
                sheet.write_number_with_format(row, 0, (r + 1) as f64, &count)?;
            }
        }
        for (i, cell) in cells.iter().enumerate() {
            let c = col(i);
            match cell {
                Cell::Text(t) if total && t == TOTAL_KEY => {
                    sheet.write_string_with_format(row, c, "Tổng cộng", &text)?
                }
                Cell::Text(t) => sheet.write_string_with_format(row, c, t, &text)?,
                // The total row sums the rows above, the total as the formula's cached value.
                Cell::Count(n) if sums && row > first_data => {
                    let range = cell_range(first_data, c, row - 1, c);
                    let sum = Formula::new(format!("=SUM({range})")).set_result(n.to_string());
                    sheet.write_formula_with_format(row, c, sum, &count)?
                }
                Cell::Count(n) => sheet.write_number_with_format(row, c, *n as f64, &count)?,
                Cell::Rate(r) => match r.percent() {
                    Some(p) => sheet.write_number_with_format(row, c, p / 100.0, &rate)?,
                    None => sheet.write_blank(row, c, &rate)?,
                },
                // Points out of the column's maximum (in its heading).
                Cell::Points { hundredths, .. } => {
                    sheet.write_number_with_format(row, c, *hundredths as f64 / 100.0, &decimal)?
                }
                // The mean, in the unit its heading names; blank when nothing was averaged.
                Cell::Mean { mean, .. } => match mean {
                    Some(m) => sheet.write_number_with_format(row, c, *m, &decimal)?,
                    None => sheet.write_blank(row, c, &decimal)?,
                },
                Cell::NotComputed(_) => {
                    sheet.write_string_with_format(row, c, forms::text_of(cell), &text)?
                }
            };
        }
        row += 1;
    }

    if stt == 1 {
        sheet.set_column_width(0, 6)?;
    }
    for (i, _) in table.columns.iter().enumerate() {
        let w = if i < table.key_columns { 22 } else { 13 };
        sheet.set_column_width(col(i), w)?;
    }
    workbook.save_to_buffer()
}

/// Writes `text` over the range (a single cell when it is one).
fn merged(
    sheet: &mut rust_xlsxwriter::Worksheet,
    first_row: u32,
    first_col: u16,
    last_row: u32,
    last_col: u16,
    text: &str,
    format: &Format,
) -> Result<(), XlsxError> {
    if first_row == last_row && first_col == last_col {
        sheet.write_string_with_format(first_row, first_col, text, format)?;
    } else {
        sheet.merge_range(first_row, first_col, last_row, last_col, text, format)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use stats::{Dimension, Metric, Totals};
    use testkit::xlsx::read;

    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 4, d).unwrap()
    }

    fn query(group_by: Vec<Dimension>) -> Query {
        Query {
            from: day(1),
            to: NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
            filter: SliceFilter {
                agency: Some(domain::AgencyCode::parse("000.00.12.H40").unwrap()),
                ..SliceFilter::default()
            },
            group_by,
        }
    }

    fn totals(received: i128, early: i128, late: i128, pending: i128) -> Totals {
        let mut t = Totals::empty(day(1), day(30));
        t.flows.insert(Metric::Received, received);
        t.flows.insert(Metric::ReceivedOnline, received - 1);
        t.flows.insert(Metric::Resolved, early + late);
        t.flows.insert(Metric::ResolvedEarly, early);
        t.flows.insert(Metric::ResolvedLate, late);
        t.at_end.insert(Metric::Pending, pending);
        t.at_end.insert(Metric::PendingWithinTime, pending);
        t
    }

    #[test]
    fn ii06a_reads_back_with_its_13_numbered_columns_numbers_and_a_sum_total() {
        let groups = BTreeMap::from([
            (vec!["land".to_owned()], totals(5, 2, 1, 2)),
            (vec!["tax".to_owned()], totals(3, 1, 1, 1)),
        ]);
        let q = query(vec![Dimension::Sector]);
        let table = forms::fill(Form::Ii06a, &q, &groups);
        let bytes = to_xlsx(
            &table,
            &Heading {
                query: q.clone(),
                as_recorded_at: None,
                structure_at: None,
            },
        )
        .unwrap();
        let r = read(&bytes, "ii06a");
        // The title block: title, agency, period (the last day included), unit.
        assert_eq!(r.text(0, 0), Form::Ii06a.title());
        assert_eq!(r.text(1, 0), "Đơn vị báo cáo: 000.00.12.H40");
        assert_eq!(
            r.text(2, 0),
            "Kỳ báo cáo: từ ngày 01/04/2024 đến ngày 30/04/2024"
        );
        assert_eq!(r.text(3, 0), "Đơn vị tính: hồ sơ");
        // Group headings (row 5), headings (row 6), the numbers (1)…(13) (row 7).
        assert_eq!(r.text(5, 0), "STT");
        assert_eq!(r.text(5, 1), "Lĩnh vực");
        assert_eq!(r.text(5, 2), "Số hồ sơ nhận giải quyết");
        assert_eq!(r.text(6, 2), "Tổng số hồ sơ tiếp nhận");
        assert_eq!(r.text(5, 10), "Số hồ sơ đang giải quyết");
        for c in 0..13 {
            assert_eq!(r.text(7, c), format!("({})", c + 1));
        }
        assert_eq!(r.text(6, 12), "Quá hạn");
        // Rows: numbered, counts as numbers.
        assert_eq!(r.number(8, 0), 1.0);
        assert_eq!(r.text(8, 1), "land");
        assert_eq!(r.number(8, 2), 5.0);
        assert_eq!(r.text(9, 1), "tax");
        // The total row: SUM formulas whose cached values are the table's totals.
        assert_eq!(r.text(10, 1), "Tổng cộng");
        assert_eq!(r.formula(10, 2), "SUM(C9:C10)");
        assert_eq!(r.number(10, 2), 8.0);
        assert_eq!(r.formula(10, 9), "SUM(J9:J10)");
        assert_eq!(r.number(10, 9), 2.0);
        for c in 2..14 {
            let sum: f64 = (8..10).map(|row| r.number(row, c)).sum();
            assert_eq!(r.number(10, c), sum, "column {c}");
        }
        // Counts carry the count format; the header is frozen below row 8, after the key.
        assert_eq!(r.num_format("C9"), COUNT_FORMAT);
        assert_eq!(r.num_format("C11"), COUNT_FORMAT);
        assert!(
            r.sheet_xml.contains(
                r#"xSplit="2" ySplit="8" topLeftCell="C9" activePane="bottomRight" state="frozen""#
            ),
            "{}",
            r.sheet_xml
        );
    }

    #[test]
    fn rates_are_percentages_and_an_absent_rate_is_blank() {
        let groups = BTreeMap::from([(vec!["district".to_owned()], totals(4, 3, 1, 0))]);
        let q = query(vec![Dimension::Level]);
        let table = forms::fill(Form::BieuMau3Section3, &q, &groups);
        let at = DateTime::parse_from_rfc3339("2024-05-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let bytes = to_xlsx(
            &table,
            &Heading {
                query: q.clone(),
                as_recorded_at: Some(at),
                structure_at: None,
            },
        )
        .unwrap();
        let r = read(&bytes, "bieu-mau-3-section-3");
        assert!(r.text(2, 0).ends_with("lúc 2024-05-02T03:04:05Z"));
        // No STT, no groups: headings on row 5, numbers on row 6, rows from 7.
        assert_eq!(r.text(5, 6), "Tỷ lệ đúng hạn");
        assert_eq!(r.text(7, 0), "3.1");
        // 3.2 districts: 3 on time or early of 4 → 75%, a number shown as a percentage.
        assert_eq!(r.number(8, 2), 4.0);
        assert_eq!(r.number(8, 6), 0.75);
        assert_eq!(r.num_format("G9"), PERCENT_FORMAT);
        // 3.1 provinces: nothing resolved, no rate, a blank percentage cell.
        assert!(r.is_empty(7, 6));
        assert_eq!(r.num_format("G8"), PERCENT_FORMAT);
        assert!(r.formula(9, 2).is_empty(), "no total row");
    }

    /// The largest indicator table the default limits allow (`max_groups` rows of three
    /// grouping dimensions, every figure large) makes a workbook of bounded size (README,
    /// "Limits").
    #[test]
    fn the_largest_workbook_the_default_limits_allow_stays_small() {
        let limits = crate::QueryLimits::default();
        let group_by = vec![Dimension::Agency, Dimension::Procedure, Dimension::Sector];
        let mut t = Totals::empty(day(1), day(30));
        for metric in Metric::ALL {
            t.add_delta(day(1), *metric, 1_000_000_000);
        }
        let groups: BTreeMap<_, _> = (0..limits.max_groups)
            .map(|i| {
                let key = vec![
                    format!("{i:0>40}"),
                    format!("{i:0>64}"),
                    format!("{i:0>40}"),
                ];
                (key, t.clone())
            })
            .collect();
        let q = query(group_by.clone());
        let answer = crate::answers::indicators_of(&q, &groups, &stats::Targets::default());
        let table = crate::answers::indicators_table(&answer, &group_by);
        assert_eq!(table.rows.len(), limits.max_groups as usize + 1);
        let bytes = to_xlsx(
            &table,
            &Heading {
                query: q.clone(),
                as_recorded_at: None,
                structure_at: None,
            },
        )
        .unwrap();
        eprintln!("{} rows: {} bytes", table.rows.len(), bytes.len());
        assert!(bytes.len() < 1024 * 1024, "{} bytes", bytes.len());
        let r = read(&bytes, "chi-so");
        let total_row = 8 + limits.max_groups;
        assert_eq!(r.text(total_row, 1), "Tổng cộng");
        assert_eq!(r.formula(total_row, 4), format!("SUM(E9:E{})", total_row));
        assert_eq!(r.number(total_row, 4), 1e9 * f64::from(limits.max_groups));
    }
}
