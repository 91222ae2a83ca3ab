//! The applicant's personal data end to end: sealed at reception, read only by the holding
//! agency or a scoped token (every read logged), erased by destroying its key with the log and
//! its proofs still valid, nowhere in plaintext (tables, the JetStream stream, the services'
//! logs); and the citizen lookup.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::v1 as pb;
use api::v1::applicant_service_client::ApplicantServiceClient;
use api::v1::citizen_lookup_service_client::CitizenLookupServiceClient;
use api::v1::event::Body;
use api::v1::intake_service_client::IntakeServiceClient;
use api::v1::replay_service_client::ReplayServiceClient;
use eventlog::EventLog;
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, ERASURE_ADMIN, RunningRelay, all_messages, authed,
    receive_request, test_tokens,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const NAME: &str = "Nguyễn Thị Bí Mật";
const CCCD: &str = "079188004242";
const PHONE: &str = "0912777333";
const EMAIL: &str = "bi.mat.42@example.vn";

fn applicant() -> pb::Applicant {
    pb::Applicant {
        owner_name: NAME.into(),
        document: Some(pb::IdentityDocument {
            kind: pb::DocumentKind::Cccd as i32,
            number: CCCD.into(),
        }),
        phone: PHONE.into(),
        email: EMAIL.into(),
        address: "17 Đường Không Tên, Phường 9".into(),
        representative: None,
    }
}

/// Every text of every table of the database, as one string per row.
async fn every_row(pool: &sqlx::PgPool) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut rows = Vec::new();
    for t in tables {
        let texts: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT t::text FROM {t} t")))
                .fetch_all(pool)
                .await
                .unwrap();
        rows.extend(texts);
    }
    rows
}

/// The logs of everything the test runs on its thread (the services, the relay, the audit),
/// as an operator would collect them.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Captures, until the guard drops, every log line at debug level (trace for the project's
    /// crates) written on this thread: the test must run on a current-thread runtime.
    ///
    /// A second, silent dispatcher stays registered meanwhile: with a lone scoped dispatcher,
    /// `tracing` caches the interest of a callsite first hit on another thread (a test running
    /// in parallel, with no subscriber) as "never" for every thread, and lines would be lost.
    fn install(&self) -> (tracing::subscriber::DefaultGuard, tracing::Dispatch) {
        let filter = tracing_subscriber::EnvFilter::new(
            "debug,intake=trace,personal=trace,svc=trace,eventlog=trace,relay=trace,replay=trace,audit=trace",
        );
        let silent = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
        let guard = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(self.clone())
                .finish(),
        );
        (guard, silent)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> CapturedLogs {
        self.clone()
    }
}

/// The received event of `dossier` as replay shows it in a stream and in the timeline:
/// whether it holds an applicant (sealed / erased), the plaintext never.
async fn replayed_applicant(
    replay: &mut ReplayServiceClient<Channel>,
    dossier: &str,
) -> (pb::ApplicantData, pb::ApplicantData, pb::ReplayedEvent) {
    let received = |events: Vec<pb::ReplayedEvent>| {
        let event = events
            .into_iter()
            .find(|e| e.event_type == "received")
            .expect("the received event");
        let Some(pb::Event {
            body: Some(Body::Received(body)),
            ..
        }) = &event.event
        else {
            panic!("a received event without its body");
        };
        assert_eq!(body.applicant, None, "replay shows no plaintext");
        (body.applicant_data(), event)
    };
    let mut stream = replay
        .stream_events(authed(
            AUDITOR,
            pb::StreamEventsRequest {
                dossier_id: dossier.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        streamed.push(event);
    }
    let timeline = replay
        .get_timeline(authed(
            AUDITOR,
            pb::GetTimelineRequest {
                dossier_id: dossier.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let (in_stream, event) = received(streamed);
    let (in_timeline, _) = received(timeline);
    (in_stream, in_timeline, event)
}

fn assert_no_plaintext(haystack: &str, what: &str) {
    for needle in [NAME, CCCD, PHONE, EMAIL, "Không Tên"] {
        assert!(!haystack.contains(needle), "{what} holds personal data");
        let hexed = needle
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert!(
            !haystack.contains(&hexed),
            "{what} holds personal data in hex"
        );
    }
}

// A current-thread runtime: every service, the relay and the audit log through the test's
// thread-local subscriber.
#[tokio::test]
async fn an_applicant_is_sealed_read_with_a_trace_erased_with_the_log_intact_and_looked_up() {
    let logs = CapturedLogs::default();
    let _logging = logs.install();
    let db = testkit::TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let mut deps = svc::ServiceDeps::for_tests(log.clone(), test_tokens());
    deps.keyring = Some(personal::Keyring::generate("k1").unwrap());
    // A clock that does not move: the lookup's one-minute window cannot roll over mid-test.
    let clock = tests::processing::ManualClock::new(chrono::Utc::now());
    deps.clock = clock.clone();
    let app = intake::build_with_lookup(
        deps,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        intake::LookupLimits {
            per_client_per_minute: 1_000,
            per_dossier_per_minute: 4,
            max_tracked: 1_000,
        },
        None,
    )
    .await
    .unwrap();
    let addr = format!("http://{}", app.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    // The rest of the system: the relay to the test's own stream, replay, the audit's tree.
    let nats = testkit::TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let replay_app = replay::ReplayApp::build_with(
        log.clone(),
        test_tokens(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let mut replay = ReplayServiceClient::connect(format!("http://{}", replay_app.local_addr()))
        .await
        .unwrap();
    let replay_task = tokio::spawn(replay_app.run_until_stopped(stop.clone()));
    audit::store::migrate(log.pool()).await.unwrap();
    let signer = Arc::new(merkle::Signer::from_seed("test.motcua/log", [12; 32]).unwrap());
    let checkpointer = audit::Checkpointer::new(log.pool().clone(), signer.clone(), None);
    let mut intake = IntakeServiceClient::connect(addr.clone()).await.unwrap();
    let mut applicants = ApplicantServiceClient::connect(addr.clone()).await.unwrap();
    let mut lookup = CitizenLookupServiceClient::connect(addr).await.unwrap();

    // Reception with an applicant: a lookup secret; a retry answers the same one.
    let dossier = "H40.12-PII-0001";
    let mut req = receive_request(dossier, tests::local(2024, 4, 22, 9, 0));
    req.applicant = Some(applicant());
    req.return_method = pb::ReturnMethod::Post as i32;
    let first = intake
        .receive_dossier(authed(COUNTER_DISTRICT, req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.lookup_secret.len(), 24);
    let again = intake
        .receive_dossier(authed(COUNTER_DISTRICT, req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.lookup_secret, first.lookup_secret);
    assert!(again.event.unwrap().duplicate);
    // The same event id with another applicant is another request.
    let mut changed = req.clone();
    changed.applicant.as_mut().unwrap().phone = "0912777334".into();
    let err = intake
        .receive_dossier(authed(COUNTER_DISTRICT, changed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    // A malformed identity number is named, not echoed.
    let mut bad = receive_request("H40.12-PII-0002", tests::local(2024, 4, 22, 9, 0));
    bad.applicant = Some(applicant());
    bad.applicant
        .as_mut()
        .unwrap()
        .document
        .as_mut()
        .unwrap()
        .number = "07918800424".into();
    let err = intake
        .receive_dossier(authed(COUNTER_DISTRICT, bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("applicant.document.number"));
    assert!(!err.message().contains("07918800424"));

    // The holding agency reads it; another agency is refused and learns nothing.
    let get = pb::GetApplicantRequest {
        dossier_id: dossier.into(),
    };
    let read = applicants
        .get_applicant(authed(COUNTER_DISTRICT, get.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.applicant, Some(applicant()));
    let denied = applicants
        .get_applicant(authed(COUNTER_PROVINCE, get.clone()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_no_plaintext(&format!("{denied:?}"), "the refusal");

    // Nothing in plaintext anywhere the system wrote, before and after erasure.
    assert_no_plaintext(&every_row(&db.pool).await.join("\n"), "the database");

    // Before erasure: published, checkpointed, and replay shows the applicant sealed.
    let position = first.event.as_ref().unwrap().position;
    relay
        .wait_published(position as i64, Duration::from_secs(30))
        .await;
    checkpointer.tick().await.unwrap();
    let (streamed, timeline, _) = replayed_applicant(&mut replay, dossier).await;
    assert_eq!(
        (streamed, timeline),
        (pb::ApplicantData::Sealed, pb::ApplicantData::Sealed)
    );

    // Erasure: only the erasure scope; then reads say erased.
    let erase = pb::EraseApplicantRequest {
        dossier_id: dossier.into(),
        reference: "YC-2026-001".into(),
    };
    assert_eq!(
        applicants
            .erase_applicant(authed(COUNTER_DISTRICT, erase.clone()))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let erased = applicants
        .erase_applicant(authed(ERASURE_ADMIN, erase.clone()))
        .await
        .unwrap()
        .into_inner();
    let twice = applicants
        .erase_applicant(authed(ERASURE_ADMIN, erase))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.erased_at, twice.erased_at);
    let after = applicants
        .get_applicant(authed(COUNTER_DISTRICT, get))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.applicant, None);
    assert_eq!(after.erased_at, erased.erased_at);
    let rows = every_row(&db.pool).await.join("\n");
    assert_no_plaintext(&rows, "the database after erasure");

    // The access log: the read, the refusal, the erasure, the read after it.
    let log_rows = applicants
        .list_applicant_access(authed(
            tests::AUDITOR,
            pb::ListApplicantAccessRequest {
                dossier_id: dossier.into(),
                after_id: 0,
                limit: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .accesses;
    let outcomes: Vec<(&str, &str)> = log_rows
        .iter()
        .map(|a| (a.reader.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("district counter", "read"),
            ("province counter", "denied"),
            ("erasure admin", "erased"),
            ("district counter", "erased_data"),
        ]
    );

    // The log is untouched: the chain and every hash recompute from the stored ciphertext.
    match audit::verify::verify_database(log.pool(), None)
        .await
        .unwrap()
    {
        audit::verify::Outcome::Intact(_) => {}
        other => panic!("log no longer verifies after erasure: {other:?}"),
    }
    // An export of the dossier verifies offline, and holds only ciphertext.
    let mut export = Vec::new();
    let filter = audit::export::ExportFilter {
        dossier: Some(dossier.into()),
        ..Default::default()
    };
    audit::export::export(log.pool(), &filter, None, &mut export)
        .await
        .unwrap();
    let report = audit::export::verify_export(Cursor::new(&export), &signer.verifier())
        .unwrap()
        .expect("the export verifies after erasure");
    assert_eq!(report.events, 1);
    assert_no_plaintext(&String::from_utf8_lossy(&export), "the export");
    // Replay says erased; the received event's stored bytes still prove their inclusion in
    // the checkpoint signed before the erasure.
    let (streamed, timeline, received) = replayed_applicant(&mut replay, dossier).await;
    assert_eq!(
        (streamed, timeline),
        (pb::ApplicantData::Erased, pb::ApplicantData::Erased)
    );
    assert_eq!(received.position, position);
    let mut conn = log.pool().acquire().await.unwrap();
    let checkpoint = audit::store::latest_checkpoint(&mut conn)
        .await
        .unwrap()
        .unwrap();
    let proof = audit::proofs::inclusion(&mut conn, position, checkpoint.tree_size)
        .await
        .unwrap();
    drop(conn);
    let leaf = merkle::leaf_hash(&received.canonical_json);
    assert_eq!(leaf, proof.leaf_hash);
    merkle::verify_inclusion(
        position - 1,
        checkpoint.tree_size,
        &leaf,
        &proof.hashes,
        &checkpoint.root,
    )
    .expect("the received event's inclusion proof verifies after erasure");
    // The stream's messages (subjects, headers, payloads) hold no plaintext either.
    let messages = all_messages(&nats.url, &nats.stream).await;
    assert_eq!(messages.len() as u64, position);
    let published: Vec<String> = messages
        .iter()
        .map(|m| {
            format!(
                "{} {:?} {}",
                m.subject,
                m.headers,
                String::from_utf8_lossy(&m.payload)
            )
        })
        .collect();
    assert_no_plaintext(&published.join("\n"), "the JetStream stream");

    // Citizen lookup: right secret, wrong secret (same answer as an unknown dossier), limit.
    let ask = |secret: &str| pb::LookUpDossierRequest {
        dossier_id: dossier.into(),
        secret: secret.into(),
    };
    let found = lookup
        .look_up_dossier(ask(&first.lookup_secret.to_lowercase()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.status, 2);
    assert_eq!(found.due_at, first.due_at);
    assert!(!found.result_ready);
    assert_eq!(found.return_method, pb::ReturnMethod::Post as i32);
    let wrong = lookup
        .look_up_dossier(ask("0000-0000-0000-0000-0000"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::NotFound);
    let unknown = lookup
        .look_up_dossier(pb::LookUpDossierRequest {
            dossier_id: "H40.12-NONE".into(),
            secret: first.lookup_secret.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.message(), wrong.message());
    for _ in 0..2 {
        lookup
            .look_up_dossier(ask(&first.lookup_secret))
            .await
            .unwrap();
    }
    let limited = lookup
        .look_up_dossier(ask(&first.lookup_secret))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
    clock.set(chrono::Utc::now() + chrono::Duration::minutes(1));
    lookup
        .look_up_dossier(ask(&first.lookup_secret))
        .await
        .unwrap();

    stop.cancel();
    task.await.unwrap().unwrap();
    replay_task.await.unwrap().unwrap();
    relay.stop().await;
    // Every log line the services wrote: some, and none with personal data.
    let written = logs.text();
    for line in ["applicant data erased", "relay running", "gRPC listening"] {
        assert!(
            written.contains(line),
            "no {line:?} in the logs captured: {written}"
        );
    }
    assert_no_plaintext(&written, "the service logs");
}
