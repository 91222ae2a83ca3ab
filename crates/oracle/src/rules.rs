//! The procedure catalogue's rules recomputed plainly from a dossier's own events: every due
//! time, pause and closing deadline the services wrote is counted again minute by minute
//! (a minute counts when it lies inside office hours of a working day), without the calendar's
//! arithmetic (only its working days and office hours, which are data).

use calendar::{Calendar, StatutoryTime};
use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use domain::{DossierEvent, Event, ProcedureRules, StopCause, SupplementPolicy};

/// Whether the minute starting at `t` is working time.
fn working_minute(calendar: &Calendar, t: DateTime<Utc>) -> bool {
    calendar.is_office_time(t) && calendar.is_office_time(t + Duration::minutes(1))
}

/// Working minutes from `from` to `to`.
fn working_minutes(calendar: &Calendar, from: DateTime<Utc>, to: DateTime<Utc>) -> u32 {
    let mut n = 0;
    let mut t = from;
    while t + Duration::minutes(1) <= to {
        n += u32::from(working_minute(calendar, t));
        t += Duration::minutes(1);
    }
    n
}

/// The earliest instant at which `minutes` of working time have accrued after `start` (for
/// zero: the first instant of office time from `start` on).
fn add_working(calendar: &Calendar, start: DateTime<Utc>, minutes: u32) -> DateTime<Utc> {
    let mut t = start;
    if minutes == 0 {
        while !calendar.is_office_time(t) {
            t += Duration::minutes(1);
        }
        return t;
    }
    let mut n = 0;
    while n < minutes {
        n += u32::from(working_minute(calendar, t));
        t += Duration::minutes(1);
    }
    t
}

fn minutes_of(calendar: &Calendar, t: StatutoryTime) -> u32 {
    match t {
        StatutoryTime::Days(d) => d * calendar.office_hours().day_length().minutes(),
        StatutoryTime::Hours(h) => h * 60,
    }
}

/// Same-day procedures: the close of office hours of the reception day when it is a working
/// day and the dossier came before the cut-off, else of the next working day.
fn same_day(calendar: &Calendar, received: DateTime<Utc>, cutoff: NaiveTime) -> DateTime<Utc> {
    let local = calendar::local(received);
    let mut day = local.date_naive();
    if !(calendar.is_working_day(day) && local.time() < cutoff) {
        day = day.succ_opt().expect("a date in range");
        while !calendar.is_working_day(day) {
            day = day.succ_opt().expect("a date in range");
        }
    }
    let close = calendar
        .office_hours()
        .periods()
        .last()
        .expect("office hours")
        .1;
    calendar::vn_offset()
        .from_local_datetime(&day.and_time(close))
        .single()
        .expect("a fixed offset")
        .with_timezone(&Utc)
}

/// Where a dossier's events (in log order) break its procedure's rules as recorded at
/// reception, or the province's `policy` when it has none; empty when they follow them. A
/// dossier still waiting at `watched_until` for a supplement whose closing deadline passed
/// before it breaks the automatic closing.
pub fn rule_violations(
    events: &[Event],
    calendar: &Calendar,
    policy: SupplementPolicy,
    watched_until: DateTime<Utc>,
) -> Vec<String> {
    let mut v = Vec::new();
    let Some(first) = events.first() else {
        return v;
    };
    let DossierEvent::Received {
        statutory_time,
        due_at,
        procedure,
        ..
    } = &first.body
    else {
        return v;
    };
    let rules: Option<&ProcedureRules> = procedure.as_ref();
    let statutory = minutes_of(calendar, *statutory_time);
    let expected = match rules.and_then(|r| r.same_day_cutoff) {
        Some(cutoff) => same_day(calendar, first.occurred_at, cutoff),
        None => add_working(calendar, first.occurred_at, statutory),
    };
    if *due_at != expected {
        v.push(format!("received: due {due_at}, expected {expected}"));
    }
    let mut due = *due_at;
    let mut requests = 0u32;
    let mut pending: Option<(DateTime<Utc>, Option<DateTime<Utc>>)> = None;
    let mut obligation: Option<(DateTime<Utc>, bool)> = None;
    let mut ended = false;
    for e in &events[1..] {
        let at = e.occurred_at;
        match &e.body {
            DossierEvent::SupplementRequested { closes_at, .. } => {
                requests += 1;
                if let Some(max) = rules.and_then(|r| r.max_supplement_requests)
                    && requests > max
                {
                    v.push(format!("supplement request {requests} of at most {max}"));
                }
                let expected = rules.and_then(|r| r.close_after_working_days).map(|n| {
                    add_working(
                        calendar,
                        at,
                        n * minutes_of(calendar, StatutoryTime::Days(1)),
                    )
                });
                if *closes_at != expected {
                    v.push(format!("closes_at {closes_at:?}, expected {expected:?}"));
                }
                pending = Some((at, *closes_at));
            }
            DossierEvent::SupplementReceived { due_at, paused } => {
                let Some((requested, closes)) = pending.take() else {
                    v.push("a supplement received without a request".into());
                    continue;
                };
                if closes.is_some_and(|c| at > c) {
                    v.push(format!("supplement received at {at}, after its closing"));
                }
                let waited = working_minutes(calendar, requested, at);
                let expected = match rules.map_or(policy, |r| r.supplement_policy) {
                    SupplementPolicy::Restart => add_working(calendar, at, statutory),
                    SupplementPolicy::Extend => add_working(calendar, due, waited),
                };
                if (*due_at, paused.minutes()) != (expected, waited) {
                    v.push(format!(
                        "supplement received: due {due_at} paused {paused:?}, expected {expected} and {waited} min"
                    ));
                }
                due = *due_at;
            }
            DossierEvent::FinancialObligationRequested { pauses_clock, .. } => {
                let expected = rules.is_some_and(|r| r.obligation_pauses_clock);
                if *pauses_clock != expected {
                    v.push(format!(
                        "obligation pauses_clock {pauses_clock}, expected {expected}"
                    ));
                }
                obligation = Some((at, *pauses_clock));
            }
            DossierEvent::FinancialObligationFulfilled { due_at, paused } => {
                let Some((requested, pauses)) = obligation.take() else {
                    v.push("an obligation fulfilled without a request".into());
                    continue;
                };
                let (expected, waited) = if pauses {
                    let waited = working_minutes(calendar, requested, at);
                    (add_working(calendar, due, waited), waited)
                } else {
                    (due, 0)
                };
                if (*due_at, paused.minutes()) != (expected, waited) {
                    v.push(format!(
                        "obligation fulfilled: due {due_at} paused {paused:?}, expected {expected} and {waited} min"
                    ));
                }
                due = *due_at;
            }
            DossierEvent::Stopped {
                cause:
                    Some(StopCause::SupplementNotReceived {
                        requested_at,
                        closes_at,
                    }),
                ..
            } => {
                if pending != Some((*requested_at, Some(*closes_at))) || at != *closes_at {
                    v.push(format!(
                        "closed automatically at {at} for a request at {requested_at} closing {closes_at}; pending {pending:?}"
                    ));
                }
                ended = true;
            }
            DossierEvent::Late { due_at } if (*due_at, at) != (due, due) => {
                v.push(format!("late for {due_at} at {at}; due {due}"));
            }
            DossierEvent::Resolved { .. }
            | DossierEvent::Withdrawn { .. }
            | DossierEvent::Stopped { .. } => ended = true,
            _ => {}
        }
    }
    if let Some((requested, Some(closes))) = pending
        && !ended
        && closes < watched_until
    {
        v.push(format!(
            "the supplement requested at {requested} closed at {closes}, but the dossier is open"
        ));
    }
    v
}
