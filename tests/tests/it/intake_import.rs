//! `ImportHistory` through real gRPC: a migration tool streams batches of an old system's
//! history; each batch commits whole and is answered in order; re-sending is safe; the first
//! invalid batch ends the stream naming the event and writes nothing.

use api::v1 as pb;
use api::v1::intake_service_client::IntakeServiceClient;
use chrono::{DateTime, Duration, Utc};
use domain::{DossierEvent, Phase};
use eventlog::EventLog;
use pb::event::Body;
use tests::{
    AUDITOR, COUNTER_DISTRICT, DISTRICT_AGENCY, IMPORTER, PROVINCE_AGENCY, RunningIntake, authed,
    local, new_event_id, profile, ts,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

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

/// Streams `batches` with `token` and collects the answers until the stream ends; the status
/// that ended it, if any (also when the call itself was refused).
async fn import(
    client: &mut IntakeServiceClient<Channel>,
    token: &str,
    batches: Vec<pb::ImportBatch>,
) -> (Vec<pb::ImportBatchResult>, Option<Status>) {
    let outbound = futures::stream::iter(batches);
    let mut inbound = match client.import_history(authed(token, outbound)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return (Vec::new(), Some(status)),
    };
    let mut answers = Vec::new();
    loop {
        match inbound.message().await {
            Ok(Some(answer)) => answers.push(answer),
            Ok(None) => return (answers, None),
            Err(status) => return (answers, Some(status)),
        }
    }
}

fn batch(seq: u64, events: Vec<pb::Event>) -> pb::ImportBatch {
    pb::ImportBatch {
        batch_seq: seq,
        events,
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

fn received(agency: &str, fee_required: bool, due_at: DateTime<Utc>) -> Body {
    Body::Received(pb::Received {
        procedure: None,
        profile: Some(profile(agency)),
        statutory_time: Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(10)),
        }),
        fee_required,
        components: vec!["don-de-nghi".into(), "ban-ve".into()],
        due_at: Some(ts(due_at)),
        applicant: None,
        applicant_data: 0,
        return_method: 0,
    })
}

fn digitized(digitized: &[&str], reused: &[&str]) -> Body {
    Body::ComponentsDigitized(pb::ComponentsDigitized {
        digitized: digitized.iter().map(|c| (*c).to_owned()).collect(),
        reused: reused.iter().map(|c| (*c).to_owned()).collect(),
    })
}

fn resolved(agency: &str) -> Body {
    Body::Resolved(pb::Resolved {
        outcome: pb::Outcome::Approved as i32,
        deciding_agency: agency.to_owned(),
        due_at: None,
        timeliness: 0,
    })
}

fn returned() -> Body {
    Body::ResultReturned(pb::ResultReturned {
        method: pb::ReturnMethod::Online as i32,
    })
}

fn rated() -> Body {
    Body::SatisfactionRated(pb::SatisfactionRated {
        rating: pb::Rating::Satisfied as i32,
    })
}

/// What the history of the 20 dossiers should fold to.
struct Expected {
    dossier_id: String,
    phase: Phase,
    portal_status: u8,
    due_at: Option<DateTime<Utc>>,
}

/// A province's history in three batches, 20 dossiers received in the week of 4 March 2024:
/// - `HIST-00`..`HIST-15`: received (with the old system's appointment, ten days later),
///   digitized; fee assessed, paid online, resolved early; result returned and rated.
/// - `HIST-16`: due on 6 March; an apology with a new appointment, marked late at the due
///   time, resolved late on 11 March, returned, rated.
/// - `HIST-17`: refused at the counter.
/// - `HIST-18`: received, then withdrawn.
/// - `HIST-19`: received with a reused component, transferred electronically; still open.
fn history() -> (Vec<pb::ImportBatch>, Vec<Expected>) {
    let (mut b1, mut b2, mut b3) = (Vec::new(), Vec::new(), Vec::new());
    let mut expected = Vec::new();
    for i in 0..16u32 {
        let id = format!("HIST-{i:02}");
        let agency = if i % 4 == 0 {
            PROVINCE_AGENCY
        } else {
            DISTRICT_AGENCY
        };
        let day = 4 + i % 5; // Monday 4 to Friday 8 March 2024
        let at = local(2024, 3, day, 8, 0) + Duration::minutes(i64::from(i));
        let due = local(2024, 3, day + 10, 8, 0);
        b1.push(event(&id, at, received(agency, true, due)));
        b1.push(event(
            &id,
            at + Duration::minutes(5),
            digitized(&["don-de-nghi", "ban-ve"], &[]),
        ));
        b2.push(event(
            &id,
            at + Duration::hours(1),
            Body::FeeAssessed(pb::FeeAssessed {
                amount_vnd: 50_000,
                kind: pb::FeeKind::Fee as i32,
            }),
        ));
        let channel = if i % 2 == 0 {
            pb::PaymentChannel::NationalPlatform
        } else {
            pb::PaymentChannel::ProvincialGateway
        };
        b2.push(event(
            &id,
            at + Duration::hours(2),
            Body::Paid(pb::Paid {
                amount_vnd: 50_000,
                channel: channel as i32,
                transaction_id: format!("PAYGOV-2024-{i:04}"),
            }),
        ));
        b2.push(event(&id, at + Duration::days(3), resolved(agency)));
        b3.push(event(&id, at + Duration::days(4), returned()));
        b3.push(event(
            &id,
            at + Duration::days(4) + Duration::hours(1),
            rated(),
        ));
        expected.push(Expected {
            dossier_id: id,
            phase: Phase::Resolved,
            portal_status: 10,
            due_at: Some(due),
        });
    }

    // Late, with an apology issued before the due time and a new appointment.
    let at = local(2024, 3, 4, 9, 0);
    let due = local(2024, 3, 6, 9, 0);
    b1.push(event("HIST-16", at, received(DISTRICT_AGENCY, false, due)));
    b2.push(event(
        "HIST-16",
        local(2024, 3, 5, 15, 0),
        Body::ApologyIssued(pb::ApologyIssued {
            reason: "Chờ ý kiến của Sở Tài nguyên và Môi trường".into(),
            new_appointment: Some(ts(local(2024, 3, 12, 9, 0))),
            on_time: false,
            // Computed by the server: ignored on import.
            original_due_at: None,
            signer: "Phó Chủ tịch UBND huyện".into(),
            delivery: pb::ApologyDelivery::Paper as i32,
            notice_unit: pb::NoticeUnit::Unspecified as i32,
        }),
    ));
    b2.push(event(
        "HIST-16",
        due,
        Body::Late(pb::Late {
            due_at: Some(ts(due)),
        }),
    ));
    b3.push(event(
        "HIST-16",
        local(2024, 3, 11, 10, 0),
        resolved(DISTRICT_AGENCY),
    ));
    b3.push(event("HIST-16", local(2024, 3, 11, 14, 0), returned()));
    b3.push(event("HIST-16", local(2024, 3, 11, 15, 0), rated()));
    expected.push(Expected {
        dossier_id: "HIST-16".into(),
        phase: Phase::Resolved,
        portal_status: 10,
        due_at: Some(due),
    });

    b1.push(event(
        "HIST-17",
        local(2024, 3, 5, 10, 0),
        Body::RefusedAtIntake(pb::RefusedAtIntake {
            profile: Some(profile(DISTRICT_AGENCY)),
            reason: "Hồ sơ không thuộc thẩm quyền".into(),
        }),
    ));
    expected.push(Expected {
        dossier_id: "HIST-17".into(),
        phase: Phase::RefusedAtIntake,
        portal_status: 3,
        due_at: None,
    });

    let due = local(2024, 3, 20, 10, 0);
    b1.push(event(
        "HIST-18",
        local(2024, 3, 6, 10, 0),
        received(DISTRICT_AGENCY, false, due),
    ));
    b2.push(event(
        "HIST-18",
        local(2024, 3, 7, 10, 0),
        Body::Withdrawn(pb::Withdrawn {
            reason: "Công dân xin rút hồ sơ".into(),
        }),
    ));
    expected.push(Expected {
        dossier_id: "HIST-18".into(),
        phase: Phase::Withdrawn,
        portal_status: 7,
        due_at: Some(due),
    });

    let due = local(2024, 3, 21, 10, 0);
    b1.push(event(
        "HIST-19",
        local(2024, 3, 7, 10, 0),
        received(DISTRICT_AGENCY, false, due),
    ));
    b1.push(event(
        "HIST-19",
        local(2024, 3, 7, 10, 5),
        digitized(&["don-de-nghi"], &["ban-ve"]),
    ));
    b2.push(event(
        "HIST-19",
        local(2024, 3, 8, 10, 0),
        Body::Transferred(pb::Transferred {
            from_agency: DISTRICT_AGENCY.into(),
            to_agency: PROVINCE_AGENCY.into(),
            mode: pb::TransferMode::Electronic as i32,
        }),
    ));
    expected.push(Expected {
        dossier_id: "HIST-19".into(),
        phase: Phase::Open,
        portal_status: 4,
        due_at: Some(due),
    });

    (vec![batch(1, b1), batch(2, b2), batch(3, b3)], expected)
}

#[track_caller]
fn assert_reason(status: &Status, code: Code, reason: &str) {
    tests::assert_details_agree(status);
    assert_eq!(status.code(), code, "{status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{status:?}");
}

#[track_caller]
fn assert_bad_field(status: &Status, field: &str) {
    tests::assert_details_agree(status);
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"));
    let fields: Vec<&str> = details
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, [field], "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_imports_in_batches_and_folds_right() {
    let mut env = env().await;
    let (batches, expected) = history();
    let sizes: Vec<usize> = batches.iter().map(|b| b.events.len()).collect();
    let (answers, end) = import(&mut env.client, IMPORTER, batches.clone()).await;
    assert!(end.is_none(), "the stream ends cleanly: {end:?}");

    // Answered in order; each batch appended whole; positions continue from batch to batch.
    let mut total = 0u64;
    assert_eq!(answers.len(), 3);
    for (i, (answer, size)) in answers.iter().zip(&sizes).enumerate() {
        total += *size as u64;
        assert_eq!(answer.batch_seq, i as u64 + 1);
        assert_eq!(answer.appended as usize, *size, "batch {}", i + 1);
        assert_eq!(answer.duplicates, 0);
        assert_eq!(answer.last_position, total, "batch {}", i + 1);
    }
    assert_eq!(env.log.head().await.unwrap() as u64, total);

    for want in &expected {
        let stored = env.log.load_dossier(&want.dossier_id).await.unwrap();
        let dossier = writepath::fold(&stored).unwrap();
        let id = &want.dossier_id;
        assert_eq!(dossier.phase, want.phase, "{id}");
        assert_eq!(dossier.portal_status(), Some(want.portal_status), "{id}");
        assert_eq!(
            dossier.due_at, want.due_at,
            "{id}: the old system's appointment is kept"
        );
        let versions: Vec<i32> = stored.iter().map(|e| e.version).collect();
        assert_eq!(
            versions,
            (1..=stored.len() as i32).collect::<Vec<_>>(),
            "{id}"
        );
    }
    for i in 0..16 {
        let id = format!("HIST-{i:02}");
        let dossier = writepath::fold(&env.log.load_dossier(&id).await.unwrap()).unwrap();
        assert!(dossier.paid_online, "{id}");
        assert_eq!(dossier.outstanding_vnd(), 0, "{id}");
        assert_eq!(dossier.digitized.len(), 2, "{id}");
        assert_eq!(
            dossier.resolution.map(|r| r.timeliness),
            Some(calendar::Timeliness::Early),
            "{id}"
        );
        assert!(dossier.rating.is_some(), "{id}");
        let routing = &env.log.load_dossier(&id).await.unwrap()[0].routing;
        let agency = if i % 4 == 0 {
            PROVINCE_AGENCY
        } else {
            DISTRICT_AGENCY
        };
        assert_eq!(routing.agency, agency, "{id}");
    }

    // The late dossier: the `late` event is dated at the due time; the resolution is late and
    // judged against the due time, not the apology's new appointment.
    let stored = env.log.load_dossier("HIST-16").await.unwrap();
    let late = stored.iter().find(|e| e.event_type == "late").unwrap();
    assert_eq!(late.occurred_at, local(2024, 3, 6, 9, 0));
    let dossier = writepath::fold(&stored).unwrap();
    assert!(dossier.late_marked);
    let apology = dossier.apology.expect("apology");
    assert_eq!(apology.new_appointment, local(2024, 3, 12, 9, 0));
    // 5 March 15:00 to 6 March 09:00 is 2 + 2 = 4 working hours: less than a working day.
    assert!(!apology.on_time);
    let resolution = dossier.resolution.expect("resolved");
    assert_eq!(resolution.timeliness, calendar::Timeliness::Late);
    assert_eq!(resolution.due_at, local(2024, 3, 6, 9, 0));
    match writepath::decode(&stored[0]).unwrap().body {
        DossierEvent::Received { due_at, .. } => assert_eq!(due_at, local(2024, 3, 6, 9, 0)),
        other => panic!("{other:?}"),
    }

    let dossier = writepath::fold(&env.log.load_dossier("HIST-19").await.unwrap()).unwrap();
    assert_eq!(dossier.transfers, 1);
    assert!(dossier.transferred_electronically);
    assert_eq!(
        dossier.current_agency.as_ref().map(|a| a.as_str()),
        Some(PROVINCE_AGENCY)
    );
    assert_eq!(dossier.reused.len(), 1);

    // Re-sending batch 2 (as after a lost answer): every event is a duplicate, nothing new.
    let (answers, end) = import(&mut env.client, IMPORTER, vec![batches[1].clone()]).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].batch_seq, 2);
    assert_eq!(answers[0].appended, 0);
    assert_eq!(answers[0].duplicates as usize, sizes[1]);
    assert_eq!(answers[0].last_position, 0);
    // …and the whole history again, in one stream.
    let (answers, end) = import(&mut env.client, IMPORTER, batches).await;
    assert!(end.is_none(), "{end:?}");
    let dups: Vec<usize> = answers.iter().map(|a| a.duplicates as usize).collect();
    assert_eq!(dups, sizes);
    assert!(answers.iter().all(|a| a.appended == 0));
    assert_eq!(env.log.head().await.unwrap() as u64, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_invalid_batch_ends_the_stream_and_writes_nothing() {
    let mut env = env().await;
    let at = local(2024, 3, 4, 8, 0);
    let due = local(2024, 3, 18, 8, 0);
    let good = batch(
        1,
        vec![
            event("IMP-A", at, received(DISTRICT_AGENCY, false, due)),
            event("IMP-A", at + Duration::days(1), resolved(DISTRICT_AGENCY)),
        ],
    );
    // Valid first event, then a second resolution of IMP-A.
    let resolve_twice = batch(
        2,
        vec![
            event("IMP-B", at, received(DISTRICT_AGENCY, false, due)),
            event("IMP-A", at + Duration::days(2), resolved(DISTRICT_AGENCY)),
        ],
    );
    let never_seen = batch(
        3,
        vec![event("IMP-C", at, received(DISTRICT_AGENCY, false, due))],
    );
    let (answers, end) = import(
        &mut env.client,
        IMPORTER,
        vec![good.clone(), resolve_twice.clone(), never_seen],
    )
    .await;
    assert_eq!(answers.len(), 1, "only the first batch is answered");
    assert_eq!(
        (
            answers[0].batch_seq,
            answers[0].appended,
            answers[0].last_position
        ),
        (1, 2, 2)
    );
    let status = end.expect("the stream ends with the failed batch's status");
    assert_reason(&status, Code::FailedPrecondition, "already_resolved");
    assert!(
        status.message().starts_with("events[1]"),
        "the message names the event: {status:?}"
    );
    assert_eq!(
        env.log.head().await.unwrap(),
        2,
        "batch 1 stayed, nothing else"
    );
    for id in ["IMP-B", "IMP-C"] {
        assert!(env.log.load_dossier(id).await.unwrap().is_empty(), "{id}");
    }

    // An event on a dossier never received.
    let (answers, end) = import(
        &mut env.client,
        IMPORTER,
        vec![batch(
            4,
            vec![
                event("IMP-D", at, received(DISTRICT_AGENCY, false, due)),
                event(
                    "IMP-D",
                    at + Duration::minutes(1),
                    digitized(&["ban-ve"], &[]),
                ),
                event("IMP-UNKNOWN", at, resolved(DISTRICT_AGENCY)),
            ],
        )],
    )
    .await;
    assert!(answers.is_empty());
    let status = end.expect("refused");
    assert_reason(&status, Code::NotFound, "unknown_dossier");
    assert!(status.message().starts_with("events[2]"), "{status:?}");

    // Rules between the events of one batch: a step before the reception.
    let (_, end) = import(
        &mut env.client,
        IMPORTER,
        vec![batch(
            5,
            vec![
                event("IMP-E", at, received(DISTRICT_AGENCY, false, due)),
                event(
                    "IMP-E",
                    at - Duration::hours(1),
                    digitized(&["ban-ve"], &[]),
                ),
            ],
        )],
    )
    .await;
    let status = end.expect("refused");
    assert_reason(&status, Code::FailedPrecondition, "before_reception");
    assert!(status.message().starts_with("events[1]"), "{status:?}");

    // Malformed events: the field path names the event.
    let mut no_time = event("IMP-F", at, received(DISTRICT_AGENCY, false, due));
    no_time.occurred_at = None;
    let bad_agency = event("IMP-G", at, received("000_00_12_H40", false, due));
    let mut repeated = event("IMP-H", at, received(DISTRICT_AGENCY, false, due));
    repeated.dossier_id = "IMP-H2".into();
    let first_of_pair = event("IMP-H", at, received(DISTRICT_AGENCY, false, due));
    repeated.event_id = first_of_pair.event_id.clone();
    let mut no_body = event("IMP-I", at, received(DISTRICT_AGENCY, false, due));
    no_body.body = None;
    let bad_amount = event(
        "IMP-A",
        at + Duration::days(2),
        Body::FeeAssessed(pb::FeeAssessed {
            amount_vnd: 0,
            kind: pb::FeeKind::Fee as i32,
        }),
    );
    let valid = || event("IMP-J", at, received(DISTRICT_AGENCY, false, due));
    let cases = [
        (vec![valid(), valid(), no_time], "events[2].occurred_at"),
        (vec![bad_agency], "events[0].received.profile.agency_code"),
        (vec![first_of_pair, repeated], "events[1].event_id"),
        (vec![valid(), no_body], "events[1].body"),
        (vec![bad_amount], "events[0].fee_assessed.amount_vnd"),
    ];
    for (seq, (events, field)) in cases.into_iter().enumerate() {
        let (answers, end) = import(
            &mut env.client,
            IMPORTER,
            vec![batch(10 + seq as u64, events)],
        )
        .await;
        assert!(answers.is_empty(), "{field}");
        assert_bad_field(&end.expect(field), field);
    }

    // An event id of batch 1 reused for different content.
    let mut reused = good.clone();
    reused.events[1] = event("IMP-A", at + Duration::days(1), resolved(PROVINCE_AGENCY));
    reused.events[1].event_id = good.events[1].event_id.clone();
    let (_, end) = import(&mut env.client, IMPORTER, vec![reused]).await;
    assert_reason(
        &end.expect("refused"),
        Code::AlreadyExists,
        "event_id_reused",
    );

    assert_eq!(
        env.log.head().await.unwrap(),
        2,
        "none of these wrote anything"
    );

    // After all this, re-sending the failed batch without its bad event goes through.
    let mut fixed = resolve_twice;
    fixed.events.truncate(1);
    let (answers, end) = import(&mut env.client, IMPORTER, vec![fixed]).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(
        (
            answers[0].appended,
            answers[0].duplicates,
            answers[0].last_position
        ),
        (1, 0, 3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_importers_import_and_batches_are_bounded() {
    let mut env = env().await;
    let at = local(2024, 3, 4, 8, 0);
    let one = || {
        vec![batch(
            1,
            vec![event(
                "IMP-P",
                at,
                received(DISTRICT_AGENCY, false, at + Duration::days(7)),
            )],
        )]
    };
    for token in [COUNTER_DISTRICT, AUDITOR] {
        let (answers, end) = import(&mut env.client, token, one()).await;
        assert!(answers.is_empty());
        let status = end.expect("refused");
        assert_eq!(status.code(), Code::PermissionDenied, "{token}: {status:?}");
    }
    let (answers, end) = import(&mut env.client, "unknown-token", one()).await;
    assert!(answers.is_empty());
    assert_eq!(end.expect("refused").code(), Code::Unauthenticated);
    let status = env
        .client
        .import_history(Request::new(futures::stream::iter(one())))
        .await
        .map(|_| ())
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let too_many = vec![pb::Event::default(); intake::MAX_BATCH + 1];
    let (answers, end) = import(&mut env.client, IMPORTER, vec![batch(1, too_many)]).await;
    assert!(answers.is_empty());
    assert_bad_field(&end.expect("refused"), "events");

    assert_eq!(env.log.head().await.unwrap(), 0, "nothing was written");

    // Exactly the maximum is accepted: 10,000 dossiers received in one batch.
    let events: Vec<pb::Event> = (0..intake::MAX_BATCH)
        .map(|i| {
            event(
                &format!("IMP-MAX-{i:05}"),
                at,
                received(DISTRICT_AGENCY, false, at + Duration::days(7)),
            )
        })
        .collect();
    let (answers, end) = import(&mut env.client, IMPORTER, vec![batch(7, events)]).await;
    assert!(end.is_none(), "{end:?}");
    assert_eq!(answers[0].appended as usize, intake::MAX_BATCH);
    assert_eq!(answers[0].last_position as usize, intake::MAX_BATCH);
    assert_eq!(env.log.head().await.unwrap() as usize, intake::MAX_BATCH);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_while_the_first_send_is_running_is_counted_as_duplicates() {
    let env = env().await;
    // An importer that timed out re-sends its batch while the first send is still being
    // written: both must succeed, and the events be stored once.
    for round in 0..4 {
        let at = local(2024, 3, 4, 8, 0);
        let mut events = Vec::new();
        for i in 0..40 {
            let id = format!("IMP-RACE-{round}-{i:02}");
            events.push(event(
                &id,
                at,
                received(DISTRICT_AGENCY, false, at + Duration::days(7)),
            ));
            events.push(event(
                &id,
                at + Duration::minutes(1),
                digitized(&["ban-ve"], &[]),
            ));
        }
        let size = events.len();
        let sends = (0..6).map(|_| {
            let mut client = env.client.clone();
            let batches = vec![batch(round, events.clone())];
            tokio::spawn(async move { import(&mut client, IMPORTER, batches).await })
        });
        let mut appended = 0;
        for joined in futures::future::join_all(sends).await {
            let (answers, end) = joined.expect("task");
            assert!(
                end.is_none(),
                "round {round}: a re-sent batch failed: {end:?}"
            );
            assert_eq!(answers.len(), 1);
            assert_eq!(
                (answers[0].appended + answers[0].duplicates) as usize,
                size,
                "round {round}"
            );
            appended += answers[0].appended as usize;
        }
        assert_eq!(appended, size, "round {round}: every event appended once");
        assert_eq!(
            env.log.head().await.unwrap() as usize,
            size * (round as usize + 1)
        );
    }
}

/// A database that goes silent during an import (a partition, a frozen host: no reset, so the
/// connection looks healthy): the batch is answered UNAVAILABLE within its bound
/// (`intake::batch_timeout`) instead of holding the stream until TCP gives up; re-sent once the
/// database answers, it is written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_facing_a_silent_database_is_answered_unavailable_and_can_be_resent() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let db = testkit::TestDb::new().await;
    let direct = EventLog::from_pool(db.pool.clone());
    direct.migrate().await.expect("migrate");
    let options: PgConnectOptions = db.url.parse().expect("test database url");
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve PostgreSQL")
        .next()
        .expect("an address for PostgreSQL");
    let proxy = testkit::TcpProxy::start(upstream).await;
    let through_proxy = EventLog::from_pool(
        // A pool that waits long for a connection: only the bound under test can end the wait
        // (a read already in flight when the database goes silent is not bounded by the pool).
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(600))
            .connect_with(options.host("127.0.0.1").port(proxy.addr().port()))
            .await
            .expect("connect through the proxy"),
    );
    let intake = RunningIntake::start(through_proxy).await;
    let mut client = intake.client().await;
    let at = local(2024, 3, 4, 9, 0);
    let due = local(2024, 3, 18, 9, 0);
    let batches = vec![batch(
        1,
        vec![event(
            "SILENT-IMPORT",
            at,
            received(DISTRICT_AGENCY, false, due),
        )],
    )];

    proxy.freeze();
    // Only a bound so that the defect (no bound) fails instead of hanging.
    let patience = intake::batch_timeout(1) + std::time::Duration::from_secs(30);
    let (answers, status) =
        tokio::time::timeout(patience, import(&mut client, IMPORTER, batches.clone()))
            .await
            .expect("the batch is answered within its bound");
    assert!(answers.is_empty(), "{answers:?}");
    let status = status.expect("the batch is refused");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    proxy.cut().await;
    proxy.restore();
    let (answers, status) = import(&mut client, IMPORTER, batches).await;
    assert!(status.is_none(), "{status:?}");
    assert_eq!(
        (answers.len(), answers[0].appended, answers[0].duplicates),
        (1, 1, 0)
    );
    assert_eq!(direct.load_dossier("SILENT-IMPORT").await.unwrap().len(), 1);
    intake.stop().await;
}

/// `batches` batches of `dossiers` dossiers each, every batch continuing the lives of the
/// previous batch's dossiers (received, digitized, resolved, returned, rated) and receiving new
/// ones: each batch depends on the one before it, so a batch prepared while the previous one is
/// still being written is decided against what that one writes.
fn chained_batches(batches: u64, dossiers: usize) -> Vec<pb::ImportBatch> {
    let at = local(2024, 3, 4, 8, 0);
    let steps = [
        |_: usize| digitized(&["ban-ve"], &[]),
        |_: usize| resolved(DISTRICT_AGENCY),
        |_: usize| returned(),
        |_: usize| rated(),
    ];
    (0..batches)
        .map(|b| {
            let mut events = Vec::new();
            for i in 0..dossiers {
                events.push(event(
                    &format!("CHAIN-{b}-{i:03}"),
                    at + Duration::hours(b as i64),
                    received(DISTRICT_AGENCY, false, at + Duration::days(20)),
                ));
            }
            // The older dossiers' next steps: batch b continues those received in batch b - k
            // with step k.
            for (k, step) in steps.iter().enumerate() {
                let Some(from) = b.checked_sub(k as u64 + 1) else {
                    break;
                };
                for i in 0..dossiers {
                    events.push(event(
                        &format!("CHAIN-{from}-{i:03}"),
                        at + Duration::hours(b as i64) + Duration::minutes(k as i64 + 1),
                        step(i),
                    ));
                }
            }
            batch(b + 1, events)
        })
        .collect()
}

/// Positions 1..=n, every event hash and chain link recomputed from the canonical bytes.
async fn assert_chain(log: &EventLog) -> usize {
    let all = log.read_after(0, 1_000_000).await.unwrap();
    let mut previous = eventlog::GENESIS_CHAIN_HASH;
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as i64 + 1, "no gap");
        assert_eq!(
            e.event_hash,
            eventlog::event_hash(&eventlog::canonical_bytes(e))
        );
        previous = eventlog::chain_hash(&previous, &e.event_hash);
        assert_eq!(e.chain_hash, previous, "chain at {}", e.position);
    }
    let ids: std::collections::HashSet<_> = all.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), all.len(), "no event stored twice");
    all.len()
}

/// A pipelined import interrupted between batches — the client drops its stream, or every
/// connection of the database is killed — leaves whole batches only; re-sending everything
/// writes the rest exactly once (answers count the earlier events as duplicates), the chain
/// verifies, and every dossier folds to the end of its history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_import_interrupted_between_batches_resumes_exactly() {
    for kill_connections in [false, true] {
        let env = env().await;
        let batches = chained_batches(7, 30);
        let total: usize = batches.iter().map(|b| b.events.len()).sum();

        // First attempt: batches go out as fast as the stream takes them; after the second
        // answer the client drops the stream, or the database's connections are killed.
        let (send, outbound) = tokio::sync::mpsc::channel(8);
        for b in batches.clone() {
            send.send(b).await.unwrap();
        }
        // Every batch is queued: the stream ends after the last one (unless cut before).
        drop(send);
        let mut client = env.client.clone();
        let mut inbound = client
            .import_history(authed(
                IMPORTER,
                futures::stream::unfold(outbound, |mut rx| async move {
                    rx.recv().await.map(|b| (b, rx))
                }),
            ))
            .await
            .expect("the import starts")
            .into_inner();
        let mut first = Vec::new();
        while first.len() < 2 {
            match inbound.message().await {
                Ok(Some(answer)) => first.push(answer),
                other => panic!("two answers before the interruption: {other:?}"),
            }
        }
        if kill_connections {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .execute(&env._db.pool)
            .await
            .unwrap();
            // Whatever the stream answers from here on (more batches, or UNAVAILABLE), it ends.
            while let Ok(Some(answer)) = inbound.message().await {
                first.push(answer);
            }
        } else {
            drop(inbound);
        }
        assert!(first.len() >= 2);
        // A batch still being written when the stream was cut may commit a little later: it is
        // whole either way (checked below through the second attempt's answers).

        // Second attempt: everything again, on a new stream (and pool connections).
        let (answers, end) = import(&mut env.client.clone(), IMPORTER, batches.clone()).await;
        assert!(end.is_none(), "{kill_connections}: {end:?}");
        assert_eq!(answers.len(), batches.len());
        for (answer, b) in answers.iter().zip(&batches) {
            assert_eq!(
                (answer.appended + answer.duplicates) as usize,
                b.events.len(),
                "{kill_connections}: batch {}",
                b.batch_seq
            );
        }
        for (i, (answer, b)) in answers.iter().zip(&batches).enumerate() {
            // Every batch was stored whole by one of the two attempts, never split.
            assert!(
                answer.appended == 0 || answer.appended as usize == b.events.len(),
                "{kill_connections}: batch {} half written: {answer:?}",
                b.batch_seq
            );
            if i < first.len() {
                assert_eq!(
                    answer.appended, 0,
                    "{kill_connections}: answered, so stored"
                );
            }
        }
        assert_eq!(env.log.head().await.unwrap() as usize, total);
        assert_eq!(assert_chain(&env.log).await, total, "{kill_connections}");
        // The dossiers of the first batch went through their whole life.
        let dossier = writepath::fold(&env.log.load_dossier("CHAIN-0-007").await.unwrap()).unwrap();
        assert_eq!(dossier.version, 5);
        assert!(dossier.rating.is_some());
    }
}

/// The two stages of the write path's import used directly: batch 2 prepared while batch 1 is
/// not written yet (against what batch 1 leaves: its speculation) is written right after it;
/// and when batch 1 loses its race to another writer of the same events, its write says the
/// speculation did not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_prepared_on_the_previous_one_is_exact_and_a_lost_race_voids_it() {
    let db = testkit::TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.unwrap();
    let write = writepath::WritePath::new(
        log.clone(),
        std::sync::Arc::new(calendar::Calendar::vietnam_default()),
        domain::SupplementPolicy::Restart,
    );
    let now = chrono::Utc::now();
    let parse = |b: &pb::ImportBatch| -> Vec<writepath::ImportEvent> {
        intake::parse_batch(b, now)
            .unwrap()
            .into_iter()
            .map(|i| i.event)
            .collect()
    };
    let batches = chained_batches(3, 10);
    let (b1, b2, b3) = (parse(&batches[0]), parse(&batches[1]), parse(&batches[2]));

    // Batch 2 depends on batch 1 (it digitizes batch 1's dossiers): against the log alone it
    // is refused; against batch 1's speculation it is decided.
    let (p1, s1) = write.prepare_import(&b1, None).await.unwrap();
    assert!(matches!(
        write.prepare_import(&b2, None).await,
        Err(writepath::ImportError::Refused { .. })
    ));
    let (p2, s2) = write.prepare_import(&b2, Some(&s1)).await.unwrap();
    assert_eq!((p1.len(), p2.len()), (b1.len(), b2.len()));

    // Another writer (the same batch re-sent) commits batch 1 first: batch 1's own write loses
    // the race, is checked again and counts everything as duplicates; its speculation is void.
    let other = write.import(&b1).await.unwrap();
    assert_eq!(other.appended as usize, b1.len());
    let (imported, held) = write.write_import(&b1, p1).await.unwrap();
    assert!(!held, "the speculation did not hold");
    assert_eq!(
        (imported.appended, imported.duplicates as usize),
        (0, b1.len())
    );

    // Batch 2 as prepared still matches the log here (the other writer wrote the same events);
    // batch 3, prepared on batch 2's speculation, follows it.
    let (p3, _) = write.prepare_import(&b3, Some(&s2)).await.unwrap();
    let (imported, held) = write.write_import(&b2, p2).await.unwrap();
    assert!(held);
    assert_eq!(imported.appended as usize, b2.len());
    let (imported, held) = write.write_import(&b3, p3).await.unwrap();
    assert!(held);
    assert_eq!(imported.appended as usize, b3.len());
    assert_eq!(
        imported.last_position as usize,
        b1.len() + b2.len() + b3.len()
    );
    assert_eq!(assert_chain(&log).await, b1.len() + b2.len() + b3.len());
}
