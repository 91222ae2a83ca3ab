//! The results service through gRPC, against the real PostgreSQL and NATS: the late dossier's
//! apology, the result attached, returned and rated, every refusal with its code and reason,
//! retries, authorization, publication.
//!
//! Resolutions, `late` and withdrawals come from the processing service, which these tests do
//! not start: `Stack::append` writes those events through the same write path and rules.

use std::time::Duration;

use api::v1 as pb;
use api::v1::results_service_client::ResultsServiceClient;
use calendar::{StatutoryTime, Timeliness};
use chrono::{DateTime, Utc};
use domain::{Action, AgencyCode, Outcome, Text};
use eventlog::EventLog;
use pb::{Rating, ReturnMethod};
use testkit::{TestDb, TestNats};
use tests::lifecycle::{
    Stack, as_original, attach_result, issue_apology, published, record_rating, return_result,
};
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, DISTRICT_AGENCY, IMPORTER, RunningRelay, authed,
    local, ts,
};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn resolve(outcome: Outcome) -> Action {
    Action::Resolve {
        outcome,
        deciding_agency: AgencyCode::parse(DISTRICT_AGENCY).unwrap(),
    }
}

async fn stack(db: &TestDb) -> Stack {
    Stack::start(EventLog::from_pool(db.pool.clone())).await
}

/// Received Monday 22 April 2024 09:00 with 3 working days: due Thursday 25 April 09:00.
fn received_at() -> DateTime<Utc> {
    local(2024, 4, 22, 9, 0)
}

fn due() -> DateTime<Utc> {
    local(2024, 4, 25, 9, 0)
}

async fn receive(stack: &Stack, dossier: &str) {
    assert_eq!(stack.receive(dossier, received_at(), false).await, due());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_dossier_apology_resolution_return_and_rating() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;
    let dossier = "HS-RES-LATE";
    receive(&stack, dossier).await;

    // The deadline watcher notices the due time passed (stand-in for processing).
    let late = stack
        .append(dossier, local(2024, 4, 25, 9, 30), Action::MarkLate)
        .await;
    assert_eq!(late.occurred_at, due());

    let new_appointment = local(2024, 4, 26, 16, 0);
    let apology = results
        .issue_apology(authed(
            COUNTER_DISTRICT,
            issue_apology(dossier, local(2024, 4, 25, 10, 0), new_appointment),
        ))
        .await
        .expect("apology issued")
        .into_inner();
    assert!(!apology.on_time, "issued after the due time");
    let event = apology.event.unwrap();
    assert_eq!(
        (event.event_type.as_str(), event.version),
        ("apology_issued", 3)
    );

    // A second apology: a new appointment may be set only once.
    let status = stack
        .refused(
            results.issue_apology(authed(
                COUNTER_DISTRICT,
                issue_apology(dossier, local(2024, 4, 25, 11, 0), local(2024, 4, 29, 9, 0)),
            )),
            Code::FailedPrecondition,
            "apology_already_issued",
        )
        .await;
    assert_eq!(
        status.message(),
        "An apology has already been issued for this dossier; a new appointment may be set only once."
    );

    stack
        .append(
            dossier,
            local(2024, 4, 26, 10, 0),
            resolve(Outcome::Approved),
        )
        .await;
    let steps = [
        results
            .attach_result(authed(
                COUNTER_DISTRICT,
                attach_result(dossier, local(2024, 4, 26, 10, 30)),
            ))
            .await
            .expect("result attached")
            .into_inner()
            .event
            .unwrap(),
        results
            .return_result(authed(
                COUNTER_DISTRICT,
                return_result(dossier, local(2024, 4, 26, 14, 0), ReturnMethod::Post),
            ))
            .await
            .expect("result returned")
            .into_inner()
            .event
            .unwrap(),
        results
            .record_rating(authed(
                COUNTER_DISTRICT,
                record_rating(dossier, local(2024, 4, 26, 14, 5), Rating::Satisfied),
            ))
            .await
            .expect("rated")
            .into_inner()
            .event
            .unwrap(),
    ];
    let types: Vec<_> = steps.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["result_digitized", "result_returned", "satisfaction_rated"]
    );

    let state = stack.dossier(dossier).await;
    let resolution = state.resolution.as_ref().unwrap();
    assert_eq!(resolution.timeliness, Timeliness::Late);
    assert_eq!(
        resolution.due_at,
        due(),
        "the apology never moves the due time"
    );
    let apology = state.apology.clone().unwrap();
    assert_eq!(apology.new_appointment, new_appointment);
    assert!(!apology.on_time);
    assert!(state.late_marked && state.result_digitized);
    assert_eq!(state.return_method, Some(domain::ReturnMethod::Post));
    assert_eq!(state.rating, Some(domain::Rating::Satisfied));
    assert_eq!(state.portal_status(), Some(10));
    assert_eq!(state.version, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apology_is_on_time_only_at_least_one_working_day_before_the_due_time() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;
    // Wednesday 09:00 leaves exactly one working day (8 working hours) to Thursday 09:00.
    let calendar = calendar::Calendar::vietnam_default();
    let one_day_before = local(2024, 4, 24, 9, 0);
    assert_eq!(
        calendar.working_time_between(one_day_before, due()),
        calendar.to_duration(StatutoryTime::Days(1))
    );

    for (dossier, at, on_time) in [
        ("HS-APOLOGY-EARLY", local(2024, 4, 23, 9, 0), true),
        ("HS-APOLOGY-EDGE", one_day_before, true),
        ("HS-APOLOGY-SHORT", local(2024, 4, 24, 9, 1), false),
        ("HS-APOLOGY-DUE", due(), false),
    ] {
        receive(&stack, dossier).await;
        // Foreseen late: issued while the dossier is open, before its due time.
        let answer = results
            .issue_apology(authed(
                COUNTER_DISTRICT,
                issue_apology(dossier, at, local(2024, 4, 26, 16, 0)),
            ))
            .await
            .expect("apology issued")
            .into_inner();
        assert_eq!(answer.on_time, on_time, "{dossier} at {at}");
        let state = stack.dossier(dossier).await;
        assert_eq!(state.apology.unwrap().on_time, on_time, "{dossier}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apology_of_mau_04_records_signer_delivery_and_the_original_due_time() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;
    receive(&stack, "HS-MAU-04").await;
    let head = stack.log.head().await.expect("head");
    // An unknown delivery channel is refused, naming the field; nothing written.
    let mut bad = issue_apology(
        "HS-MAU-04",
        local(2024, 4, 23, 9, 0),
        local(2024, 4, 29, 9, 0),
    );
    bad.delivery = 9;
    let status = results
        .issue_apology(authed(COUNTER_DISTRICT, bad))
        .await
        .expect_err("unknown delivery");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("delivery"), "{status:?}");
    assert_eq!(stack.log.head().await.expect("head"), head);

    let mut request = issue_apology(
        "HS-MAU-04",
        local(2024, 4, 23, 9, 0),
        local(2024, 4, 29, 9, 0),
    );
    request.signer = "Nguyễn Văn A — Phó Chủ tịch UBND huyện".to_owned();
    request.delivery = pb::ApologyDelivery::Sms as i32;
    let answer = results
        .issue_apology(authed(COUNTER_DISTRICT, request))
        .await
        .expect("apology issued")
        .into_inner();
    assert!(answer.on_time);
    assert_eq!(answer.original_due_at, Some(ts(due())));
    let apology = stack.dossier("HS-MAU-04").await.apology.expect("issued");
    assert_eq!(apology.original_due_at, Some(due()));
    assert_eq!(
        apology.signer.as_ref().map(Text::as_str),
        Some("Nguyễn Văn A — Phó Chủ tịch UBND huyện")
    );
    assert_eq!(apology.delivery, Some(domain::ApologyDelivery::Sms));
    // The new appointment never becomes the due time.
    assert_eq!(stack.dossier("HS-MAU-04").await.due_at, Some(due()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_apology_for_a_dossier_resolved_on_time_nor_with_a_too_early_appointment() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;

    receive(&stack, "HS-ON-TIME").await;
    stack
        .append(
            "HS-ON-TIME",
            local(2024, 4, 24, 15, 0),
            resolve(Outcome::Approved),
        )
        .await;
    let status = stack
        .refused(
            results.issue_apology(authed(
                COUNTER_DISTRICT,
                issue_apology(
                    "HS-ON-TIME",
                    local(2024, 4, 24, 16, 0),
                    local(2024, 4, 26, 9, 0),
                ),
            )),
            Code::FailedPrecondition,
            "apology_not_needed",
        )
        .await;
    assert_eq!(
        status.message(),
        "No apology is needed: the dossier was resolved early."
    );

    receive(&stack, "HS-TOO-EARLY").await;
    let status = stack
        .refused(
            results.issue_apology(authed(
                COUNTER_DISTRICT,
                // The new appointment must be later than the due time in force.
                issue_apology("HS-TOO-EARLY", local(2024, 4, 23, 9, 0), due()),
            )),
            Code::FailedPrecondition,
            "new_appointment_too_early",
        )
        .await;
    assert_eq!(
        status.message(),
        "The new appointment must be later than both the apology and the current due time 2024-04-25 09:00 (UTC+7)."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_steps_follow_the_lifecycle_and_refusals_write_nothing() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;
    let dossier = "HS-RES-ORDER";
    receive(&stack, dossier).await;
    let at = local(2024, 4, 23, 10, 0);

    // Before the resolution: no result, no return, no rating.
    stack
        .refused(
            results.attach_result(authed(COUNTER_DISTRICT, attach_result(dossier, at))),
            Code::FailedPrecondition,
            "not_resolved",
        )
        .await;
    let status = stack
        .refused(
            results.return_result(authed(
                COUNTER_DISTRICT,
                return_result(dossier, at, ReturnMethod::Counter),
            )),
            Code::FailedPrecondition,
            "not_resolved",
        )
        .await;
    assert_eq!(status.message(), "The dossier has not been resolved yet.");
    stack
        .refused(
            results.record_rating(authed(
                COUNTER_DISTRICT,
                record_rating(dossier, at, Rating::Satisfied),
            )),
            Code::FailedPrecondition,
            "not_returned",
        )
        .await;

    let resolved_at = local(2024, 4, 23, 11, 0);
    stack
        .append(dossier, resolved_at, resolve(Outcome::Approved))
        .await;

    // Not dated before the resolution; a digest that is not a SHA-256.
    stack
        .refused(
            results.return_result(authed(
                COUNTER_DISTRICT,
                return_result(dossier, local(2024, 4, 23, 10, 59), ReturnMethod::Counter),
            )),
            Code::FailedPrecondition,
            "before_previous_step",
        )
        .await;
    let bad_digest = pb::AttachResultRequest {
        sha256: "9F86D081".to_owned(),
        ..attach_result(dossier, resolved_at)
    };
    stack
        .refused(
            results.attach_result(authed(COUNTER_DISTRICT, bad_digest)),
            Code::InvalidArgument,
            "invalid_digest",
        )
        .await;

    // Resolved, not yet returned: still no rating.
    let status = stack
        .refused(
            results.record_rating(authed(
                COUNTER_DISTRICT,
                record_rating(dossier, resolved_at, Rating::Satisfied),
            )),
            Code::FailedPrecondition,
            "not_returned",
        )
        .await;
    assert_eq!(
        status.message(),
        "The result has not been returned yet, so it cannot be rated."
    );

    results
        .attach_result(authed(
            COUNTER_DISTRICT,
            attach_result(dossier, resolved_at),
        ))
        .await
        .expect("attached");
    let returned_at = local(2024, 4, 23, 14, 0);
    results
        .return_result(authed(
            COUNTER_DISTRICT,
            return_result(dossier, returned_at, ReturnMethod::Counter),
        ))
        .await
        .expect("returned");
    results
        .record_rating(authed(
            COUNTER_DISTRICT,
            record_rating(dossier, returned_at, Rating::Unsatisfied),
        ))
        .await
        .expect("rated");

    // Each step once.
    let later = local(2024, 4, 23, 15, 0);
    stack
        .refused(
            results.attach_result(authed(COUNTER_DISTRICT, attach_result(dossier, later))),
            Code::FailedPrecondition,
            "result_already_digitized",
        )
        .await;
    stack
        .refused(
            results.return_result(authed(
                COUNTER_DISTRICT,
                return_result(dossier, later, ReturnMethod::Online),
            )),
            Code::FailedPrecondition,
            "already_returned",
        )
        .await;
    let status = stack
        .refused(
            results.record_rating(authed(
                COUNTER_DISTRICT,
                record_rating(dossier, later, Rating::VerySatisfied),
            )),
            Code::FailedPrecondition,
            "already_rated",
        )
        .await;
    assert_eq!(status.message(), "The dossier has already been rated.");

    // Unknown and ended dossiers.
    stack
        .refused(
            results.return_result(authed(
                COUNTER_DISTRICT,
                return_result("HS-UNKNOWN", later, ReturnMethod::Counter),
            )),
            Code::NotFound,
            "unknown_dossier",
        )
        .await;
    receive(&stack, "HS-STOPPED").await;
    stack
        .append(
            "HS-STOPPED",
            local(2024, 4, 23, 9, 0),
            Action::Stop {
                reason: Text::parse("Hồ sơ không đủ điều kiện giải quyết").unwrap(),
            },
        )
        .await;
    stack
        .refused(
            results.issue_apology(authed(
                COUNTER_DISTRICT,
                issue_apology("HS-STOPPED", later, local(2024, 4, 29, 9, 0)),
            )),
            Code::FailedPrecondition,
            "ended",
        )
        .await;

    // Malformed requests name the field.
    for (request, field) in [
        (
            pb::ReturnResultRequest {
                method: ReturnMethod::Unspecified as i32,
                ..return_result(dossier, later, ReturnMethod::Counter)
            },
            "method",
        ),
        (
            pb::ReturnResultRequest {
                occurred_at: Some(ts(chrono::Utc::now() + chrono::Duration::hours(1))),
                ..return_result(dossier, later, ReturnMethod::Counter)
            },
            "occurred_at",
        ),
    ] {
        stack
            .invalid(
                results.return_result(authed(COUNTER_DISTRICT, request)),
                field,
            )
            .await;
    }
    stack
        .invalid(
            results.issue_apology(authed(
                COUNTER_DISTRICT,
                pb::IssueApologyRequest {
                    new_appointment: None,
                    ..issue_apology(dossier, later, later)
                },
            )),
            "new_appointment",
        )
        .await;
    stack
        .invalid(
            results.attach_result(authed(
                COUNTER_DISTRICT,
                pb::AttachResultRequest {
                    document_ref: "  ".to_owned(),
                    ..attach_result(dossier, later)
                },
            )),
            "document_ref",
        )
        .await;
    stack
        .invalid(
            results.record_rating(authed(
                COUNTER_DISTRICT,
                pb::RecordRatingRequest {
                    rating: 42,
                    ..record_rating(dossier, later, Rating::Satisfied)
                },
            )),
            "rating",
        )
        .await;

    let state = stack.dossier(dossier).await;
    assert_eq!(state.rating, Some(domain::Rating::Unsatisfied));
    assert_eq!(state.return_method, Some(domain::ReturnMethod::Counter));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_refused_on_decision_still_returns_its_result() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;
    let dossier = "HS-RES-REFUSED";
    receive(&stack, dossier).await;
    stack
        .append(dossier, local(2024, 4, 24, 9, 0), resolve(Outcome::Refused))
        .await;

    let at = local(2024, 4, 24, 10, 0);
    results
        .attach_result(authed(COUNTER_DISTRICT, attach_result(dossier, at)))
        .await
        .expect("the refusal letter attached");
    results
        .return_result(authed(
            COUNTER_DISTRICT,
            return_result(dossier, at, ReturnMethod::Online),
        ))
        .await
        .expect("the refusal returned");
    results
        .record_rating(authed(
            COUNTER_DISTRICT,
            record_rating(dossier, at, Rating::Unsatisfied),
        ))
        .await
        .expect("rated");
    let state = stack.dossier(dossier).await;
    assert_eq!(state.resolution.as_ref().unwrap().outcome, Outcome::Refused);
    assert_eq!(state.portal_status(), Some(10));
}

/// Attaches, returns and rates, answering the three recorded events.
async fn result_steps(
    results: &mut ResultsServiceClient<Channel>,
    attach: &pb::AttachResultRequest,
    give_back: &pb::ReturnResultRequest,
    rate: &pb::RecordRatingRequest,
) -> [pb::RecordedEvent; 3] {
    [
        results
            .attach_result(authed(COUNTER_DISTRICT, attach.clone()))
            .await
            .expect("attached")
            .into_inner()
            .event
            .unwrap(),
        results
            .return_result(authed(COUNTER_DISTRICT, give_back.clone()))
            .await
            .expect("returned")
            .into_inner()
            .event
            .unwrap(),
        results
            .record_rating(authed(COUNTER_DISTRICT, rate.clone()))
            .await
            .expect("rated")
            .into_inner()
            .event
            .unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_results_call_retried_with_its_event_id_answers_the_same_and_stores_one_event() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;
    let dossier = "HS-RES-RETRY";
    receive(&stack, dossier).await;

    let apology = issue_apology(dossier, local(2024, 4, 23, 9, 0), local(2024, 4, 26, 16, 0));
    let first = results
        .issue_apology(authed(COUNTER_DISTRICT, apology.clone()))
        .await
        .unwrap()
        .into_inner();
    let head = stack.log.head().await.unwrap();
    let retry = results
        .issue_apology(authed(COUNTER_DISTRICT, apology.clone()))
        .await
        .unwrap()
        .into_inner();
    assert!(first.on_time && retry.on_time, "the same on_time");
    let (first, retry) = (first.event.unwrap(), retry.event.unwrap());
    assert!(retry.duplicate && !first.duplicate);
    assert_eq!(as_original(&retry), first);
    assert_eq!(stack.log.head().await.unwrap(), head);
    assert_eq!(stack.stored_with_id(&apology.event_id).await, 1);

    stack
        .append(
            dossier,
            local(2024, 4, 24, 9, 0),
            resolve(Outcome::Approved),
        )
        .await;
    let at = local(2024, 4, 24, 10, 0);
    let attach = attach_result(dossier, at);
    let give_back = return_result(dossier, at, ReturnMethod::Counter);
    let rate = record_rating(dossier, at, Rating::VerySatisfied);
    let first = result_steps(&mut results, &attach, &give_back, &rate).await;
    assert!(first.iter().all(|e| !e.duplicate));
    let head = stack.log.head().await.unwrap();
    let retry = result_steps(&mut results, &attach, &give_back, &rate).await;
    assert!(retry.iter().all(|e| e.duplicate), "{retry:?}");
    assert_eq!(retry.map(|e| as_original(&e)), first);
    assert_eq!(
        stack.log.head().await.unwrap(),
        head,
        "retries write nothing"
    );
    for request_id in [&attach.event_id, &give_back.event_id, &rate.event_id] {
        assert_eq!(stack.stored_with_id(request_id).await, 1);
    }
    // An event id reused for another request is refused.
    stack
        .refused(
            results.record_rating(authed(
                COUNTER_DISTRICT,
                pb::RecordRatingRequest {
                    rating: Rating::Unsatisfied as i32,
                    ..rate
                },
            )),
            Code::AlreadyExists,
            "event_id_reused",
        )
        .await;
}

/// A request with `token` as its bearer token, or with none.
fn with_token<T>(token: Option<&str>, message: T) -> Request<T> {
    match token {
        Some(token) => authed(token, message),
        None => Request::new(message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_counters_of_the_receiving_or_holding_agency_record_results() {
    let db = TestDb::new().await;
    let stack = stack(&db).await;
    let mut results = stack.results_client().await;
    let dossier = "HS-RES-AUTH";
    receive(&stack, dossier).await;
    stack
        .append(
            dossier,
            local(2024, 4, 24, 9, 0),
            resolve(Outcome::Approved),
        )
        .await;
    let at = local(2024, 4, 24, 10, 0);
    let attach = attach_result(dossier, at);
    let give_back = return_result(dossier, at, ReturnMethod::Counter);
    let apology = issue_apology(dossier, at, local(2024, 4, 26, 9, 0));
    let rate = record_rating(dossier, at, Rating::Satisfied);

    for token in [Some(COUNTER_PROVINCE), Some(AUDITOR), Some(IMPORTER), None] {
        let expected = match token {
            Some(_) => Code::PermissionDenied,
            None => Code::Unauthenticated,
        };
        let codes = [
            stack
                .refused_without_writing(results.attach_result(with_token(token, attach.clone())))
                .await
                .code(),
            stack
                .refused_without_writing(
                    results.return_result(with_token(token, give_back.clone())),
                )
                .await
                .code(),
            stack
                .refused_without_writing(results.issue_apology(with_token(token, apology.clone())))
                .await
                .code(),
            stack
                .refused_without_writing(results.record_rating(with_token(token, rate.clone())))
                .await
                .code(),
        ];
        assert_eq!(codes, [expected; 4], "{token:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_events_reach_their_jetstream_subjects() {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    let stack = stack(&db).await;
    let mut relay =
        RunningRelay::start(stack.log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let mut results = stack.results_client().await;
    let dossier = "HS-RES-NATS";
    receive(&stack, dossier).await;

    let apology = issue_apology(dossier, local(2024, 4, 23, 9, 0), local(2024, 4, 26, 16, 0));
    results
        .issue_apology(authed(COUNTER_DISTRICT, apology.clone()))
        .await
        .unwrap();
    stack
        .append(
            dossier,
            local(2024, 4, 26, 9, 0),
            resolve(Outcome::Approved),
        )
        .await;
    let at = local(2024, 4, 26, 10, 0);
    let attach = attach_result(dossier, at);
    results
        .attach_result(authed(COUNTER_DISTRICT, attach.clone()))
        .await
        .unwrap();
    let give_back = return_result(dossier, at, ReturnMethod::Post);
    results
        .return_result(authed(COUNTER_DISTRICT, give_back.clone()))
        .await
        .unwrap();
    let rate = record_rating(dossier, at, Rating::Satisfied);
    results
        .record_rating(authed(COUNTER_DISTRICT, rate.clone()))
        .await
        .unwrap();

    relay
        .wait_published(stack.log.head().await.unwrap(), Duration::from_secs(30))
        .await;
    let subject =
        |event_type: &str| format!("{}.district.000_00_12_H40.land.{event_type}", nats.prefix);
    let messages = published(&nats).await;
    assert_eq!(messages.len(), 6);
    assert_eq!(messages[1], (subject("apology_issued"), apology.event_id));
    assert_eq!(messages[2].0, subject("resolved"));
    assert_eq!(messages[3], (subject("result_digitized"), attach.event_id));
    assert_eq!(
        messages[4],
        (subject("result_returned"), give_back.event_id)
    );
    assert_eq!(messages[5], (subject("satisfaction_rated"), rate.event_id));
    relay.stop().await;
}
