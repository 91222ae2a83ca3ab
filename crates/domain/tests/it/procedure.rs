//! A procedure's own rules from the catalogue (DOMAIN.md "Rules in force (2025–2026)"):
//! supplement policy and limit, automatic closing, same-day cut-off, financial obligations.
//! Each table row names its source.

use calendar::{StatutoryTime, WorkingDuration};
use chrono::{DateTime, NaiveTime, Utc};
use domain::{Action, DossierEvent, Event, ProcedureRules, Refusal, StopCause, SupplementPolicy};

use crate::support::*;

/// A catalogue entry as sector decrees describe it: one supplement request at most, restart,
/// closed after 15 working days without the supplement (DOMAIN.md "Supplements differ by
/// procedure"), and the land practice of a financial obligation that does not count.
fn land_rules() -> ProcedureRules {
    ProcedureRules {
        catalogue_version: 7,
        supplement_policy: SupplementPolicy::Restart,
        max_supplement_requests: Some(1),
        close_after_working_days: Some(15),
        same_day_cutoff: None,
        obligation_pauses_clock: true,
    }
}

fn received_with(rules: ProcedureRules) -> Event {
    let DossierEvent::Received {
        profile,
        statutory_time,
        fee_required,
        components,
        due_at,
        ..
    } = received_event(true)
    else {
        unreachable!()
    };
    ev(
        received_at(),
        DossierEvent::Received {
            profile,
            statutory_time,
            fee_required,
            components,
            due_at,
            procedure: Some(rules),
            applicant: None,
            return_method: None,
        },
    )
}

fn request_supplement() -> Action {
    Action::RequestSupplement {
        reason: text("missing land plot map"),
    }
}

fn requested(at: DateTime<Utc>, closes_at: Option<DateTime<Utc>>) -> Event {
    ev(
        at,
        DossierEvent::SupplementRequested {
            reason: text("missing land plot map"),
            closes_at,
        },
    )
}

#[test]
fn reception_records_the_rules_it_used() {
    let rules = land_rules();
    let (events, state) = nothing_yet()
        .when(cmd(
            received_at(),
            Action::Receive {
                profile: profile(),
                statutory_time: StatutoryTime::Days(3),
                fee_required: true,
                components: components(),
                due_at: None,
                procedure: Some(rules.clone()),
                applicant: None,
                return_method: None,
            },
        ))
        .accepted();
    assert!(matches!(
        &events[0],
        DossierEvent::Received { procedure: Some(p), due_at, .. } if *p == rules && *due_at == due()
    ));
    assert_eq!(state.procedure, Some(rules));
}

/// Supplement limits, per procedure (source: sector decrees quoted in DOMAIN.md: "at most one
/// request during the whole processing"; `None` = unlimited, the rule before the catalogue).
#[test]
fn supplement_requests_beyond_the_procedures_maximum_are_refused() {
    // (maximum, requests already made and answered, expected)
    let table: [(Option<u32>, u32, Option<u32>); 5] = [
        (Some(1), 0, None),
        (Some(1), 1, Some(1)),
        (Some(2), 1, None),
        (Some(2), 2, Some(2)),
        (None, 5, None),
    ];
    for (max, made, refused_at) in table {
        let rules = ProcedureRules {
            max_supplement_requests: max,
            close_after_working_days: None,
            ..land_rules()
        };
        let mut events = vec![received_with(rules)];
        for i in 0..made {
            let at = vn(2024, 3, 4, 10 + i, 0);
            events.push(requested(at, None));
            events.push(ev(
                at + chrono::Duration::minutes(30),
                DossierEvent::SupplementReceived {
                    due_at: due(),
                    paused: WorkingDuration::from_minutes(30),
                },
            ));
        }
        let when = given(events).when(cmd(vn(2024, 3, 5, 9, 0), request_supplement()));
        match refused_at {
            Some(max) => {
                when.then(Refusal::SupplementLimitReached {
                    max,
                    catalogue_version: 7,
                });
            }
            None => {
                when.accepted();
            }
        }
    }
}

/// Automatic closing after N working days without the supplement (source: sector decrees,
/// DOMAIN.md: "the dossier is closed after 15 working days without the supplement").
#[test]
fn an_unanswered_request_closes_the_dossier_by_itself_at_its_deadline() {
    // Requested Monday 4 March 2024 10:00; 15 working days (no holiday in between) later is
    // Monday 25 March 10:00.
    let at = vn(2024, 3, 4, 10, 0);
    let closes = vn(2024, 3, 25, 10, 0);
    let state = given([received_with(land_rules())])
        .when(cmd(at, request_supplement()))
        .then(DossierEvent::SupplementRequested {
            reason: text("missing land plot map"),
            closes_at: Some(closes),
        });
    assert_eq!(state.supplement_closes_at, Some(closes));

    let history = || vec![received_with(land_rules()), requested(at, Some(closes))];
    // Not before the deadline (at it is still in time, like `late`).
    given(history())
        .when(cmd(closes, Action::CloseUnsupplemented))
        .then(Refusal::NotYetClosing { closes_at: closes });
    // After it: a `stopped` event with its cause, dated at the deadline itself.
    let when = given(history()).when(cmd(vn(2024, 3, 26, 8, 0), Action::CloseUnsupplemented));
    let command = when.command.clone();
    let (events, state) = when.accepted();
    let stopped = &events[0];
    assert!(matches!(
        stopped,
        DossierEvent::Stopped {
            cause: Some(StopCause::SupplementNotReceived { requested_at, closes_at }),
            ..
        } if *requested_at == at && *closes_at == closes
    ));
    assert_eq!(domain::event_time(&command, stopped), closes);
    assert_eq!(state.portal_status(), Some(8));
    // Exactly once: the closed dossier has ended.
    let mut closed = history();
    closed.push(ev(closes, stopped.clone()));
    given(closed)
        .when(cmd(vn(2024, 3, 27, 8, 0), Action::CloseUnsupplemented))
        .then(Refusal::Ended {
            phase: domain::Phase::Stopped,
        });
    // A supplement dated after the deadline comes too late.
    given(history())
        .when(cmd(vn(2024, 3, 25, 10, 1), Action::ReceiveSupplement))
        .then(Refusal::SupplementDeadlinePassed { closes_at: closes });
    // One dated at the deadline still counts.
    given(history())
        .when(cmd(closes, Action::ReceiveSupplement))
        .accepted();
    // No deadline when the procedure has none, or nothing is pending.
    let never = ProcedureRules {
        close_after_working_days: None,
        ..land_rules()
    };
    given([received_with(never), requested(at, None)])
        .when(cmd(vn(2024, 5, 1, 8, 0), Action::CloseUnsupplemented))
        .then(Refusal::NoClosingDeadline);
    given([received_with(land_rules())])
        .when(cmd(vn(2024, 5, 1, 8, 0), Action::CloseUnsupplemented))
        .then(Refusal::NoClosingDeadline);
}

/// The procedure's supplement policy wins over the province's (source: DOMAIN.md "per
/// procedure: policy restart or extend").
#[test]
fn the_procedures_supplement_policy_overrides_the_provinces() {
    let extend = ProcedureRules {
        supplement_policy: SupplementPolicy::Extend,
        close_after_working_days: None,
        ..land_rules()
    };
    // Requested Monday 4 March 10:00, received Tuesday 5 March 10:00: 8 working hours paused.
    let history =
        |rules: ProcedureRules| vec![received_with(rules), requested(vn(2024, 3, 4, 10, 0), None)];
    // (procedure policy, province policy, expected due time)
    let table = [
        // extend: Thursday 7 March 09:00 + 8 working hours = Friday 8 March 09:00
        (
            extend.clone(),
            SupplementPolicy::Restart,
            vn(2024, 3, 8, 9, 0),
        ),
        // restart: 3 working days from Tuesday 5 March 10:00 = Friday 8 March 10:00
        (
            ProcedureRules {
                close_after_working_days: None,
                ..land_rules()
            },
            SupplementPolicy::Extend,
            vn(2024, 3, 8, 10, 0),
        ),
    ];
    for (rules, province, expected) in table {
        given(history(rules))
            .policy(province)
            .when(cmd(vn(2024, 3, 5, 10, 0), Action::ReceiveSupplement))
            .then(DossierEvent::SupplementReceived {
                due_at: expected,
                paused: WorkingDuration::from_hours(8),
            });
    }
}

/// Same-day procedures (source: DOMAIN.md "Same-day cut-off": before the cut-off hour the
/// result is due the same day, else the next working day), office hours 07:00–11:30,
/// 13:30–17:00.
#[test]
fn same_day_procedures_are_due_at_the_close_of_the_day_before_the_cutoff() {
    let cutoff = NaiveTime::from_hms_opt(15, 0, 0).unwrap();
    let rules = ProcedureRules {
        same_day_cutoff: Some(cutoff),
        ..land_rules()
    };
    // (received, due)
    let table = [
        // Monday before the cut-off: the same day at 17:00
        (vn(2024, 3, 4, 9, 0), vn(2024, 3, 4, 17, 0)),
        (vn(2024, 3, 4, 14, 59), vn(2024, 3, 4, 17, 0)),
        // before the office opens: still that day
        (vn(2024, 3, 4, 6, 30), vn(2024, 3, 4, 17, 0)),
        // at or after the cut-off: the next working day
        (vn(2024, 3, 4, 15, 0), vn(2024, 3, 5, 17, 0)),
        // Friday after the cut-off: Monday
        (vn(2024, 3, 8, 16, 0), vn(2024, 3, 11, 17, 0)),
        // Saturday: Monday
        (vn(2024, 3, 9, 9, 0), vn(2024, 3, 11, 17, 0)),
        // Monday 29 April 2024 after the cut-off: 30 April and 1 May are holidays → Thursday 2 May
        (vn(2024, 4, 29, 16, 0), vn(2024, 5, 2, 17, 0)),
    ];
    for (at, expected) in table {
        let (events, _) = nothing_yet()
            .when(cmd(
                at,
                Action::Receive {
                    profile: profile(),
                    statutory_time: StatutoryTime::Days(1),
                    fee_required: false,
                    components: components(),
                    due_at: None,
                    procedure: Some(rules.clone()),
                    applicant: None,
                    return_method: None,
                },
            ))
            .accepted();
        let DossierEvent::Received { due_at, .. } = &events[0] else {
            panic!("received expected")
        };
        assert_eq!(*due_at, expected, "received at {at}");
    }
}

fn obligation_requested(at: DateTime<Utc>, pauses_clock: bool) -> Event {
    ev(
        at,
        DossierEvent::FinancialObligationRequested {
            reason: text("land use levy"),
            pauses_clock,
        },
    )
}

/// Financial obligation (portal status 6), pausing the clock where the procedure says so
/// (source: DOMAIN.md "Financial obligation (portal status 6)", inferred from land practice).
#[test]
fn a_financial_obligation_pauses_the_clock_only_where_the_procedure_says_so() {
    let no_pause = ProcedureRules {
        obligation_pauses_clock: false,
        ..land_rules()
    };
    // (rules at reception, expected pauses_clock)
    for (rules, pauses) in [
        (Some(land_rules()), true),
        (Some(no_pause), false),
        (None, false),
    ] {
        let reception = match rules {
            Some(rules) => received_with(rules),
            None => received(),
        };
        let state = given([reception.clone()])
            .when(cmd(
                vn(2024, 3, 4, 10, 0),
                Action::RequestFinancialObligation {
                    reason: text("land use levy"),
                },
            ))
            .then(DossierEvent::FinancialObligationRequested {
                reason: text("land use levy"),
                pauses_clock: pauses,
            });
        assert_eq!(state.portal_status(), Some(6));
        assert_eq!(state.clock_stopped(), pauses);
        // Fulfilled Tuesday 10:00: 8 working hours waited; the due time moves only if paused.
        let (due_at, paused) = if pauses {
            (vn(2024, 3, 8, 9, 0), WorkingDuration::from_hours(8))
        } else {
            (due(), WorkingDuration::ZERO)
        };
        let state = given([
            reception,
            obligation_requested(vn(2024, 3, 4, 10, 0), pauses),
        ])
        .when(cmd(
            vn(2024, 3, 5, 10, 0),
            Action::FulfilFinancialObligation,
        ))
        .then(DossierEvent::FinancialObligationFulfilled { due_at, paused });
        assert_eq!(state.due_at, Some(due_at));
        assert_eq!(state.portal_status(), Some(4));
    }
}

#[test]
fn financial_obligation_rules() {
    let pending = || {
        vec![
            received_with(land_rules()),
            obligation_requested(vn(2024, 3, 4, 10, 0), true),
        ]
    };
    let obligation = || Action::RequestFinancialObligation {
        reason: text("land use levy"),
    };
    let later = vn(2024, 3, 20, 9, 0);
    // (history, action, refusal)
    let table: Vec<(Vec<Event>, Action, Refusal)> = vec![
        (pending(), obligation(), Refusal::ObligationAlreadyPending),
        (pending(), resolve(), Refusal::AwaitingObligation),
        (pending(), request_supplement(), Refusal::AwaitingObligation),
        // a paused clock is never late
        (pending(), Action::MarkLate, Refusal::AwaitingObligation),
        (
            vec![received_with(land_rules())],
            Action::FulfilFinancialObligation,
            Refusal::NoObligationPending,
        ),
        (
            vec![
                received_with(land_rules()),
                requested(vn(2024, 3, 4, 10, 0), None),
            ],
            obligation(),
            Refusal::AwaitingSupplement,
        ),
    ];
    for (history, action, refusal) in table {
        given(history).when(cmd(later, action)).then(refusal);
    }
    // A pending obligation that does not pause the clock lets the dossier fall late.
    given([
        received_with(land_rules()),
        obligation_requested(vn(2024, 3, 4, 10, 0), false),
    ])
    .when(cmd(later, Action::MarkLate))
    .then(DossierEvent::Late { due_at: due() });
    // Fulfilment cannot be dated before the request.
    given(pending())
        .when(cmd(
            vn(2024, 3, 4, 9, 30),
            Action::FulfilFinancialObligation,
        ))
        .then(Refusal::BeforePreviousStep {
            step: "the financial obligation request",
            at: vn(2024, 3, 4, 10, 0),
        });
}
