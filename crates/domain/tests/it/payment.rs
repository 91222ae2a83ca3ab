//! Financial obligations: assessment, payments, idempotent payment callbacks.

use calendar::Timeliness;
use chrono::{DateTime, Utc};
use domain::{
    Action, DossierEvent, Event, FeeKind, MAX_AMOUNT_VND, PaymentChannel, PaymentRecord, Refusal,
};

use crate::support::*;

fn assess(amount_vnd: i64) -> Action {
    Action::AssessFee {
        amount_vnd,
        kind: FeeKind::Fee,
    }
}
fn assessed(amount_vnd: i64) -> DossierEvent {
    DossierEvent::FeeAssessed {
        amount_vnd,
        kind: FeeKind::Fee,
    }
}
fn pay(amount_vnd: i64, channel: PaymentChannel, id: &str) -> Action {
    Action::RecordPayment {
        amount_vnd,
        channel,
        transaction_id: txn(id),
    }
}
fn paid(amount_vnd: i64, channel: PaymentChannel, id: &str) -> DossierEvent {
    DossierEvent::Paid {
        amount_vnd,
        channel,
        transaction_id: txn(id),
    }
}
fn t(h: u32) -> DateTime<Utc> {
    vn(2024, 3, 5, h, 0)
}
/// Received with a fee, 150,000 VND assessed.
fn assessed_history() -> Vec<Event> {
    vec![received(), ev(t(8), assessed(150_000))]
}

mod assess_fee {
    use super::*;

    #[test]
    fn assessments_add_up() {
        let state = given(assessed_history())
            .when(cmd(t(9), assess(50_000)))
            .then(assessed(50_000));
        assert_eq!(state.fees_owed_vnd, 200_000);
        assert_eq!(state.portal_status(), Some(6));
    }

    #[test]
    fn also_after_resolution() {
        given([received(), resolved(t(9), Timeliness::Early)])
            .when(cmd(t(10), assess(20_000)))
            .then(assessed(20_000));
    }

    #[test]
    fn amount_is_positive_and_bounded() {
        for amount in [0, -5_000, MAX_AMOUNT_VND + 1] {
            given([received()])
                .when(cmd(t(9), assess(amount)))
                .then(Refusal::InvalidAmount { amount_vnd: amount });
        }
        given([received()])
            .when(cmd(t(9), assess(MAX_AMOUNT_VND)))
            .then(assessed(MAX_AMOUNT_VND));
    }

    #[test]
    fn not_for_a_procedure_without_fee() {
        given([ev(received_at(), received_event(false))])
            .when(cmd(t(9), assess(50_000)))
            .then(Refusal::NoFeeForProcedure);
    }

    #[test]
    fn not_once_ended() {
        given([
            received(),
            ev(
                t(8),
                DossierEvent::Withdrawn {
                    reason: text("applicant request"),
                },
            ),
        ])
        .when(cmd(t(9), assess(50_000)))
        .then(Refusal::Ended {
            phase: domain::Phase::Withdrawn,
        });
    }
}

mod record_payment {
    use super::*;

    #[test]
    fn an_online_payment() {
        let state = given(assessed_history())
            .when(cmd(
                t(9),
                pay(150_000, PaymentChannel::NationalPlatform, "TX-1"),
            ))
            .then(paid(150_000, PaymentChannel::NationalPlatform, "TX-1"));
        assert_eq!(state.paid_vnd, 150_000);
        assert!(state.paid_online);
        assert_eq!(
            state.transactions.get(&txn("TX-1")),
            Some(&PaymentRecord {
                amount_vnd: 150_000,
                channel: PaymentChannel::NationalPlatform
            })
        );
        // Fully paid: back to "processing".
        assert_eq!(state.portal_status(), Some(4));
    }

    #[test]
    fn partial_payments_at_the_counter_and_online() {
        let state = given(assessed_history())
            .when(cmd(t(9), pay(100_000, PaymentChannel::Counter, "C-1")))
            .then(paid(100_000, PaymentChannel::Counter, "C-1"));
        assert!(!state.paid_online);
        assert_eq!(state.outstanding_vnd(), 50_000);
        assert_eq!(state.portal_status(), Some(6));

        let mut history = assessed_history();
        history.push(ev(t(9), paid(100_000, PaymentChannel::Counter, "C-1")));
        let state = given(history)
            .when(cmd(
                t(10),
                pay(50_000, PaymentChannel::ProvincialGateway, "PG-7"),
            ))
            .then(paid(50_000, PaymentChannel::ProvincialGateway, "PG-7"));
        assert!(state.paid_online);
        assert_eq!(state.outstanding_vnd(), 0);
    }

    #[test]
    fn after_resolution() {
        let mut history = assessed_history();
        history.push(resolved(t(9), Timeliness::Early));
        given(history)
            .when(cmd(
                t(10),
                pay(150_000, PaymentChannel::NationalPlatform, "TX-1"),
            ))
            .then(paid(150_000, PaymentChannel::NationalPlatform, "TX-1"));
    }

    #[test]
    fn nothing_to_pay_without_an_assessment() {
        given([received()])
            .when(cmd(
                t(9),
                pay(150_000, PaymentChannel::NationalPlatform, "TX-1"),
            ))
            .then(Refusal::NoFeeAssessed);
    }

    #[test]
    fn never_more_than_outstanding() {
        given(assessed_history())
            .when(cmd(
                t(9),
                pay(150_001, PaymentChannel::NationalPlatform, "TX-1"),
            ))
            .then(Refusal::Overpayment {
                owed_vnd: 150_000,
                attempted_vnd: 150_001,
            });
        let mut history = assessed_history();
        history.push(ev(t(9), paid(150_000, PaymentChannel::Counter, "C-1")));
        given(history)
            .when(cmd(
                t(10),
                pay(1_000, PaymentChannel::NationalPlatform, "TX-2"),
            ))
            .then(Refusal::Overpayment {
                owed_vnd: 0,
                attempted_vnd: 1_000,
            });
    }

    #[test]
    fn amount_is_positive() {
        for amount in [0, -1, MAX_AMOUNT_VND + 1] {
            given(assessed_history())
                .when(cmd(t(9), pay(amount, PaymentChannel::Counter, "C-1")))
                .then(Refusal::InvalidAmount { amount_vnd: amount });
        }
    }

    fn paid_once() -> Vec<Event> {
        let mut history = assessed_history();
        history.push(ev(
            t(9),
            paid(100_000, PaymentChannel::NationalPlatform, "TX-1"),
        ));
        history
    }

    #[test]
    fn a_repeated_callback_is_already_done() {
        let state = given(paid_once())
            .when(cmd(
                t(11),
                pay(100_000, PaymentChannel::NationalPlatform, "TX-1"),
            ))
            .then(nothing());
        assert_eq!(state.paid_vnd, 100_000);
        assert_eq!(state.version, 3);
    }

    #[test]
    fn a_repeated_callback_is_already_done_even_once_ended() {
        let mut history = paid_once();
        history.push(ev(
            t(10),
            DossierEvent::Stopped {
                cause: None,
                reason: text("court dispute"),
            },
        ));
        given(history.clone())
            .when(cmd(
                t(11),
                pay(100_000, PaymentChannel::NationalPlatform, "TX-1"),
            ))
            .then(nothing());
        given(history)
            .when(cmd(
                t(11),
                pay(50_000, PaymentChannel::NationalPlatform, "TX-2"),
            ))
            .then(Refusal::Ended {
                phase: domain::Phase::Stopped,
            });
    }

    #[test]
    fn a_transaction_id_cannot_be_reused_for_another_payment() {
        for other in [
            pay(50_000, PaymentChannel::NationalPlatform, "TX-1"),
            pay(100_000, PaymentChannel::ProvincialGateway, "TX-1"),
        ] {
            given(paid_once())
                .when(cmd(t(11), other))
                .then(Refusal::TransactionIdReused {
                    transaction_id: txn("TX-1"),
                });
        }
    }
}
