//! The apology with a new appointment (Mẫu 04, Circular 03/2025/TT-VPCP): at most once, only
//! when late or foreseen late, "on time" when issued at least one day before the due time in
//! force ("chậm nhất 01 ngày trước ngày hết hạn", regulations under Decree 118/2025/NĐ-CP, e.g.
//! Lai Châu Decision 88/2025/QĐ-UBND), the day counted in the province's unit (default: one
//! working day). The event keeps the original due time, the signer and the delivery channel.

use calendar::{StatutoryTime, Timeliness};
use chrono::{DateTime, Utc};
use domain::{Action, ApologyDelivery, DossierEvent, NoticeUnit, Refusal};

use crate::support::*;

/// As an older client sends it: no signer, no delivery channel.
fn apologise(new_appointment: DateTime<Utc>) -> Action {
    Action::IssueApology {
        reason: text("site survey delayed"),
        new_appointment,
        signer: None,
        delivery: None,
    }
}
fn apologised(new_appointment: DateTime<Utc>, on_time: bool) -> DossierEvent {
    apologised_against(new_appointment, on_time, due())
}
fn apologised_against(
    new_appointment: DateTime<Utc>,
    on_time: bool,
    original_due_at: DateTime<Utc>,
) -> DossierEvent {
    DossierEvent::ApologyIssued {
        reason: text("site survey delayed"),
        new_appointment,
        on_time,
        original_due_at: Some(original_due_at),
        signer: None,
        delivery: None,
        notice: Some(NoticeUnit::WorkingDay),
    }
}
fn new_appointment() -> DateTime<Utc> {
    vn(2024, 3, 12, 9, 0)
}

#[test]
fn foreseen_late_while_open_and_on_time() {
    let at = vn(2024, 3, 4, 10, 0);
    let state = given([received()])
        .when(cmd(at, apologise(new_appointment())))
        .then(apologised(new_appointment(), true));
    let apology = state.apology.expect("issued");
    assert_eq!(apology.issued_at, at);
    assert_eq!(apology.new_appointment, new_appointment());
    assert!(apology.on_time);
    // The appointment the statistics judge by does not move.
    assert_eq!(state.due_at, Some(due()));
}

#[test]
fn on_time_at_exactly_one_working_day_before_the_due_time() {
    // Due Thursday 09:00: Wednesday 09:00 leaves exactly 8 working hours.
    assert_eq!(
        CALENDAR.working_time_between(vn(2024, 3, 6, 9, 0), due()),
        CALENDAR.to_duration(StatutoryTime::Days(1))
    );
    given([received()])
        .when(cmd(vn(2024, 3, 6, 9, 0), apologise(new_appointment())))
        .then(apologised(new_appointment(), true));
    given([received()])
        .when(cmd(vn(2024, 3, 6, 9, 1), apologise(new_appointment())))
        .then(apologised(new_appointment(), false));
}

#[test]
fn the_working_day_before_spans_the_weekend() {
    // Due Monday 11 March 09:00: Friday 09:00 is one working day before, Saturday is not worked.
    let due_monday = vn(2024, 3, 11, 9, 0);
    let history = [ev(
        received_at(),
        DossierEvent::Received {
            procedure: None,
            profile: profile(),
            statutory_time: StatutoryTime::Days(5),
            fee_required: true,
            components: components(),
            due_at: due_monday,
            applicant: None,
            return_method: None,
        },
    )];
    given(history.clone())
        .when(cmd(vn(2024, 3, 8, 9, 0), apologise(new_appointment())))
        .then(apologised_against(new_appointment(), true, due_monday));
    given(history.clone())
        .when(cmd(vn(2024, 3, 8, 9, 30), apologise(new_appointment())))
        .then(apologised_against(new_appointment(), false, due_monday));
    given(history)
        .when(cmd(vn(2024, 3, 9, 9, 0), apologise(new_appointment())))
        .then(apologised_against(new_appointment(), false, due_monday));
}

#[test]
fn after_the_due_time_is_not_on_time() {
    given([received(), ev(due(), DossierEvent::Late { due_at: due() })])
        .when(cmd(vn(2024, 3, 8, 9, 0), apologise(new_appointment())))
        .then(apologised(new_appointment(), false));
}

#[test]
fn while_waiting_for_a_supplement() {
    given([
        received(),
        ev(
            vn(2024, 3, 5, 9, 0),
            DossierEvent::SupplementRequested {
                closes_at: None,
                reason: text("map"),
            },
        ),
    ])
    .when(cmd(vn(2024, 3, 5, 10, 0), apologise(new_appointment())))
    .then(apologised(new_appointment(), true));
}

#[test]
fn after_a_late_resolution() {
    let state = given([received(), resolved(vn(2024, 3, 8, 9, 0), Timeliness::Late)])
        .when(cmd(vn(2024, 3, 8, 10, 0), apologise(new_appointment())))
        .then(apologised(new_appointment(), false));
    assert!(state.apology.is_some());
}

#[test]
fn not_needed_when_resolved_early_or_on_time() {
    for (at, timeliness) in [
        (vn(2024, 3, 6, 9, 0), Timeliness::Early),
        (vn(2024, 3, 7, 8, 0), Timeliness::OnTime),
    ] {
        given([received(), resolved(at, timeliness)])
            .when(cmd(vn(2024, 3, 7, 8, 30), apologise(new_appointment())))
            .then(Refusal::ApologyNotNeeded { timeliness });
    }
}

#[test]
fn at_most_once() {
    given([
        received(),
        ev(vn(2024, 3, 5, 9, 0), apologised(new_appointment(), true)),
    ])
    .when(cmd(vn(2024, 3, 5, 10, 0), apologise(vn(2024, 3, 14, 9, 0))))
    .then(Refusal::ApologyAlreadyIssued);
}

#[test]
fn the_new_appointment_is_after_the_due_time_and_after_the_apology() {
    // Not at or before the due time in force…
    for appointment in [due(), vn(2024, 3, 6, 9, 0)] {
        given([received()])
            .when(cmd(vn(2024, 3, 5, 9, 0), apologise(appointment)))
            .then(Refusal::NewAppointmentTooEarly { due_at: due() });
    }
    // …nor before the apology itself once the due time has passed.
    given([received()])
        .when(cmd(vn(2024, 3, 8, 9, 0), apologise(vn(2024, 3, 7, 16, 0))))
        .then(Refusal::NewAppointmentTooEarly { due_at: due() });
    given([received()])
        .when(cmd(vn(2024, 3, 8, 9, 0), apologise(vn(2024, 3, 8, 14, 0))))
        .then(apologised(vn(2024, 3, 8, 14, 0), false));
}

#[test]
fn mau_04_records_the_signer_the_delivery_and_the_original_due_time() {
    for delivery in ApologyDelivery::ALL {
        let at = vn(2024, 3, 4, 10, 0);
        let state = given([received()])
            .when(cmd(
                at,
                Action::IssueApology {
                    reason: text("site survey delayed"),
                    new_appointment: new_appointment(),
                    signer: Some(text("Nguyễn Văn A, Giám đốc Sở")),
                    delivery: Some(*delivery),
                },
            ))
            .then(DossierEvent::ApologyIssued {
                reason: text("site survey delayed"),
                new_appointment: new_appointment(),
                on_time: true,
                original_due_at: Some(due()),
                signer: Some(text("Nguyễn Văn A, Giám đốc Sở")),
                delivery: Some(*delivery),
                notice: Some(NoticeUnit::WorkingDay),
            });
        let apology = state.apology.expect("issued");
        assert_eq!(apology.original_due_at, Some(due()));
        assert_eq!(apology.delivery, Some(*delivery));
        // The new appointment never becomes the due time.
        assert_eq!(state.due_at, Some(due()));
    }
}

#[test]
fn calendar_day_unit_counts_24_hours_weekends_included() {
    // Due Monday 11 March 09:00. In calendar days, Sunday 10 March 09:00 is one day before;
    // in working days it is not (Friday 09:00 was the last moment).
    let due_monday = vn(2024, 3, 11, 9, 0);
    let history = [ev(
        received_at(),
        DossierEvent::Received {
            profile: profile(),
            statutory_time: StatutoryTime::Days(5),
            fee_required: true,
            components: components(),
            due_at: due_monday,
            procedure: None,
            applicant: None,
            return_method: None,
        },
    )];
    let in_calendar_days =
        |on_time| match apologised_against(new_appointment(), on_time, due_monday) {
            DossierEvent::ApologyIssued {
                reason,
                new_appointment,
                on_time,
                original_due_at,
                signer,
                delivery,
                notice: _,
            } => DossierEvent::ApologyIssued {
                reason,
                new_appointment,
                on_time,
                original_due_at,
                signer,
                delivery,
                notice: Some(NoticeUnit::CalendarDay),
            },
            other => other,
        };
    for (at, working_day, calendar_day) in [
        (vn(2024, 3, 8, 9, 0), true, true),
        (vn(2024, 3, 9, 16, 0), false, true),
        (vn(2024, 3, 10, 9, 0), false, true),
        (vn(2024, 3, 10, 9, 1), false, false),
        (vn(2024, 3, 11, 8, 0), false, false),
    ] {
        given(history.clone())
            .when(cmd(at, apologise(new_appointment())))
            .then(apologised_against(
                new_appointment(),
                working_day,
                due_monday,
            ));
        given(history.clone())
            .notice(NoticeUnit::CalendarDay)
            .when(cmd(at, apologise(new_appointment())))
            .then(in_calendar_days(calendar_day));
    }
}

#[test]
fn timeliness_is_judged_against_the_original_due_time() {
    // Apologised with a new appointment on the 12th; resolved on the 11th, before the new
    // appointment but after the original due time: late.
    let state = given([received()])
        .when(cmd(vn(2024, 3, 5, 9, 0), apologise(new_appointment())))
        .then(apologised(new_appointment(), true));
    let mut events = vec![received()];
    events.push(ev(
        vn(2024, 3, 5, 9, 0),
        apologised(new_appointment(), true),
    ));
    assert_eq!(state.due_at, Some(due()));
    let resolved = given(events)
        .when(cmd(vn(2024, 3, 11, 9, 0), resolve()))
        .accepted()
        .1;
    assert_eq!(
        resolved.resolution.map(|r| (r.due_at, r.timeliness)),
        Some((due(), Timeliness::Late))
    );
}

#[test]
fn an_apology_recorded_before_mau_04_still_decodes() {
    // The payload an apology had before the Mẫu 04 fields: no original due time, signer,
    // delivery or unit.
    let payload = serde_json::json!({
        "reason": "site survey delayed",
        "new_appointment": "2024-03-12T02:00:00Z",
        "on_time": true,
    });
    let event = DossierEvent::from_parts("apology_issued", &payload).expect("decodes");
    assert_eq!(
        event,
        DossierEvent::ApologyIssued {
            reason: text("site survey delayed"),
            new_appointment: new_appointment(),
            on_time: true,
            original_due_at: None,
            signer: None,
            delivery: None,
            notice: None,
        }
    );
}

/// The apology deadline is the last moment `decide` answers `on_time`, in either unit, across a
/// weekend and Tết 2024 (8–14 February off): every quarter hour of the ten days before each due
/// time.
#[test]
fn the_apology_deadline_is_the_last_on_time_moment() {
    // (due time, deadline in working days, deadline in calendar days)
    let cases = [
        // Thursday 09:00 → Wednesday 09:00 either way.
        (
            vn(2024, 3, 7, 9, 0),
            vn(2024, 3, 6, 9, 0),
            vn(2024, 3, 6, 9, 0),
        ),
        // Monday 07:30 → Friday 07:30 (half an hour on Monday, 7.5 hours on Friday); Sunday
        // 07:30 in calendar days.
        (
            vn(2024, 3, 11, 7, 30),
            vn(2024, 3, 8, 7, 30),
            vn(2024, 3, 10, 7, 30),
        ),
        // Monday 13:30, just after lunch → Friday 13:30; Sunday 13:30.
        (
            vn(2024, 3, 11, 13, 30),
            vn(2024, 3, 8, 13, 30),
            vn(2024, 3, 10, 13, 30),
        ),
        // Thursday 15 February 2024 10:00, after the Tết days off → Wednesday 7 February 10:00;
        // Wednesday 14 February 10:00, a day off, in calendar days.
        (
            vn(2024, 2, 15, 10, 0),
            vn(2024, 2, 7, 10, 0),
            vn(2024, 2, 14, 10, 0),
        ),
    ];
    for (due_at, working, calendar_day) in cases {
        for (unit, deadline) in [
            (NoticeUnit::WorkingDay, working),
            (NoticeUnit::CalendarDay, calendar_day),
        ] {
            assert_eq!(
                domain::apology_deadline(&CALENDAR, unit, due_at),
                deadline,
                "due {due_at} in {unit:?}"
            );
            let mut received = received_event(true);
            if let DossierEvent::Received { due_at: d, .. } = &mut received {
                *d = due_at;
            }
            let rules = domain::Rules {
                apology_notice: unit,
                ..rules(domain::SupplementPolicy::Restart)
            };
            let mut at = due_at - chrono::Duration::days(10);
            while at < due_at + chrono::Duration::hours(2) {
                let events = domain::decide(
                    &domain::Dossier::from_events(&[ev(
                        at - chrono::Duration::days(20),
                        received.clone(),
                    )]),
                    &cmd(at, apologise(due_at + chrono::Duration::days(30))),
                    rules,
                )
                .expect("an apology is accepted while open");
                let domain::Decision::Event(DossierEvent::ApologyIssued { on_time, .. }) = &events
                else {
                    panic!("one apology event: {events:?}");
                };
                assert_eq!(
                    *on_time,
                    at <= deadline,
                    "due {due_at}, apology at {at}, {unit:?}"
                );
                assert_eq!(
                    *on_time,
                    domain::apology_on_time(&CALENDAR, unit, at, due_at)
                );
                at += chrono::Duration::minutes(15);
            }
        }
    }
}

/// The warning starts at the apology deadline by default (in the apology's unit), or the
/// configured working time before the due time (whatever the unit).
#[test]
fn the_warning_starts_the_horizon_before_the_due_time() {
    use domain::WarningHorizon;
    let due_at = vn(2024, 3, 11, 7, 30);
    for unit in [NoticeUnit::WorkingDay, NoticeUnit::CalendarDay] {
        assert_eq!(
            WarningHorizon::default().warn_from(&CALENDAR, unit, due_at),
            domain::apology_deadline(&CALENDAR, unit, due_at)
        );
        let two_days = WarningHorizon::Working(CALENDAR.to_duration(StatutoryTime::Days(2)));
        assert_eq!(
            two_days.warn_from(&CALENDAR, unit, due_at),
            vn(2024, 3, 7, 7, 30)
        );
        let one_hour = WarningHorizon::Working(CALENDAR.to_duration(StatutoryTime::Hours(1)));
        assert_eq!(
            one_hour.warn_from(&CALENDAR, unit, due_at),
            vn(2024, 3, 8, 16, 30)
        );
    }
    // Sunday 07:30 in calendar days, Friday 07:30 in working days.
    assert_eq!(
        WarningHorizon::default().warn_from(&CALENDAR, NoticeUnit::CalendarDay, due_at),
        vn(2024, 3, 10, 7, 30)
    );
}
