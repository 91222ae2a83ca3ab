//! Every bound of every write RPC through real gRPC (README "Limits"): a value at its bound is
//! accepted, one past it is refused with INVALID_ARGUMENT naming the field and stating the
//! bound, with details a grpcio-status client accepts, and nothing is written. The regression
//! of issue 9 F1: a dossier with 20,001 components was stored, and its event could never be
//! published.

use std::fmt::Debug;
use std::future::Future;

use api::v1 as pb;
use api::v1::event::Body;
use chrono::{DateTime, Duration, Utc};
use domain::SupplementPolicy;
use domain::limits::{
    AGENCY_CODE_MAX_CHARS, COMPONENT_CODE_MAX_CHARS, DOSSIER_ID_MAX_CHARS, MAX_AMOUNT_VND,
    MAX_COMPONENTS, MAX_STATUTORY_DAYS, MAX_STATUTORY_HOURS, PROCEDURE_CODE_MAX_CHARS,
    SECTOR_CODE_MAX_CHARS, TEXT_MAX_CHARS, TRANSACTION_ID_MAX_CHARS,
};
use eventlog::EventLog;
use tests::lifecycle::Stack;
use tests::processing::RunningProcessing;
use tests::{
    COUNTER_DISTRICT, DISTRICT_AGENCY, IMPORTER, assert_details_agree, authed, local, new_event_id,
    profile, receive_request, ts,
};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;

/// A code of exactly `n` characters, distinct per `i`.
fn code(i: usize, n: usize) -> String {
    format!("{i:0>n$}")
}

/// A free text of `n` characters, each the worst case: 4 bytes of UTF-8.
fn text(n: usize) -> String {
    "\u{1F600}".repeat(n)
}

fn codes(n: usize) -> Vec<String> {
    (0..n).map(|i| code(i, COMPONENT_CODE_MAX_CHARS)).collect()
}

/// Awaits `call` and checks it was refused INVALID_ARGUMENT naming exactly `field`, with a
/// message that states `bound`, details that agree with the status, and the log unmoved.
async fn over<T: Debug>(
    log: &EventLog,
    call: impl Future<Output = Result<Response<T>, Status>>,
    field: &str,
    bound: &str,
) {
    let before = log.head().await.expect("head");
    let status = call.await.expect_err("one past the bound must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert_details_agree(&status);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default();
    assert_eq!(fields, [field], "{status:?}");
    assert!(
        status.message().contains(bound),
        "{field}: the message {:?} states the bound {bound}",
        status.message()
    );
    assert_eq!(
        log.head().await.expect("head"),
        before,
        "{field}: nothing written"
    );
}

/// Awaits `call` and checks it was accepted and wrote one event.
async fn at_bound<T: Debug>(
    log: &EventLog,
    call: impl Future<Output = Result<Response<T>, Status>>,
    what: &str,
) {
    let before = log.head().await.expect("head");
    call.await
        .unwrap_or_else(|s| panic!("{what} at its bound must be accepted: {s:?}"));
    assert_eq!(log.head().await.expect("head"), before + 1, "{what}");
}

struct Env {
    log: EventLog,
    stack: Stack,
    processing: RunningProcessing,
    _db: testkit::TestDb,
}

async fn env() -> Env {
    let db = testkit::TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let stack = Stack::start(log.clone()).await;
    let processing = RunningProcessing::start(log.clone(), SupplementPolicy::Restart).await;
    Env {
        log,
        stack,
        processing,
        _db: db,
    }
}

fn t0() -> DateTime<Utc> {
    local(2024, 3, 4, 8, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_with_20001_components_is_refused_and_nothing_is_written() {
    let env = env().await;
    let mut intake = env.stack.intake_client().await;
    let mut request = receive_request("F1-20001", t0());
    request.components = (0..20_001).map(|i| format!("tp-{i}")).collect();
    over(
        &env.log,
        intake.receive_dossier(authed(COUNTER_DISTRICT, request)),
        "components",
        &MAX_COMPONENTS.to_string(),
    )
    .await;
    assert_eq!(env.log.head().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bound_of_every_write_rpc_holds_at_its_limit_and_one_past_it() {
    let env = env().await;
    let log = &env.log;
    let mut intake = env.stack.intake_client().await;
    let mut processing = env.processing.client().await;
    let mut payment = env.stack.payment_client().await;
    let mut results = env.stack.results_client().await;
    let t = t0();
    let dossier = code(1, DOSSIER_ID_MAX_CHARS);

    // ReceiveDossier: one field past its bound at a time, then everything at its bound at once.
    let receive = || {
        let mut r = receive_request(&dossier, t);
        r.components = codes(MAX_COMPONENTS);
        let p = r.profile.as_mut().unwrap();
        p.procedure_code = code(2, PROCEDURE_CODE_MAX_CHARS);
        p.sector_code = code(3, SECTOR_CODE_MAX_CHARS);
        r.statutory_time = Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(MAX_STATUTORY_DAYS)),
        });
        r
    };
    type Edit = Box<dyn Fn(&mut pb::ReceiveDossierRequest)>;
    let cases: Vec<(Edit, &str, String)> = vec![
        (
            Box::new(|r| r.dossier_id.push('9')),
            "dossier_id",
            DOSSIER_ID_MAX_CHARS.to_string(),
        ),
        (
            Box::new(|r| r.components.push(code(999, COMPONENT_CODE_MAX_CHARS))),
            "components",
            MAX_COMPONENTS.to_string(),
        ),
        (
            Box::new(|r| r.components[7].push('9')),
            "components[7]",
            COMPONENT_CODE_MAX_CHARS.to_string(),
        ),
        (
            Box::new(|r| r.profile.as_mut().unwrap().procedure_code.push('9')),
            "profile.procedure_code",
            PROCEDURE_CODE_MAX_CHARS.to_string(),
        ),
        (
            Box::new(|r| r.profile.as_mut().unwrap().sector_code.push('9')),
            "profile.sector_code",
            SECTOR_CODE_MAX_CHARS.to_string(),
        ),
        (
            Box::new(|r| {
                r.profile.as_mut().unwrap().agency_code = code(4, AGENCY_CODE_MAX_CHARS + 1)
            }),
            "profile.agency_code",
            AGENCY_CODE_MAX_CHARS.to_string(),
        ),
        (
            Box::new(|r| {
                r.statutory_time = Some(pb::StatutoryTime {
                    unit: Some(pb::statutory_time::Unit::WorkingDays(
                        MAX_STATUTORY_DAYS + 1,
                    )),
                })
            }),
            "statutory_time.working_days",
            MAX_STATUTORY_DAYS.to_string(),
        ),
        (
            Box::new(|r| {
                r.statutory_time = Some(pb::StatutoryTime {
                    unit: Some(pb::statutory_time::Unit::WorkingHours(
                        MAX_STATUTORY_HOURS + 1,
                    )),
                })
            }),
            "statutory_time.working_hours",
            MAX_STATUTORY_HOURS.to_string(),
        ),
    ];
    for (edit, field, bound) in &cases {
        let mut r = receive();
        edit(&mut r);
        over(
            log,
            intake.receive_dossier(authed(COUNTER_DISTRICT, r)),
            field,
            bound,
        )
        .await;
    }
    at_bound(
        log,
        intake.receive_dossier(authed(COUNTER_DISTRICT, receive())),
        "ReceiveDossier",
    )
    .await;
    let mut hours = receive_request("HOURS", t);
    hours.statutory_time = Some(pb::StatutoryTime {
        unit: Some(pb::statutory_time::Unit::WorkingHours(MAX_STATUTORY_HOURS)),
    });
    at_bound(
        log,
        intake.receive_dossier(authed(COUNTER_DISTRICT, hours)),
        "working_hours",
    )
    .await;

    // RecordDigitizedComponents.
    let digitize =
        |digitized: Vec<String>, reused: Vec<String>| pb::RecordDigitizedComponentsRequest {
            event_id: new_event_id(),
            dossier_id: dossier.clone(),
            occurred_at: Some(ts(t + Duration::minutes(1))),
            digitized,
            reused,
            expected_version: None,
        };
    let mut past = codes(MAX_COMPONENTS);
    past.push(code(999, COMPONENT_CODE_MAX_CHARS));
    for (request, field) in [
        (digitize(past.clone(), vec![]), "digitized"),
        (digitize(vec![], past), "reused"),
        (
            digitize(vec![code(5, COMPONENT_CODE_MAX_CHARS + 1)], vec![]),
            "digitized[0]",
        ),
    ] {
        let bound = if field == "digitized[0]" {
            COMPONENT_CODE_MAX_CHARS
        } else {
            MAX_COMPONENTS
        };
        over(
            log,
            intake.record_digitized_components(authed(COUNTER_DISTRICT, request)),
            field,
            &bound.to_string(),
        )
        .await;
    }
    at_bound(
        log,
        intake.record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize(codes(MAX_COMPONENTS), vec![]),
        )),
        "RecordDigitizedComponents",
    )
    .await;

    // RefuseAtCounter.
    let refuse = |n: usize| pb::RefuseAtCounterRequest {
        event_id: new_event_id(),
        dossier_id: "REFUSED".into(),
        occurred_at: Some(ts(t)),
        profile: Some(profile(DISTRICT_AGENCY)),
        reason: text(n),
    };
    let text_bound = TEXT_MAX_CHARS.to_string();
    over(
        log,
        intake.refuse_at_counter(authed(COUNTER_DISTRICT, refuse(TEXT_MAX_CHARS + 1))),
        "reason",
        &text_bound,
    )
    .await;
    at_bound(
        log,
        intake.refuse_at_counter(authed(COUNTER_DISTRICT, refuse(TEXT_MAX_CHARS))),
        "RefuseAtCounter",
    )
    .await;

    // Processing: Transfer, RequestSupplement, StopProcessing, Withdraw, Resolve.
    let at = |minutes: i64| Some(ts(t + Duration::minutes(minutes)));
    let transfer = |n: usize| pb::TransferRequest {
        event_id: new_event_id(),
        dossier_id: dossier.clone(),
        occurred_at: at(2),
        expected_version: None,
        to_agency: code(6, n),
        mode: pb::TransferMode::Electronic as i32,
    };
    over(
        log,
        processing.transfer(authed(
            COUNTER_DISTRICT,
            transfer(AGENCY_CODE_MAX_CHARS + 1),
        )),
        "to_agency",
        &AGENCY_CODE_MAX_CHARS.to_string(),
    )
    .await;
    at_bound(
        log,
        processing.transfer(authed(COUNTER_DISTRICT, transfer(AGENCY_CODE_MAX_CHARS))),
        "Transfer",
    )
    .await;
    let supplement = |n: usize| pb::RequestSupplementRequest {
        event_id: new_event_id(),
        dossier_id: dossier.clone(),
        occurred_at: at(3),
        expected_version: None,
        reason: text(n),
    };
    over(
        log,
        processing.request_supplement(authed(COUNTER_DISTRICT, supplement(TEXT_MAX_CHARS + 1))),
        "reason",
        &text_bound,
    )
    .await;
    at_bound(
        log,
        processing.request_supplement(authed(COUNTER_DISTRICT, supplement(TEXT_MAX_CHARS))),
        "RequestSupplement",
    )
    .await;
    processing
        .receive_supplement(authed(
            COUNTER_DISTRICT,
            pb::ReceiveSupplementRequest {
                event_id: new_event_id(),
                dossier_id: dossier.clone(),
                occurred_at: at(4),
                expected_version: None,
            },
        ))
        .await
        .expect("supplement received");
    for (name, id) in [("StopProcessing", "STOPPED"), ("Withdraw", "WITHDRAWN")] {
        env.stack.receive(id, t, false).await;
        for (n, accepted) in [(TEXT_MAX_CHARS + 1, false), (TEXT_MAX_CHARS, true)] {
            let call = async {
                if name == "StopProcessing" {
                    let r = pb::StopProcessingRequest {
                        event_id: new_event_id(),
                        dossier_id: id.into(),
                        occurred_at: at(5),
                        expected_version: None,
                        reason: text(n),
                    };
                    processing
                        .clone()
                        .stop_processing(authed(COUNTER_DISTRICT, r))
                        .await
                } else {
                    let r = pb::WithdrawRequest {
                        event_id: new_event_id(),
                        dossier_id: id.into(),
                        occurred_at: at(5),
                        expected_version: None,
                        reason: text(n),
                    };
                    processing
                        .clone()
                        .withdraw(authed(COUNTER_DISTRICT, r))
                        .await
                }
            };
            if accepted {
                at_bound(log, call, name).await;
            } else {
                over(log, call, "reason", &text_bound).await;
            }
        }
    }

    // Payment: AssessFee, RecordPayment.
    let assess = |amount: i64| pb::AssessFeeRequest {
        event_id: new_event_id(),
        dossier_id: dossier.clone(),
        occurred_at: at(6),
        expected_version: None,
        amount_vnd: amount,
        kind: pb::FeeKind::Tax as i32,
    };
    let amount_bound = MAX_AMOUNT_VND.to_string();
    over(
        log,
        payment.assess_fee(authed(COUNTER_DISTRICT, assess(MAX_AMOUNT_VND + 1))),
        "amount_vnd",
        &amount_bound,
    )
    .await;
    at_bound(
        log,
        payment.assess_fee(authed(COUNTER_DISTRICT, assess(MAX_AMOUNT_VND))),
        "AssessFee",
    )
    .await;
    let pay = |amount: i64, transaction: usize| pb::RecordPaymentRequest {
        event_id: new_event_id(),
        dossier_id: dossier.clone(),
        occurred_at: at(7),
        expected_version: None,
        amount_vnd: amount,
        channel: pb::PaymentChannel::NationalPlatform as i32,
        // `"` and `\` are allowed, and take 2 bytes each in the canonical JSON.
        transaction_id: "\"\\".repeat(transaction / 2) + &"7".repeat(transaction % 2),
    };
    over(
        log,
        payment.record_payment(authed(COUNTER_DISTRICT, pay(MAX_AMOUNT_VND + 1, 10))),
        "amount_vnd",
        &amount_bound,
    )
    .await;
    over(
        log,
        payment.record_payment(authed(
            COUNTER_DISTRICT,
            pay(1, TRANSACTION_ID_MAX_CHARS + 1),
        )),
        "transaction_id",
        &TRANSACTION_ID_MAX_CHARS.to_string(),
    )
    .await;
    at_bound(
        log,
        payment.record_payment(authed(
            COUNTER_DISTRICT,
            pay(MAX_AMOUNT_VND, TRANSACTION_ID_MAX_CHARS),
        )),
        "RecordPayment",
    )
    .await;

    // A message over the service's decoding limit is refused before it is read.
    let before = log.head().await.expect("head");
    let status = payment
        .record_payment(authed(
            COUNTER_DISTRICT,
            pay(1, 2 * domain::limits::MAX_REQUEST_MESSAGE_BYTES),
        ))
        .await
        .expect_err("a 2 MiB request");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(log.head().await.expect("head"), before);

    // Results: IssueApology before the resolution, AttachResult after it.
    let due = env.stack.dossier(&dossier).await.due_at.expect("due");
    let apology = |n: usize| pb::IssueApologyRequest {
        event_id: new_event_id(),
        dossier_id: dossier.clone(),
        occurred_at: at(8),
        expected_version: None,
        reason: text(n),
        new_appointment: Some(ts(due + Duration::days(1))),
        signer: text(n.min(TEXT_MAX_CHARS)),
        delivery: pb::ApologyDelivery::Sms as i32,
    };
    let mut long_signer = apology(10);
    long_signer.signer = text(TEXT_MAX_CHARS + 1);
    over(
        log,
        results.issue_apology(authed(COUNTER_DISTRICT, long_signer)),
        "signer",
        &text_bound,
    )
    .await;
    over(
        log,
        results.issue_apology(authed(COUNTER_DISTRICT, apology(TEXT_MAX_CHARS + 1))),
        "reason",
        &text_bound,
    )
    .await;
    at_bound(
        log,
        results.issue_apology(authed(COUNTER_DISTRICT, apology(TEXT_MAX_CHARS))),
        "IssueApology",
    )
    .await;
    let mut resolve =
        tests::processing::resolve(&dossier, t + Duration::minutes(9), pb::Outcome::Approved);
    resolve.deciding_agency = code(7, AGENCY_CODE_MAX_CHARS + 1);
    over(
        log,
        processing.resolve(authed(COUNTER_DISTRICT, resolve)),
        "deciding_agency",
        &AGENCY_CODE_MAX_CHARS.to_string(),
    )
    .await;
    processing
        .resolve(authed(
            COUNTER_DISTRICT,
            tests::processing::resolve(&dossier, t + Duration::minutes(9), pb::Outcome::Approved),
        ))
        .await
        .expect("resolved");
    let attach = |n: usize| pb::AttachResultRequest {
        event_id: new_event_id(),
        dossier_id: dossier.clone(),
        occurred_at: at(10),
        expected_version: None,
        document_ref: text(n),
        sha256: "a".repeat(64),
    };
    over(
        log,
        results.attach_result(authed(COUNTER_DISTRICT, attach(TEXT_MAX_CHARS + 1))),
        "document_ref",
        &text_bound,
    )
    .await;
    at_bound(
        log,
        results.attach_result(authed(COUNTER_DISTRICT, attach(TEXT_MAX_CHARS))),
        "AttachResult",
    )
    .await;

    // Every stored event is within the size the relay can publish.
    let all = env.log.read_after(0, 1_000).await.expect("read");
    assert!(!all.is_empty());
    for event in &all {
        let size = eventlog::canonical_bytes(event).len();
        assert!(
            size <= eventlog::MAX_EVENT_BYTES,
            "{}: {size}",
            event.event_type
        );
    }
}

fn event(dossier_id: &str, at: DateTime<Utc>, body: Body) -> pb::Event {
    pb::Event {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        recorded_at: None,
        position: 0,
        version: 0,
        body: Some(body),
    }
}

fn received(components: Vec<String>) -> Body {
    Body::Received(pb::Received {
        procedure: None,
        profile: Some(profile(DISTRICT_AGENCY)),
        statutory_time: Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(10)),
        }),
        fee_required: true,
        components,
        due_at: None,
        applicant: None,
        applicant_data: 0,
        return_method: 0,
    })
}

/// Streams one batch as the importer; the status that ended the stream, if any.
async fn import_one(env: &Env, events: Vec<pb::Event>) -> Result<u32, Status> {
    let mut client = env.stack.intake_client().await;
    let batch = pb::ImportBatch {
        batch_seq: 1,
        events,
    };
    let mut inbound = client
        .import_history(authed(IMPORTER, futures::stream::iter(vec![batch])))
        .await?
        .into_inner();
    let answer = inbound.message().await?.expect("an answer or an error");
    Ok(answer.appended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_history_events_have_the_same_bounds() {
    let env = env().await;
    let t = t0();
    let long = |n: usize| {
        Body::SupplementRequested(pb::SupplementRequested {
            closes_at: None,
            reason: text(n),
        })
    };
    let mut past = codes(MAX_COMPONENTS);
    past.push(code(999, COMPONENT_CODE_MAX_CHARS));
    let over_cases: Vec<(Body, &str, usize)> = vec![
        (
            received(past.clone()),
            "events[1].received.components",
            MAX_COMPONENTS,
        ),
        (
            received(vec![code(1, COMPONENT_CODE_MAX_CHARS + 1)]),
            "events[1].received.components[0]",
            COMPONENT_CODE_MAX_CHARS,
        ),
        (
            Body::ComponentsDigitized(pb::ComponentsDigitized {
                digitized: vec![],
                reused: past,
            }),
            "events[1].components_digitized.reused",
            MAX_COMPONENTS,
        ),
        (
            long(TEXT_MAX_CHARS + 1),
            "events[1].supplement_requested.reason",
            TEXT_MAX_CHARS,
        ),
        (
            Body::Paid(pb::Paid {
                amount_vnd: MAX_AMOUNT_VND + 1,
                channel: pb::PaymentChannel::Counter as i32,
                transaction_id: "R-1".into(),
            }),
            "events[1].paid.amount_vnd",
            usize::try_from(MAX_AMOUNT_VND).unwrap(),
        ),
        (
            Body::Paid(pb::Paid {
                amount_vnd: 1,
                channel: pb::PaymentChannel::Counter as i32,
                transaction_id: "9".repeat(TRANSACTION_ID_MAX_CHARS + 1),
            }),
            "events[1].paid.transaction_id",
            TRANSACTION_ID_MAX_CHARS,
        ),
    ];
    for (body, field, bound) in over_cases {
        let events = vec![
            event("IMP-OVER", t, received(codes(2))),
            event("IMP-OVER", t + Duration::minutes(1), body),
        ];
        let before = env.log.head().await.unwrap();
        let status = import_one(&env, events).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_details_agree(&status);
        let fields: Vec<String> = status
            .get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, [field], "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
        assert!(status.message().contains(&bound.to_string()), "{status:?}");
        assert_eq!(
            env.log.head().await.unwrap(),
            before,
            "{field}: nothing written"
        );
    }

    // Every bound at once, in one batch: accepted.
    let events = vec![
        event(
            &code(1, DOSSIER_ID_MAX_CHARS),
            t,
            received(codes(MAX_COMPONENTS)),
        ),
        event(
            &code(1, DOSSIER_ID_MAX_CHARS),
            t + Duration::minutes(1),
            Body::ComponentsDigitized(pb::ComponentsDigitized {
                digitized: codes(MAX_COMPONENTS),
                reused: vec![],
            }),
        ),
        event(
            &code(1, DOSSIER_ID_MAX_CHARS),
            t + Duration::minutes(2),
            long(TEXT_MAX_CHARS),
        ),
    ];
    assert_eq!(import_one(&env, events).await.expect("at the bounds"), 3);

    // A refusal by the rules names the event in the message, and the details agree with it.
    let events = vec![event(
        "IMP-UNKNOWN",
        t,
        Body::SupplementRequested(pb::SupplementRequested {
            closes_at: None,
            reason: "x".into(),
        }),
    )];
    let status = import_one(&env, events).await.expect_err("unknown dossier");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().starts_with("events[0]: "), "{status:?}");
    let rich = assert_details_agree(&status).expect("details");
    assert!(rich.message.starts_with("events[0]: "));
    assert_eq!(
        status.get_details_error_info().expect("ErrorInfo").reason,
        "unknown_dossier"
    );
}
