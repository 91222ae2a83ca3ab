//! Reception, refusal at the counter, digitization; existence and the ended / before-reception
//! guards every command goes through.

use calendar::{StatutoryTime, Timeliness};
use domain::{Action, DossierEvent, Phase, Refusal, RefusalKind};

use crate::support::*;

fn receive(statutory_time: StatutoryTime, components: Vec<domain::ComponentCode>) -> Action {
    Action::Receive {
        procedure: None,
        profile: profile(),
        statutory_time,
        fee_required: true,
        components,
        due_at: None,
        applicant: None,
        return_method: None,
    }
}

fn received_with_due(
    statutory_time: StatutoryTime,
    due_at: chrono::DateTime<chrono::Utc>,
) -> DossierEvent {
    DossierEvent::Received {
        procedure: None,
        profile: profile(),
        statutory_time,
        fee_required: true,
        components: components(),
        due_at,
        applicant: None,
        return_method: None,
    }
}

mod receive {
    use super::*;

    #[test]
    fn due_time_is_computed_in_working_days() {
        // Monday 09:00 + 3 working days = Thursday 09:00.
        let state = nothing_yet()
            .when(cmd(
                received_at(),
                receive(StatutoryTime::Days(3), components()),
            ))
            .then(received_with_due(
                StatutoryTime::Days(3),
                vn(2024, 3, 7, 9, 0),
            ));
        assert_eq!(state.phase, Phase::Open);
        assert_eq!(state.received_at, Some(received_at()));
        assert_eq!(state.due_at, Some(vn(2024, 3, 7, 9, 0)));
        assert_eq!(state.current_agency, Some(agency(HOME)));
        assert_eq!(state.components, components());
        assert_eq!(state.version, 1);
    }

    #[test]
    fn due_time_is_the_calendars() {
        for (at, st) in [
            (vn(2024, 3, 4, 9, 0), StatutoryTime::Days(3)),
            (vn(2024, 4, 26, 10, 0), StatutoryTime::Days(5)),
            (vn(2024, 2, 7, 15, 0), StatutoryTime::Hours(8)),
        ] {
            let (events, _) = nothing_yet()
                .when(cmd(at, receive(st, components())))
                .accepted();
            assert_eq!(
                events,
                vec![received_with_due(st, CALENDAR.due_time(at, st))]
            );
        }
    }

    #[test]
    fn due_time_in_working_hours_skips_the_lunch_break_and_the_night() {
        // Monday 16:00 + 2 working hours: one hour on Monday, one on Tuesday from 07:00.
        nothing_yet()
            .when(cmd(
                vn(2024, 3, 4, 16, 0),
                receive(StatutoryTime::Hours(2), components()),
            ))
            .then(received_with_due(
                StatutoryTime::Hours(2),
                vn(2024, 3, 5, 8, 0),
            ));
        // Monday 11:00 + 1 working hour: 30 minutes before lunch, 30 after 13:30.
        nothing_yet()
            .when(cmd(
                vn(2024, 3, 4, 11, 0),
                receive(StatutoryTime::Hours(1), components()),
            ))
            .then(received_with_due(
                StatutoryTime::Hours(1),
                vn(2024, 3, 4, 14, 0),
            ));
    }

    #[test]
    fn received_on_a_weekend_starts_counting_on_monday_morning() {
        nothing_yet()
            .when(cmd(
                vn(2024, 3, 2, 10, 0),
                receive(StatutoryTime::Hours(4), components()),
            ))
            .then(received_with_due(
                StatutoryTime::Hours(4),
                vn(2024, 3, 4, 11, 0),
            ));
    }

    #[test]
    fn imported_history_keeps_the_old_systems_appointment() {
        let appointment = vn(2024, 3, 8, 16, 0);
        nothing_yet()
            .when(cmd(
                received_at(),
                Action::Receive {
                    procedure: None,
                    profile: profile(),
                    statutory_time: StatutoryTime::Days(3),
                    fee_required: true,
                    components: components(),
                    due_at: Some(appointment),
                    applicant: None,
                    return_method: None,
                },
            ))
            .then(received_with_due(StatutoryTime::Days(3), appointment));
    }

    #[test]
    fn an_imported_appointment_before_reception_is_refused() {
        let appointment = vn(2024, 3, 1, 9, 0);
        nothing_yet()
            .when(cmd(
                received_at(),
                Action::Receive {
                    procedure: None,
                    profile: profile(),
                    statutory_time: StatutoryTime::Days(3),
                    fee_required: true,
                    components: components(),
                    due_at: Some(appointment),
                    applicant: None,
                    return_method: None,
                },
            ))
            .then(Refusal::DueBeforeReception {
                due_at: appointment,
                received_at: received_at(),
            });
    }

    #[test]
    fn needs_at_least_one_component() {
        nothing_yet()
            .when(cmd(received_at(), receive(StatutoryTime::Days(3), vec![])))
            .then(Refusal::NoComponents);
    }

    #[test]
    fn refuses_a_component_listed_twice() {
        nothing_yet()
            .when(cmd(
                received_at(),
                receive(
                    StatutoryTime::Days(3),
                    vec![comp("GT01"), comp("GT02"), comp("GT01")],
                ),
            ))
            .then(Refusal::DuplicateComponent {
                component: comp("GT01"),
            });
    }

    #[test]
    fn cannot_receive_the_same_dossier_twice() {
        given([received()])
            .when(cmd(
                vn(2024, 3, 5, 9, 0),
                receive(StatutoryTime::Days(3), components()),
            ))
            .then(Refusal::AlreadyExists);
        given([ev(received_at(), refused_at_intake())])
            .when(cmd(
                vn(2024, 3, 5, 9, 0),
                receive(StatutoryTime::Days(3), components()),
            ))
            .then(Refusal::AlreadyExists);
    }
}

fn refused_at_intake() -> DossierEvent {
    DossierEvent::RefusedAtIntake {
        profile: profile(),
        reason: text("incomplete"),
    }
}

mod refuse_at_intake {
    use super::*;

    #[test]
    fn is_the_first_and_only_event() {
        let state = nothing_yet()
            .when(cmd(
                received_at(),
                Action::RefuseAtIntake {
                    profile: profile(),
                    reason: text("incomplete"),
                },
            ))
            .then(refused_at_intake());
        assert_eq!(state.phase, Phase::RefusedAtIntake);
        assert_eq!(state.received_at, None);
        assert_eq!(state.ended_at, Some(received_at()));
        assert_eq!(state.portal_status(), Some(3));
    }

    #[test]
    fn cannot_refuse_an_existing_dossier() {
        given([received()])
            .when(cmd(
                vn(2024, 3, 5, 9, 0),
                Action::RefuseAtIntake {
                    profile: profile(),
                    reason: text("incomplete"),
                },
            ))
            .then(Refusal::AlreadyExists);
    }
}

mod existence_and_guards {
    use super::*;

    #[test]
    fn only_intake_can_start_a_dossier() {
        for action in sample_actions().into_iter().filter(|a| !is_intake(a)) {
            let refusal = nothing_yet()
                .when(cmd(received_at(), action))
                .then(Refusal::UnknownDossier);
            assert_eq!(refusal.version, 0);
        }
        assert_eq!(Refusal::UnknownDossier.kind(), RefusalKind::NotFound);
    }

    #[test]
    fn an_ended_dossier_refuses_everything() {
        let endings = [
            (
                ev(received_at(), refused_at_intake()),
                Phase::RefusedAtIntake,
                None,
            ),
            (
                ev(
                    vn(2024, 3, 5, 9, 0),
                    DossierEvent::Withdrawn {
                        reason: text("applicant request"),
                    },
                ),
                Phase::Withdrawn,
                Some(received()),
            ),
            (
                ev(
                    vn(2024, 3, 5, 9, 0),
                    DossierEvent::Stopped {
                        cause: None,
                        reason: text("court dispute"),
                    },
                ),
                Phase::Stopped,
                Some(received()),
            ),
        ];
        for (ending, phase, reception) in endings {
            let history: Vec<_> = reception.into_iter().chain([ending]).collect();
            for action in sample_actions() {
                let expected = if is_intake(&action) {
                    Refusal::AlreadyExists
                } else {
                    Refusal::Ended { phase }
                };
                given(history.clone())
                    .when(cmd(vn(2024, 3, 6, 9, 0), action))
                    .then(expected);
            }
        }
    }

    #[test]
    fn nothing_happens_before_reception() {
        let before = vn(2024, 3, 4, 8, 59);
        for action in sample_actions().into_iter().filter(|a| !is_intake(a)) {
            given([received()])
                .when(cmd(before, action))
                .then(Refusal::BeforeReception {
                    received_at: received_at(),
                });
        }
        // At the very minute of reception is fine.
        given([received()])
            .when(cmd(
                received_at(),
                Action::RecordDigitized {
                    digitized: vec![comp("GT01")],
                    reused: vec![],
                },
            ))
            .then(DossierEvent::ComponentsDigitized {
                digitized: vec![comp("GT01")],
                reused: vec![],
            });
    }

    #[test]
    fn a_resolved_dossier_is_not_ended() {
        // Results steps still go on after a resolution (tested in `results`); here only that the
        // guard does not mistake resolved for ended.
        given([
            received(),
            resolved(vn(2024, 3, 6, 9, 0), Timeliness::Early),
        ])
        .when(cmd(
            vn(2024, 3, 6, 10, 0),
            Action::ReturnResult {
                method: domain::ReturnMethod::Post,
            },
        ))
        .then(DossierEvent::ResultReturned {
            method: domain::ReturnMethod::Post,
        });
    }
}

mod digitize {
    use super::*;

    fn record(digitized: &[&str], reused: &[&str]) -> Action {
        Action::RecordDigitized {
            digitized: digitized.iter().map(|c| comp(c)).collect(),
            reused: reused.iter().map(|c| comp(c)).collect(),
        }
    }
    fn recorded(digitized: &[&str], reused: &[&str]) -> DossierEvent {
        DossierEvent::ComponentsDigitized {
            digitized: digitized.iter().map(|c| comp(c)).collect(),
            reused: reused.iter().map(|c| comp(c)).collect(),
        }
    }
    fn at() -> chrono::DateTime<chrono::Utc> {
        vn(2024, 3, 4, 9, 5)
    }

    #[test]
    fn records_digitized_and_reused_components() {
        let state = given([received()])
            .when(cmd(at(), record(&["GT01", "GT03"], &["GT02"])))
            .then(recorded(&["GT01", "GT03"], &["GT02"]));
        assert_eq!(
            state.digitized,
            [comp("GT01"), comp("GT03")].into_iter().collect()
        );
        assert_eq!(state.reused, [comp("GT02")].into_iter().collect());
        // Digitization is not processing: the portal still says "received".
        assert_eq!(state.portal_status(), Some(2));
    }

    #[test]
    fn recording_again_adds_only_what_is_new() {
        let state = given([received(), ev(at(), recorded(&["GT01"], &[]))])
            .when(cmd(at(), record(&["GT01", "GT02"], &[])))
            .then(recorded(&["GT02"], &[]));
        assert_eq!(
            state.digitized,
            [comp("GT01"), comp("GT02")].into_iter().collect()
        );
    }

    #[test]
    fn recording_only_known_components_is_refused() {
        given([received(), ev(at(), recorded(&["GT01", "GT02"], &["GT03"]))])
            .when(cmd(at(), record(&["GT02"], &["GT03"])))
            .then(Refusal::AlreadyDigitized);
    }

    #[test]
    fn only_submitted_components() {
        given([received()])
            .when(cmd(at(), record(&["GT01"], &["GT09"])))
            .then(Refusal::UnknownComponent {
                component: comp("GT09"),
            });
    }

    #[test]
    fn a_component_is_either_digitized_or_reused() {
        given([received()])
            .when(cmd(at(), record(&["GT01", "GT02"], &["GT02"])))
            .then(Refusal::DigitizedAndReused {
                component: comp("GT02"),
            });
        // Across commands too.
        given([received(), ev(at(), recorded(&[], &["GT02"]))])
            .when(cmd(at(), record(&["GT02"], &[])))
            .then(Refusal::DigitizedAndReused {
                component: comp("GT02"),
            });
    }

    #[test]
    fn something_must_be_given_once_only() {
        given([received()])
            .when(cmd(at(), record(&[], &[])))
            .then(Refusal::NothingToRecord);
        given([received()])
            .when(cmd(at(), record(&["GT01", "GT01"], &[])))
            .then(Refusal::DuplicateComponent {
                component: comp("GT01"),
            });
    }

    #[test]
    fn only_while_open() {
        given([
            received(),
            resolved(vn(2024, 3, 6, 9, 0), Timeliness::Early),
        ])
        .when(cmd(vn(2024, 3, 6, 10, 0), record(&["GT01"], &[])))
        .then(Refusal::AlreadyResolved);
        // Paused for a supplement is still open.
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
        .when(cmd(vn(2024, 3, 5, 10, 0), record(&["GT01"], &[])))
        .then(recorded(&["GT01"], &[]));
    }
}
