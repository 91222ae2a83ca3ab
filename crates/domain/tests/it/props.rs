//! Random command sequences through decide + evolve: no panic, the version counts the events,
//! the once-only events stay once-only, and a finished dossier cannot be resolved again.

use calendar::StatutoryTime;
use chrono::{DateTime, Duration, Utc};
use domain::{
    Action, ApologyDelivery, Command, Dossier, DossierEvent, Event, FeeKind, MAX_AMOUNT_VND,
    Outcome, PaymentChannel, Phase, Rating, Refusal, ReturnMethod, SupplementPolicy, TransferMode,
    decide, event_time,
};
use proptest::prelude::*;

use crate::support::*;

/// A command drawn from a small vocabulary so that sequences hit the interesting states.
#[derive(Debug, Clone)]
struct Step {
    kind: u8,
    /// Minutes since the previous command; negative ones test back-dating.
    advance: i64,
    param: u8,
}

fn step() -> impl Strategy<Value = Step> {
    // Endings are rarer than the rest, so that sequences get deep enough to pay, be late,
    // apologise and be rated.
    let kind = prop_oneof![
        1 => Just(0u8),
        1 => Just(1u8),
        12 => 2u8..11,
        1 => 11u8..13,
        6 => 13u8..16,
    ];
    let advance = prop_oneof![3 => 0i64..600, 1 => -600i64..0, 1 => 600i64..6000];
    (kind, advance, any::<u8>()).prop_map(|(kind, advance, param)| Step {
        kind,
        advance,
        param,
    })
}

fn pick<T: Clone>(options: &[T], param: u8) -> T {
    options[usize::from(param) % options.len()].clone()
}

/// The kind of the first step of most sequences: a reception that is always accepted.
const WELL_FORMED_RECEIVE: u8 = 16;

fn action(step: &Step, at: DateTime<Utc>) -> Action {
    let p = step.param;
    let codes = ["GT01", "GT02", "GT03", "GT09"];
    let subset = |bits: u8| -> Vec<_> {
        codes
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, c)| comp(c))
            .collect()
    };
    match step.kind {
        0 => Action::Receive {
            procedure: None,
            profile: profile(),
            statutory_time: if p % 2 == 0 {
                StatutoryTime::Days(u32::from(p % 5) + 1)
            } else {
                StatutoryTime::Hours(u32::from(p % 16) + 1)
            },
            fee_required: p % 3 != 0,
            components: pick(
                &[
                    components(),
                    components(),
                    vec![],
                    vec![comp("GT01"), comp("GT01")],
                ],
                p,
            ),
            due_at: pick(
                &[
                    None,
                    None,
                    Some(at + Duration::days(3)),
                    Some(at - Duration::hours(1)),
                ],
                p / 4,
            ),
            applicant: None,
            return_method: None,
        },
        1 => Action::RefuseAtIntake {
            profile: profile(),
            reason: text("incomplete"),
        },
        2 => Action::RecordDigitized {
            digitized: subset(p & 0x0f),
            reused: subset(p >> 4),
        },
        3 => Action::Transfer {
            to_agency: agency(pick(&[HOME, OTHER, "000.00.99.H40"], p)),
            mode: pick(&[TransferMode::Electronic, TransferMode::Paper], p / 3),
        },
        4 => Action::RequestSupplement {
            reason: text("map"),
        },
        5 => Action::ReceiveSupplement,
        6 => Action::MarkLate,
        7 => Action::IssueApology {
            reason: text("delayed"),
            new_appointment: at + Duration::hours(i64::from(p) - 40),
            signer: (p % 2 == 0).then(|| text("signer")),
            delivery: ApologyDelivery::ALL.get(p as usize % 5).copied(),
        },
        8 => Action::AssessFee {
            amount_vnd: pick(
                &[-1, 0, 50_000, 100_000, MAX_AMOUNT_VND, MAX_AMOUNT_VND + 1],
                p,
            ),
            kind: pick(&[FeeKind::Fee, FeeKind::Charge, FeeKind::Tax], p / 6),
        },
        9 => Action::RecordPayment {
            amount_vnd: pick(&[50_000, 100_000, 0, MAX_AMOUNT_VND], p),
            channel: pick(
                &[
                    PaymentChannel::NationalPlatform,
                    PaymentChannel::ProvincialGateway,
                    PaymentChannel::Counter,
                ],
                p / 4,
            ),
            transaction_id: txn(pick(&["TX-1", "TX-2", "TX-3"], p / 12)),
        },
        10 => Action::Resolve {
            outcome: pick(&[Outcome::Approved, Outcome::Refused], p),
            deciding_agency: agency(HOME),
        },
        11 => Action::Withdraw {
            reason: text("applicant"),
        },
        12 => Action::Stop {
            reason: text("stopped"),
        },
        13 => Action::AttachResult {
            document_ref: text("QD-1"),
            sha256: pick(&[SHA.to_owned(), SHA.to_uppercase()], p),
        },
        14 => Action::ReturnResult {
            method: pick(
                &[
                    ReturnMethod::Counter,
                    ReturnMethod::Post,
                    ReturnMethod::Online,
                ],
                p,
            ),
        },
        15 => Action::Rate {
            rating: pick(
                &[
                    Rating::VerySatisfied,
                    Rating::Satisfied,
                    Rating::Unsatisfied,
                ],
                p,
            ),
        },
        _ => Action::Receive {
            procedure: None,
            profile: profile(),
            statutory_time: StatutoryTime::Days(u32::from(p % 5) + 1),
            fee_required: p % 4 != 0,
            components: components(),
            due_at: None,
            applicant: None,
            return_method: None,
        },
    }
}

fn count(log: &[Event], event_type: &str) -> usize {
    log.iter()
        .filter(|e| e.body.event_type().as_str() == event_type)
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_sequences_keep_the_invariants(
        start_with_receive in prop::bool::weighted(0.9),
        first_param in any::<u8>(),
        steps in prop::collection::vec(step(), 0..40),
        extend in any::<bool>(),
    ) {
        let policy = if extend { SupplementPolicy::Extend } else { SupplementPolicy::Restart };
        let mut at = received_at();
        let mut state = Dossier::default();
        let mut log: Vec<Event> = Vec::new();
        let first = Step { kind: if start_with_receive { WELL_FORMED_RECEIVE } else { 1 }, advance: 0, param: first_param };

        for step in std::iter::once(&first).chain(&steps) {
            at += Duration::minutes(step.advance);
            let command = Command { occurred_at: at, action: action(step, at) };
            let was = state.clone();
            match decide(&state, &command, rules(policy)) {
                Ok(events) => {
                    for body in events.into_events() {
                        let event = Event { occurred_at: event_time(&command, &body), body };
                        if let Some(received_at) = state.received_at {
                            prop_assert!(event.occurred_at >= received_at, "{event:?} before reception");
                        }
                        state.evolve(&event);
                        log.push(event);
                    }
                }
                Err(refusal) => {
                    prop_assert_eq!(&state, &was);
                    prop_assert!(!refusal.code().is_empty() && !refusal.to_string().is_empty());
                    let _ = refusal.kind();
                }
            }

            prop_assert_eq!(state.version, log.len() as u32);
            prop_assert_eq!(&Dossier::from_events(&log), &state);
            prop_assert!(count(&log, "received") + count(&log, "refused_at_intake") <= 1);
            for once in ["late", "apology_issued", "resolved", "result_digitized", "result_returned", "satisfaction_rated"] {
                prop_assert!(count(&log, once) <= 1, "{once} more than once");
            }
            prop_assert!(state.paid_vnd <= state.fees_owed_vnd);
            prop_assert!(state.paid_vnd >= 0);

            // A finished dossier is never resolved again.
            if matches!(state.phase, Phase::Resolved) || state.phase.is_ended() {
                let again = Command { occurred_at: at + Duration::days(1), action: resolve() };
                let refusal = decide(&state, &again, rules(policy)).expect_err("resolved twice");
                prop_assert!(
                    matches!(refusal, Refusal::AlreadyResolved | Refusal::Ended { .. }),
                    "unexpected {refusal:?}"
                );
            }
            // An ended dossier writes nothing more.
            if state.phase.is_ended() {
                let later = Command { occurred_at: at + Duration::days(1), action: action(step, at) };
                if let Ok(events) = decide(&state, &later, rules(policy)) {
                    prop_assert!(events.events().is_empty(), "an ended dossier accepted {:?}", later.action);
                }
            }
            if state.late_marked {
                let dated_at_due = log
                    .iter()
                    .any(|e| matches!(e.body, DossierEvent::Late { due_at } if e.occurred_at == due_at));
                prop_assert!(dated_at_due, "the late event is dated at its due time");
            }
        }
    }
}
