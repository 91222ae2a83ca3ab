//! `contribution` and `diff` on hand-made cases.

use domain::{DossierEvent, Event, Level, Outcome, PaymentChannel};
use stats::{Aggregates, Contribution, Metric, Slice, contribution, diff};

use crate::support::*;

#[test]
fn no_profile_no_contribution() {
    assert_eq!(contribution(&[]), None);
    // A resolution arriving before its dossier's reception (out-of-order delivery).
    let resolved = Event {
        occurred_at: vn(2024, 3, 6, 9, 0),
        body: DossierEvent::Resolved {
            outcome: Outcome::Approved,
            deciding_agency: agency(HOME),
            due_at: vn(2024, 3, 7, 9, 0),
            timeliness: calendar::Timeliness::Early,
        },
    };
    assert_eq!(contribution(&[resolved]), None);
}

#[test]
fn the_slice_is_the_profile() {
    let c = received(vn(2024, 3, 4, 9, 0), false, None).contribution();
    assert_eq!(
        c.slice,
        Slice {
            level: Level::District,
            agency: agency(HOME),
            sector: sector("land"),
            procedure: procedure("1.001234"),
            channel: domain::Channel::Online,
            applicant_type: domain::ApplicantType::Citizen,
        }
    );
}

#[test]
fn a_contribution_round_trips_through_json() {
    let mut life = received(vn(2024, 3, 4, 9, 0), true, None);
    life.act(vn(2024, 3, 4, 10, 0), assess(1_000)).act(
        vn(2024, 3, 5, 10, 0),
        pay(1_000, PaymentChannel::NationalPlatform, "T1"),
    );
    let c = life.contribution();
    let json = serde_json::to_string(&c).expect("serializes");
    let back: Contribution = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, c);
    assert!(json.contains(r#"["2024-03-04","received",1]"#), "{json}");
    // The stored form: the slice, then the deltas in key order as `[date, metric, delta]`.
    assert!(json.starts_with(r#"{"slice":{"level":"#), "{json}");
    let deltas: Vec<(chrono::NaiveDate, Metric, i128)> =
        c.deltas.iter().map(|((d, m), v)| (*d, *m, *v)).collect();
    let expected_tail = format!(r#","deltas":{}}}"#, serde_json::to_string(&deltas).unwrap());
    assert!(json.ends_with(&expected_tail), "{json}");
    // A delta beyond 64 bits is written exactly.
    let mut big = c.clone();
    big.deltas.insert(
        (
            chrono::NaiveDate::from_ymd_opt(2024, 3, 6).unwrap(),
            Metric::ALL[0],
        ),
        i128::MAX,
    );
    let json = serde_json::to_string(&big).expect("serializes");
    assert!(json.contains(&i128::MAX.to_string()), "{json}");
    let back: Contribution = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, big);
}

#[test]
fn metric_names_are_stable_and_parse_back() {
    for m in Metric::ALL {
        assert_eq!(Metric::parse(m.as_str()), Some(*m));
        assert_eq!(
            serde_json::to_string(m).unwrap(),
            format!("\"{}\"", m.as_str())
        );
    }
    assert_eq!(Metric::stocks().count(), 4);
    assert_eq!(Metric::flows().count() + 4, Metric::ALL.len());
}

#[test]
fn diff_is_new_minus_old_without_zeros() {
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    let open = life.contribution();
    life.act(vn(2024, 3, 6, 9, 0), resolve());
    let resolved = life.contribution();
    let slice = open.slice.clone();

    assert_eq!(diff(Some(&open), Some(&open)), vec![]);
    assert_eq!(diff(None, None), vec![]);
    let d = diff(Some(&open), Some(&resolved));
    assert_eq!(
        d,
        vec![
            (slice.clone(), date(2024, 3, 6), Metric::Resolved, 1),
            (slice.clone(), date(2024, 3, 6), Metric::ResolvedEarly, 1),
            (
                slice.clone(),
                date(2024, 3, 6),
                Metric::Resolved766InTime,
                1
            ),
            // Two days from reception to resolution.
            (
                slice.clone(),
                date(2024, 3, 6),
                Metric::ResolvedProcessingMinutes,
                2880
            ),
            (slice.clone(), date(2024, 3, 7), Metric::Pending, -1),
            (
                slice.clone(),
                date(2024, 3, 7),
                Metric::PendingWithinTime,
                -1
            ),
            (
                slice.clone(),
                date(2024, 3, 7),
                Metric::Pending766WithinTime,
                -1
            ),
            // the open dossier would have become overdue on 8 March
            (
                slice.clone(),
                date(2024, 3, 8),
                Metric::PendingWithinTime,
                1
            ),
            (slice.clone(), date(2024, 3, 8), Metric::PendingOverdue, -1),
            (slice, date(2024, 3, 8), Metric::Pending766WithinTime, 1),
        ]
    );
    let mut a = Aggregates::new();
    a.apply(&diff(None, Some(&open)));
    a.apply(&d);
    let mut b = Aggregates::new();
    b.add_contribution(&resolved);
    assert_eq!(a, b);
    a.apply(&diff(Some(&resolved), None));
    assert_eq!(a, Aggregates::new());
    assert_eq!(a.cells().count(), 0);
}

#[test]
fn diff_moves_figures_between_slices() {
    let a = received(vn(2024, 3, 4, 9, 0), false, None).contribution();
    let mut b = a.clone();
    b.slice.sector = sector("justice");
    let mut expected: Vec<_> = a
        .deltas
        .iter()
        .flat_map(|((d, m), v)| {
            [
                (b.slice.clone(), *d, *m, *v),
                (a.slice.clone(), *d, *m, -*v),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(diff(Some(&a), Some(&b)), expected);
}

#[test]
fn an_event_dated_before_the_reception_counts_at_the_reception() {
    // Not something decide accepts; the fold trusts the log, the balance must still hold.
    let mut events = received(vn(2024, 3, 4, 9, 0), false, None).events;
    events.push(Event {
        occurred_at: vn(2024, 3, 1, 9, 0),
        body: DossierEvent::Withdrawn {
            reason: text("imported"),
        },
    });
    let c = contribution(&events).expect("received");
    assert_eq!(c.get(date(2024, 3, 4), Metric::Withdrawn), 1);
    assert_eq!(c.get(date(2024, 3, 1), Metric::Withdrawn), 0);
    assert_eq!(stocks_at(&c, date(2024, 3, 5)), [0, 0, 0, 0]);
}

#[test]
fn a_refused_dossier_ignores_anything_else_in_its_log() {
    let mut events = vec![Event {
        occurred_at: vn(2024, 3, 4, 9, 0),
        body: DossierEvent::RefusedAtIntake {
            profile: profile(),
            reason: text("incomplete"),
        },
    }];
    events.extend(received(vn(2024, 3, 4, 10, 0), false, None).events);
    let c = contribution(&events).expect("refused");
    assert_eq!(c.deltas.len(), 1);
    assert_eq!(c.get(date(2024, 3, 4), Metric::RefusedAtIntake), 1);
}

/// A counter that was offline: its resolution, dated before the due time, arrives after the
/// deadline watcher's `late`, and the resolve path withdraws the mark (`late_withdrawn`). The
/// statistics go by business time: the contribution is exactly that of the same dossier
/// resolved in time with no mark at all.
#[test]
fn a_withdrawn_late_mark_changes_no_figure() {
    let received_at = vn(2024, 3, 4, 9, 0);
    let mut offline = received(received_at, false, None);
    let due = offline.due();
    offline
        .act(due + chrono::Duration::hours(1), domain::Action::MarkLate)
        .act(vn(2024, 3, 6, 15, 0), resolve());
    let types: Vec<_> = offline.events.iter().map(|e| e.body.event_type()).collect();
    assert_eq!(
        types,
        [
            domain::EventType::Received,
            domain::EventType::Late,
            domain::EventType::Resolved,
            domain::EventType::LateWithdrawn,
        ]
    );
    let mut online = received(received_at, false, None);
    online.act(vn(2024, 3, 6, 15, 0), resolve());
    assert_eq!(offline.contribution(), online.contribution());
    assert_eq!(
        totals_of([&offline], date(2024, 3, 1), date(2024, 4, 1)),
        totals_of([&online], date(2024, 3, 1), date(2024, 4, 1))
    );
}

/// Late with an apology counts once for S6, and for its timely share only when the apology was
/// on time (at least one working day before the due time), on the resolution's date.
#[test]
fn a_timely_apology_counts_on_the_resolution_date() {
    let counted = |apology_at| {
        // Received Monday 4 March 2024 09:00, due Thursday 7 March 09:00 (three working days).
        let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
        life.act(apology_at, apology(vn(2024, 3, 12, 9, 0)))
            .act(vn(2024, 3, 8, 10, 0), resolve());
        let c = life.contribution();
        let on = |m| {
            flows(&c)
                .into_iter()
                .filter(|(d, metric, _)| *metric == m && *d == date(2024, 3, 8))
                .map(|(_, _, v)| v)
                .sum::<i128>()
        };
        (
            on(Metric::ResolvedLate),
            on(Metric::ResolvedLateWithApology),
            on(Metric::ResolvedLateWithTimelyApology),
        )
    };
    // Wednesday 09:00 is the last on-time moment; a minute later is not.
    assert_eq!(counted(vn(2024, 3, 6, 9, 0)), (1, 1, 1));
    assert_eq!(counted(vn(2024, 3, 6, 9, 1)), (1, 1, 0));
}

/// The timely share counts the `on_time` the apology recorded, in the unit the province had when
/// it was issued; the contribution takes no rules, so today's `apology_notice` never changes it.
/// Due Monday 11 March 09:00: an apology on Sunday 10 March 09:00 is on time in calendar days,
/// not in working days (Friday 09:00 was the last such moment).
#[test]
fn the_timely_apology_is_the_one_recorded_in_its_unit() {
    let counted = |notice| {
        let mut life = received(vn(2024, 3, 6, 9, 0), false, None);
        life.notice = notice;
        assert_eq!(life.due(), vn(2024, 3, 11, 9, 0));
        life.act(vn(2024, 3, 10, 9, 0), apology(vn(2024, 3, 13, 9, 0)))
            .act(vn(2024, 3, 11, 10, 0), resolve());
        let Some(domain::DossierEvent::ApologyIssued {
            on_time,
            notice: recorded,
            ..
        }) = life
            .events
            .iter()
            .map(|e| &e.body)
            .find(|b| matches!(b, domain::DossierEvent::ApologyIssued { .. }))
        else {
            panic!("apology recorded");
        };
        assert_eq!(*recorded, Some(notice));
        let c = life.contribution();
        let on = |m| {
            flows(&c)
                .into_iter()
                .filter(|(d, metric, _)| *metric == m && *d == date(2024, 3, 11))
                .map(|(_, _, v)| v)
                .sum::<i128>()
        };
        (
            *on_time,
            on(Metric::ResolvedLateWithApology),
            on(Metric::ResolvedLateWithTimelyApology),
        )
    };
    assert_eq!(counted(domain::NoticeUnit::CalendarDay), (true, 1, 1));
    assert_eq!(counted(domain::NoticeUnit::WorkingDay), (false, 1, 0));
}
