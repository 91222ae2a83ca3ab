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
            profile: profile(),
            statutory_time: StatutoryTime::Days(5),
            fee_required: true,
            components: components(),
            due_at: due_monday,
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
