//! The oracle of the model tests: the indicators recomputed plainly from raw dossier events,
//! following `shared/DOMAIN.md`'s wording line by line, without any helper of the `stats`
//! crate (only its result types, to compare with). `stats`' own model test and the end-to-end
//! model test through the real services both compare with it, so a misreading would have to be
//! made twice, differently, to go unnoticed.
//!
//! Deliberately slow and simple: every figure re-scans every dossier's events.

mod rules;
pub mod structure;

pub use rules::rule_violations;
pub use structure::{Reform, counted_under, level_exists};

use calendar::Timeliness;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use domain::{
    Channel, DossierEvent, Event, OnlineServiceLevel, PaymentChannel, Profile, Rating, TransferMode,
};
use stats::{
    EndedFigures, Indicators, OnlineFigures, PaymentFigures, PendingFigures, Rate, ReceivedFigures,
    ResolvedFigures, SatisfactionFigures,
};

/// The local (UTC+7) date of an instant.
pub fn day_of(t: DateTime<Utc>) -> NaiveDate {
    (t + Duration::hours(7)).date_naive()
}

/// `d` 00:00 local, as an instant.
pub fn start_of(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).expect("midnight").and_utc() - Duration::hours(7)
}

#[derive(Debug, Default)]
struct Counts {
    refused: i64,
    received: i64,
    online: i64,
    direct: i64,
    postal: i64,
    carried_over: i64,
    resolved: i64,
    early: i64,
    on_time: i64,
    late: i64,
    late_with_apology: i64,
    late_with_timely_apology: i64,
    withdrawn: i64,
    stopped: i64,
    all_digitized: i64,
    reused: i64,
    full: i64,
    full_online: i64,
    partial: i64,
    partial_online: i64,
    e_transfer: i64,
    result_digitized: i64,
    with_fee: i64,
    with_fee_paid_online: i64,
    payments: i64,
    amount: i128,
    payments_online: i64,
    amount_online: i128,
    very: i64,
    satisfied: i64,
    unsatisfied: i64,
    in_time_766: i64,
    start: [i64; 4],
    end: [i64; 4],
}

/// Pending, within time, overdue, 766 within time of one dossier at the instant `t`:
/// pending when received before `t` and neither resolved nor ended before `t`; within time when
/// the due time in force at `t` is at or after `t` (set by reception, a received supplement or a
/// fulfilled financial obligation), or when it is paused for a supplement or a financial
/// obligation that stops the clock at
/// `t`; for 766, also fewer than two supplement requests before `t`. "In force at `t`" and
/// "paused at `t`" look at what happened before `t`, in business-time order.
pub fn naive_stocks(events: &[Event], t: DateTime<Utc>) -> [i64; 4] {
    let DossierEvent::Received { due_at, .. } = &events[0].body else {
        return [0; 4];
    };
    if events[0].occurred_at >= t {
        return [0; 4];
    }
    let closed_before = events.iter().any(|e| {
        e.occurred_at < t
            && matches!(
                e.body,
                DossierEvent::Resolved { .. }
                    | DossierEvent::Withdrawn { .. }
                    | DossierEvent::Stopped { .. }
            )
    });
    if closed_before {
        return [0; 4];
    }
    let mut before: Vec<&Event> = events.iter().filter(|e| e.occurred_at < t).collect();
    before.sort_by_key(|e| e.occurred_at);
    let mut due = *due_at;
    let mut paused = false;
    let mut requests = 0;
    for e in before {
        match &e.body {
            DossierEvent::SupplementRequested { .. } => {
                paused = true;
                requests += 1;
            }
            DossierEvent::FinancialObligationRequested {
                pauses_clock: true, ..
            } => paused = true,
            DossierEvent::SupplementReceived { due_at, .. }
            | DossierEvent::FinancialObligationFulfilled { due_at, .. } => {
                paused = false;
                due = *due_at;
            }
            _ => {}
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

/// A dossier's resolution: when, and how it compares with the due time in force when it was
/// decided (the last due time set before it in the log: reception, received supplement or
/// fulfilled financial obligation, never the apology's appointment): late when after it, early when on an earlier local date, else on
/// time. `None` while unresolved.
pub fn resolution(events: &[Event]) -> Option<(DateTime<Utc>, Timeliness)> {
    let k = events
        .iter()
        .position(|e| matches!(e.body, DossierEvent::Resolved { .. }))?;
    let resolved_at = events[k].occurred_at;
    let due = events[..k].iter().rev().find_map(|e| match &e.body {
        DossierEvent::Received { due_at, .. }
        | DossierEvent::SupplementReceived { due_at, .. }
        | DossierEvent::FinancialObligationFulfilled { due_at, .. } => Some(*due_at),
        _ => None,
    })?;
    let timeliness = if resolved_at > due {
        Timeliness::Late
    } else if day_of(resolved_at) < day_of(due) {
        Timeliness::Early
    } else {
        Timeliness::OnTime
    };
    Some((resolved_at, timeliness))
}

/// What a dossier's status and timeline must show about lateness, from DOMAIN.md's wording:
/// the deadline watcher's mark stands unless the resolution, judged by business time, was not
/// late (an offline counter's resolution dated before the due time arrived after the mark);
/// then it is withdrawn, and the resolution's timeliness is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatenessView {
    pub late_marked: bool,
    pub late_withdrawn: bool,
    pub timeliness: Option<Timeliness>,
}

pub fn lateness(events: &[Event]) -> LatenessView {
    let marked = events
        .iter()
        .any(|e| matches!(e.body, DossierEvent::Late { .. }));
    let timeliness = resolution(events).map(|(_, t)| t);
    let contradicted = marked && timeliness.is_some_and(|t| t != Timeliness::Late);
    LatenessView {
        late_marked: marked && !contradicted,
        late_withdrawn: contradicted,
        timeliness,
    }
}

/// The indicators of `[from, to)` over the dossiers whose profile `keep` keeps, and the 766
/// on-time progress. Every dossier's events are in version order and start with its reception
/// or its refusal at the counter.
pub fn indicators(
    dossiers: &[Vec<Event>],
    from: NaiveDate,
    to: NaiveDate,
    keep: impl Fn(&Profile) -> bool,
) -> (Indicators, Rate) {
    let mut n = Counts::default();
    let in_period = |t: DateTime<Utc>| from <= day_of(t) && day_of(t) < to;
    for events in dossiers {
        let (at, profile) = match &events[0].body {
            DossierEvent::Received { profile, .. } => (events[0].occurred_at, profile),
            DossierEvent::RefusedAtIntake { profile, .. } => {
                if keep(profile) && in_period(events[0].occurred_at) {
                    n.refused += 1;
                }
                continue;
            }
            other => panic!("a generated life starts with its reception, not {other:?}"),
        };
        if !keep(profile) {
            continue;
        }
        let DossierEvent::Received { components, .. } = &events[0].body else {
            unreachable!()
        };
        if in_period(at) {
            n.received += 1;
            match profile.channel {
                Channel::Online => n.online += 1,
                Channel::Direct => n.direct += 1,
                Channel::Postal => n.postal += 1,
            }
            let online = profile.channel == Channel::Online;
            match profile.online_level {
                OnlineServiceLevel::FullOnline => {
                    n.full += 1;
                    n.full_online += i64::from(online);
                }
                OnlineServiceLevel::PartialOnline => {
                    n.partial += 1;
                    n.partial_online += i64::from(online);
                }
                OnlineServiceLevel::NotOnline => {}
            }
            let every_component_electronic = components.iter().all(|c| {
                events.iter().any(|e| match &e.body {
                    DossierEvent::ComponentsDigitized { digitized, reused } => {
                        digitized.contains(c) || reused.contains(c)
                    }
                    _ => false,
                })
            });
            n.all_digitized += i64::from(every_component_electronic);
            n.reused += i64::from(events.iter().any(|e| {
                matches!(&e.body, DossierEvent::ComponentsDigitized { reused, .. } if !reused.is_empty())
            }));
            n.e_transfer += i64::from(events.iter().any(|e| {
                matches!(
                    e.body,
                    DossierEvent::Transferred {
                        mode: TransferMode::Electronic,
                        ..
                    }
                )
            }));
            let fee = events
                .iter()
                .any(|e| matches!(e.body, DossierEvent::FeeAssessed { .. }));
            let paid_online = events.iter().any(|e| {
                matches!(&e.body, DossierEvent::Paid { channel, .. }
                    if matches!(channel, PaymentChannel::NationalPlatform | PaymentChannel::ProvincialGateway))
            });
            n.with_fee += i64::from(fee);
            n.with_fee_paid_online += i64::from(fee && paid_online);
        }

        if let Some((resolved_at, timeliness)) = resolution(events)
            && in_period(resolved_at)
        {
            n.resolved += 1;
            let late = timeliness == Timeliness::Late;
            match timeliness {
                Timeliness::Late => {
                    n.late += 1;
                    let apology_before = events.iter().any(|e| {
                        matches!(e.body, DossierEvent::ApologyIssued { .. })
                            && e.occurred_at < resolved_at
                    });
                    n.late_with_apology += i64::from(apology_before);
                    // The apology is at most once; "on time" is what it recorded when issued.
                    let timely_before = events.iter().any(|e| {
                        matches!(e.body, DossierEvent::ApologyIssued { on_time: true, .. })
                            && e.occurred_at < resolved_at
                    });
                    n.late_with_timely_apology += i64::from(timely_before);
                }
                Timeliness::Early => n.early += 1,
                Timeliness::OnTime => n.on_time += 1,
            }
            let requests = events
                .iter()
                .filter(|e| matches!(e.body, DossierEvent::SupplementRequested { .. }))
                .count();
            n.in_time_766 += i64::from(!late && requests < 2);
            n.result_digitized += i64::from(
                events
                    .iter()
                    .any(|e| matches!(e.body, DossierEvent::ResultDigitized { .. })),
            );
        }
        for e in events {
            if !in_period(e.occurred_at) {
                continue;
            }
            match &e.body {
                DossierEvent::Withdrawn { .. } => n.withdrawn += 1,
                DossierEvent::Stopped { .. } => n.stopped += 1,
                DossierEvent::Paid {
                    amount_vnd,
                    channel,
                    ..
                } => {
                    n.payments += 1;
                    n.amount += i128::from(*amount_vnd);
                    if *channel != PaymentChannel::Counter {
                        n.payments_online += 1;
                        n.amount_online += i128::from(*amount_vnd);
                    }
                }
                DossierEvent::SatisfactionRated { rating } => match rating {
                    Rating::VerySatisfied => n.very += 1,
                    Rating::Satisfied => n.satisfied += 1,
                    Rating::Unsatisfied => n.unsatisfied += 1,
                },
                _ => {}
            }
        }
        for (i, v) in naive_stocks(events, start_of(from)).into_iter().enumerate() {
            n.start[i] += v;
        }
        for (i, v) in naive_stocks(events, start_of(to)).into_iter().enumerate() {
            n.end[i] += v;
        }
    }
    n.carried_over = n.start[0];
    let r = |a, b| Rate {
        numerator: a,
        denominator: b,
    };
    let ended = n.withdrawn + n.stopped;
    let indicators = Indicators {
        received: ReceivedFigures {
            total: n.received,
            online: n.online,
            direct: n.direct,
            postal: n.postal,
            carried_over: n.carried_over,
        },
        resolved: ResolvedFigures {
            total: n.resolved,
            early: n.early,
            on_time: n.on_time,
            late: n.late,
        },
        on_time_rate: r(n.early + n.on_time, n.resolved),
        pending: PendingFigures {
            total: n.end[0],
            within_time: n.end[1],
            overdue: n.end[2],
        },
        pending_at_start: PendingFigures {
            total: n.start[0],
            within_time: n.start[1],
            overdue: n.start[2],
        },
        ended: EndedFigures {
            total: ended,
            withdrawn: n.withdrawn,
            stopped: n.stopped,
        },
        refused_at_intake: n.refused,
        apology_rate: r(n.late_with_apology, n.late),
        timely_apology_rate: r(n.late_with_timely_apology, n.late),
        components_digitized: r(n.all_digitized, n.received),
        results_digitized: r(n.result_digitized, n.resolved),
        data_reuse: r(n.reused, n.received),
        online: OnlineFigures {
            all: r(n.online, n.received),
            full_online: r(n.full_online, n.full),
            partial_online: r(n.partial_online, n.partial),
            full_online_of_all: r(n.full_online, n.received),
        },
        payment: PaymentFigures {
            rate: r(n.with_fee_paid_online, n.with_fee),
            transactions: n.payments,
            amount_vnd: n.amount,
            online_transactions: n.payments_online,
            online_amount_vnd: n.amount_online,
        },
        satisfaction: SatisfactionFigures {
            rate: r(n.very + n.satisfied, n.very + n.satisfied + n.unsatisfied),
            very_satisfied: n.very,
            satisfied: n.satisfied,
            unsatisfied: n.unsatisfied,
        },
        electronic_transfer: r(n.e_transfer, n.received),
    };
    let progress_766 = r(n.in_time_766 + n.end[3], n.resolved + n.end[0]);
    (indicators, progress_766)
}

/// The average processing time the 766 scorecard reports (README, "The 766 index in points"):
/// over the dossiers `keep` keeps that were resolved in `[from, to)`, how many, and the whole
/// minutes from reception to resolution (business times, the calendar's clock, not working
/// time; the seconds of each dossier dropped) added up. The mean in hours is
/// `minutes / 60 / count`.
pub fn processing_minutes(
    dossiers: &[Vec<Event>],
    from: NaiveDate,
    to: NaiveDate,
    keep: impl Fn(&Profile) -> bool,
) -> (i64, i64) {
    let mut count = 0;
    let mut minutes = 0;
    for events in dossiers {
        let DossierEvent::Received { profile, .. } = &events[0].body else {
            continue;
        };
        if !keep(profile) {
            continue;
        }
        if let Some((resolved_at, _)) = resolution(events) {
            let day = day_of(resolved_at);
            if from <= day && day < to {
                count += 1;
                minutes += (resolved_at - events[0].occurred_at)
                    .num_seconds()
                    .div_euclid(60);
            }
        }
    }
    (count, minutes)
}

/// The 766 points (hundredths) of the sub-indicators the events give, recomputed plainly from
/// the rates, as `deploy/config/scorecard-766.toml`'s first version reads DOMAIN.md ("The 766
/// index in points"): `None` when the rate has no denominator (no dossiers to judge).
pub fn points_766(i: &Indicators, progress_766: Rate) -> Vec<(&'static str, Option<i64>)> {
    // max × n / d in hundredths, half up: floor((200·max·n + d) / 2d).
    let share = |max: i64, r: Rate| {
        (r.denominator > 0).then(|| (200 * max * r.numerator + r.denominator) / (2 * r.denominator))
    };
    // max when n / d ≥ at %, else below.
    let reach = |max: i64, below: i64, at: i64, r: Rate| {
        (r.denominator > 0).then(|| {
            if 100 * r.numerator >= at * r.denominator {
                100 * max
            } else {
                100 * below
            }
        })
    };
    vec![
        ("tdgq_progress", share(20, progress_766)),
        ("clgq_online_submission", reach(6, 3, 50, i.online.all)),
        ("tttt_paid_online", reach(6, 0, 30, i.payment.rate)),
        ("mdhl_satisfaction", reach(6, 0, 90, i.satisfaction.rate)),
        ("mdsh_results_digitized", share(6, i.results_digitized)),
        (
            "mdsh_dossiers_digitized",
            reach(4, 0, 80, i.components_digitized),
        ),
        ("mdsh_data_reuse", reach(2, 0, 80, i.data_reuse)),
    ]
}
