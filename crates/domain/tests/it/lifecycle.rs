//! Whole lives of dossiers through decide + evolve: the folded state and the portal status codes.

use std::collections::{BTreeMap, BTreeSet};

use calendar::{StatutoryTime, Timeliness, WorkingDuration};
use domain::{
    Action, Apology, ApologyDelivery, Command, Dossier, Event, FeeKind, Outcome, PaymentChannel,
    PaymentRecord, Phase, Rating, Resolution, ReturnMethod, SupplementPolicy, TransferMode, decide,
    event_time,
};

use crate::support::*;

/// Runs commands through decide and evolve; returns the log and the portal status after each.
fn run(commands: Vec<Command>, policy: SupplementPolicy) -> (Dossier, Vec<Event>, Vec<Option<u8>>) {
    let mut state = Dossier::default();
    let mut log = Vec::new();
    let mut statuses = Vec::new();
    for command in commands {
        let events = decide(&state, &command, rules(policy))
            .unwrap_or_else(|refusal| panic!("{:?} refused: {refusal}", command.action));
        for body in events.into_events() {
            let event = Event {
                occurred_at: event_time(&command, &body),
                body,
            };
            state.evolve(&event);
            log.push(event);
        }
        statuses.push(state.portal_status());
    }
    (state, log, statuses)
}

#[test]
fn a_full_life_folds_back_to_the_expected_state() {
    let restarted_due = vn(2024, 3, 11, 9, 0);
    let commands = vec![
        cmd(
            received_at(),
            Action::Receive {
                procedure: None,
                profile: profile(),
                statutory_time: StatutoryTime::Days(3),
                fee_required: true,
                components: components(),
                due_at: None,
                applicant: None,
                return_method: None,
            },
        ),
        cmd(
            vn(2024, 3, 4, 9, 5),
            Action::RecordDigitized {
                digitized: vec![comp("GT01"), comp("GT02")],
                reused: vec![comp("GT03")],
            },
        ),
        cmd(
            vn(2024, 3, 4, 9, 30),
            Action::AssessFee {
                amount_vnd: 200_000,
                kind: FeeKind::Fee,
            },
        ),
        cmd(
            vn(2024, 3, 4, 10, 0),
            Action::RecordPayment {
                amount_vnd: 200_000,
                channel: PaymentChannel::NationalPlatform,
                transaction_id: txn("TX-1"),
            },
        ),
        cmd(
            vn(2024, 3, 5, 9, 0),
            Action::RequestSupplement {
                reason: text("map"),
            },
        ),
        cmd(vn(2024, 3, 6, 9, 0), Action::ReceiveSupplement),
        cmd(
            vn(2024, 3, 6, 10, 0),
            Action::Transfer {
                to_agency: agency(OTHER),
                mode: TransferMode::Electronic,
            },
        ),
        cmd(vn(2024, 3, 11, 9, 15), Action::MarkLate),
        cmd(
            vn(2024, 3, 11, 10, 0),
            Action::IssueApology {
                reason: text("site survey delayed"),
                new_appointment: vn(2024, 3, 13, 9, 0),
                signer: Some(text("Nguyễn Văn A, Phó Chủ tịch UBND")),
                delivery: Some(ApologyDelivery::PortalAccount),
            },
        ),
        cmd(
            vn(2024, 3, 12, 15, 0),
            Action::Resolve {
                outcome: Outcome::Approved,
                deciding_agency: agency(OTHER),
            },
        ),
        cmd(
            vn(2024, 3, 12, 16, 0),
            Action::AttachResult {
                document_ref: text("QD-123/2024"),
                sha256: SHA.to_owned(),
            },
        ),
        cmd(
            vn(2024, 3, 13, 9, 0),
            Action::ReturnResult {
                method: ReturnMethod::Counter,
            },
        ),
        cmd(
            vn(2024, 3, 13, 9, 10),
            Action::Rate {
                rating: Rating::Satisfied,
            },
        ),
    ];
    let (state, log, statuses) = run(commands, SupplementPolicy::Restart);

    assert_eq!(
        statuses,
        [2, 2, 6, 4, 5, 4, 4, 4, 4, 9, 9, 10, 10].map(Some).to_vec(),
        "portal status after each step"
    );
    // The late event is dated at the due time, not when the watcher noticed.
    assert_eq!(log[7].occurred_at, restarted_due);

    let expected = Dossier {
        supplement_closes_at: None,
        obligation_pauses_clock: false,
        obligation_since: None,
        procedure: None,
        version: 13,
        phase: Phase::Resolved,
        profile: Some(profile()),
        received_at: Some(received_at()),
        statutory_time: Some(StatutoryTime::Days(3)),
        fee_required: true,
        components: components(),
        digitized: BTreeSet::from([comp("GT01"), comp("GT02")]),
        reused: BTreeSet::from([comp("GT03")]),
        due_at: Some(restarted_due),
        current_agency: Some(agency(OTHER)),
        transfers: 1,
        transferred_electronically: true,
        paused_since: None,
        supplement_requests: 1,
        processing_started: true,
        late_marked: true,
        late_withdrawn: false,
        apology: Some(Apology {
            issued_at: vn(2024, 3, 11, 10, 0),
            new_appointment: vn(2024, 3, 13, 9, 0),
            on_time: false,
            original_due_at: Some(restarted_due),
            signer: Some(text("Nguyễn Văn A, Phó Chủ tịch UBND")),
            delivery: Some(ApologyDelivery::PortalAccount),
        }),
        fees_owed_vnd: 200_000,
        paid_vnd: 200_000,
        paid_online: true,
        transactions: BTreeMap::from([(
            txn("TX-1"),
            PaymentRecord {
                amount_vnd: 200_000,
                channel: PaymentChannel::NationalPlatform,
            },
        )]),
        resolution: Some(Resolution {
            at: vn(2024, 3, 12, 15, 0),
            outcome: Outcome::Approved,
            deciding_agency: agency(OTHER),
            due_at: restarted_due,
            timeliness: Timeliness::Late,
        }),
        result_digitized: true,
        returned_at: Some(vn(2024, 3, 13, 9, 0)),
        return_method: Some(ReturnMethod::Counter),
        rating: Some(Rating::Satisfied),
        ended_at: None,
        requested_return: None,
    };
    assert_eq!(state, expected);
    // Folding the stored log from scratch gives the same state as evolving step by step.
    assert_eq!(Dossier::from_events(&log), expected);
    assert_eq!(Dossier::from_events(log.clone()), expected);
}

#[test]
fn a_never_received_dossier_has_no_portal_status() {
    assert_eq!(Dossier::default().portal_status(), None);
    assert_eq!(Dossier::default().phase, Phase::NotReceived);
    assert_eq!(Dossier::default().version, 0);
}

#[test]
fn endings_and_their_portal_status() {
    let receive = || {
        cmd(
            received_at(),
            Action::Receive {
                procedure: None,
                profile: profile(),
                statutory_time: StatutoryTime::Days(3),
                fee_required: false,
                components: components(),
                due_at: None,
                applicant: None,
                return_method: None,
            },
        )
    };
    let (state, _, statuses) = run(
        vec![
            receive(),
            cmd(
                vn(2024, 3, 5, 9, 0),
                Action::RequestSupplement {
                    reason: text("map"),
                },
            ),
            cmd(
                vn(2024, 3, 6, 9, 0),
                Action::Withdraw {
                    reason: text("applicant request"),
                },
            ),
        ],
        SupplementPolicy::Extend,
    );
    assert_eq!(statuses, [2, 5, 7].map(Some).to_vec());
    assert_eq!(state.phase, Phase::Withdrawn);
    assert_eq!(state.ended_at, Some(vn(2024, 3, 6, 9, 0)));

    let (state, _, statuses) = run(
        vec![
            receive(),
            cmd(
                vn(2024, 3, 5, 9, 0),
                Action::Stop {
                    reason: text("court dispute"),
                },
            ),
        ],
        SupplementPolicy::Extend,
    );
    assert_eq!(statuses, [2, 8].map(Some).to_vec());
    assert_eq!(state.phase, Phase::Stopped);

    let (state, _, statuses) = run(
        vec![cmd(
            received_at(),
            Action::RefuseAtIntake {
                profile: profile(),
                reason: text("incomplete"),
            },
        )],
        SupplementPolicy::Extend,
    );
    assert_eq!(statuses, vec![Some(3)]);
    assert_eq!(state.version, 1);
    assert_eq!(state.profile, Some(profile()));
}

#[test]
fn extend_policy_life_keeps_the_paused_time_in_the_event() {
    let (state, log, _) = run(
        vec![
            cmd(
                received_at(),
                Action::Receive {
                    procedure: None,
                    profile: profile(),
                    statutory_time: StatutoryTime::Days(3),
                    fee_required: false,
                    components: components(),
                    due_at: None,
                    applicant: None,
                    return_method: None,
                },
            ),
            cmd(
                vn(2024, 3, 5, 9, 0),
                Action::RequestSupplement {
                    reason: text("map"),
                },
            ),
            cmd(vn(2024, 3, 6, 9, 0), Action::ReceiveSupplement),
            cmd(vn(2024, 3, 8, 8, 0), resolve()),
        ],
        SupplementPolicy::Extend,
    );
    assert_eq!(
        log[2].body,
        domain::DossierEvent::SupplementReceived {
            due_at: vn(2024, 3, 8, 9, 0),
            paused: WorkingDuration::from_hours(8),
        }
    );
    assert_eq!(
        state.resolution.map(|r| r.timeliness),
        Some(Timeliness::OnTime)
    );
}
