//! The indicators S1–S14 of `DOMAIN.md`, computed from [`Totals`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::metric::Metric;
use crate::totals::{Totals, count};

/// A rate reported with its numerator and denominator. Absent (no value) when the denominator
/// is 0: "absent, not 0% or 100%". Serialized as `{"numerator", "denominator", "percent"}`,
/// `percent` left out when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "RateRepr")]
pub struct Rate {
    pub numerator: i64,
    pub denominator: i64,
}

impl Rate {
    pub const fn new(numerator: i64, denominator: i64) -> Rate {
        Rate {
            numerator,
            denominator,
        }
    }

    /// The rate as a fraction (0.9958 for 99.58%), `None` when the denominator is 0.
    pub fn value(&self) -> Option<f64> {
        (self.denominator != 0).then(|| self.numerator as f64 / self.denominator as f64)
    }

    /// The rate in percent, `None` when the denominator is 0.
    pub fn percent(&self) -> Option<f64> {
        self.value().map(|v| v * 100.0)
    }

    /// Whether the rate reaches `percent` (e.g. `99.0`), `None` when the rate is absent.
    ///
    /// Exact: the threshold is taken to a hundredth of a percentage point (basis points) and
    /// compared in integers, `numerator × 10 000 ≥ basis points × denominator`, so 99/100
    /// reaches 99% and 100% means every one.
    pub fn at_least(&self, percent: f64) -> Option<bool> {
        if self.denominator == 0 {
            return None;
        }
        let basis_points = (percent * 100.0).round() as i128;
        let (n, d) = if self.denominator < 0 {
            (-i128::from(self.numerator), -i128::from(self.denominator))
        } else {
            (i128::from(self.numerator), i128::from(self.denominator))
        };
        Some(n * 10_000 >= basis_points * d)
    }
}

#[derive(Serialize)]
struct RateRepr {
    numerator: i64,
    denominator: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    percent: Option<f64>,
}

impl From<Rate> for RateRepr {
    fn from(r: Rate) -> Self {
        RateRepr {
            numerator: r.numerator,
            denominator: r.denominator,
            percent: r.percent(),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.percent() {
            Some(p) => write!(f, "{p:.2}% ({}/{})", self.numerator, self.denominator),
            None => write!(f, "absent (0/0)"),
        }
    }
}

/// S1: dossiers received in the period, by channel, and the carried-over ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReceivedFigures {
    /// Received in the period (online + direct + postal); the carried-over ones are apart.
    pub total: i64,
    pub online: i64,
    pub direct: i64,
    pub postal: i64,
    /// Pending at the period start: received before `from`, neither resolved nor ended before.
    pub carried_over: i64,
}

impl ReceivedFigures {
    /// Direct and postal together, as II.06a prints them.
    pub fn direct_and_postal(&self) -> i64 {
        self.direct + self.postal
    }

    /// Received in the period plus carried over: the "to be handled" total the provincial
    /// reports print as "received" (599,827 = 5,862 + 566,460 + 27,505 in Quảng Bình H1 2021).
    pub fn with_carried_over(&self) -> i64 {
        self.total + self.carried_over
    }
}

/// S2: dossiers resolved in the period, by timeliness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResolvedFigures {
    pub total: i64,
    pub early: i64,
    pub on_time: i64,
    pub late: i64,
}

/// S4: dossiers pending at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PendingFigures {
    pub total: i64,
    pub within_time: i64,
    pub overdue: i64,
}

/// Dossiers that ended without a result in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EndedFigures {
    pub total: i64,
    pub withdrawn: i64,
    pub stopped: i64,
}

/// S10: online submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineFigures {
    /// Received online / received.
    pub all: Rate,
    /// Within full-online procedures: received online / received.
    pub full_online: Rate,
    /// Within partial-online procedures: received online / received.
    pub partial_online: Rate,
    /// Full-online dossiers (full-online procedure, received online) / all received: the S14
    /// target "full-online dossiers ≥ 50% of all".
    pub full_online_of_all: Rate,
}

/// S11: online payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFigures {
    /// Received in the period with a fee assessed and paid online (at any time up to the
    /// query) / received in the period with a fee assessed.
    pub rate: Rate,
    /// Transactions in the period (by payment date), every channel.
    pub transactions: i64,
    /// Amount paid in the period, VND, every channel. `i128`: a sum of many payments can pass
    /// `i64` (counts cannot: see [`indicators`]).
    pub amount_vnd: i128,
    /// Online transactions in the period.
    pub online_transactions: i64,
    /// Amount paid online in the period, VND.
    pub online_amount_vnd: i128,
}

/// S12: satisfaction, by rating date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SatisfactionFigures {
    /// (very satisfied + satisfied) / ratings.
    pub rate: Rate,
    pub very_satisfied: i64,
    pub satisfied: i64,
    pub unsatisfied: i64,
}

/// The indicators S1–S13 of a period and a set of slices (S5 needs the other sectors:
/// [`late_shares`]; S14 is [`targets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indicators {
    /// S1.
    pub received: ReceivedFigures,
    /// S2.
    pub resolved: ResolvedFigures,
    /// S3: (early + on time) / resolved.
    pub on_time_rate: Rate,
    /// S4: pending at the period end.
    pub pending: PendingFigures,
    /// Pending at the period start, split the same way (its total is S1's carried over).
    pub pending_at_start: PendingFigures,
    /// Ended without a result in the period.
    pub ended: EndedFigures,
    /// Refused at the counter in the period (counted nowhere else).
    pub refused_at_intake: i64,
    /// S6: resolved late with an apology issued before the resolution / resolved late.
    pub apology_rate: Rate,
    /// S6, timely: resolved late with the apology issued on time (at least one day before the
    /// due time, as the apology recorded it) / resolved late — the habit the early warning
    /// serves.
    pub timely_apology_rate: Rate,
    /// S7: received with every submitted component digitized / received.
    pub components_digitized: Rate,
    /// S8: resolved with a digitized result / resolved.
    pub results_digitized: Rate,
    /// S9: received with at least one reused component / received.
    pub data_reuse: Rate,
    /// S10.
    pub online: OnlineFigures,
    /// S11.
    pub payment: PaymentFigures,
    /// S12.
    pub satisfaction: SatisfactionFigures,
    /// S13: received and moved between agencies electronically / received.
    pub electronic_transfer: Rate,
}

/// The figures of [`Totals`] as counts ([`Totals::flow_count`]); amounts are read from the
/// totals in their own width.
struct Counts<'a>(&'a Totals);

impl Counts<'_> {
    fn flow(&self, m: Metric) -> i64 {
        self.0.flow_count(m)
    }
    fn start(&self, m: Metric) -> i64 {
        self.0.start_count(m)
    }
    fn end(&self, m: Metric) -> i64 {
        self.0.end_count(m)
    }
}

/// Computes S1–S13 (S5 apart) from a period's totals.
pub fn indicators(totals: &Totals) -> Indicators {
    let t = &Counts(totals);
    let received = t.flow(Metric::Received);
    let resolved = t.flow(Metric::Resolved);
    let late = t.flow(Metric::ResolvedLate);
    let early = t.flow(Metric::ResolvedEarly);
    let on_time = t.flow(Metric::ResolvedOnTime);
    let very = t.flow(Metric::RatedVerySatisfied);
    let satisfied = t.flow(Metric::RatedSatisfied);
    let unsatisfied = t.flow(Metric::RatedUnsatisfied);
    Indicators {
        received: ReceivedFigures {
            total: received,
            online: t.flow(Metric::ReceivedOnline),
            direct: t.flow(Metric::ReceivedDirect),
            postal: t.flow(Metric::ReceivedPostal),
            carried_over: t.start(Metric::Pending),
        },
        resolved: ResolvedFigures {
            total: resolved,
            early,
            on_time,
            late,
        },
        on_time_rate: Rate::new(early + on_time, resolved),
        pending: PendingFigures {
            total: t.end(Metric::Pending),
            within_time: t.end(Metric::PendingWithinTime),
            overdue: t.end(Metric::PendingOverdue),
        },
        pending_at_start: PendingFigures {
            total: t.start(Metric::Pending),
            within_time: t.start(Metric::PendingWithinTime),
            overdue: t.start(Metric::PendingOverdue),
        },
        ended: EndedFigures {
            total: t.flow(Metric::Ended),
            withdrawn: t.flow(Metric::Withdrawn),
            stopped: t.flow(Metric::Stopped),
        },
        refused_at_intake: t.flow(Metric::RefusedAtIntake),
        apology_rate: Rate::new(t.flow(Metric::ResolvedLateWithApology), late),
        timely_apology_rate: Rate::new(t.flow(Metric::ResolvedLateWithTimelyApology), late),
        components_digitized: Rate::new(t.flow(Metric::ReceivedAllDigitized), received),
        results_digitized: Rate::new(t.flow(Metric::ResolvedResultDigitized), resolved),
        data_reuse: Rate::new(t.flow(Metric::ReceivedReused), received),
        online: OnlineFigures {
            all: Rate::new(t.flow(Metric::ReceivedOnline), received),
            full_online: Rate::new(
                t.flow(Metric::ReceivedFullOnlineOnline),
                t.flow(Metric::ReceivedFullOnline),
            ),
            partial_online: Rate::new(
                t.flow(Metric::ReceivedPartialOnlineOnline),
                t.flow(Metric::ReceivedPartialOnline),
            ),
            full_online_of_all: Rate::new(t.flow(Metric::ReceivedFullOnlineOnline), received),
        },
        payment: PaymentFigures {
            rate: Rate::new(
                t.flow(Metric::ReceivedWithFeePaidOnline),
                t.flow(Metric::ReceivedWithFee),
            ),
            transactions: t.flow(Metric::Payments),
            amount_vnd: totals.flow(Metric::PaymentAmountVnd),
            online_transactions: t.flow(Metric::PaymentsOnline),
            online_amount_vnd: totals.flow(Metric::PaymentAmountOnlineVnd),
        },
        satisfaction: SatisfactionFigures {
            rate: Rate::new(very + satisfied, very + satisfied + unsatisfied),
            very_satisfied: very,
            satisfied,
            unsatisfied,
        },
        electronic_transfer: Rate::new(t.flow(Metric::ReceivedElectronicTransfer), received),
    }
}

/// S5: each group's share of the late dossiers (resolved late in the period) of all the groups
/// given — typically one group per sector over the same period and filter.
pub fn late_shares<K: Ord + Clone>(groups: &BTreeMap<K, Totals>) -> BTreeMap<K, Rate> {
    let all: i128 = groups.values().map(|t| t.flow(Metric::ResolvedLate)).sum();
    groups
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                Rate::new(count(t.flow(Metric::ResolvedLate)), count(all)),
            )
        })
        .collect()
}

/// An identity between figures that does not hold: `left` should equal `right`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{identity} does not hold: {left} ≠ {right}")]
pub struct Violation {
    pub identity: &'static str,
    pub left: i64,
    pub right: i64,
}

impl Indicators {
    /// The identities every derived figure must satisfy, violated ones only (empty when all
    /// hold).
    pub fn check(&self) -> Vec<Violation> {
        let r = &self.received;
        let s = &self.resolved;
        let candidates = [
            (
                "received = online + direct + postal",
                r.total,
                r.online + r.direct + r.postal,
            ),
            (
                "resolved = early + on time + late",
                s.total,
                s.early + s.on_time + s.late,
            ),
            (
                "ended without result = withdrawn + stopped",
                self.ended.total,
                self.ended.withdrawn + self.ended.stopped,
            ),
            (
                "carried over = pending at period start",
                r.carried_over,
                self.pending_at_start.total,
            ),
            (
                "pending at end = carried over + received − resolved − ended without result",
                self.pending.total,
                r.carried_over + r.total - s.total - self.ended.total,
            ),
            (
                "pending = within time + overdue (period end)",
                self.pending.total,
                self.pending.within_time + self.pending.overdue,
            ),
            (
                "pending = within time + overdue (period start)",
                self.pending_at_start.total,
                self.pending_at_start.within_time + self.pending_at_start.overdue,
            ),
        ];
        candidates
            .into_iter()
            .filter(|(_, left, right)| left != right)
            .map(|(identity, left, right)| Violation {
                identity,
                left,
                right,
            })
            .collect()
    }
}

/// S14's targets, in percent. Every field may be left out of a configuration; the defaults are
/// those of `DOMAIN.md` (Resolution 76/NQ-CP).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Targets {
    /// S3 on-time rate; default 99.
    pub on_time: f64,
    /// Full-online dossiers of all received ([`OnlineFigures::full_online_of_all`]); default 50.
    pub online: f64,
    /// S11 online payment; default 30.
    pub online_payment: f64,
    /// S12 satisfaction; default 90.
    pub satisfaction: f64,
    /// S6 apology rate; default 100.
    pub apology: f64,
    /// S6 with the apology on time; default 100.
    pub timely_apology: f64,
    /// S7 components digitized at intake; default 100.
    pub components_digitized: f64,
    /// S8 results digitized; default 100.
    pub results_digitized: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Targets {
            on_time: 99.0,
            online: 50.0,
            online_payment: 30.0,
            satisfaction: 90.0,
            apology: 100.0,
            timely_apology: 100.0,
            components_digitized: 100.0,
            results_digitized: 100.0,
        }
    }
}

/// One rate against its target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TargetCheck {
    /// The target's name, as in [`Targets`].
    pub id: &'static str,
    pub rate: Rate,
    /// In percent.
    pub target: f64,
    /// Whether the rate reaches the target ([`Rate::at_least`]); `None` when the rate is absent.
    pub met: Option<bool>,
}

/// S14: each rate against its target, in the order of [`Targets`]' fields.
pub fn targets(i: &Indicators, targets: &Targets) -> Vec<TargetCheck> {
    [
        ("on_time", i.on_time_rate, targets.on_time),
        ("online", i.online.full_online_of_all, targets.online),
        ("online_payment", i.payment.rate, targets.online_payment),
        ("satisfaction", i.satisfaction.rate, targets.satisfaction),
        ("apology", i.apology_rate, targets.apology),
        (
            "timely_apology",
            i.timely_apology_rate,
            targets.timely_apology,
        ),
        (
            "components_digitized",
            i.components_digitized,
            targets.components_digitized,
        ),
        (
            "results_digitized",
            i.results_digitized,
            targets.results_digitized,
        ),
    ]
    .into_iter()
    .map(|(id, rate, target)| TargetCheck {
        id,
        rate,
        target,
        met: rate.at_least(target),
    })
    .collect()
}
