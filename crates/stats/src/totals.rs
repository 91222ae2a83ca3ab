//! Sums of deltas over a period: [`Totals`], and an in-memory [`Aggregates`] store to sum from.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::contribution::Contribution;
use crate::metric::{Metric, MetricKind, Slice};

/// The figures of a set of slices for the period `[from, to)` (local dates): each flow metric
/// summed over the days `from <= d < to`; each stock metric at the period's start (the sum of
/// its deltas over the days `<= from`, i.e. at `from` 00:00 local: the carried-over figure)
/// and at its end (the days `<= to`, i.e. at `to` 00:00 local).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Flow metrics only; absent means 0.
    pub flows: BTreeMap<Metric, i128>,
    /// Stock metrics at `from` 00:00 local; absent means 0.
    pub at_start: BTreeMap<Metric, i128>,
    /// Stock metrics at `to` 00:00 local; absent means 0.
    pub at_end: BTreeMap<Metric, i128>,
}

impl Totals {
    /// Nothing counted yet for `[from, to)`.
    pub fn empty(from: NaiveDate, to: NaiveDate) -> Totals {
        Totals {
            from,
            to,
            flows: BTreeMap::new(),
            at_start: BTreeMap::new(),
            at_end: BTreeMap::new(),
        }
    }

    /// Sums day deltas `(date, metric, delta)` into the figures of `[from, to)`.
    pub fn from_deltas(
        from: NaiveDate,
        to: NaiveDate,
        deltas: impl IntoIterator<Item = (NaiveDate, Metric, i128)>,
    ) -> Totals {
        let mut totals = Totals::empty(from, to);
        for (date, metric, delta) in deltas {
            totals.add_delta(date, metric, delta);
        }
        totals
    }

    /// Counts one day delta where it belongs.
    pub fn add_delta(&mut self, date: NaiveDate, metric: Metric, delta: i128) {
        let bump = |map: &mut BTreeMap<Metric, i128>| {
            *map.entry(metric).or_insert(0) += delta;
        };
        match metric.kind() {
            MetricKind::Flow => {
                if self.from <= date && date < self.to {
                    bump(&mut self.flows);
                }
            }
            MetricKind::Stock => {
                if date <= self.from {
                    bump(&mut self.at_start);
                }
                if date <= self.to {
                    bump(&mut self.at_end);
                }
            }
        }
    }

    /// Adds the figures of another, disjoint set of slices for the same period.
    pub fn merge(&mut self, other: &Totals) {
        for (mine, theirs) in [
            (&mut self.flows, &other.flows),
            (&mut self.at_start, &other.at_start),
            (&mut self.at_end, &other.at_end),
        ] {
            for (metric, v) in theirs {
                *mine.entry(*metric).or_insert(0) += *v;
            }
        }
    }

    /// A flow metric's sum over the period (0 for a stock metric).
    pub fn flow(&self, metric: Metric) -> i128 {
        self.flows.get(&metric).copied().unwrap_or(0)
    }

    /// A stock metric at the start of the period (0 for a flow metric).
    pub fn start(&self, metric: Metric) -> i128 {
        self.at_start.get(&metric).copied().unwrap_or(0)
    }

    /// A stock metric at the end of the period (0 for a flow metric).
    pub fn end(&self, metric: Metric) -> i128 {
        self.at_end.get(&metric).copied().unwrap_or(0)
    }

    /// [`Totals::flow`] of a metric that counts dossiers or events (not an amount), as `i64`
    /// (see [`count`]).
    pub fn flow_count(&self, metric: Metric) -> i64 {
        count(self.flow(metric))
    }

    /// [`Totals::start`] as a count (see [`count`]).
    pub fn start_count(&self, metric: Metric) -> i64 {
        count(self.start(metric))
    }

    /// [`Totals::end`] as a count (see [`count`]).
    pub fn end_count(&self, metric: Metric) -> i64 {
        count(self.end(metric))
    }
}

/// A count as `i64`. A count is a sum of at most one `±1` per dossier or event, so its
/// magnitude is at most the number of events in the log, whose positions are `i64`: it always
/// fits. A value outside `i64` means corrupt aggregates (`projection verify` lists them); it is
/// clamped to the nearest bound rather than wrapped.
pub(crate) fn count(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// Aggregated deltas per `(slice, date, metric)`, kept exact by applying [`crate::diff`]s: the
/// in-memory counterpart of the projection's tables. Zero entries are dropped, so two
/// aggregates holding the same figures are equal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregates {
    cells: BTreeMap<Slice, BTreeMap<(NaiveDate, Metric), i128>>,
}

impl Aggregates {
    pub fn new() -> Self {
        Aggregates::default()
    }

    /// Adds one delta.
    pub fn add(&mut self, slice: &Slice, date: NaiveDate, metric: Metric, delta: i128) {
        if delta == 0 {
            return;
        }
        let cells = self.cells.entry(slice.clone()).or_default();
        let v = cells.entry((date, metric)).or_insert(0);
        *v += delta;
        if *v == 0 {
            cells.remove(&(date, metric));
            if cells.is_empty() {
                self.cells.remove(slice);
            }
        }
    }

    /// Applies the output of [`crate::diff`].
    pub fn apply(&mut self, diff: &[(Slice, NaiveDate, Metric, i128)]) {
        for (slice, date, metric, delta) in diff {
            self.add(slice, *date, *metric, *delta);
        }
    }

    /// Adds a whole contribution.
    pub fn add_contribution(&mut self, contribution: &Contribution) {
        for ((date, metric), delta) in &contribution.deltas {
            self.add(&contribution.slice, *date, *metric, *delta);
        }
    }

    /// Every non-zero cell.
    pub fn cells(&self) -> impl Iterator<Item = (&Slice, NaiveDate, Metric, i128)> {
        self.cells.iter().flat_map(|(slice, cells)| {
            cells
                .iter()
                .map(move |((date, metric), v)| (slice, *date, *metric, *v))
        })
    }

    /// The figures of `[from, to)` over the slices `filter` keeps.
    pub fn totals(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        filter: impl Fn(&Slice) -> bool,
    ) -> Totals {
        let mut totals = Totals::empty(from, to);
        for (slice, cells) in &self.cells {
            if filter(slice) {
                for ((date, metric), v) in cells {
                    totals.add_delta(*date, *metric, *v);
                }
            }
        }
        totals
    }

    /// The figures of `[from, to)` over the slices `filter` keeps, one [`Totals`] per group
    /// `key` puts them in (a group appears when it has at least one cell).
    pub fn grouped<K: Ord>(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        filter: impl Fn(&Slice) -> bool,
        key: impl Fn(&Slice) -> K,
    ) -> BTreeMap<K, Totals> {
        let mut groups: BTreeMap<K, Totals> = BTreeMap::new();
        for (slice, cells) in &self.cells {
            if filter(slice) {
                let totals = groups
                    .entry(key(slice))
                    .or_insert_with(|| Totals::empty(from, to));
                for ((date, metric), v) in cells {
                    totals.add_delta(*date, *metric, *v);
                }
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_past_i64_stay_exact() {
        let slice = Slice {
            level: domain::Level::Province,
            agency: domain::AgencyCode::parse("H40").unwrap(),
            sector: domain::SectorCode::parse("land").unwrap(),
            procedure: domain::ProcedureCode::parse("1.001").unwrap(),
            channel: domain::Channel::Online,
            applicant_type: domain::ApplicantType::Citizen,
        };
        let day = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let mut aggregates = Aggregates::new();
        for _ in 0..10_000 {
            aggregates.add(
                &slice,
                day,
                Metric::PaymentAmountVnd,
                i128::from(domain::MAX_AMOUNT_VND),
            );
        }
        let totals = aggregates.totals(day, day.succ_opt().unwrap(), |_| true);
        let expected = 10_000 * i128::from(domain::MAX_AMOUNT_VND);
        assert!(expected > i128::from(i64::MAX));
        assert_eq!(totals.flow(Metric::PaymentAmountVnd), expected);
        let i = crate::indicators(&totals);
        assert_eq!(i.payment.amount_vnd, expected);
    }
}
