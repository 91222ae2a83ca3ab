//! The payment service through gRPC, against the real PostgreSQL and NATS: fees assessed,
//! payments online and at the counter, payment platforms calling back more than once, every
//! refusal with its code and reason, retries, authorization, publication.
//!
//! Resolutions and withdrawals come from the processing service, which these tests do not
//! start: `Stack::append` writes those events through the same write path and rules instead.

use std::time::Duration;

use api::v1 as pb;
use api::v1::payment_service_client::PaymentServiceClient;
use domain::{Action, AgencyCode, Outcome, Text, TransferMode};
use eventlog::EventLog;
use pb::{FeeKind, PaymentChannel};
use testkit::{TestDb, TestNats};
use tests::lifecycle::{
    RunningService, Stack, as_original, assess_fee, attach_result, published, record_payment,
    record_rating, return_result,
};
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, DISTRICT_AGENCY, IMPORTER, PROVINCE_AGENCY,
    RunningRelay, authed, local, new_event_id, profile, ts,
};
use tonic::{Code, Request};

fn resolve_approved() -> Action {
    Action::Resolve {
        outcome: Outcome::Approved,
        deciding_agency: AgencyCode::parse(DISTRICT_AGENCY).unwrap(),
    }
}

async fn stack(db: &TestDb) -> Stack {
    Stack::start(EventLog::from_pool(db.pool.clone())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_online_through_the_national_platform_or_a_provincial_gateway() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut payment = stack.payment_client().await;
    let mut results = stack.results_client().await;

    for (dossier, channel) in [
        ("HS-PAY-NATIONAL", PaymentChannel::NationalPlatform),
        ("HS-PAY-GATEWAY", PaymentChannel::ProvincialGateway),
    ] {
        stack.receive(dossier, local(2024, 4, 22, 9, 0), true).await;
        let assessed = payment
            .assess_fee(authed(
                COUNTER_DISTRICT,
                assess_fee(dossier, local(2024, 4, 22, 9, 10), 150_000, FeeKind::Fee),
            ))
            .await
            .expect("fee assessed")
            .into_inner()
            .event
            .unwrap();
        assert_eq!(assessed.event_type, "fee_assessed");
        assert_eq!(assessed.version, 2);
        assert!(!assessed.duplicate);
        let state = stack.dossier(dossier).await;
        assert_eq!(state.fees_owed_vnd, 150_000);
        assert_eq!(
            state.portal_status(),
            Some(6),
            "financial obligation requested"
        );

        let paid = payment
            .record_payment(authed(
                COUNTER_DISTRICT,
                record_payment(
                    dossier,
                    local(2024, 4, 22, 9, 30),
                    150_000,
                    channel,
                    &format!("{dossier}-TXN-1"),
                ),
            ))
            .await
            .expect("payment recorded")
            .into_inner()
            .event
            .unwrap();
        assert_eq!(paid.event_type, "paid");
        assert_eq!(paid.version, 3);
        assert!(!paid.duplicate);
        let state = stack.dossier(dossier).await;
        assert!(state.paid_online, "{channel:?} is an online channel (S11)");
        assert_eq!(state.outstanding_vnd(), 0);
        assert_eq!(state.portal_status(), Some(4), "processing, nothing owed");

        // The rest of the happy path: decided, result attached, returned online, rated.
        stack
            .append(dossier, local(2024, 4, 24, 10, 0), resolve_approved())
            .await;
        results
            .attach_result(authed(
                COUNTER_DISTRICT,
                attach_result(dossier, local(2024, 4, 24, 10, 5)),
            ))
            .await
            .expect("result attached");
        results
            .return_result(authed(
                COUNTER_DISTRICT,
                return_result(
                    dossier,
                    local(2024, 4, 24, 10, 10),
                    pb::ReturnMethod::Online,
                ),
            ))
            .await
            .expect("result returned");
        results
            .record_rating(authed(
                COUNTER_DISTRICT,
                record_rating(
                    dossier,
                    local(2024, 4, 24, 11, 0),
                    pb::Rating::VerySatisfied,
                ),
            ))
            .await
            .expect("rated");
        let state = stack.dossier(dossier).await;
        assert_eq!(state.portal_status(), Some(10));
        assert!(state.paid_online && state.result_digitized);
        assert_eq!(state.version, 7);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_at_the_counter_in_two_parts_is_not_paid_online() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut payment = stack.payment_client().await;
    let mut results = stack.results_client().await;
    let dossier = "HS-PAY-COUNTER";
    stack.receive(dossier, local(2024, 4, 22, 9, 0), true).await;

    for (amount, kind) in [(100_000, FeeKind::Fee), (20_000, FeeKind::Charge)] {
        payment
            .assess_fee(authed(
                COUNTER_DISTRICT,
                assess_fee(dossier, local(2024, 4, 22, 9, 10), amount, kind),
            ))
            .await
            .expect("assessed");
    }
    for (amount, receipt) in [(70_000, "BL-0001"), (50_000, "BL-0002")] {
        payment
            .record_payment(authed(
                COUNTER_DISTRICT,
                record_payment(
                    dossier,
                    local(2024, 4, 22, 9, 20),
                    amount,
                    PaymentChannel::Counter,
                    receipt,
                ),
            ))
            .await
            .expect("paid at the counter");
    }
    let state = stack.dossier(dossier).await;
    assert_eq!((state.fees_owed_vnd, state.paid_vnd), (120_000, 120_000));
    assert!(!state.paid_online, "the counter is not an online channel");
    assert_eq!(state.transactions.len(), 2);

    stack
        .append(dossier, local(2024, 4, 23, 15, 0), resolve_approved())
        .await;
    results
        .return_result(authed(
            COUNTER_DISTRICT,
            return_result(
                dossier,
                local(2024, 4, 23, 16, 0),
                pb::ReturnMethod::Counter,
            ),
        ))
        .await
        .expect("returned at the counter");
    let state = stack.dossier(dossier).await;
    assert_eq!(state.portal_status(), Some(10));
    assert!(!state.paid_online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_platform_calling_back_again_gets_the_original_payment() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut payment = stack.payment_client().await;
    let dossier = "HS-PAY-CALLBACK";
    stack.receive(dossier, local(2024, 4, 22, 9, 0), true).await;
    payment
        .assess_fee(authed(
            COUNTER_DISTRICT,
            assess_fee(dossier, local(2024, 4, 22, 9, 10), 150_000, FeeKind::Fee),
        ))
        .await
        .expect("assessed");

    let callback = record_payment(
        dossier,
        local(2024, 4, 22, 9, 30),
        150_000,
        PaymentChannel::NationalPlatform,
        "DVCQG-2024-000123",
    );
    let original = payment
        .record_payment(authed(COUNTER_DISTRICT, callback.clone()))
        .await
        .expect("paid")
        .into_inner()
        .event
        .unwrap();
    assert!(!original.duplicate);
    let head = stack.log.head().await.unwrap();

    // The platform calls back again: a new event id, the same transaction, even a later time.
    let again = pb::RecordPaymentRequest {
        event_id: new_event_id(),
        ..callback.clone()
    };
    let later = pb::RecordPaymentRequest {
        event_id: new_event_id(),
        occurred_at: Some(ts(local(2024, 4, 22, 10, 0))),
        ..callback.clone()
    };
    for repeat in [&again, &again, &later] {
        let answer = payment
            .record_payment(authed(COUNTER_DISTRICT, repeat.clone()))
            .await
            .expect("a repeated callback succeeds")
            .into_inner()
            .event
            .unwrap();
        assert!(answer.duplicate);
        assert_eq!(as_original(&answer), original, "the original payment event");
        assert_eq!(stack.stored_with_id(&repeat.event_id).await, 0);
    }
    assert_eq!(stack.log.head().await.unwrap(), head, "nothing written");
    let state = stack.dossier(dossier).await;
    assert_eq!(state.paid_vnd, 150_000, "paid once");
    assert_eq!(state.transactions.len(), 1);

    // The same transaction id with another amount or channel is not a repeat: refused.
    for conflicting in [
        pb::RecordPaymentRequest {
            event_id: new_event_id(),
            amount_vnd: 100_000,
            ..callback.clone()
        },
        pb::RecordPaymentRequest {
            event_id: new_event_id(),
            channel: PaymentChannel::ProvincialGateway as i32,
            ..callback.clone()
        },
    ] {
        let status = stack
            .refused(
                payment.record_payment(authed(COUNTER_DISTRICT, conflicting)),
                Code::FailedPrecondition,
                "transaction_id_reused",
            )
            .await;
        assert_eq!(
            status.message(),
            "Transaction DVCQG-2024-000123 was already recorded with a different amount or channel."
        );
    }

    // Even once the dossier has ended, the platform is told its payment was recorded.
    stack
        .append(
            dossier,
            local(2024, 4, 23, 9, 0),
            Action::Withdraw {
                reason: Text::parse("Người nộp rút hồ sơ").unwrap(),
            },
        )
        .await;
    let after_end = pb::RecordPaymentRequest {
        event_id: new_event_id(),
        ..callback.clone()
    };
    let answer = payment
        .record_payment(authed(COUNTER_DISTRICT, after_end))
        .await
        .expect("a repeated callback on an ended dossier succeeds")
        .into_inner()
        .event
        .unwrap();
    assert_eq!(as_original(&answer), original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_payments_say_why_and_write_nothing() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut payment = stack.payment_client().await;
    let at = local(2024, 4, 22, 10, 0);
    let pay = |dossier: &str, amount: i64, txn: &str| {
        authed(
            COUNTER_DISTRICT,
            record_payment(dossier, at, amount, PaymentChannel::NationalPlatform, txn),
        )
    };
    let assess = |dossier: &str, amount: i64| {
        authed(
            COUNTER_DISTRICT,
            assess_fee(dossier, at, amount, FeeKind::Fee),
        )
    };

    // A procedure without a financial obligation.
    stack
        .receive("HS-NO-FEE", local(2024, 4, 22, 9, 0), false)
        .await;
    let status = stack
        .refused(
            payment.assess_fee(assess("HS-NO-FEE", 50_000)),
            Code::FailedPrecondition,
            "no_fee_for_procedure",
        )
        .await;
    assert_eq!(
        status.message(),
        "This procedure has no fee, charge or tax to assess."
    );

    // Nothing assessed yet, then more than what is owed.
    stack
        .receive("HS-FEE", local(2024, 4, 22, 9, 0), true)
        .await;
    let status = stack
        .refused(
            payment.record_payment(pay("HS-FEE", 50_000, "T-1")),
            Code::FailedPrecondition,
            "no_fee_assessed",
        )
        .await;
    assert_eq!(
        status.message(),
        "No fee has been assessed for this dossier, so there is nothing to pay."
    );
    payment
        .assess_fee(assess("HS-FEE", 100_000))
        .await
        .expect("assessed");
    let status = stack
        .refused(
            payment.record_payment(pay("HS-FEE", 150_000, "T-2")),
            Code::FailedPrecondition,
            "overpayment",
        )
        .await;
    assert_eq!(
        status.message(),
        "Only 100000 VND is outstanding; a payment of 150000 VND would overpay the dossier."
    );
    payment
        .record_payment(pay("HS-FEE", 60_000, "T-3"))
        .await
        .expect("a partial payment");
    let status = stack
        .refused(
            payment.record_payment(pay("HS-FEE", 50_000, "T-4")),
            Code::FailedPrecondition,
            "overpayment",
        )
        .await;
    assert!(
        status
            .message()
            .starts_with("Only 40000 VND is outstanding")
    );

    // Ended dossiers: refused at the counter (through intake), withdrawn with a fee assessed.
    stack
        .intake_client()
        .await
        .refuse_at_counter(authed(
            COUNTER_DISTRICT,
            pb::RefuseAtCounterRequest {
                event_id: new_event_id(),
                dossier_id: "HS-REFUSED".to_owned(),
                occurred_at: Some(ts(local(2024, 4, 22, 9, 0))),
                profile: Some(profile(DISTRICT_AGENCY)),
                reason: "Thiếu giấy tờ tùy thân".to_owned(),
            },
        ))
        .await
        .expect("refused at the counter");
    stack
        .refused(
            payment.assess_fee(assess("HS-REFUSED", 50_000)),
            Code::FailedPrecondition,
            "ended",
        )
        .await;
    stack
        .receive("HS-WITHDRAWN", local(2024, 4, 22, 9, 0), true)
        .await;
    payment
        .assess_fee(assess("HS-WITHDRAWN", 100_000))
        .await
        .expect("assessed");
    stack
        .append(
            "HS-WITHDRAWN",
            local(2024, 4, 22, 11, 0),
            Action::Withdraw {
                reason: Text::parse("Người nộp rút hồ sơ").unwrap(),
            },
        )
        .await;
    let status = stack
        .refused(
            payment.record_payment(pay("HS-WITHDRAWN", 100_000, "T-5")),
            Code::FailedPrecondition,
            "ended",
        )
        .await;
    assert_eq!(
        status.message(),
        "The dossier has ended (withdrawn by the applicant); no further step can be recorded."
    );
    stack
        .refused(
            payment.assess_fee(assess("HS-WITHDRAWN", 10_000)),
            Code::FailedPrecondition,
            "ended",
        )
        .await;

    // Unknown dossier, a time before the reception, a stale expected version.
    stack
        .refused(
            payment.assess_fee(assess("HS-UNKNOWN", 10_000)),
            Code::NotFound,
            "unknown_dossier",
        )
        .await;
    stack
        .refused(
            payment.assess_fee(authed(
                COUNTER_DISTRICT,
                assess_fee("HS-FEE", local(2024, 4, 22, 8, 0), 10_000, FeeKind::Tax),
            )),
            Code::FailedPrecondition,
            "before_reception",
        )
        .await;
    let stale = pb::AssessFeeRequest {
        expected_version: Some(1),
        ..assess_fee("HS-FEE", at, 10_000, FeeKind::Tax)
    };
    stack
        .refused(
            payment.assess_fee(authed(COUNTER_DISTRICT, stale)),
            Code::Aborted,
            "version_conflict",
        )
        .await;

    // Malformed requests name the field.
    let good_fee = assess_fee("HS-FEE", at, 10_000, FeeKind::Tax);
    let good_payment = record_payment("HS-FEE", at, 10_000, PaymentChannel::Counter, "T-6");
    for (request, field) in [
        (
            pb::AssessFeeRequest {
                amount_vnd: 0,
                ..good_fee.clone()
            },
            "amount_vnd",
        ),
        (
            pb::AssessFeeRequest {
                kind: FeeKind::Unspecified as i32,
                ..good_fee.clone()
            },
            "kind",
        ),
        (
            pb::AssessFeeRequest {
                event_id: "not-a-uuid".to_owned(),
                ..good_fee.clone()
            },
            "event_id",
        ),
        (
            pb::AssessFeeRequest {
                occurred_at: None,
                ..good_fee.clone()
            },
            "occurred_at",
        ),
    ] {
        stack
            .invalid(payment.assess_fee(authed(COUNTER_DISTRICT, request)), field)
            .await;
    }
    for (request, field) in [
        (
            pb::RecordPaymentRequest {
                amount_vnd: -5_000,
                ..good_payment.clone()
            },
            "amount_vnd",
        ),
        (
            pb::RecordPaymentRequest {
                channel: PaymentChannel::Unspecified as i32,
                ..good_payment.clone()
            },
            "channel",
        ),
        (
            pb::RecordPaymentRequest {
                transaction_id: "has space".to_owned(),
                ..good_payment.clone()
            },
            "transaction_id",
        ),
        (
            pb::RecordPaymentRequest {
                dossier_id: String::new(),
                ..good_payment.clone()
            },
            "dossier_id",
        ),
    ] {
        stack
            .invalid(
                payment.record_payment(authed(COUNTER_DISTRICT, request)),
                field,
            )
            .await;
    }

    let state = stack.dossier("HS-FEE").await;
    assert_eq!((state.fees_owed_vnd, state.paid_vnd), (100_000, 60_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_payment_call_retried_with_its_event_id_answers_the_same_and_stores_one_event() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut payment = stack.payment_client().await;
    let dossier = "HS-PAY-RETRY";
    stack.receive(dossier, local(2024, 4, 22, 9, 0), true).await;

    let assess = assess_fee(dossier, local(2024, 4, 22, 9, 10), 80_000, FeeKind::Charge);
    let first = payment
        .assess_fee(authed(COUNTER_DISTRICT, assess.clone()))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    let head = stack.log.head().await.unwrap();
    let retry = payment
        .assess_fee(authed(COUNTER_DISTRICT, assess.clone()))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert!(retry.duplicate && !first.duplicate);
    assert_eq!(as_original(&retry), first);
    assert_eq!(stack.log.head().await.unwrap(), head);
    assert_eq!(stack.stored_with_id(&assess.event_id).await, 1);

    let pay = record_payment(
        dossier,
        local(2024, 4, 22, 9, 20),
        80_000,
        PaymentChannel::ProvincialGateway,
        "VNPT-PAY-77",
    );
    let first = payment
        .record_payment(authed(COUNTER_DISTRICT, pay.clone()))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    let head = stack.log.head().await.unwrap();
    let retry = payment
        .record_payment(authed(COUNTER_DISTRICT, pay.clone()))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(as_original(&retry), first);
    assert_eq!(stack.log.head().await.unwrap(), head);
    assert_eq!(stack.stored_with_id(&pay.event_id).await, 1);

    // An event id reused for another request is refused.
    let reused = pb::AssessFeeRequest {
        amount_vnd: 1_000,
        ..assess
    };
    stack
        .refused(
            payment.assess_fee(authed(COUNTER_DISTRICT, reused)),
            Code::AlreadyExists,
            "event_id_reused",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_counters_of_the_receiving_or_holding_agency_record_payments() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut payment = stack.payment_client().await;
    let dossier = "HS-PAY-AUTH";
    stack.receive(dossier, local(2024, 4, 22, 9, 0), true).await;
    let at = local(2024, 4, 22, 9, 10);
    let assess = assess_fee(dossier, at, 10_000, FeeKind::Fee);
    let pay = record_payment(dossier, at, 10_000, PaymentChannel::Counter, "R-1");

    for token in [COUNTER_PROVINCE, AUDITOR, IMPORTER] {
        let status = stack
            .refused_without_writing(payment.assess_fee(authed(token, assess.clone())))
            .await;
        assert_eq!(status.code(), Code::PermissionDenied, "{token}: {status:?}");
        let status = stack
            .refused_without_writing(payment.record_payment(authed(token, pay.clone())))
            .await;
        assert_eq!(status.code(), Code::PermissionDenied, "{token}: {status:?}");
    }
    let status = stack
        .refused_without_writing(payment.assess_fee(Request::new(assess.clone())))
        .await;
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = stack
        .refused_without_writing(payment.record_payment(Request::new(pay.clone())))
        .await;
    assert_eq!(status.code(), Code::Unauthenticated);

    // Once the dossier is transferred to the province, the province's counter may act on it.
    stack
        .append(
            dossier,
            local(2024, 4, 22, 9, 5),
            Action::Transfer {
                to_agency: AgencyCode::parse(PROVINCE_AGENCY).unwrap(),
                mode: TransferMode::Electronic,
            },
        )
        .await;
    payment
        .assess_fee(authed(COUNTER_PROVINCE, assess))
        .await
        .expect("the holding agency assesses");
    payment
        .record_payment(authed(COUNTER_DISTRICT, pay))
        .await
        .expect("the receiving agency records a payment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_events_reach_their_jetstream_subjects() {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    let stack = stack(&db).await;
    let mut relay =
        RunningRelay::start(stack.log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let mut payment = stack.payment_client().await;
    let dossier = "HS-PAY-NATS";
    stack.receive(dossier, local(2024, 4, 22, 9, 0), true).await;
    let assess = assess_fee(dossier, local(2024, 4, 22, 9, 10), 150_000, FeeKind::Fee);
    payment
        .assess_fee(authed(COUNTER_DISTRICT, assess.clone()))
        .await
        .unwrap();
    let pay = record_payment(
        dossier,
        local(2024, 4, 22, 9, 20),
        150_000,
        PaymentChannel::NationalPlatform,
        "DVCQG-9",
    );
    payment
        .record_payment(authed(COUNTER_DISTRICT, pay.clone()))
        .await
        .unwrap();

    relay
        .wait_published(stack.log.head().await.unwrap(), Duration::from_secs(30))
        .await;
    let messages = published(&nats).await;
    let subject =
        |event_type: &str| format!("{}.district.000_00_12_H40.land.{event_type}", nats.prefix);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1], (subject("fee_assessed"), assess.event_id));
    assert_eq!(messages[2], (subject("paid"), pay.event_id));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_the_same_callback_record_it_once() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    // A second, independent instance over the same event log.
    let second = RunningService::payment(stack.log.clone()).await;
    let mut first_client = stack.payment_client().await;
    let mut second_client = PaymentServiceClient::new(second.channel().await);

    for round in 0..5 {
        let dossier = format!("HS-PAY-RACE-{round}");
        stack
            .receive(&dossier, local(2024, 4, 22, 9, 0), true)
            .await;
        first_client
            .assess_fee(authed(
                COUNTER_DISTRICT,
                assess_fee(&dossier, local(2024, 4, 22, 9, 10), 90_000, FeeKind::Fee),
            ))
            .await
            .expect("assessed");
        // The platform's callback and its repeat, with different event ids, on both instances.
        let callback = record_payment(
            &dossier,
            local(2024, 4, 22, 9, 30),
            90_000,
            PaymentChannel::ProvincialGateway,
            &format!("GW-{round}"),
        );
        let repeat = pb::RecordPaymentRequest {
            event_id: new_event_id(),
            ..callback.clone()
        };
        let (a, b) = tokio::join!(
            first_client.record_payment(authed(COUNTER_DISTRICT, callback)),
            second_client.record_payment(authed(COUNTER_DISTRICT, repeat)),
        );
        let a = a.expect("first instance").into_inner().event.unwrap();
        let b = b.expect("second instance").into_inner().event.unwrap();
        assert_eq!(as_original(&a), as_original(&b), "the same payment event");
        assert!(a.duplicate != b.duplicate, "written once, repeated once");
        let state = stack.dossier(&dossier).await;
        assert_eq!((state.paid_vnd, state.transactions.len()), (90_000, 1));
    }
    second.stop().await;
}
