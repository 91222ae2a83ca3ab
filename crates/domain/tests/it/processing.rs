//! Transfers, supplements and the due time they move, the deadline watcher, resolution and the
//! endings without a result.

use calendar::{StatutoryTime, Timeliness, WorkingDuration};
use chrono::{DateTime, Utc};
use domain::{
    Action, DossierEvent, Event, NoticeUnit, Outcome, Phase, Refusal, SupplementPolicy,
    TransferMode, event_time,
};

use crate::support::*;

fn supplement_requested(at: DateTime<Utc>) -> Event {
    ev(
        at,
        DossierEvent::SupplementRequested {
            closes_at: None,
            reason: text("missing land plot map"),
        },
    )
}
fn supplement_received(at: DateTime<Utc>, due_at: DateTime<Utc>, paused: WorkingDuration) -> Event {
    ev(at, DossierEvent::SupplementReceived { due_at, paused })
}

mod transfer {
    use super::*;

    fn transfer(to: &str) -> Action {
        Action::Transfer {
            to_agency: agency(to),
            mode: TransferMode::Electronic,
        }
    }

    #[test]
    fn moves_the_dossier_from_the_current_agency() {
        let state = given([received()])
            .when(cmd(vn(2024, 3, 5, 9, 0), transfer(OTHER)))
            .then(DossierEvent::Transferred {
                from_agency: agency(HOME),
                to_agency: agency(OTHER),
                mode: TransferMode::Electronic,
            });
        assert_eq!(state.current_agency, Some(agency(OTHER)));
        assert!(state.transferred_electronically);
        assert_eq!(state.portal_status(), Some(4));

        // And back: the origin is now the other agency.
        let back = Action::Transfer {
            to_agency: agency(HOME),
            mode: TransferMode::Paper,
        };
        let state = given([
            received(),
            ev(
                vn(2024, 3, 5, 9, 0),
                DossierEvent::Transferred {
                    from_agency: agency(HOME),
                    to_agency: agency(OTHER),
                    mode: TransferMode::Paper,
                },
            ),
        ])
        .when(cmd(vn(2024, 3, 5, 10, 0), back))
        .then(DossierEvent::Transferred {
            from_agency: agency(OTHER),
            to_agency: agency(HOME),
            mode: TransferMode::Paper,
        });
        assert_eq!(state.current_agency, Some(agency(HOME)));
        assert_eq!(state.transfers, 2);
        assert!(!state.transferred_electronically);
    }

    #[test]
    fn not_to_the_agency_that_holds_it() {
        given([received()])
            .when(cmd(vn(2024, 3, 5, 9, 0), transfer(HOME)))
            .then(Refusal::TransferToSameAgency {
                agency: agency(HOME),
            });
    }

    #[test]
    fn not_after_resolution() {
        given([
            received(),
            resolved(vn(2024, 3, 6, 9, 0), Timeliness::Early),
        ])
        .when(cmd(vn(2024, 3, 6, 10, 0), transfer(OTHER)))
        .then(Refusal::AlreadyResolved);
    }
}

mod supplement {
    use super::*;

    fn request() -> Action {
        Action::RequestSupplement {
            reason: text("missing land plot map"),
        }
    }

    #[test]
    fn a_request_stops_the_clock() {
        let state = given([received()])
            .when(cmd(vn(2024, 3, 5, 9, 0), request()))
            .then(DossierEvent::SupplementRequested {
                closes_at: None,
                reason: text("missing land plot map"),
            });
        assert_eq!(state.paused_since, Some(vn(2024, 3, 5, 9, 0)));
        assert_eq!(state.supplement_requests, 1);
        assert_eq!(state.portal_status(), Some(5));
    }

    #[test]
    fn one_request_at_a_time() {
        given([received(), supplement_requested(vn(2024, 3, 5, 9, 0))])
            .when(cmd(vn(2024, 3, 5, 10, 0), request()))
            .then(Refusal::SupplementAlreadyPending);
        // After the supplement arrived, another one may be requested.
        let state = given([
            received(),
            supplement_requested(vn(2024, 3, 5, 9, 0)),
            supplement_received(
                vn(2024, 3, 6, 9, 0),
                vn(2024, 3, 11, 9, 0),
                WorkingDuration::from_hours(8),
            ),
        ])
        .when(cmd(vn(2024, 3, 6, 10, 0), request()))
        .then(DossierEvent::SupplementRequested {
            closes_at: None,
            reason: text("missing land plot map"),
        });
        assert_eq!(state.supplement_requests, 2);
    }

    #[test]
    fn not_after_resolution() {
        given([
            received(),
            resolved(vn(2024, 3, 6, 9, 0), Timeliness::Early),
        ])
        .when(cmd(vn(2024, 3, 6, 10, 0), request()))
        .then(Refusal::AlreadyResolved);
        given([
            received(),
            resolved(vn(2024, 3, 6, 9, 0), Timeliness::Early),
        ])
        .when(cmd(vn(2024, 3, 6, 10, 0), Action::ReceiveSupplement))
        .then(Refusal::AlreadyResolved);
    }

    #[test]
    fn receiving_needs_a_request() {
        given([received()])
            .when(cmd(vn(2024, 3, 5, 9, 0), Action::ReceiveSupplement))
            .then(Refusal::NoSupplementPending);
    }

    #[test]
    fn receiving_cannot_be_dated_before_the_request() {
        given([received(), supplement_requested(vn(2024, 3, 5, 9, 0))])
            .when(cmd(vn(2024, 3, 5, 8, 0), Action::ReceiveSupplement))
            .then(Refusal::BeforePreviousStep {
                step: "the supplement request",
                at: vn(2024, 3, 5, 9, 0),
            });
    }

    /// Requested Tuesday 09:00, received Wednesday 09:00: one working day paused.
    fn one_day_pause(policy: SupplementPolicy) -> When {
        given([received(), supplement_requested(vn(2024, 3, 5, 9, 0))])
            .policy(policy)
            .when(cmd(vn(2024, 3, 6, 9, 0), Action::ReceiveSupplement))
    }

    #[test]
    fn restart_counts_the_full_statutory_time_again() {
        // Wednesday 09:00 + 3 working days = Monday 09:00.
        let state =
            one_day_pause(SupplementPolicy::Restart).then(DossierEvent::SupplementReceived {
                due_at: vn(2024, 3, 11, 9, 0),
                paused: WorkingDuration::from_hours(8),
            });
        assert_eq!(state.due_at, Some(vn(2024, 3, 11, 9, 0)));
        assert_eq!(state.paused_since, None);
        assert_eq!(state.portal_status(), Some(4));
    }

    #[test]
    fn extend_pushes_the_due_time_by_the_pause() {
        // Thursday 09:00 + 8 working hours = Friday 09:00.
        let state =
            one_day_pause(SupplementPolicy::Extend).then(DossierEvent::SupplementReceived {
                due_at: vn(2024, 3, 8, 9, 0),
                paused: WorkingDuration::from_hours(8),
            });
        assert_eq!(state.due_at, Some(vn(2024, 3, 8, 9, 0)));
    }

    /// Received Monday 22 April 2024 08:00 for five working days, due Thursday 2 May 08:00 (29 April
    /// to 1 May are days off). The supplement is requested Friday 26 April 10:00 and arrives Monday
    /// 6 May 10:00: paused = 5 h (Friday) + 8 h (Thursday 2 May) + 8 h (Friday 3 May) + 8 h
    /// (Saturday 4 May, worked in 2024 in exchange for Monday 29 April) + 3 h (Monday) = 32 h.
    fn across_the_april_holidays(policy: SupplementPolicy) -> When {
        given([
            ev(
                vn(2024, 4, 22, 8, 0),
                DossierEvent::Received {
                    procedure: None,
                    profile: profile(),
                    statutory_time: StatutoryTime::Days(5),
                    fee_required: false,
                    components: components(),
                    due_at: vn(2024, 5, 2, 8, 0),
                    applicant: None,
                    return_method: None,
                },
            ),
            supplement_requested(vn(2024, 4, 26, 10, 0)),
        ])
        .policy(policy)
        .when(cmd(vn(2024, 5, 6, 10, 0), Action::ReceiveSupplement))
    }

    #[test]
    fn the_pause_skips_public_holidays_and_counts_the_worked_saturday() {
        let pause = CALENDAR.working_time_between(vn(2024, 4, 26, 10, 0), vn(2024, 5, 6, 10, 0));
        assert_eq!(pause, WorkingDuration::from_hours(32));
    }

    #[test]
    fn extend_across_the_april_holidays() {
        // Thursday 2 May 08:00 + 32 h: 7 h Thursday, 8 h Friday, 8 h Saturday, 8 h Monday, 1 h
        // Tuesday = Tuesday 7 May 08:00.
        across_the_april_holidays(SupplementPolicy::Extend).then(
            DossierEvent::SupplementReceived {
                due_at: vn(2024, 5, 7, 8, 0),
                paused: WorkingDuration::from_hours(32),
            },
        );
    }

    #[test]
    fn restart_across_the_april_holidays() {
        // Monday 6 May 10:00 + 5 working days = Monday 13 May 10:00.
        across_the_april_holidays(SupplementPolicy::Restart).then(
            DossierEvent::SupplementReceived {
                due_at: vn(2024, 5, 13, 10, 0),
                paused: WorkingDuration::from_hours(32),
            },
        );
    }

    #[test]
    fn both_policies_use_the_calendar() {
        let requested = vn(2024, 4, 26, 10, 0);
        let arrived = vn(2024, 5, 6, 10, 0);
        let paused = CALENDAR.working_time_between(requested, arrived);
        let (events, _) = across_the_april_holidays(SupplementPolicy::Extend).accepted();
        assert_eq!(
            events,
            vec![DossierEvent::SupplementReceived {
                due_at: CALENDAR.add_working_time(vn(2024, 5, 2, 8, 0), paused),
                paused,
            }]
        );
        let (events, _) = across_the_april_holidays(SupplementPolicy::Restart).accepted();
        assert_eq!(
            events,
            vec![DossierEvent::SupplementReceived {
                due_at: CALENDAR.due_time(arrived, StatutoryTime::Days(5)),
                paused,
            }]
        );
    }
}

mod late {
    use super::*;

    #[test]
    fn marked_once_the_due_time_has_passed_and_dated_at_the_due_time() {
        let noticed = vn(2024, 3, 7, 9, 1);
        let when = given([received()]).when(cmd(noticed, Action::MarkLate));
        let command = when.command.clone();
        let state = when.then(DossierEvent::Late { due_at: due() });
        assert!(state.late_marked);
        assert_eq!(
            event_time(&command, &DossierEvent::Late { due_at: due() }),
            due()
        );
    }

    #[test]
    fn not_before_the_due_time_has_passed() {
        for noticed in [vn(2024, 3, 6, 9, 0), due()] {
            given([received()])
                .when(cmd(noticed, Action::MarkLate))
                .then(Refusal::NotYetDue { due_at: due() });
        }
    }

    #[test]
    fn exactly_once() {
        given([received(), ev(due(), DossierEvent::Late { due_at: due() })])
            .when(cmd(vn(2024, 3, 8, 9, 0), Action::MarkLate))
            .then(Refusal::AlreadyMarkedLate);
    }

    #[test]
    fn never_while_paused() {
        given([received(), supplement_requested(vn(2024, 3, 5, 9, 0))])
            .when(cmd(vn(2024, 3, 20, 9, 0), Action::MarkLate))
            .then(Refusal::AwaitingSupplement);
    }

    #[test]
    fn never_once_resolved() {
        given([received(), resolved(vn(2024, 3, 8, 9, 0), Timeliness::Late)])
            .when(cmd(vn(2024, 3, 8, 10, 0), Action::MarkLate))
            .then(Refusal::AlreadyResolved);
    }

    #[test]
    fn judged_against_the_due_time_a_supplement_moved() {
        let moved = vn(2024, 3, 8, 9, 0);
        let history = [
            received(),
            supplement_requested(vn(2024, 3, 5, 9, 0)),
            supplement_received(vn(2024, 3, 6, 9, 0), moved, WorkingDuration::from_hours(8)),
        ];
        given(history.clone())
            .when(cmd(vn(2024, 3, 7, 10, 0), Action::MarkLate))
            .then(Refusal::NotYetDue { due_at: moved });
        given(history)
            .when(cmd(vn(2024, 3, 8, 9, 30), Action::MarkLate))
            .then(DossierEvent::Late { due_at: moved });
    }
}

mod resolve {
    use super::*;

    fn resolved_event(timeliness: Timeliness) -> DossierEvent {
        DossierEvent::Resolved {
            outcome: Outcome::Approved,
            deciding_agency: agency(HOME),
            due_at: due(),
            timeliness,
        }
    }

    #[test]
    fn early_on_an_earlier_date() {
        for at in [
            vn(2024, 3, 4, 10, 0),
            vn(2024, 3, 6, 16, 0),
            vn(2024, 3, 6, 23, 59),
        ] {
            given([received()])
                .when(cmd(at, resolve()))
                .then(resolved_event(Timeliness::Early));
        }
    }

    #[test]
    fn on_time_on_the_due_date_up_to_the_due_time() {
        for at in [vn(2024, 3, 7, 0, 0), vn(2024, 3, 7, 8, 0), due()] {
            given([received()])
                .when(cmd(at, resolve()))
                .then(resolved_event(Timeliness::OnTime));
        }
    }

    #[test]
    fn late_after_the_due_time() {
        for at in [vn(2024, 3, 7, 9, 1), vn(2024, 3, 8, 7, 0)] {
            given([received()])
                .when(cmd(at, resolve()))
                .then(resolved_event(Timeliness::Late));
        }
    }

    #[test]
    fn records_the_decision() {
        let at = vn(2024, 3, 6, 10, 0);
        let state = given([received()])
            .when(cmd(
                at,
                Action::Resolve {
                    outcome: Outcome::Refused,
                    deciding_agency: agency(OTHER),
                },
            ))
            .then(DossierEvent::Resolved {
                outcome: Outcome::Refused,
                deciding_agency: agency(OTHER),
                due_at: due(),
                timeliness: Timeliness::Early,
            });
        assert_eq!(state.phase, Phase::Resolved);
        let resolution = state.resolution.clone().expect("resolved");
        assert_eq!(resolution.at, at);
        assert_eq!(resolution.outcome, Outcome::Refused);
        assert_eq!(resolution.timeliness, Timeliness::Early);
        assert_eq!(state.portal_status(), Some(9));
    }

    #[test]
    fn judged_against_the_due_time_in_force_after_a_supplement() {
        // Due Thursday 09:00, extended to Friday 09:00: Thursday 10:00 is early, not late.
        given([
            received(),
            supplement_requested(vn(2024, 3, 5, 9, 0)),
            supplement_received(
                vn(2024, 3, 6, 9, 0),
                vn(2024, 3, 8, 9, 0),
                WorkingDuration::from_hours(8),
            ),
        ])
        .when(cmd(vn(2024, 3, 7, 10, 0), resolve()))
        .then(DossierEvent::Resolved {
            outcome: Outcome::Approved,
            deciding_agency: agency(HOME),
            due_at: vn(2024, 3, 8, 9, 0),
            timeliness: Timeliness::Early,
        });
    }

    #[test]
    fn never_against_the_apologys_new_appointment() {
        given([
            received(),
            ev(
                vn(2024, 3, 5, 9, 0),
                DossierEvent::ApologyIssued {
                    reason: text("site survey delayed"),
                    new_appointment: vn(2024, 3, 11, 9, 0),
                    on_time: true,
                    original_due_at: Some(due()),
                    signer: None,
                    delivery: None,
                    notice: Some(NoticeUnit::WorkingDay),
                },
            ),
        ])
        .when(cmd(vn(2024, 3, 8, 9, 0), resolve()))
        .then(resolved_event(Timeliness::Late));
    }

    #[test]
    fn only_once() {
        given([
            received(),
            resolved(vn(2024, 3, 6, 9, 0), Timeliness::Early),
        ])
        .when(cmd(vn(2024, 3, 6, 10, 0), resolve()))
        .then(Refusal::AlreadyResolved);
    }

    #[test]
    fn not_while_waiting_for_a_supplement() {
        given([received(), supplement_requested(vn(2024, 3, 5, 9, 0))])
            .when(cmd(vn(2024, 3, 5, 10, 0), resolve()))
            .then(Refusal::AwaitingSupplement);
    }
}

mod endings {
    use super::*;

    fn withdraw() -> Action {
        Action::Withdraw {
            reason: text("applicant request"),
        }
    }
    fn stop() -> Action {
        Action::Stop {
            reason: text("court dispute"),
        }
    }

    #[test]
    fn withdrawn_while_open() {
        let at = vn(2024, 3, 5, 9, 0);
        let state = given([received()])
            .when(cmd(at, withdraw()))
            .then(DossierEvent::Withdrawn {
                reason: text("applicant request"),
            });
        assert_eq!(state.phase, Phase::Withdrawn);
        assert_eq!(state.ended_at, Some(at));
        assert_eq!(state.portal_status(), Some(7));
    }

    #[test]
    fn stopped_while_waiting_for_a_supplement() {
        let state = given([received(), supplement_requested(vn(2024, 3, 5, 9, 0))])
            .when(cmd(vn(2024, 4, 5, 9, 0), stop()))
            .then(DossierEvent::Stopped {
                cause: None,
                reason: text("court dispute"),
            });
        assert_eq!(state.phase, Phase::Stopped);
        assert_eq!(state.portal_status(), Some(8));
    }

    #[test]
    fn not_after_resolution() {
        for action in [withdraw(), stop()] {
            given([
                received(),
                resolved(vn(2024, 3, 6, 9, 0), Timeliness::Early),
            ])
            .when(cmd(vn(2024, 3, 6, 10, 0), action))
            .then(Refusal::AlreadyResolved);
        }
    }
}
