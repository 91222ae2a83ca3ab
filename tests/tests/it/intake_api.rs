//! The intake service through real gRPC: answers, status codes and their details, what is
//! stored (and that nothing is when a call fails), idempotency, concurrency, and PostgreSQL
//! going away. Every test has its own database and its own server, so they run in parallel.

use std::collections::BTreeSet;
use std::time::Duration;

use api::v1 as pb;
use api::v1::intake_service_client::IntakeServiceClient;
use chrono::{DateTime, Utc};
use domain::{DossierEvent, Phase};
use eventlog::EventLog;
use pb::statutory_time::Unit;
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, DISTRICT_AGENCY, IMPORTER, PROVINCE_AGENCY,
    RunningIntake, authed, local, new_event_id, profile, receive_request, ts,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

/// One test's world: a fresh database, its log, an intake server over it, and a client.
struct Env {
    client: IntakeServiceClient<Channel>,
    log: EventLog,
    _intake: RunningIntake,
    _db: testkit::TestDb,
}

async fn env() -> Env {
    let db = testkit::TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let client = intake.client().await;
    Env {
        client,
        log,
        _intake: intake,
        _db: db,
    }
}

/// Monday 22 April 2024, 09:00 in Vietnam: an ordinary working morning.
fn monday_morning() -> DateTime<Utc> {
    local(2024, 4, 22, 9, 0)
}

fn working_days(n: u32) -> Option<pb::StatutoryTime> {
    Some(pb::StatutoryTime {
        unit: Some(Unit::WorkingDays(n)),
    })
}

fn working_hours(n: u32) -> Option<pb::StatutoryTime> {
    Some(pb::StatutoryTime {
        unit: Some(Unit::WorkingHours(n)),
    })
}

fn digitize_request(
    dossier_id: &str,
    occurred_at: DateTime<Utc>,
    digitized: &[&str],
    reused: &[&str],
) -> pb::RecordDigitizedComponentsRequest {
    pb::RecordDigitizedComponentsRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(occurred_at)),
        digitized: digitized.iter().map(|c| (*c).to_owned()).collect(),
        reused: reused.iter().map(|c| (*c).to_owned()).collect(),
        expected_version: None,
    }
}

fn refuse_request(
    dossier_id: &str,
    occurred_at: DateTime<Utc>,
    agency: &str,
) -> pb::RefuseAtCounterRequest {
    pb::RefuseAtCounterRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(occurred_at)),
        profile: Some(profile(agency)),
        reason: "Thiếu bản sao giấy chứng nhận quyền sử dụng đất".to_owned(),
    }
}

/// INVALID_ARGUMENT whose `google.rpc.BadRequest` names exactly `field`, also in the message.
#[track_caller]
fn assert_bad_field(status: &Status, field: &str) {
    tests::assert_details_agree(status);
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "expected INVALID_ARGUMENT naming {field}, got {status:?}"
    );
    let details = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest details in {status:?}"));
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, [field], "field violations of {status:?}");
    assert!(
        !details.field_violations[0].description.is_empty(),
        "the violation says what is wrong"
    );
    assert!(
        status.message().contains(field),
        "message {:?} names {field}",
        status.message()
    );
}

/// `code` with a `google.rpc.ErrorInfo` of this system carrying `reason`.
#[track_caller]
fn assert_reason(status: &Status, code: Code, reason: &str) {
    tests::assert_details_agree(status);
    assert_eq!(
        status.code(),
        code,
        "expected {code:?} {reason}, got {status:?}"
    );
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo details in {status:?}"));
    assert_eq!(info.reason, reason, "reason of {status:?}");
    assert_eq!(info.domain, svc::status::ERROR_DOMAIN);
}

async fn head(log: &EventLog) -> i64 {
    log.head().await.expect("read the log head")
}

/// Receives `dossier_id` at the district counter on Monday morning; returns the answer.
async fn receive(env: &mut Env, dossier_id: &str) -> pb::ReceiveDossierResponse {
    env.client
        .receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_request(dossier_id, monday_morning()),
        ))
        .await
        .unwrap_or_else(|s| panic!("receive {dossier_id}: {s:?}"))
        .into_inner()
}

/// The answer without its `duplicate` flag, to compare a first answer with its repetitions.
fn stripped(event: &pb::RecordedEvent) -> pb::RecordedEvent {
    pb::RecordedEvent {
        duplicate: false,
        ..event.clone()
    }
}

// ---------------------------------------------------------------------------------- receive

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_records_the_event_and_answers_the_due_time() {
    let mut env = env().await;
    let request = receive_request("H40.22-240422-0001", monday_morning());
    let started = Utc::now();
    let answer = env
        .client
        .receive_dossier(authed(COUNTER_DISTRICT, request.clone()))
        .await
        .expect("receive")
        .into_inner();
    let finished = Utc::now();

    let event = answer.event.clone().expect("the recorded event");
    assert_eq!(event.event_id, request.event_id);
    assert_eq!(event.dossier_id, "H40.22-240422-0001");
    assert_eq!(event.position, 1);
    assert_eq!(event.version, 1);
    assert_eq!(event.event_type, "received");
    assert!(!event.duplicate);
    assert_eq!(event.event_hash.len(), 32);
    assert_eq!(event.occurred_at, Some(ts(monday_morning())));
    let recorded_at = event.recorded_at.expect("recorded_at");
    let recorded_at =
        DateTime::<Utc>::from_timestamp(recorded_at.seconds, recorded_at.nanos as u32)
            .expect("valid recorded_at");
    // The database's clock, not the client's: allow for a little skew between the two.
    assert!(
        recorded_at > started - chrono::Duration::seconds(5)
            && recorded_at < finished + chrono::Duration::seconds(5),
        "recorded_at {recorded_at} is the time of the call"
    );

    // Three working days (24 working hours) from Monday 09:00: Monday 09:00–11:30 and
    // 13:30–17:00 give 6 h, Tuesday and Wednesday 8 h each (22 h), and Thursday from 07:00
    // the last 2 h: due Thursday 25 April 2024 at 09:00.
    let due = local(2024, 4, 25, 9, 0);
    assert_eq!(answer.due_at, Some(ts(due)));
    assert_eq!(
        calendar::Calendar::vietnam_default()
            .due_time(monday_morning(), calendar::StatutoryTime::Days(3)),
        due,
        "cross-check with the calendar"
    );

    // What PostgreSQL holds is what the client was told.
    let stored = env
        .log
        .load_dossier("H40.22-240422-0001")
        .await
        .expect("load");
    assert_eq!(stored.len(), 1);
    let s = &stored[0];
    assert_eq!(s.event_id.to_string(), request.event_id);
    assert_eq!(s.position, 1);
    assert_eq!(s.version, 1);
    assert_eq!(s.event_type, "received");
    assert_eq!(s.occurred_at, monday_morning());
    assert_eq!(s.event_hash.to_vec(), event.event_hash);
    assert_eq!(svc::recorded_event(s, false).unwrap(), event);
    assert_eq!(s.routing.level, "district");
    assert_eq!(s.routing.agency, DISTRICT_AGENCY);
    assert_eq!(s.routing.sector, "land");
    match writepath::decode(s).expect("decodes").body {
        DossierEvent::Received {
            profile,
            statutory_time,
            fee_required,
            components,
            due_at,
            procedure,
            applicant,
            ..
        } => {
            assert_eq!(procedure, None, "1.004227 is not in this test's catalogue");
            assert_eq!(applicant, None);
            assert_eq!(due_at, due);
            assert_eq!(statutory_time, calendar::StatutoryTime::Days(3));
            assert!(fee_required);
            assert_eq!(profile.agency.as_str(), DISTRICT_AGENCY);
            assert_eq!(profile.procedure.as_str(), "1.004227");
            let components: Vec<&str> = components.iter().map(|c| c.as_str()).collect();
            assert_eq!(components, ["don-de-nghi", "ban-ve"]);
        }
        other => panic!("stored {other:?}"),
    }
    let dossier = writepath::fold(&stored).expect("folds");
    assert_eq!(dossier.phase, Phase::Open);
    assert_eq!(dossier.portal_status(), Some(2));
    assert_eq!(head(&env.log).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_times_skip_holidays_lunch_and_follow_swapped_days() {
    let mut env = env().await;
    let cal = calendar::Calendar::vietnam_default();
    // (dossier, received (local), statutory time, due (local), why)
    let cases = [
        (
            "H40-FRI-BEFORE-HOLIDAYS",
            local(2024, 4, 26, 16, 0),
            working_days(1),
            calendar::StatutoryTime::Days(1),
            local(2024, 5, 2, 16, 0),
            // Friday 16:00–17:00 is 1 h; Saturday 27 April to Wednesday 1 May 2024 is the
            // Reunification/Labour Day break (Monday 29 April swapped with Saturday 4 May);
            // Thursday 2 May gives 4.5 h in the morning and the last 2.5 h from 13:30.
            "over the 27 Apr–1 May 2024 break",
        ),
        (
            "H40-FRI-BEFORE-SWAPPED-SATURDAY",
            local(2024, 5, 3, 16, 0),
            working_days(1),
            calendar::StatutoryTime::Days(1),
            local(2024, 5, 4, 16, 0),
            // Saturday 4 May 2024 is worked instead of Monday 29 April.
            "onto the swapped working Saturday",
        ),
        (
            "H40-AT-LUNCH",
            local(2024, 4, 22, 12, 0),
            working_hours(4),
            calendar::StatutoryTime::Hours(4),
            local(2024, 4, 23, 7, 30),
            // Received during the lunch break: counting starts at 13:30, 3.5 h to 17:00,
            // the last 0.5 h on Tuesday from 07:00.
            "received at lunch",
        ),
        (
            "H40-SUNDAY",
            local(2024, 4, 21, 10, 0),
            working_hours(8),
            calendar::StatutoryTime::Hours(8),
            local(2024, 4, 22, 17, 0),
            // Received on Sunday: counting starts Monday 07:00; 8 h end exactly at 17:00.
            "received on a Sunday",
        ),
    ];
    for (dossier_id, received, statutory, cal_statutory, due, why) in cases {
        let mut request = receive_request(dossier_id, received);
        request.statutory_time = statutory;
        let answer = env
            .client
            .receive_dossier(authed(COUNTER_DISTRICT, request))
            .await
            .unwrap_or_else(|s| panic!("{why}: {s:?}"))
            .into_inner();
        assert_eq!(answer.due_at, Some(ts(due)), "{why}");
        assert_eq!(
            cal.due_time(received, cal_statutory),
            due,
            "calendar cross-check: {why}"
        );
        let stored = env.log.load_dossier(dossier_id).await.expect("load");
        assert_eq!(writepath::fold(&stored).unwrap().due_at, Some(due), "{why}");
    }
}

// ------------------------------------------------------------------------- invalid arguments

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receive_names_the_offending_field_and_writes_nothing() {
    let mut env = env().await;
    type Edit = Box<dyn Fn(&mut pb::ReceiveDossierRequest)>;
    let in_ten_minutes = Utc::now() + chrono::Duration::minutes(10);
    let cases: Vec<(&str, Edit)> = vec![
        ("event_id", Box::new(|r| r.event_id.clear())),
        ("event_id", Box::new(|r| r.event_id = "not-a-uuid".into())),
        (
            "event_id",
            Box::new(|r| r.event_id = uuid::Uuid::nil().to_string()),
        ),
        ("dossier_id", Box::new(|r| r.dossier_id.clear())),
        ("dossier_id", Box::new(|r| r.dossier_id = "hồ sơ 1".into())),
        ("dossier_id", Box::new(|r| r.dossier_id = "X".repeat(65))),
        ("occurred_at", Box::new(|r| r.occurred_at = None)),
        (
            "occurred_at",
            Box::new(move |r| r.occurred_at = Some(ts(in_ten_minutes))),
        ),
        (
            "occurred_at",
            Box::new(|r| {
                r.occurred_at = Some(api::Timestamp {
                    seconds: 1_713_751_200,
                    nanos: -1,
                })
            }),
        ),
        (
            "occurred_at",
            Box::new(|r| r.occurred_at = Some(ts(local(1980, 1, 1, 9, 0)))),
        ),
        ("profile", Box::new(|r| r.profile = None)),
        (
            "profile.procedure_code",
            Box::new(|r| r.profile.as_mut().unwrap().procedure_code.clear()),
        ),
        (
            "profile.online_level",
            Box::new(|r| r.profile.as_mut().unwrap().online_level = 0),
        ),
        (
            "profile.sector_code",
            Box::new(|r| r.profile.as_mut().unwrap().sector_code.clear()),
        ),
        (
            "profile.agency_code",
            Box::new(|r| r.profile.as_mut().unwrap().agency_code = "000_00_12_H40".into()),
        ),
        (
            "profile.agency_code",
            Box::new(|r| r.profile.as_mut().unwrap().agency_code.clear()),
        ),
        (
            "profile.level",
            Box::new(|r| r.profile.as_mut().unwrap().level = 0),
        ),
        (
            "profile.level",
            Box::new(|r| r.profile.as_mut().unwrap().level = 99),
        ),
        (
            "profile.channel",
            Box::new(|r| r.profile.as_mut().unwrap().channel = 0),
        ),
        (
            "profile.applicant_type",
            Box::new(|r| r.profile.as_mut().unwrap().applicant_type = 0),
        ),
        ("statutory_time", Box::new(|r| r.statutory_time = None)),
        (
            "statutory_time",
            Box::new(|r| r.statutory_time = Some(pb::StatutoryTime { unit: None })),
        ),
        (
            "statutory_time.working_days",
            Box::new(|r| r.statutory_time = working_days(0)),
        ),
        (
            "statutory_time.working_days",
            Box::new(|r| r.statutory_time = working_days(366)),
        ),
        (
            "statutory_time.working_hours",
            Box::new(|r| r.statutory_time = working_hours(0)),
        ),
        ("components", Box::new(|r| r.components.clear())),
        (
            "components[1]",
            Box::new(|r| r.components[1] = "bản vẽ".into()),
        ),
        ("components[0]", Box::new(|r| r.components[0].clear())),
    ];
    for (field, edit) in cases {
        let mut request = receive_request("H40-INVALID-1", monday_morning());
        edit(&mut request);
        let status = env
            .client
            .receive_dossier(authed(COUNTER_DISTRICT, request))
            .await
            .expect_err(field);
        assert_bad_field(&status, field);
    }
    // A rule on the content, decided by the domain: INVALID_ARGUMENT with its reason code.
    let mut request = receive_request("H40-INVALID-1", monday_morning());
    request.components = vec!["don-de-nghi".into(), "don-de-nghi".into()];
    let status = env
        .client
        .receive_dossier(authed(COUNTER_DISTRICT, request))
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "duplicate_component");

    assert_eq!(head(&env.log).await, 0, "nothing was written");
    assert!(
        env.log
            .load_dossier("H40-INVALID-1")
            .await
            .unwrap()
            .is_empty()
    );

    // Up to five minutes ahead is clock skew between counter PCs, and accepted.
    let request = receive_request("H40-INVALID-1", Utc::now() + chrono::Duration::minutes(4));
    env.client
        .receive_dossier(authed(COUNTER_DISTRICT, request))
        .await
        .expect("4 minutes ahead is accepted");
    assert_eq!(head(&env.log).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digitize_and_refuse_name_the_offending_field_and_write_nothing() {
    let mut env = env().await;
    receive(&mut env, "H40-D-1").await;
    let at = monday_morning() + chrono::Duration::minutes(10);

    type Edit = Box<dyn Fn(&mut pb::RecordDigitizedComponentsRequest)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "digitized",
            Box::new(|r| {
                r.digitized.clear();
                r.reused.clear();
            }),
        ),
        (
            "digitized[1]",
            Box::new(|r| r.digitized.push("bad code".into())),
        ),
        ("reused[0]", Box::new(|r| r.reused.push("x".repeat(65)))),
        ("event_id", Box::new(|r| r.event_id = "123".into())),
        (
            "event_id",
            Box::new(|r| r.event_id = uuid::Uuid::nil().to_string()),
        ),
        ("dossier_id", Box::new(|r| r.dossier_id = "a b".into())),
        ("occurred_at", Box::new(|r| r.occurred_at = None)),
    ];
    for (field, edit) in cases {
        let mut request = digitize_request("H40-D-1", at, &["don-de-nghi"], &[]);
        edit(&mut request);
        let status = env
            .client
            .record_digitized_components(authed(COUNTER_DISTRICT, request))
            .await
            .expect_err(field);
        assert_bad_field(&status, field);
    }

    type RefuseEdit = Box<dyn Fn(&mut pb::RefuseAtCounterRequest)>;
    let cases: Vec<(&str, RefuseEdit)> = vec![
        ("reason", Box::new(|r| r.reason.clear())),
        ("reason", Box::new(|r| r.reason = "   ".into())),
        ("reason", Box::new(|r| r.reason = "x".repeat(2001))),
        ("profile", Box::new(|r| r.profile = None)),
        (
            "profile.sector_code",
            Box::new(|r| r.profile.as_mut().unwrap().sector_code = "đất đai".into()),
        ),
        ("event_id", Box::new(|r| r.event_id.clear())),
        ("dossier_id", Box::new(|r| r.dossier_id.clear())),
        ("occurred_at", Box::new(|r| r.occurred_at = None)),
    ];
    for (field, edit) in cases {
        let mut request = refuse_request("H40-R-1", at, DISTRICT_AGENCY);
        edit(&mut request);
        let status = env
            .client
            .refuse_at_counter(authed(COUNTER_DISTRICT, request))
            .await
            .expect_err(field);
        assert_bad_field(&status, field);
    }

    assert_eq!(head(&env.log).await, 1, "only the reception was written");
    assert_eq!(env.log.load_dossier("H40-D-1").await.unwrap().len(), 1);
    assert!(env.log.load_dossier("H40-R-1").await.unwrap().is_empty());
}

// ------------------------------------------------------------------------------------- auth

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_malformed_credentials_are_unauthenticated() {
    let mut env = env().await;
    let request = receive_request("H40-AUTH-1", monday_morning());

    let status = env
        .client
        .receive_dossier(Request::new(request.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "no token: {status:?}");

    let status = env
        .client
        .receive_dossier(authed("not-a-known-token", request.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "wrong token: {status:?}"
    );

    for header in [
        COUNTER_DISTRICT.to_owned(),
        format!("Basic {COUNTER_DISTRICT}"),
        format!("Bearer{COUNTER_DISTRICT}"),
        "Bearer ".to_owned(),
    ] {
        let mut call = Request::new(request.clone());
        call.metadata_mut()
            .insert("authorization", header.parse().unwrap());
        let status = env.client.receive_dossier(call).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "header {header:?}: {status:?}"
        );
    }
    // Not text: bytes beyond ASCII the server cannot read as a token.
    let mut call = Request::new(request.clone());
    call.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::try_from(&b"Bearer \xfftoken"[..]).unwrap(),
    );
    let status = env.client.receive_dossier(call).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let digitize = digitize_request("H40-AUTH-1", monday_morning(), &["don-de-nghi"], &[]);
    let status = env
        .client
        .record_digitized_components(Request::new(digitize))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let refuse = refuse_request("H40-AUTH-1", monday_morning(), DISTRICT_AGENCY);
    let status = env
        .client
        .refuse_at_counter(authed("nope", refuse))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // An invalid request without credentials is still refused for the credentials first.
    let mut bad = request.clone();
    bad.event_id.clear();
    let status = env
        .client
        .receive_dossier(Request::new(bad))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    assert_eq!(head(&env.log).await, 0, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_write_only_what_their_role_and_agency_allow() {
    let mut env = env().await;

    // A district counter receiving for the province agency.
    let mut for_province = receive_request("H40-PERM-1", monday_morning());
    for_province.profile = Some(profile(PROVINCE_AGENCY));
    let status = env
        .client
        .receive_dossier(authed(COUNTER_DISTRICT, for_province.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Auditors and importers write nothing through the counter's RPCs.
    for token in [AUDITOR, IMPORTER] {
        let status = env
            .client
            .receive_dossier(authed(
                token,
                receive_request("H40-PERM-2", monday_morning()),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{token}: {status:?}");
        let status = env
            .client
            .refuse_at_counter(authed(
                token,
                refuse_request("H40-PERM-2", monday_morning(), DISTRICT_AGENCY),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{token}: {status:?}");
    }
    let status = env
        .client
        .refuse_at_counter(authed(
            COUNTER_DISTRICT,
            refuse_request("H40-PERM-3", monday_morning(), PROVINCE_AGENCY),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(head(&env.log).await, 0, "nothing was written");

    // The province receives its own dossier; the district counter may not digitize it.
    env.client
        .receive_dossier(authed(COUNTER_PROVINCE, for_province))
        .await
        .expect("the province counter receives for its agency");
    let at = monday_morning() + chrono::Duration::minutes(5);
    let status = env
        .client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request("H40-PERM-1", at, &["don-de-nghi"], &[]),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    for token in [AUDITOR, IMPORTER] {
        let status = env
            .client
            .record_digitized_components(authed(
                token,
                digitize_request("H40-PERM-1", at, &["don-de-nghi"], &[]),
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{token}: {status:?}");
    }
    assert_eq!(head(&env.log).await, 1, "only the province's reception");

    let answer = env
        .client
        .record_digitized_components(authed(
            COUNTER_PROVINCE,
            digitize_request("H40-PERM-1", at, &["don-de-nghi"], &[]),
        ))
        .await
        .expect("the province digitizes its dossier")
        .into_inner();
    assert_eq!(answer.event.unwrap().version, 2);
}

// ------------------------------------------------------------------------------ idempotency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_receive_gets_the_original_answer() {
    let mut env = env().await;
    let request = receive_request("H40-IDEM-1", monday_morning());
    let first = env
        .client
        .receive_dossier(authed(COUNTER_DISTRICT, request.clone()))
        .await
        .unwrap()
        .into_inner();
    let second = env
        .client
        .receive_dossier(authed(COUNTER_DISTRICT, request.clone()))
        .await
        .expect("a retry succeeds")
        .into_inner();
    let (a, b) = (first.event.unwrap(), second.event.unwrap());
    assert!(!a.duplicate);
    assert!(b.duplicate, "the second answer says it repeats the first");
    assert_eq!(stripped(&b), a, "same position, version, recorded_at, hash");
    assert_eq!(second.due_at, first.due_at);
    assert_eq!(head(&env.log).await, 1);
    assert_eq!(env.log.load_dossier("H40-IDEM-1").await.unwrap().len(), 1);

    // The same event id for a different request: another dossier, or other content.
    let mut other_dossier = receive_request("H40-IDEM-2", monday_morning());
    other_dossier.event_id = request.event_id.clone();
    let mut other_content = request.clone();
    other_content.components.push("giay-uy-quyen".into());
    let mut other_time = request.clone();
    other_time.occurred_at = Some(ts(monday_morning() + chrono::Duration::minutes(1)));
    for reused in [other_dossier, other_content, other_time] {
        let status = env
            .client
            .receive_dossier(authed(COUNTER_DISTRICT, reused))
            .await
            .unwrap_err();
        assert_reason(&status, Code::AlreadyExists, "event_id_reused");
    }
    // …or for another RPC.
    let mut digitize = digitize_request("H40-IDEM-1", monday_morning(), &["ban-ve"], &[]);
    digitize.event_id = request.event_id.clone();
    let status = env
        .client
        .record_digitized_components(authed(COUNTER_DISTRICT, digitize))
        .await
        .unwrap_err();
    assert_reason(&status, Code::AlreadyExists, "event_id_reused");

    // A second reception of the same dossier with a new event id.
    let status = env
        .client
        .receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_request("H40-IDEM-1", monday_morning()),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::AlreadyExists, "already_exists");

    assert_eq!(head(&env.log).await, 1, "nothing more was written");
    assert!(env.log.load_dossier("H40-IDEM-2").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_concurrent_retries_store_one_event() {
    let env = env().await;
    // Several rounds, so that the retries really overlap at each step of the write path.
    for round in 0..4 {
        let dossier_id = format!("H40-RETRY-{round}");
        let request = receive_request(&dossier_id, monday_morning());
        let calls = (0..16).map(|_| {
            let mut client = env.client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                client
                    .receive_dossier(authed(COUNTER_DISTRICT, request))
                    .await
            })
        });
        let answers: Vec<pb::ReceiveDossierResponse> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|joined| {
                joined
                    .expect("task")
                    .unwrap_or_else(|s| panic!("a concurrent retry failed: {s:?}"))
                    .into_inner()
            })
            .collect();
        let originals = answers
            .iter()
            .filter(|a| !a.event.as_ref().unwrap().duplicate)
            .count();
        assert_eq!(originals, 1, "exactly one call wrote the event");
        let first = stripped(answers[0].event.as_ref().unwrap());
        for answer in &answers {
            assert_eq!(stripped(answer.event.as_ref().unwrap()), first);
            assert_eq!(answer.due_at, answers[0].due_at);
        }
        assert_eq!(first.position, round + 1);
        assert_eq!(first.version, 1);
        assert_eq!(env.log.load_dossier(&dossier_id).await.unwrap().len(), 1);
    }
    assert_eq!(head(&env.log).await, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_retries_of_a_versioned_digitization_store_one_event() {
    let mut env = env().await;
    let at = monday_morning() + chrono::Duration::minutes(30);
    for round in 0..4u64 {
        let dossier_id = format!("H40-VRETRY-{round}");
        receive(&mut env, &dossier_id).await;
        // The client saw version 1 and retries its call while the first is in flight: the
        // retries must be answered as such, not as a stale version.
        let mut request = digitize_request(&dossier_id, at, &["don-de-nghi"], &["ban-ve"]);
        request.expected_version = Some(1);
        let calls = (0..8).map(|_| {
            let mut client = env.client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                client
                    .record_digitized_components(authed(COUNTER_DISTRICT, request))
                    .await
            })
        });
        let events: Vec<pb::RecordedEvent> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|joined| {
                joined
                    .expect("task")
                    .unwrap_or_else(|s| panic!("a concurrent retry failed: {s:?}"))
                    .into_inner()
                    .event
                    .unwrap()
            })
            .collect();
        assert_eq!(events.iter().filter(|e| !e.duplicate).count(), 1);
        for event in &events {
            assert_eq!(stripped(event), stripped(&events[0]));
        }
        assert_eq!((events[0].position, events[0].version), (2 * round + 2, 2));
        assert_eq!(env.log.load_dossier(&dossier_id).await.unwrap().len(), 2);
    }
}

// --------------------------------------------------------------------------------- digitize

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digitize_checks_existence_components_and_versions() {
    let mut env = env().await;
    let at = monday_morning() + chrono::Duration::minutes(15);

    let status = env
        .client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request("H40-NOPE", at, &["don-de-nghi"], &[]),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::NotFound, "unknown_dossier");

    receive(&mut env, "H40-DIG-1").await;

    // A component the dossier was not submitted with: the domain classes it as a malformed
    // command (`RefusalKind::InvalidArgument`), so INVALID_ARGUMENT with the reason code.
    let status = env
        .client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request("H40-DIG-1", at, &["don-de-nghi", "so-do"], &[]),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "unknown_component");
    assert!(status.message().contains("so-do"), "{status:?}");

    let status = env
        .client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request("H40-DIG-1", at, &["ban-ve"], &["ban-ve"]),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::InvalidArgument, "digitized_and_reused");

    let status = env
        .client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request(
                "H40-DIG-1",
                monday_morning() - chrono::Duration::minutes(1),
                &["ban-ve"],
                &[],
            ),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "before_reception");

    for stale in [0, 2, 7] {
        let mut request = digitize_request("H40-DIG-1", at, &["don-de-nghi"], &["ban-ve"]);
        request.expected_version = Some(stale);
        let status = env
            .client
            .record_digitized_components(authed(COUNTER_DISTRICT, request))
            .await
            .unwrap_err();
        assert_reason(&status, Code::Aborted, "version_conflict");
    }
    assert_eq!(head(&env.log).await, 1, "no refused call wrote anything");

    let mut request = digitize_request("H40-DIG-1", at, &["don-de-nghi"], &["ban-ve"]);
    request.expected_version = Some(1);
    let event = env
        .client
        .record_digitized_components(authed(COUNTER_DISTRICT, request))
        .await
        .expect("digitize at the version the client saw")
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        (
            event.position,
            event.version,
            event.event_type.as_str(),
            event.duplicate
        ),
        (2, 2, "components_digitized", false)
    );
    assert_eq!(event.occurred_at, Some(ts(at)));

    // The version the client saw is now stale.
    let mut request = digitize_request("H40-DIG-1", at, &["don-de-nghi"], &[]);
    request.expected_version = Some(1);
    let status = env
        .client
        .record_digitized_components(authed(COUNTER_DISTRICT, request))
        .await
        .unwrap_err();
    assert_reason(&status, Code::Aborted, "version_conflict");
    // Everything named is already recorded.
    let status = env
        .client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request("H40-DIG-1", at, &["don-de-nghi"], &[]),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "already_digitized");

    let stored = env.log.load_dossier("H40-DIG-1").await.unwrap();
    assert_eq!(stored.len(), 2);
    let dossier = writepath::fold(&stored).unwrap();
    let names = |set: &BTreeSet<domain::ComponentCode>| -> Vec<String> {
        set.iter().map(|c| c.as_str().to_owned()).collect()
    };
    assert_eq!(names(&dossier.digitized), ["don-de-nghi"]);
    assert_eq!(names(&dossier.reused), ["ban-ve"]);
    assert_eq!(
        dossier.portal_status(),
        Some(2),
        "digitization keeps status 2"
    );
    assert_eq!(head(&env.log).await, 2);
}

// --------------------------------------------------------------------------- refuse at counter

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_refused_at_the_counter_is_ended() {
    let mut env = env().await;
    let request = refuse_request("H40-REF-1", monday_morning(), DISTRICT_AGENCY);
    let event = env
        .client
        .refuse_at_counter(authed(COUNTER_DISTRICT, request.clone()))
        .await
        .expect("refuse")
        .into_inner()
        .event
        .unwrap();
    assert_eq!(
        (
            event.position,
            event.version,
            event.event_type.as_str(),
            event.duplicate
        ),
        (1, 1, "refused_at_intake", false)
    );
    assert_eq!(event.event_id, request.event_id);
    assert_eq!(event.event_hash.len(), 32);

    let stored = env.log.load_dossier("H40-REF-1").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_type, "refused_at_intake");
    assert_eq!(svc::recorded_event(&stored[0], false).unwrap(), event);
    match writepath::decode(&stored[0]).unwrap().body {
        DossierEvent::RefusedAtIntake { profile, reason } => {
            assert_eq!(profile.agency.as_str(), DISTRICT_AGENCY);
            assert_eq!(reason.as_str(), request.reason);
        }
        other => panic!("stored {other:?}"),
    }
    let dossier = writepath::fold(&stored).unwrap();
    assert_eq!(dossier.phase, Phase::RefusedAtIntake);
    assert_eq!(dossier.portal_status(), Some(3));

    // A retry is answered from the log.
    let again = env
        .client
        .refuse_at_counter(authed(COUNTER_DISTRICT, request))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(stripped(&again), event);

    // The id is taken: it cannot be received (nor refused) afterwards.
    let status = env
        .client
        .receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_request("H40-REF-1", monday_morning() + chrono::Duration::hours(1)),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::AlreadyExists, "already_exists");
    let status = env
        .client
        .refuse_at_counter(authed(
            COUNTER_DISTRICT,
            refuse_request(
                "H40-REF-1",
                monday_morning() + chrono::Duration::hours(1),
                DISTRICT_AGENCY,
            ),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::AlreadyExists, "already_exists");

    // Nothing more can be recorded on it.
    let status = env
        .client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request(
                "H40-REF-1",
                monday_morning() + chrono::Duration::hours(1),
                &["don-de-nghi"],
                &[],
            ),
        ))
        .await
        .unwrap_err();
    assert_reason(&status, Code::FailedPrecondition, "ended");

    assert_eq!(head(&env.log).await, 1);
}

// ------------------------------------------------------------------------------ concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receives_get_gapless_positions() {
    let env = env().await;
    let calls = (0..32).map(|i| {
        let mut client = env.client.clone();
        let request = receive_request(&format!("H40-PAR-{i:02}"), monday_morning());
        tokio::spawn(async move {
            let answer = client
                .receive_dossier(authed(COUNTER_DISTRICT, request.clone()))
                .await
                .unwrap_or_else(|s| panic!("{}: {s:?}", request.dossier_id))
                .into_inner();
            (request, answer.event.unwrap())
        })
    });
    let mut answers: Vec<(pb::ReceiveDossierRequest, pb::RecordedEvent)> =
        futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
    answers.sort_by_key(|(_, e)| e.position);
    let positions: Vec<u64> = answers.iter().map(|(_, e)| e.position).collect();
    assert_eq!(positions, (1..=32).collect::<Vec<u64>>());
    for (request, event) in &answers {
        assert_eq!(event.version, 1);
        assert_eq!(event.event_id, request.event_id);
        assert!(!event.duplicate);
    }

    // The log agrees, in position order, with recorded_at never decreasing.
    let stored = env.log.read_after(0, 100).await.unwrap();
    assert_eq!(stored.len(), 32);
    for ((_, event), s) in answers.iter().zip(&stored) {
        assert_eq!(&svc::recorded_event(s, false).unwrap(), event);
    }
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].recorded_at <= w[1].recorded_at)
    );
    assert_eq!(head(&env.log).await, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_digitizations_without_expected_version_both_apply() {
    let mut env = env().await;
    let at = monday_morning() + chrono::Duration::minutes(20);
    for round in 0..4 {
        let dossier_id = format!("H40-RACE-{round}");
        receive(&mut env, &dossier_id).await;
        let calls = [["don-de-nghi"], ["ban-ve"]].map(|component| {
            let mut client = env.client.clone();
            let request = digitize_request(&dossier_id, at, &component, &[]);
            tokio::spawn(async move {
                client
                    .record_digitized_components(authed(COUNTER_DISTRICT, request))
                    .await
            })
        });
        let mut versions: Vec<u32> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| {
                r.expect("task")
                    .unwrap_or_else(|s| panic!("a concurrent digitization failed: {s:?}"))
                    .into_inner()
                    .event
                    .unwrap()
                    .version
            })
            .collect();
        versions.sort();
        assert_eq!(versions, [2, 3], "round {round}");
        let stored = env.log.load_dossier(&dossier_id).await.unwrap();
        assert_eq!(stored.len(), 3);
        let dossier = writepath::fold(&stored).unwrap();
        assert_eq!(dossier.digitized.len(), 2, "both components recorded");
    }
    assert_eq!(head(&env.log).await, 12);

    // Two clerks who both saw version 1: one wins, the other is told its view is stale.
    receive(&mut env, "H40-RACE-V").await;
    let calls = [["don-de-nghi"], ["ban-ve"]].map(|component| {
        let mut client = env.client.clone();
        let mut request = digitize_request("H40-RACE-V", at, &component, &[]);
        request.expected_version = Some(1);
        tokio::spawn(async move {
            client
                .record_digitized_components(authed(COUNTER_DISTRICT, request))
                .await
        })
    });
    let results: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert_eq!(won[0].get_ref().event.as_ref().unwrap().version, 2);
    let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_reason(lost, Code::Aborted, "version_conflict");
    assert_eq!(env.log.load_dossier("H40-RACE-V").await.unwrap().len(), 2);
}

// ------------------------------------------------------------------------- PostgreSQL down

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_unavailable_and_a_retry_writes_once() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let db = testkit::TestDb::new().await;
    let options: PgConnectOptions = db.url.parse().expect("test database url");
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve PostgreSQL")
        .next()
        .expect("an address for PostgreSQL");
    let proxy = testkit::TcpProxy::start(upstream).await;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_with(options.host("127.0.0.1").port(proxy.addr().port()))
        .await
        .expect("connect through the proxy");
    let log = EventLog::from_pool(pool);
    // The database as seen directly, to check what is stored while the proxy is cut.
    let direct = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let mut client = intake.client().await;

    client
        .receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_request("H40-DOWN-1", monday_morning()),
        ))
        .await
        .expect("works through the proxy");
    assert!(
        proxy.live_connections() > 0,
        "the pool goes through the proxy"
    );

    proxy.cut().await;
    let request = receive_request("H40-DOWN-2", monday_morning());
    let status = client
        .receive_dossier(authed(COUNTER_DISTRICT, request.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("retry with the same event_id"),
        "{status:?}"
    );
    let status = client
        .record_digitized_components(authed(
            COUNTER_DISTRICT,
            digitize_request("H40-DOWN-1", monday_morning(), &["ban-ve"], &[]),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(head(&direct).await, 1, "nothing was written while cut");
    assert!(direct.load_dossier("H40-DOWN-2").await.unwrap().is_empty());

    proxy.restore();
    let answer = client
        .receive_dossier(authed(COUNTER_DISTRICT, request.clone()))
        .await
        .expect("the retry with the same event id succeeds")
        .into_inner();
    let event = answer.event.unwrap();
    assert_eq!((event.position, event.version), (2, 1));
    assert!(!event.duplicate, "the failed call wrote nothing to repeat");
    assert_eq!(event.event_id, request.event_id);
    let stored = direct.load_dossier("H40-DOWN-2").await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(head(&direct).await, 2);

    // And once more: now it is a duplicate.
    let again = client
        .receive_dossier(authed(COUNTER_DISTRICT, request))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(stripped(&again), event);
    assert_eq!(head(&direct).await, 2);
    drop(intake);
}
