//! The statistics' rollups, pure (no I/O): which rollups are kept ([`ROLLUPS`]) and which one
//! answers a query ([`rollup_for`]), the grains ([`Grain`]) and how a period decomposes into
//! whole years, months and edge days ([`spans`], [`prefix_spans`]), and the expansion of day
//! deltas into every rollup and grain cell ([`rollup_cells`]). [`crate::store`] holds the SQL.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use stats::{Dimension, Metric, Query, Slice};

/// `numeric` text of an integer as `i128` (`None` for a fraction or beyond `i128`).
pub fn parse_sum(text: &str) -> Option<i128> {
    text.parse().ok()
}

/// How many metrics a cell of `stats_cells` holds: one column each, in [`Metric::ALL`] order.
pub const METRICS: usize = Metric::ALL.len();

/// The position of `metric` in [`Metric::ALL`] (its column among a cell's).
pub fn metric_index(metric: Metric) -> usize {
    // `Metric::ALL` lists the variants in declaration order (tested).
    metric as usize
}

/// The rollups kept, as bit masks over [`Dimension::ALL`] (bit `i` is `Dimension::ALL[i]`),
/// coarsest first: {}, {level}, {level, agency}, {level, sector}, {level, agency, sector},
/// every dimension. The report forms group by level, agency and sector; filters on procedure,
/// channel or applicant type fall back to the full rollup.
pub const ROLLUPS: [u8; 6] = [0, 1, 3, 5, 7, ALL_DIMENSIONS];

/// The rollup of every dimension: its day grain is the plain per-slice, per-day aggregate.
pub const ALL_DIMENSIONS: u8 = 63;

/// A dimension's bit in a rollup mask.
pub fn dimension_bit(dimension: Dimension) -> u8 {
    match dimension {
        Dimension::Level => 1,
        Dimension::Agency => 2,
        Dimension::Sector => 4,
        Dimension::Procedure => 8,
        Dimension::Channel => 16,
        Dimension::ApplicantType => 32,
    }
}

/// The coarsest rollup holding every dimension `query` filters or groups by. The rollups are
/// ordered by how many rows a period holds (fewest first), so the first fit reads least.
pub fn rollup_for(query: &Query) -> u8 {
    let needed = query
        .filter
        .dimensions()
        .chain(query.group_by.iter().copied())
        .fold(0u8, |mask, d| mask | dimension_bit(d));
    ROLLUPS
        .into_iter()
        .find(|r| r & needed == needed)
        .unwrap_or(ALL_DIMENSIONS)
}

/// The period lengths the aggregates are kept at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grain {
    Day,
    Month,
    Year,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Day, Grain::Month, Grain::Year];

    /// The code stored in `stats_cells.grain`.
    pub fn code(self) -> &'static str {
        match self {
            Grain::Day => "d",
            Grain::Month => "m",
            Grain::Year => "y",
        }
    }

    pub fn parse(code: &str) -> Option<Grain> {
        Grain::ALL.into_iter().find(|g| g.code() == code)
    }

    /// The first day of the period of this grain holding `day`.
    pub fn period(self, day: NaiveDate) -> NaiveDate {
        match self {
            Grain::Day => day,
            // Day 1 and day-of-year 1 exist in every month and year chrono represents.
            Grain::Month => day.with_day(1).unwrap_or(day),
            Grain::Year => day.with_ordinal(1).unwrap_or(day),
        }
    }
}

/// A run of periods of one grain: those whose first day `p` has `from <= p < to` (`None`: no
/// bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub grain: Grain,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Span {
    fn new(grain: Grain, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Span {
        Span { grain, from, to }
    }
}

/// The days `from <= d < to` (`from = None`: every day before `to`) as disjoint spans of whole
/// years, whole months and edge days: at most day, month, year, month, day spans, the days and
/// months at most one month and one year's worth on each side.
pub fn spans(from: Option<NaiveDate>, to: NaiveDate) -> Vec<Span> {
    let days_only = |from: Option<NaiveDate>| vec![Span::new(Grain::Day, from, Some(to))];
    if from.is_some_and(|f| f >= to) {
        return Vec::new();
    }
    // The first month start at or after `from`; the month start at or before `to`.
    let first_month = match from {
        None => None,
        Some(f) if f.day() == 1 => Some(f),
        Some(f) => match next_month_start(f) {
            Some(m) => Some(m),
            None => return days_only(from),
        },
    };
    let last_month = Grain::Month.period(to);
    if first_month.is_some_and(|m| m > last_month) {
        return days_only(from);
    }
    let mut out = Vec::new();
    if let (Some(f), Some(m)) = (from, first_month)
        && f < m
    {
        out.push(Span::new(Grain::Day, Some(f), Some(m)));
    }
    // Whole months [first_month, last_month): whole years inside, months at the edges.
    let first_year = match first_month {
        None => None,
        Some(m) if m.month() == 1 => Some(m),
        Some(m) => match m.with_ordinal(1).and_then(|y| y.with_year(y.year() + 1)) {
            Some(y) => Some(y),
            None => return days_only(from),
        },
    };
    let last_year = Grain::Year.period(last_month);
    match first_year {
        Some(y) if y >= last_year => {
            if first_month.is_some_and(|m| m < last_month) {
                out.push(Span::new(Grain::Month, first_month, Some(last_month)));
            }
        }
        _ => {
            if let (Some(m), Some(y)) = (first_month, first_year)
                && m < y
            {
                out.push(Span::new(Grain::Month, Some(m), Some(y)));
            }
            out.push(Span::new(Grain::Year, first_year, Some(last_year)));
            if last_year < last_month {
                out.push(Span::new(Grain::Month, Some(last_year), Some(last_month)));
            }
        }
    }
    if last_month < to {
        out.push(Span::new(Grain::Day, Some(last_month), Some(to)));
    }
    out
}

/// The days `d <= day`: what a stock at the start of `day` sums.
pub fn prefix_spans(day: NaiveDate) -> Vec<Span> {
    match day.succ_opt() {
        Some(next) => spans(None, next),
        None => vec![Span::new(Grain::Year, None, None)],
    }
}

/// The spans of a period's two stock sums, the part both share read once: the stock at the
/// start of `from` is `shared` + `start` ([`prefix_spans`] of `from`), at the start of `to` it
/// is `shared` + `end` ([`prefix_spans`] of `to`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockSpans {
    pub shared: Vec<Span>,
    pub start: Vec<Span>,
    pub end: Vec<Span>,
}

/// The stocks at the start of `from` and of `to` as [`StockSpans`]: both prefix sums begin with
/// the whole years before a year (every year of history), and the earlier one's years are the
/// shared part; the later one reads the years in between as one more year span. A question
/// over a year thus reads the history years once instead of twice.
pub fn stock_spans(from: NaiveDate, to: NaiveDate) -> StockSpans {
    let start = prefix_spans(from);
    let end = prefix_spans(to);
    let leading_years = |spans: &[Span]| match spans.first() {
        Some(Span {
            grain: Grain::Year,
            from: None,
            to,
        }) => Some(*to),
        _ => None,
    };
    let (Some(a), Some(b)) = (leading_years(&start), leading_years(&end)) else {
        return StockSpans {
            shared: Vec::new(),
            start,
            end,
        };
    };
    // `None` is no upper bound: later than any year.
    let earlier = |x: Option<NaiveDate>, y: Option<NaiveDate>| match (x, y) {
        (Some(x), Some(y)) => x <= y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => true,
    };
    // The years of the later prefix after the earlier one's, then its own rest.
    let rest = |shared_to: Option<NaiveDate>, own_to: Option<NaiveDate>, own: &[Span]| {
        let mut out = Vec::with_capacity(own.len());
        if own_to != shared_to {
            out.push(Span::new(Grain::Year, shared_to, own_to));
        }
        out.extend_from_slice(&own[1..]);
        out
    };
    if earlier(a, b) {
        StockSpans {
            shared: vec![Span::new(Grain::Year, None, a)],
            start: start[1..].to_vec(),
            end: rest(a, b, &end),
        }
    } else {
        StockSpans {
            shared: vec![Span::new(Grain::Year, None, b)],
            start: rest(b, a, &start),
            end: end[1..].to_vec(),
        }
    }
}

/// The first day of the month after `day`'s.
fn next_month_start(day: NaiveDate) -> Option<NaiveDate> {
    let (y, m) = if day.month() == 12 {
        (day.year() + 1, 1)
    } else {
        (day.year(), day.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
}

/// One figure of the aggregates (a metric of a row of `stats_cells`): a rollup, a period, the slice's values in the rollup's
/// dimensions (`""` outside it) and a metric. Ordered, so that a sorted batch of cells is
/// locked in the same order by every transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell<'a> {
    pub rollup: u8,
    pub grain: Grain,
    pub period: NaiveDate,
    /// In [`Dimension::ALL`] order.
    pub dims: [&'a str; 6],
    pub metric: Metric,
}

/// Every rollup and grain cell the day deltas `(slice, day, metric, delta)` add to, with the
/// summed delta (exact `i128`: see the `stats` crate docs); zero sums are left out. Apply and
/// rebuild write `stats_cells` through it; verify does not (it expands its expected cells in
/// SQL, independently: see [`crate::verify`]).
pub fn rollup_cells<'a>(
    deltas: impl IntoIterator<Item = (&'a Slice, NaiveDate, Metric, i128)>,
) -> BTreeMap<Cell<'a>, i128> {
    let mut cells: BTreeMap<Cell<'a>, i128> = BTreeMap::new();
    for (slice, day, metric, delta) in deltas {
        if delta == 0 {
            continue;
        }
        let values = Dimension::ALL.map(|d| d.value(slice));
        for rollup in ROLLUPS {
            let mut dims = [""; 6];
            for (i, d) in Dimension::ALL.into_iter().enumerate() {
                if rollup & dimension_bit(d) != 0 {
                    dims[i] = values[i];
                }
            }
            for grain in Grain::ALL {
                let cell = Cell {
                    rollup,
                    grain,
                    period: grain.period(day),
                    dims,
                    metric,
                };
                *cells.entry(cell).or_insert(0) += delta;
            }
        }
    }
    cells.retain(|_, v| *v != 0);
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Whether `day` lies in one of `spans` (a period of the span's grain holding `day` has
    /// its first day within the span's bounds), and in exactly one.
    fn covered(spans: &[Span], day: NaiveDate) -> usize {
        spans
            .iter()
            .filter(|s| {
                let p = s.grain.period(day);
                s.from.is_none_or(|f| f <= p) && s.to.is_none_or(|t| p < t)
            })
            .count()
    }

    /// Every span of a grain coarser than a day covers whole periods only: its bounds are
    /// period starts of that grain.
    fn aligned(spans: &[Span]) -> bool {
        spans.iter().all(|s| {
            [s.from, s.to]
                .into_iter()
                .flatten()
                .all(|b| s.grain.period(b) == b)
        })
    }

    #[test]
    fn metric_index_is_the_position_in_all() {
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(metric_index(*m), i, "{m:?}");
        }
    }

    #[test]
    fn spans_cover_each_day_of_the_period_exactly_once() {
        let days: Vec<NaiveDate> = date(2021, 11, 25)
            .iter_days()
            .take_while(|d| *d <= date(2024, 2, 5))
            .collect();
        // Every pair is too many for a unit test; every 7th `from` against every 2nd `to`
        // crosses all month and year edges in both positions.
        for from in days.iter().step_by(7) {
            for to in days.iter().step_by(2) {
                let spans = spans(Some(*from), *to);
                assert!(aligned(&spans), "{from}..{to}: {spans:?}");
                assert!(spans.len() <= 5, "{from}..{to}: {spans:?}");
                for day in &days {
                    let expected = usize::from(from <= day && day < to);
                    assert_eq!(
                        covered(&spans, *day),
                        expected,
                        "{from}..{to} at {day}: {spans:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn prefix_spans_cover_every_day_up_to_and_including_the_day() {
        let days: Vec<NaiveDate> = date(2019, 12, 1)
            .iter_days()
            .take_while(|d| *d <= date(2022, 2, 1))
            .collect();
        for at in &days {
            let spans = prefix_spans(*at);
            assert!(aligned(&spans), "{at}: {spans:?}");
            for day in &days {
                assert_eq!(
                    covered(&spans, *day),
                    usize::from(day <= at),
                    "{at} at {day}"
                );
            }
            // Long before the period: still counted (the years before).
            assert_eq!(covered(&spans, date(1990, 6, 15)), 1);
        }
        assert_eq!(covered(&prefix_spans(NaiveDate::MAX), NaiveDate::MAX), 1);
    }

    #[test]
    fn stock_spans_cover_each_prefix_exactly_once_and_share_the_history_years() {
        let days: Vec<NaiveDate> = date(2021, 12, 1)
            .iter_days()
            .take_while(|d| *d <= date(2024, 2, 1))
            .collect();
        let probes: Vec<NaiveDate> = days
            .iter()
            .copied()
            .chain([date(1990, 6, 15), date(2030, 1, 1)])
            .collect();
        // Both orders: a caller may ask for `from >= to`.
        // Every 11th `from` against every 7th `to`: either before the other, across month and
        // year edges.
        for from in days.iter().step_by(11) {
            for to in days.iter().step_by(7) {
                let s = stock_spans(*from, *to);
                let at_start: Vec<Span> = s.shared.iter().chain(&s.start).copied().collect();
                let at_end: Vec<Span> = s.shared.iter().chain(&s.end).copied().collect();
                assert!(aligned(&at_start) && aligned(&at_end), "{from} {to}: {s:?}");
                for day in &probes {
                    assert_eq!(
                        covered(&at_start, *day),
                        usize::from(day <= from),
                        "start {from} {to} at {day}: {s:?}"
                    );
                    assert_eq!(
                        covered(&at_end, *day),
                        usize::from(day <= to),
                        "end {from} {to} at {day}: {s:?}"
                    );
                }
                // The history years are read once, by the shared part.
                assert_eq!(s.shared.len(), 1, "{from} {to}: {s:?}");
                assert_eq!(covered(&s.shared, date(1990, 6, 15)), 1);
                assert_eq!(covered(&s.start, date(1990, 6, 15)), 0);
                assert_eq!(covered(&s.end, date(1990, 6, 15)), 0);
            }
        }
        // A year: shared = the years before it; the start adds its first day, the end the
        // year itself and the next year's first day.
        let s = stock_spans(date(2024, 1, 1), date(2025, 1, 1));
        assert_eq!(
            s.shared,
            vec![Span::new(Grain::Year, None, Some(date(2024, 1, 1)))]
        );
        assert_eq!(
            s.start,
            vec![Span::new(
                Grain::Day,
                Some(date(2024, 1, 1)),
                Some(date(2024, 1, 2))
            )]
        );
        assert_eq!(
            s.end,
            vec![
                Span::new(Grain::Year, Some(date(2024, 1, 1)), Some(date(2025, 1, 1))),
                Span::new(Grain::Day, Some(date(2025, 1, 1)), Some(date(2025, 1, 2))),
            ]
        );
        // At the end of the calendar: still exact.
        let s = stock_spans(date(2024, 3, 1), NaiveDate::MAX);
        let at_end: Vec<Span> = s.shared.iter().chain(&s.end).copied().collect();
        assert_eq!(covered(&at_end, NaiveDate::MAX), 1);
        assert_eq!(covered(&at_end, date(2024, 3, 2)), 1);
    }

    #[test]
    fn a_period_within_a_month_reads_days_only_and_a_year_reads_one_row() {
        assert_eq!(
            spans(Some(date(2024, 3, 5)), date(2024, 3, 9)),
            vec![Span::new(
                Grain::Day,
                Some(date(2024, 3, 5)),
                Some(date(2024, 3, 9))
            )]
        );
        assert_eq!(
            spans(Some(date(2024, 1, 1)), date(2025, 1, 1)),
            vec![Span::new(
                Grain::Year,
                Some(date(2024, 1, 1)),
                Some(date(2025, 1, 1))
            )]
        );
        assert!(spans(Some(date(2024, 1, 1)), date(2024, 1, 1)).is_empty());
    }

    #[test]
    fn the_coarsest_rollup_with_the_needed_dimensions_is_chosen() {
        let q = |filter: SliceFilterSpec, group_by: Vec<Dimension>| Query {
            from: date(2024, 1, 1),
            to: date(2025, 1, 1),
            filter: filter.0,
            group_by,
        };
        struct SliceFilterSpec(stats::SliceFilter);
        let none = || SliceFilterSpec(stats::SliceFilter::default());
        assert_eq!(rollup_for(&q(none(), vec![])), 0);
        assert_eq!(rollup_for(&q(none(), vec![Dimension::Level])), 1);
        assert_eq!(rollup_for(&q(none(), vec![Dimension::Agency])), 3);
        assert_eq!(rollup_for(&q(none(), vec![Dimension::Sector])), 5);
        assert_eq!(
            rollup_for(&q(none(), vec![Dimension::Sector, Dimension::Agency])),
            7
        );
        let by_channel = stats::SliceFilter {
            channel: Some(domain::Channel::Online),
            ..Default::default()
        };
        assert_eq!(rollup_for(&q(SliceFilterSpec(by_channel), vec![])), 63);
    }

    #[test]
    fn rollup_cells_sum_each_delta_into_every_rollup_and_grain() {
        let slice = |agency: &str| Slice {
            level: domain::Level::District,
            agency: domain::AgencyCode::parse(agency).unwrap(),
            sector: domain::SectorCode::parse("land").unwrap(),
            procedure: domain::ProcedureCode::parse("1.001").unwrap(),
            channel: domain::Channel::Online,
            applicant_type: domain::ApplicantType::Citizen,
        };
        let (a, b) = (slice("A"), slice("B"));
        let cells = rollup_cells([
            (&a, date(2024, 3, 5), Metric::Received, 1),
            (&b, date(2024, 3, 6), Metric::Received, 2),
            (&b, date(2024, 4, 6), Metric::Pending, 1),
            (&b, date(2024, 4, 7), Metric::Pending, -1),
        ]);
        let get = |rollup, grain, period, agency, metric| {
            let dims = if rollup & 2 != 0 {
                [
                    if rollup & 1 != 0 { "district" } else { "" },
                    agency,
                    "",
                    "",
                    "",
                    "",
                ]
            } else {
                [
                    if rollup & 1 != 0 { "district" } else { "" },
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            };
            cells
                .iter()
                .find(|(c, _)| {
                    c.rollup == rollup
                        && c.grain == grain
                        && c.period == period
                        && c.dims[..2] == dims[..2]
                        && c.metric == metric
                })
                .map(|(_, v)| *v)
        };
        assert_eq!(
            get(0, Grain::Year, date(2024, 1, 1), "", Metric::Received),
            Some(3)
        );
        assert_eq!(
            get(1, Grain::Month, date(2024, 3, 1), "", Metric::Received),
            Some(3)
        );
        assert_eq!(
            get(3, Grain::Month, date(2024, 3, 1), "B", Metric::Received),
            Some(2)
        );
        assert_eq!(
            get(3, Grain::Day, date(2024, 3, 5), "A", Metric::Received),
            Some(1)
        );
        // The two stock deltas cancel within the month and year: no cell; the days keep them.
        assert_eq!(
            get(0, Grain::Month, date(2024, 4, 1), "", Metric::Pending),
            None
        );
        assert_eq!(
            get(0, Grain::Day, date(2024, 4, 7), "", Metric::Pending),
            Some(-1)
        );
        let full = cells
            .keys()
            .find(|c| c.rollup == 63 && c.grain == Grain::Day && c.dims[1] == "A")
            .unwrap();
        assert_eq!(
            full.dims,
            ["district", "A", "land", "1.001", "online", "citizen"]
        );
    }
}
