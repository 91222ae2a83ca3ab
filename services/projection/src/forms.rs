//! The report forms as tables: one shape ([`Table`]) that gRPC (`StatsService.GetReport`, whose
//! proto3 JSON mapping is the HTTP JSON answer) and the CSV export render, so they can never
//! disagree. The rows
//! themselves come from `stats::reports`; this module only lays them out. No I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use stats::reports;
use stats::scorecard::{self, ScoringConfig, SubScore};
use stats::{Dimension, GroupKey, Query, Rate, Totals};

/// The forms of `shared/DOMAIN.md`, "Report forms"; named in URLs by its [`Form::slug`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// II.06a (Circular 01/2020/TT-VPCP): one row per group.
    Ii06a,
    /// Biểu mẫu 3, section 3: on-time rate per level.
    BieuMau3Section3,
    /// Biểu mẫu 7, section 6: online share of full-online and partial-online procedures.
    BieuMau7Section6,
    /// The Decision 766/QĐ-TTg scorecard.
    Scorecard766,
}

impl Form {
    pub const ALL: [Form; 4] = [
        Form::Ii06a,
        Form::BieuMau3Section3,
        Form::BieuMau7Section6,
        Form::Scorecard766,
    ];

    /// The name used in URLs and file names (`ii06a`, `bieu-mau-3-section-3`, …).
    pub fn slug(self) -> &'static str {
        match self {
            Form::Ii06a => "ii06a",
            Form::BieuMau3Section3 => "bieu-mau-3-section-3",
            Form::BieuMau7Section6 => "bieu-mau-7-section-6",
            Form::Scorecard766 => "scorecard-766",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Form> {
        Form::ALL.into_iter().find(|f| f.slug() == slug)
    }

    pub fn title(self) -> &'static str {
        match self {
            Form::Ii06a => "II.06a — Tình hình, kết quả giải quyết TTHC (Thông tư 01/2020/TT-VPCP)",
            Form::BieuMau3Section3 => "Biểu mẫu 3, mục 3 — Tỷ lệ hồ sơ giải quyết đúng hạn",
            Form::BieuMau7Section6 => "Biểu mẫu 7, mục 6 — Dịch vụ công trực tuyến",
            Form::Scorecard766 => {
                "Bộ chỉ số phục vụ người dân, doanh nghiệp (Quyết định 766/QĐ-TTg)"
            }
        }
    }

    /// The dimensions of the rows when the request names none: II.06a by sector (its usual
    /// print); the other forms do not group.
    pub fn default_group_by(self) -> Vec<Dimension> {
        match self {
            Form::Ii06a => vec![Dimension::Sector],
            _ => Vec::new(),
        }
    }

    /// Whether the form's rows can be grouped by the request's dimensions (II.06a; the 766
    /// scorecard: one row per agency, level, procedure…, and the total).
    pub fn groups(self) -> bool {
        matches!(self, Form::Ii06a | Form::Scorecard766)
    }

    /// The dimensions the figures must be grouped by to fill the form (the requested ones for
    /// II.06a, the level for Biểu mẫu 3, none for the others).
    pub fn query_group_by(self, requested: &[Dimension]) -> Vec<Dimension> {
        match self {
            Form::Ii06a if requested.is_empty() => self.default_group_by(),
            Form::Ii06a | Form::Scorecard766 => requested.to_vec(),
            Form::BieuMau3Section3 => vec![Dimension::Level],
            Form::BieuMau7Section6 => Vec::new(),
        }
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Count(i64),
    Rate(Rate),
    Text(String),
    /// Points in hundredths, out of the maximum of what was computed.
    Points {
        hundredths: i64,
        max_hundredths: i64,
    },
    /// Not computed (never 0): needs data outside the events, or nothing to judge; the reason.
    NotComputed(String),
    /// An average: how many were averaged and the mean (absent when none), in `unit`.
    Mean {
        count: i64,
        mean: Option<f64>,
        unit: &'static str,
    },
}

/// A column: a stable id (the CSV header) and the form's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub id: String,
    pub label: String,
}

pub fn column(id: &str, label: &str) -> Column {
    Column {
        id: id.to_owned(),
        label: label.to_owned(),
    }
}

/// A heading over adjacent columns (`first..=last`), as the printed form groups them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnGroup {
    pub first: usize,
    pub last: usize,
    pub label: &'static str,
}

/// A filled form, or the indicator table ([`crate::answers::indicators_table`]): the one
/// shape every rendering (gRPC and its JSON, CSV, XLSX) reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// `None`: the indicator table.
    pub form: Option<Form>,
    pub title: &'static str,
    /// The unit of the figures, as the form states it ("Đơn vị tính: …").
    pub unit: &'static str,
    pub columns: Vec<Column>,
    /// Headings over groups of columns (II.06a: received, resolved, pending).
    pub column_groups: Vec<ColumnGroup>,
    /// The leading columns that name a row (group values, a code and a level…).
    pub key_columns: usize,
    pub rows: Vec<Vec<Cell>>,
    /// What the last row is.
    pub total_row: TotalRow,
}

/// Whether a table of groups ends with the figures of the whole filter (its first key cell
/// [`TOTAL_KEY`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalRow {
    /// Every row is a group, or the table is not one of groups.
    None,
    /// The last row is the total of the others: every count in it is their sum (II.06a, the
    /// grouped indicator table).
    Sum,
    /// The last row is the whole filter's, but not a sum of the rows (the 766 points).
    Whole,
}

impl Table {
    /// Whether row `r` is the total row.
    pub fn is_total(&self, r: usize) -> bool {
        self.total_row != TotalRow::None && r + 1 == self.rows.len()
    }

    /// Each column's heading with its group's (`Đã giải quyết — Quá hạn`): unique within the
    /// form, for a one-line header.
    pub fn full_label(&self, column: usize) -> String {
        let label = &self.columns[column].label;
        match self
            .column_groups
            .iter()
            .find(|g| (g.first..=g.last).contains(&column))
        {
            Some(g) => format!("{} — {label}", g.label),
            None => label.clone(),
        }
    }
}

/// The row key of a total row (`Tổng cộng` in Vietnamese renderings).
pub const TOTAL_KEY: &str = "total";

/// The Vietnamese heading of a grouping dimension's column.
pub fn dimension_label(d: Dimension) -> &'static str {
    match d {
        Dimension::Level => "Cấp",
        Dimension::Agency => "Cơ quan, đơn vị",
        Dimension::Sector => "Lĩnh vực",
        Dimension::Procedure => "Thủ tục hành chính",
        Dimension::Channel => "Hình thức nộp",
        Dimension::ApplicantType => "Đối tượng",
    }
}

/// The index of the column with id `id` (the layouts name columns by id).
fn at(columns: &[Column], id: &str) -> usize {
    columns
        .iter()
        .position(|c| c.id == id)
        .unwrap_or_else(|| panic!("no column {id}"))
}

/// A column group from the column with id `first` to the one with id `last`.
pub fn group(columns: &[Column], first: &str, last: &str, label: &'static str) -> ColumnGroup {
    ColumnGroup {
        first: at(columns, first),
        last: at(columns, last),
        label,
    }
}

/// What filling a form needs besides the figures.
pub struct FormContext<'a> {
    /// The 766 scoring (versions by effective date).
    pub scoring: &'a ScoringConfig,
    /// Whether a level exists in the structure the form is asked in (Biểu mẫu 3 leaves out an
    /// abolished level's empty row).
    pub levels_in_use: &'a dyn Fn(domain::Level) -> bool,
}

impl std::fmt::Debug for FormContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormContext")
            .field("scoring", &self.scoring)
            .finish_non_exhaustive()
    }
}

/// [`fill_with`] the shipped 766 scoring and every level in use.
pub fn fill(form: Form, query: &Query, groups: &BTreeMap<GroupKey, Totals>) -> Table {
    let scoring = crate::scoring::shipped();
    let context = FormContext {
        scoring: &scoring,
        levels_in_use: &|_| true,
    };
    fill_with(form, query, groups, &context)
}

/// Fills `form` from the answer to `query`, whose `group_by` must be
/// `form.query_group_by(…)`.
pub fn fill_with(
    form: Form,
    query: &Query,
    groups: &BTreeMap<GroupKey, Totals>,
    context: &FormContext<'_>,
) -> Table {
    let all = merged(query, groups);
    let (columns, rows) = match form {
        Form::Ii06a => ii06a(&query.group_by, groups, &all),
        Form::BieuMau3Section3 => bieu_mau_3(groups, context.levels_in_use),
        Form::BieuMau7Section6 => bieu_mau_7(&all),
        Form::Scorecard766 => scorecard(context.scoring, query, groups, &all),
    };
    let (column_groups, key_columns, unit) = match form {
        Form::Ii06a => (
            vec![
                group(
                    &columns,
                    "received_total",
                    "carried_over",
                    "Số hồ sơ nhận giải quyết",
                ),
                group(
                    &columns,
                    "resolved_total",
                    "resolved_late",
                    "Số hồ sơ đã giải quyết",
                ),
                group(
                    &columns,
                    "pending_total",
                    "pending_overdue",
                    "Số hồ sơ đang giải quyết",
                ),
            ],
            query.group_by.len(),
            UNIT_DOSSIERS,
        ),
        Form::BieuMau3Section3 | Form::BieuMau7Section6 => (Vec::new(), 2, UNIT_DOSSIERS),
        Form::Scorecard766 => (
            Vec::new(),
            query.group_by.len(),
            "Đơn vị tính: điểm; tỷ lệ: %",
        ),
    };
    let total_row = match form {
        Form::Ii06a => TotalRow::Sum,
        Form::Scorecard766 if !query.group_by.is_empty() => TotalRow::Whole,
        _ => TotalRow::None,
    };
    Table {
        form: Some(form),
        title: form.title(),
        unit,
        columns,
        column_groups,
        key_columns,
        rows,
        total_row,
    }
}

/// The unit of tables of counts.
pub const UNIT_DOSSIERS: &str = "Đơn vị tính: hồ sơ";

/// The sum of every group: the figures of the whole filter. Summing is exact because groups
/// partition the slices.
pub fn merged(query: &Query, groups: &BTreeMap<GroupKey, Totals>) -> Totals {
    let mut all = Totals::empty(query.from, query.to);
    for t in groups.values() {
        all.merge(t);
    }
    all
}

fn ii06a(
    dims: &[Dimension],
    groups: &BTreeMap<GroupKey, Totals>,
    all: &Totals,
) -> (Vec<Column>, Vec<Vec<Cell>>) {
    let mut columns: Vec<Column> = dims
        .iter()
        .map(|d| column(d.as_str(), dimension_label(*d)))
        .collect();
    columns.extend([
        column("received_total", "Tổng số hồ sơ tiếp nhận"),
        column("received_online", "Trực tuyến"),
        column(
            "received_direct_and_postal",
            "Trực tiếp và qua dịch vụ bưu chính",
        ),
        column("carried_over", "Từ kỳ trước chuyển qua"),
        column("resolved_total", "Tổng số hồ sơ đã giải quyết"),
        column("resolved_early", "Trước hạn"),
        column("resolved_on_time", "Đúng hạn"),
        column("resolved_late", "Quá hạn"),
        column("pending_total", "Tổng số hồ sơ đang giải quyết"),
        column("pending_within_time", "Trong hạn"),
        column("pending_overdue", "Quá hạn"),
        column(
            "ended_without_result",
            "Rút hoặc dừng giải quyết (ngoài mẫu, để các cột cộng khớp)",
        ),
    ]);
    let row_cells = |key: Vec<Cell>, r: &reports::Ii06aRow<()>| {
        let mut cells = key;
        cells.extend(
            [
                r.received_total,
                r.received_online,
                r.received_direct_and_postal,
                r.carried_over,
                r.resolved_total,
                r.resolved_early,
                r.resolved_on_time,
                r.resolved_late,
                r.pending_total,
                r.pending_within_time,
                r.pending_overdue,
                r.ended_without_result,
            ]
            .map(Cell::Count),
        );
        cells
    };
    let mut rows: Vec<Vec<Cell>> = groups
        .iter()
        .map(|(key, t)| {
            let key = key.iter().map(|v| Cell::Text(v.clone())).collect();
            row_cells(key, &reports::Ii06aRow::new((), t))
        })
        .collect();
    // The printed form ends with the total ("Tổng cộng").
    let total_key = (0..dims.len())
        .map(|i| Cell::Text(if i == 0 { TOTAL_KEY } else { "" }.to_owned()))
        .collect();
    rows.push(row_cells(total_key, &reports::Ii06aRow::new((), all)));
    (columns, rows)
}

fn bieu_mau_3(
    groups: &BTreeMap<GroupKey, Totals>,
    levels_in_use: &dyn Fn(domain::Level) -> bool,
) -> (Vec<Column>, Vec<Vec<Cell>>) {
    let by_level = groups
        .iter()
        .filter_map(|(key, t)| {
            let level = match key.first().map(String::as_str) {
                Some("province") => domain::Level::Province,
                Some("district") => domain::Level::District,
                Some("commune") => domain::Level::Commune,
                _ => return None,
            };
            Some((level, t.clone()))
        })
        .collect();
    let columns = vec![
        column("code", "Mã"),
        column("level", "Cấp"),
        column("resolved", "Tổng số hồ sơ đã giải quyết"),
        column("early", "Trước hạn"),
        column("on_time", "Đúng hạn"),
        column("late", "Quá hạn"),
        column("rate", "Tỷ lệ đúng hạn"),
    ];
    let rows = reports::bieu_mau_3_section_3(&by_level, levels_in_use)
        .into_iter()
        .map(|r| {
            vec![
                Cell::Text(r.code.to_owned()),
                Cell::Text(r.level.as_str().to_owned()),
                Cell::Count(r.resolved),
                Cell::Count(r.early),
                Cell::Count(r.on_time),
                Cell::Count(r.late),
                Cell::Rate(r.rate),
            ]
        })
        .collect();
    (columns, rows)
}

fn bieu_mau_7(t: &Totals) -> (Vec<Column>, Vec<Vec<Cell>>) {
    let columns = vec![
        column("code", "Mã"),
        column("online_level", "Mức độ dịch vụ công trực tuyến"),
        column("received", "Số hồ sơ tiếp nhận"),
        column("received_online", "Số hồ sơ tiếp nhận trực tuyến"),
        column("rate", "Tỷ lệ hồ sơ trực tuyến"),
    ];
    let rows = reports::bieu_mau_7_section_6(t)
        .into_iter()
        .map(|r| {
            vec![
                Cell::Text(r.code.to_owned()),
                Cell::Text(r.online_level.as_str().to_owned()),
                Cell::Count(r.received),
                Cell::Count(r.received_online),
                Cell::Rate(r.rate),
            ]
        })
        .collect();
    (columns, rows)
}

/// The 766 index in points, one row per group and a total row: the portal's six columns and
/// the total (points out of what was computed), the average processing time, the scoring
/// version, then each sub-indicator's points and rate. A sub-indicator or column that needs
/// data outside the events, or had nothing to judge, is [`Cell::NotComputed`], never 0.
fn scorecard(
    scoring: &ScoringConfig,
    query: &Query,
    groups: &BTreeMap<GroupKey, Totals>,
    all: &Totals,
) -> (Vec<Column>, Vec<Vec<Cell>>) {
    let version = scoring.in_force(query.to.pred_opt().unwrap_or(query.to));
    let mut columns: Vec<Column> = query
        .group_by
        .iter()
        .map(|d| column(d.as_str(), dimension_label(*d)))
        .collect();
    for c in scorecard::Column::ALL {
        columns.push(column(
            &c.code().to_ascii_lowercase(),
            &format!("{} — {} ({})", c.code(), c.label(), c.max_points()),
        ));
    }
    columns.push(column("total", "Tổng điểm (100)"));
    columns.push(column(
        "avg_processing_hours",
        "Thời gian giải quyết trung bình (giờ)",
    ));
    columns.push(column(
        "scoring_version",
        "Phiên bản cách tính (hiệu lực từ)",
    ));
    for s in version.iter().flat_map(|v| &v.indicators) {
        let confirmed = if s.confirmed {
            ""
        } else {
            ", chưa xác nhận"
        };
        columns.push(column(
            &s.id,
            &format!(
                "{} {} ({}{confirmed})",
                s.column.code(),
                s.label,
                s.max_points
            ),
        ));
        // Named with its sub-indicator, so no two headings of the form are the same.
        columns.push(column(
            &format!("{}_rate", s.id),
            &format!("{} {} — tỷ lệ", s.column.code(), s.label),
        ));
    }
    let points = |c: &scorecard::ColumnScore| match c.points {
        Some(hundredths) => Cell::Points {
            hundredths,
            max_hundredths: c.computed_max,
        },
        None => Cell::NotComputed("no sub-indicator computed".to_owned()),
    };
    let row = |key: Vec<Cell>, t: &Totals| {
        let mut cells = key;
        let Some(card) = scorecard::scorecard(scoring, t) else {
            let none = || Cell::NotComputed("no scoring version in force".to_owned());
            cells.extend((0..7).map(|_| none()));
            cells.push(mean(t));
            cells.push(Cell::Text(String::new()));
            return cells;
        };
        cells.extend(card.columns.iter().map(|(_, c)| points(c)));
        cells.push(points(&card.total));
        cells.push(mean(t));
        cells.push(Cell::Text(card.version_from.to_string()));
        for (sub, score) in &card.subs {
            match score {
                SubScore::Points { points, rate } => {
                    cells.push(Cell::Points {
                        hundredths: *points,
                        max_hundredths: (sub.max_points * 100.0).round() as i64,
                    });
                    cells.push(Cell::Rate(*rate));
                }
                SubScore::NoDossiers { rate } => {
                    cells.push(Cell::NotComputed("no dossiers to judge".to_owned()));
                    cells.push(Cell::Rate(*rate));
                }
                SubScore::NotComputed { needs } => {
                    cells.push(Cell::NotComputed(format!("needs {needs}")));
                    cells.push(Cell::NotComputed(format!("needs {needs}")));
                }
            }
        }
        cells
    };
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    if !query.group_by.is_empty() {
        for (key, t) in groups {
            rows.push(row(key.iter().map(|v| Cell::Text(v.clone())).collect(), t));
        }
    }
    let total_key = (0..query.group_by.len())
        .map(|i| Cell::Text(if i == 0 { TOTAL_KEY } else { "" }.to_owned()))
        .collect();
    rows.push(row(total_key, all));
    (columns, rows)
}

/// The average processing time of the dossiers resolved (reception to resolution), in hours.
fn mean(t: &Totals) -> Cell {
    let p = scorecard::ProcessingTime {
        resolved: t.flow_count(stats::Metric::Resolved),
        total_minutes: t.flow(stats::Metric::ResolvedProcessingMinutes),
    };
    Cell::Mean {
        count: p.resolved,
        mean: p.mean_hours(),
        unit: "hours",
    }
}

/// How a column is written in CSV: its composite cells become several fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    /// `{id}_numerator`, `{id}_denominator`, `{id}_percent`.
    Rate,
    /// `{id}_points`, `{id}_max`.
    Points,
    /// `{id}_count`, `{id}_mean`.
    Mean,
}

impl Shape {
    fn of(cell: &Cell) -> Shape {
        match cell {
            Cell::Rate(_) => Shape::Rate,
            Cell::Points { .. } => Shape::Points,
            Cell::Mean { .. } => Shape::Mean,
            Cell::Count(_) | Cell::Text(_) | Cell::NotComputed(_) => Shape::Plain,
        }
    }

    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Shape::Plain => &[""],
            Shape::Rate => &["_numerator", "_denominator", "_percent"],
            Shape::Points => &["_points", "_max"],
            Shape::Mean => &["_count", "_mean"],
        }
    }

    /// The same fields' suffixes after a Vietnamese heading.
    fn vi_suffixes(self) -> &'static [&'static str] {
        match self {
            Shape::Plain => &[""],
            Shape::Rate => &[" (tử số)", " (mẫu số)", " (%)"],
            Shape::Points => &[" (điểm)", " (điểm tối đa)"],
            Shape::Mean => &[" (số hồ sơ)", " (trung bình)"],
        }
    }
}

/// How a table is written as CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CsvOptions {
    /// Starts with the UTF-8 byte-order mark, by which Excel recognizes UTF-8.
    pub bom: bool,
    /// The header row holds the forms' Vietnamese headings (each with its group's, so none
    /// repeats) and the total row is named `Tổng cộng`, instead of the ASCII column ids and
    /// `total`.
    pub vietnamese: bool,
}

/// The table as CSV (RFC 4180, CRLF line ends, a header line of column ids, or of the
/// Vietnamese headings). A rate column becomes three: `{id}_numerator`, `{id}_denominator`,
/// `{id}_percent` (empty when absent), so a spreadsheet gets the counts, not only a rounded
/// percentage; a points column two (`{id}_points`, `{id}_max`, two decimals), a mean two
/// (`{id}_count`, `{id}_mean`). With Vietnamese headings the suffixes are ` (tử số)`,
/// ` (mẫu số)`, ` (%)`; ` (điểm)`, ` (điểm tối đa)`; ` (số hồ sơ)`, ` (trung bình)`. A cell
/// of another kind in such a column fills the first field (`not computed: …`, never 0).
pub fn to_csv(table: &Table, options: CsvOptions) -> String {
    let shapes: Vec<Shape> = (0..table.columns.len())
        .map(|i| {
            table
                .rows
                .iter()
                .filter_map(|r| r.get(i).map(Shape::of))
                .find(|s| *s != Shape::Plain)
                .unwrap_or(Shape::Plain)
        })
        .collect();
    let mut out = String::new();
    if options.bom {
        out.push('\u{feff}');
    }
    let mut header = Vec::new();
    for (i, (c, shape)) in table.columns.iter().zip(&shapes).enumerate() {
        if options.vietnamese {
            let label = table.full_label(i);
            header.extend(shape.vi_suffixes().iter().map(|s| format!("{label}{s}")));
        } else {
            header.extend(shape.suffixes().iter().map(|s| format!("{}{s}", c.id)));
        }
    }
    push_record(&mut out, header.iter().map(String::as_str));
    let points = |h: i64| format!("{}.{:02}", h / 100, (h % 100).abs());
    for (r, row) in table.rows.iter().enumerate() {
        let total = table.is_total(r);
        let mut fields: Vec<String> = Vec::new();
        for (cell, shape) in row.iter().zip(&shapes) {
            match cell {
                Cell::Rate(r) => {
                    fields.push(r.numerator.to_string());
                    fields.push(r.denominator.to_string());
                    fields.push(r.percent().map(|p| format!("{p:.2}")).unwrap_or_default());
                }
                Cell::Text(t) if total && options.vietnamese && t == TOTAL_KEY => {
                    fields.push("Tổng cộng".to_owned());
                }
                Cell::Points {
                    hundredths,
                    max_hundredths,
                } => {
                    fields.push(points(*hundredths));
                    fields.push(points(*max_hundredths));
                }
                Cell::Mean { count, mean, .. } => {
                    fields.push(count.to_string());
                    fields.push(mean.map(|m| format!("{m:.2}")).unwrap_or_default());
                }
                other => {
                    fields.push(text_of(other));
                    fields.extend((1..shape.suffixes().len()).map(|_| String::new()));
                }
            }
        }
        push_record(&mut out, fields.iter().map(String::as_str));
    }
    out
}

/// A cell as one line of text (a CSV field; a not-computed cell in a workbook).
pub fn text_of(cell: &Cell) -> String {
    match cell {
        Cell::Count(n) => n.to_string(),
        Cell::Text(t) => t.clone(),
        Cell::Rate(r) => r.to_string(),
        Cell::Points { hundredths, .. } => format!("{:.2}", *hundredths as f64 / 100.0),
        Cell::NotComputed(reason) => format!("not computed: {reason}"),
        Cell::Mean { mean, unit, .. } => mean.map(|m| format!("{m:.2} {unit}")).unwrap_or_default(),
    }
}

fn push_record<'a>(out: &mut String, fields: impl Iterator<Item = &'a str>) {
    for (i, f) in fields.enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            let _ = write!(out, "\"{}\"", f.replace('"', "\"\""));
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use stats::Metric;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 4, d).unwrap()
    }

    fn query(group_by: Vec<Dimension>) -> Query {
        Query {
            from: day(1),
            to: day(30),
            filter: stats::SliceFilter::default(),
            group_by,
        }
    }

    fn totals(received: i128, early: i128, late: i128, pending: i128) -> Totals {
        let mut t = Totals::empty(day(1), day(30));
        t.flows.insert(Metric::Received, received);
        t.flows.insert(Metric::ReceivedOnline, received);
        t.flows.insert(Metric::Resolved, early + late);
        t.flows.insert(Metric::ResolvedEarly, early);
        t.flows.insert(Metric::ResolvedLate, late);
        t.at_end.insert(Metric::Pending, pending);
        t.at_end.insert(Metric::PendingWithinTime, pending);
        t
    }

    #[test]
    fn ii06a_has_a_row_per_group_and_a_total_row_that_adds_up() {
        let groups = BTreeMap::from([
            (vec!["land".to_owned()], totals(5, 2, 1, 2)),
            (vec!["tax".to_owned()], totals(3, 1, 1, 1)),
        ]);
        let t = fill(Form::Ii06a, &query(vec![Dimension::Sector]), &groups);
        assert_eq!(t.columns[0].id, "sector");
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[2][0], Cell::Text("total".to_owned()));
        // received_total column (1): 5 + 3.
        assert_eq!(t.rows[2][1], Cell::Count(8));
        // resolved_late (8): 1 + 1.
        assert_eq!(t.rows[2][8], Cell::Count(2));
    }

    #[test]
    fn bieu_mau_3_lists_every_level_even_without_figures() {
        let groups = BTreeMap::from([(vec!["district".to_owned()], totals(4, 3, 1, 0))]);
        let t = fill(
            Form::BieuMau3Section3,
            &query(vec![Dimension::Level]),
            &groups,
        );
        assert_eq!(t.rows.len(), 3);
        assert_eq!(t.rows[1][6], Cell::Rate(Rate::new(3, 4)));
        assert_eq!(t.rows[0][6], Cell::Rate(Rate::new(0, 0)));
    }

    #[test]
    fn csv_splits_rates_and_quotes_text() {
        let table = Table {
            form: Some(Form::Scorecard766),
            title: "t",
            unit: "",
            column_groups: Vec::new(),
            key_columns: 1,
            total_row: TotalRow::None,
            columns: vec![column("item", "x"), column("rate", "y")],
            rows: vec![
                vec![
                    Cell::Text("a,\"b\"".to_owned()),
                    Cell::Rate(Rate::new(1, 3)),
                ],
                vec![Cell::Text("c".to_owned()), Cell::Rate(Rate::new(0, 0))],
            ],
        };
        assert_eq!(
            to_csv(&table, CsvOptions::default()),
            "item,rate_numerator,rate_denominator,rate_percent\r\n\
             \"a,\"\"b\"\"\",1,3,33.33\r\n\
             c,0,0,\r\n"
        );
    }

    #[test]
    fn csv_with_bom_and_vietnamese_headings() {
        let groups = BTreeMap::from([
            (vec!["land".to_owned()], totals(5, 2, 1, 2)),
            (vec!["tax".to_owned()], totals(3, 1, 1, 1)),
        ]);
        let t = fill(Form::Ii06a, &query(vec![Dimension::Sector]), &groups);
        let csv = to_csv(
            &t,
            CsvOptions {
                bom: true,
                vietnamese: true,
            },
        );
        let body = csv.strip_prefix('\u{feff}').expect("a BOM first");
        let lines: Vec<&str> = body.split("\r\n").collect();
        assert_eq!(
            lines[0],
            "Lĩnh vực,Số hồ sơ nhận giải quyết — Tổng số hồ sơ tiếp nhận,\
             Số hồ sơ nhận giải quyết — Trực tuyến,\
             Số hồ sơ nhận giải quyết — Trực tiếp và qua dịch vụ bưu chính,\
             Số hồ sơ nhận giải quyết — Từ kỳ trước chuyển qua,\
             Số hồ sơ đã giải quyết — Tổng số hồ sơ đã giải quyết,\
             Số hồ sơ đã giải quyết — Trước hạn,Số hồ sơ đã giải quyết — Đúng hạn,\
             Số hồ sơ đã giải quyết — Quá hạn,\
             Số hồ sơ đang giải quyết — Tổng số hồ sơ đang giải quyết,\
             Số hồ sơ đang giải quyết — Trong hạn,Số hồ sơ đang giải quyết — Quá hạn,\
             \"Rút hoặc dừng giải quyết (ngoài mẫu, để các cột cộng khớp)\""
        );
        // The same figures as the ASCII CSV; only the total row's name differs.
        let ascii = to_csv(&t, CsvOptions::default());
        assert!(!ascii.starts_with('\u{feff}'));
        let ascii: Vec<&str> = ascii.split("\r\n").collect();
        assert_eq!(lines[1..3], ascii[1..3]);
        assert_eq!(lines[3].replacen("Tổng cộng", "total", 1), ascii[3]);
        // A rate's three fields under Vietnamese headings.
        let t = fill(
            Form::BieuMau3Section3,
            &query(vec![Dimension::Level]),
            &BTreeMap::new(),
        );
        let csv = to_csv(
            &t,
            CsvOptions {
                bom: false,
                vietnamese: true,
            },
        );
        assert!(
            csv.starts_with(
                "Mã,Cấp,Tổng số hồ sơ đã giải quyết,Trước hạn,Đúng hạn,Quá hạn,\
                 Tỷ lệ đúng hạn (tử số),Tỷ lệ đúng hạn (mẫu số),Tỷ lệ đúng hạn (%)\r\n"
            ),
            "{csv}"
        );
    }

    #[test]
    fn slugs_round_trip() {
        for f in Form::ALL {
            assert_eq!(Form::from_slug(f.slug()), Some(f));
        }
        assert_eq!(Form::from_slug("nope"), None);
    }
}
