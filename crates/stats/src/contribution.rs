//! One dossier's contribution to the statistics, and the difference between two of them.

use std::collections::{BTreeMap, BTreeSet};

use calendar::{Timeliness, local_date};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use domain::{
    Channel, ComponentCode, DossierEvent, Event, OnlineServiceLevel, Rating, TransferMode,
};
use serde::{Deserialize, Serialize};

use crate::metric::{Metric, Slice};
use crate::start_of_day;

/// What one dossier adds to the aggregates: its slice, and for each `(local date, metric)` the
/// amount it adds (flows: `+1`, or an amount in VND, on the date of the deciding event; stocks:
/// the change of the stock's value from the start of that day on).
///
/// Serialized as `{"slice": …, "deltas": [[date, metric, delta], …]}` so that it can be stored
/// as JSON beside the aggregates. Deltas are `i128`, like every sum in this crate (see the crate
/// docs): JSON numbers have no width, so a delta beyond `i64` is written and read exactly by
/// `serde_json` (not through `serde_json::Value`, which holds at most 64 bits).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ContributionRepr")]
pub struct Contribution {
    pub slice: Slice,
    /// Never holds a zero.
    pub deltas: BTreeMap<(NaiveDate, Metric), i128>,
}

#[derive(Deserialize)]
struct ContributionRepr {
    slice: Slice,
    deltas: Vec<(NaiveDate, Metric, i128)>,
}

/// The same form as [`ContributionRepr`], written from a borrowed contribution: serializing
/// clones nothing (the rebuild writes one per dossier, apply one per dossier and message).
#[derive(Serialize)]
struct ContributionReprRef<'a> {
    slice: &'a Slice,
    deltas: DeltasRef<'a>,
}

/// The deltas as a sequence of `[date, metric, delta]`, in key order.
struct DeltasRef<'a>(&'a BTreeMap<(NaiveDate, Metric), i128>);

impl Serialize for DeltasRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|((d, m), v)| (DateText(*d), m, v)))
    }
}

/// A date serialized as chrono serializes it, `YYYY-MM-DD` for the years 0 to 9999 written from
/// a buffer of its own (other years by chrono): chrono's goes through `fmt` one character at a
/// time (about 5 % of a rebuild's CPU while it read the log: a date per delta).
struct DateText(NaiveDate);

impl Serialize for DateText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let date = self.0;
        let Ok(year) = u32::try_from(date.year()) else {
            return date.serialize(serializer);
        };
        if year > 9999 {
            return date.serialize(serializer);
        }
        let mut text = *b"0000-00-00";
        for (at, value, width) in [(0, year, 4), (5, date.month(), 2), (8, date.day(), 2)] {
            let mut value = value;
            for i in (at..at + width).rev() {
                text[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        serializer.serialize_str(std::str::from_utf8(&text).expect("ASCII digits"))
    }
}

impl Serialize for Contribution {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ContributionReprRef {
            slice: &self.slice,
            deltas: DeltasRef(&self.deltas),
        }
        .serialize(serializer)
    }
}

impl From<ContributionRepr> for Contribution {
    fn from(r: ContributionRepr) -> Self {
        let mut deltas = BTreeMap::new();
        for (d, m, v) in r.deltas {
            add(&mut deltas, d, m, v);
        }
        Contribution {
            slice: r.slice,
            deltas,
        }
    }
}

impl Contribution {
    /// The delta of `metric` on `date` (0 when absent).
    pub fn get(&self, date: NaiveDate, metric: Metric) -> i128 {
        self.deltas.get(&(date, metric)).copied().unwrap_or(0)
    }
}

fn add(
    deltas: &mut BTreeMap<(NaiveDate, Metric), i128>,
    date: NaiveDate,
    metric: Metric,
    v: impl Into<i128>,
) {
    let v: i128 = v.into();
    if v == 0 {
        return;
    }
    let entry = deltas.entry((date, metric)).or_insert(0);
    // Exact: see the crate docs on why no sum of deltas reaches `i128`'s range.
    *entry += v;
    if *entry == 0 {
        deltas.remove(&(date, metric));
    }
}

/// The contribution of one dossier, from its events in version order; `None` when no event
/// carries a profile (nothing received or refused at the counter is known yet).
///
/// The log is trusted, as [`domain::Dossier::evolve`] trusts it, with these readings:
/// - the first `received` or `refused_at_intake` event decides what the dossier is; a refused
///   dossier counts only in [`Metric::RefusedAtIntake`], whatever else the log holds;
/// - the first resolution, withdrawal or stop closes the dossier; later ones are ignored;
/// - every other event's business time is taken as at least the reception time (a no-op for
///   events [`domain::decide()`] accepted: it refuses anything dated before the reception), so that
///   the balance `pending = carried over + received − resolved − ended` holds for any log;
/// - the stock figures at an instant `T` look at the events that happened before `T`, in the
///   order of their business time (ties in log order): the due time in force is the one set
///   last (reception, received supplement or fulfilled financial obligation), the dossier is
///   paused when the last pause step is a supplement request or a financial obligation that
///   stops the clock.
pub fn contribution(events: &[Event]) -> Option<Contribution> {
    let (first_index, first) = events.iter().enumerate().find(|(_, e)| {
        matches!(
            e.body,
            DossierEvent::Received { .. } | DossierEvent::RefusedAtIntake { .. }
        )
    })?;
    let mut deltas = BTreeMap::new();
    let slice = match &first.body {
        DossierEvent::RefusedAtIntake { profile, .. } => {
            add(
                &mut deltas,
                local_date(first.occurred_at),
                Metric::RefusedAtIntake,
                1,
            );
            Slice::of(profile)
        }
        DossierEvent::Received {
            profile,
            components,
            due_at,
            ..
        } => {
            let others = events
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != first_index)
                .map(|(_, e)| e);
            let facts = Facts::gather(
                first.occurred_at,
                *due_at,
                profile.online_level,
                profile.channel,
                components,
                others,
            );
            facts.flows(&mut deltas);
            facts.stocks(&mut deltas);
            Slice::of(profile)
        }
        _ => return None,
    };
    Some(Contribution { slice, deltas })
}

/// How a received dossier was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Resolved(Timeliness),
    Withdrawn,
    Stopped,
}

/// A change to what the stock figures look at, at a business time.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// The due time in force becomes this one (reception).
    Due(DateTime<Utc>),
    /// A supplement was requested: the clock stops.
    Pause,
    /// The supplement arrived: the clock restarts with this due time.
    Resume(DateTime<Utc>),
    /// A financial obligation that stops the clock was requested (not a supplement request).
    Hold,
}

/// What a received dossier's events say, with business times at least the reception time.
#[derive(Debug)]
struct Facts {
    received_at: DateTime<Utc>,
    online_level: OnlineServiceLevel,
    channel: Channel,
    all_digitized: bool,
    any_reused: bool,
    electronic_transfer: bool,
    fee_assessed: bool,
    paid_online: bool,
    result_digitized: bool,
    /// Number of supplement requests in the whole log.
    supplement_requests: usize,
    apology_at: Option<DateTime<Utc>>,
    /// Whether that apology was on time (its recorded flag).
    apology_on_time: bool,
    closing: Option<(DateTime<Utc>, Closing)>,
    /// (time, online, amount) per payment.
    payments: Vec<(DateTime<Utc>, bool, i64)>,
    ratings: Vec<(DateTime<Utc>, Rating)>,
    /// Stock-relevant steps sorted by (time, log order).
    steps: Vec<(DateTime<Utc>, Step)>,
    /// Every business time seen: the stock values only change at the first day boundary after
    /// one of these, or after a due time.
    times: Vec<DateTime<Utc>>,
}

impl Facts {
    fn gather<'a>(
        received_at: DateTime<Utc>,
        due_at: DateTime<Utc>,
        online_level: OnlineServiceLevel,
        channel: Channel,
        components: &[ComponentCode],
        others: impl Iterator<Item = &'a Event>,
    ) -> Facts {
        let mut facts = Facts {
            received_at,
            online_level,
            channel,
            all_digitized: false,
            any_reused: false,
            electronic_transfer: false,
            fee_assessed: false,
            paid_online: false,
            result_digitized: false,
            supplement_requests: 0,
            apology_at: None,
            apology_on_time: false,
            closing: None,
            payments: Vec::new(),
            ratings: Vec::new(),
            steps: vec![(received_at, Step::Due(due_at))],
            times: vec![received_at, due_at],
        };
        let mut electronic: BTreeSet<&ComponentCode> = BTreeSet::new();
        for event in others {
            let at = event.occurred_at.max(received_at);
            facts.times.push(at);
            match &event.body {
                DossierEvent::ComponentsDigitized { digitized, reused } => {
                    electronic.extend(digitized.iter().chain(reused));
                    facts.any_reused |= !reused.is_empty();
                }
                DossierEvent::Transferred { mode, .. } => {
                    facts.electronic_transfer |= *mode == TransferMode::Electronic;
                }
                DossierEvent::SupplementRequested { .. } => {
                    facts.supplement_requests += 1;
                    facts.steps.push((at, Step::Pause));
                }
                DossierEvent::SupplementReceived { due_at, .. } => {
                    facts.times.push(*due_at);
                    facts.steps.push((at, Step::Resume(*due_at)));
                }
                DossierEvent::ApologyIssued { on_time, .. } => {
                    if facts.apology_at.is_none() {
                        facts.apology_at = Some(at);
                        facts.apology_on_time = *on_time;
                    }
                }
                DossierEvent::FinancialObligationRequested { pauses_clock, .. } => {
                    if *pauses_clock {
                        facts.steps.push((at, Step::Hold));
                    }
                }
                DossierEvent::FinancialObligationFulfilled { due_at, .. } => {
                    facts.times.push(*due_at);
                    facts.steps.push((at, Step::Resume(*due_at)));
                }
                DossierEvent::FeeAssessed { .. } => facts.fee_assessed = true,
                DossierEvent::Paid {
                    amount_vnd,
                    channel,
                    ..
                } => {
                    facts.paid_online |= channel.is_online();
                    facts.payments.push((at, channel.is_online(), *amount_vnd));
                }
                DossierEvent::Resolved { timeliness, .. } => {
                    facts
                        .closing
                        .get_or_insert((at, Closing::Resolved(*timeliness)));
                }
                DossierEvent::Withdrawn { .. } => {
                    facts.closing.get_or_insert((at, Closing::Withdrawn));
                }
                DossierEvent::Stopped { .. } => {
                    facts.closing.get_or_insert((at, Closing::Stopped));
                }
                DossierEvent::ResultDigitized { .. } => facts.result_digitized = true,
                DossierEvent::SatisfactionRated { rating } => facts.ratings.push((at, *rating)),
                // The statistics judge by business time: neither the watcher's mark nor its
                // withdrawal changes a figure.
                DossierEvent::Received { .. }
                | DossierEvent::RefusedAtIntake { .. }
                | DossierEvent::Late { .. }
                | DossierEvent::LateWithdrawn { .. }
                | DossierEvent::ResultReturned { .. } => {}
            }
        }
        // A component reused from a database was not submitted on paper: "every submitted
        // component digitized" means every component is digitized or reused.
        facts.all_digitized = components.iter().all(|c| electronic.contains(c));
        // Stable: equal times keep log order.
        facts.steps.sort_by_key(|(at, _)| *at);
        facts
    }

    fn flows(&self, deltas: &mut BTreeMap<(NaiveDate, Metric), i128>) {
        let day = local_date(self.received_at);
        let mut count = |m: Metric, yes: bool| add(deltas, day, m, i64::from(yes));
        count(Metric::Received, true);
        count(Metric::ReceivedOnline, self.channel == Channel::Online);
        count(Metric::ReceivedDirect, self.channel == Channel::Direct);
        count(Metric::ReceivedPostal, self.channel == Channel::Postal);
        count(Metric::ReceivedAllDigitized, self.all_digitized);
        count(Metric::ReceivedReused, self.any_reused);
        let full = self.online_level == OnlineServiceLevel::FullOnline;
        let partial = self.online_level == OnlineServiceLevel::PartialOnline;
        let online = self.channel == Channel::Online;
        count(Metric::ReceivedFullOnline, full);
        count(Metric::ReceivedFullOnlineOnline, full && online);
        count(Metric::ReceivedPartialOnline, partial);
        count(Metric::ReceivedPartialOnlineOnline, partial && online);
        count(Metric::ReceivedElectronicTransfer, self.electronic_transfer);
        count(Metric::ReceivedWithFee, self.fee_assessed);
        count(
            Metric::ReceivedWithFeePaidOnline,
            self.fee_assessed && self.paid_online,
        );

        if let Some((at, closing)) = self.closing {
            let day = local_date(at);
            let mut count = |m: Metric, yes: bool| add(deltas, day, m, i64::from(yes));
            match closing {
                Closing::Resolved(timeliness) => {
                    let minutes = (at - self.received_at).num_minutes();
                    add(deltas, day, Metric::ResolvedProcessingMinutes, minutes);
                    let mut count = |m: Metric, yes: bool| add(deltas, day, m, i64::from(yes));
                    count(Metric::Resolved, true);
                    count(Metric::ResolvedEarly, timeliness == Timeliness::Early);
                    count(Metric::ResolvedOnTime, timeliness == Timeliness::OnTime);
                    count(Metric::ResolvedLate, timeliness == Timeliness::Late);
                    let late_with_apology =
                        timeliness == Timeliness::Late && self.apology_at.is_some_and(|a| a < at);
                    count(Metric::ResolvedLateWithApology, late_with_apology);
                    count(
                        Metric::ResolvedLateWithTimelyApology,
                        late_with_apology && self.apology_on_time,
                    );
                    count(Metric::ResolvedResultDigitized, self.result_digitized);
                    count(
                        Metric::Resolved766InTime,
                        timeliness != Timeliness::Late && self.supplement_requests < 2,
                    );
                }
                Closing::Withdrawn => {
                    count(Metric::Ended, true);
                    count(Metric::Withdrawn, true);
                }
                Closing::Stopped => {
                    count(Metric::Ended, true);
                    count(Metric::Stopped, true);
                }
            }
        }

        for (at, online, amount) in &self.payments {
            let day = local_date(*at);
            add(deltas, day, Metric::Payments, 1);
            add(deltas, day, Metric::PaymentAmountVnd, *amount);
            if *online {
                add(deltas, day, Metric::PaymentsOnline, 1);
                add(deltas, day, Metric::PaymentAmountOnlineVnd, *amount);
            }
        }
        for (at, rating) in &self.ratings {
            let metric = match rating {
                Rating::VerySatisfied => Metric::RatedVerySatisfied,
                Rating::Satisfied => Metric::RatedSatisfied,
                Rating::Unsatisfied => Metric::RatedUnsatisfied,
            };
            add(deltas, local_date(*at), metric, 1);
        }
    }

    /// The stocks' values at the instant `t`, in the order of [`STOCKS`].
    fn stocks_at(&self, t: DateTime<Utc>) -> [i64; 4] {
        let pending = self.received_at < t && self.closing.is_none_or(|(at, _)| at >= t);
        if !pending {
            return [0; 4];
        }
        let mut due = self.received_at;
        let mut paused = false;
        let mut requests = 0usize;
        for (_, step) in self.steps.iter().take_while(|(at, _)| *at < t) {
            match step {
                Step::Due(d) => due = *d,
                Step::Pause => {
                    paused = true;
                    requests += 1;
                }
                Step::Hold => paused = true,
                Step::Resume(d) => {
                    paused = false;
                    due = *d;
                }
            }
        }
        let within = paused || due >= t;
        [
            1,
            i64::from(within),
            i64::from(!within),
            i64::from(within && requests < 2),
        ]
    }

    /// The stocks as deltas on the days their value changes. The value at the start of a day
    /// depends only on which business times and due times lie before that instant, so it can
    /// change only at the first day boundary after one of them: evaluating it there is the same
    /// as evaluating it at every day boundary.
    fn stocks(&self, deltas: &mut BTreeMap<(NaiveDate, Metric), i128>) {
        let days: BTreeSet<NaiveDate> = self
            .times
            .iter()
            .filter_map(|t| local_date(*t).succ_opt())
            .collect();
        let mut previous = [0i64; 4];
        for day in days {
            let Some(start) = start_of_day(day) else {
                continue;
            };
            let value = self.stocks_at(start);
            for (i, metric) in STOCKS.iter().enumerate() {
                add(deltas, day, *metric, value[i] - previous[i]);
            }
            previous = value;
        }
    }
}

/// The stock metrics in the order [`Facts::stocks_at`] returns them.
const STOCKS: [Metric; 4] = [
    Metric::Pending,
    Metric::PendingWithinTime,
    Metric::PendingOverdue,
    Metric::Pending766WithinTime,
];

/// What to add to the aggregates when a dossier's contribution changes from `old` to `new`:
/// `new − old` per `(slice, date, metric)`, without zero entries, sorted.
pub fn diff(
    old: Option<&Contribution>,
    new: Option<&Contribution>,
) -> Vec<(Slice, NaiveDate, Metric, i128)> {
    let mut sum: BTreeMap<(&Slice, NaiveDate, Metric), i128> = BTreeMap::new();
    for (sign, c) in [(-1i128, old), (1, new)] {
        let Some(c) = c else { continue };
        for ((date, metric), v) in &c.deltas {
            let entry = sum.entry((&c.slice, *date, *metric)).or_insert(0);
            *entry += sign * *v;
        }
    }
    sum.into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|((slice, date, metric), v)| (slice.clone(), date, metric, v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_written_as_chrono_writes_them() {
        let years = (0..=2)
            .chain(998..=1001)
            .chain(1999..=2001)
            .chain(9998..=10001);
        let mut dates: Vec<NaiveDate> = years
            .flat_map(|y| {
                let first = NaiveDate::from_ymd_opt(y, 1, 1).expect("a year");
                first.iter_days().take_while(move |d| d.year() == y)
            })
            .collect();
        dates.extend([NaiveDate::MIN, NaiveDate::MAX]);
        dates.extend([-1, -10_000].map(|y| NaiveDate::from_ymd_opt(y, 12, 31).expect("a year")));
        for date in dates {
            assert_eq!(
                serde_json::to_string(&DateText(date)).expect("serializes"),
                serde_json::to_string(&date).expect("serializes"),
            );
        }
    }
}
