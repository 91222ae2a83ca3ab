//! Every HTTP port but the projection's (its own test: `services/projection/tests/it/openapi.rs`)
//! against its OpenAPI description, served at `/openapi.json` on that port, checked by
//! schemathesis through the shared harness (`testkit::schemathesis`): processing's early
//! warning, intake's citizen lookup and portal-sync's reconciliation. Each server holds data,
//! so the documented answers (a list of warnings, a lookup's status, a refused dossier's state)
//! are generated and checked, not only the errors. And each run can fail: a document that
//! misstates one field of an answer is caught (portal-sync's hand-written schemas, processing's
//! generated ones).

use std::net::SocketAddr;
use std::process::Output;
use std::time::Duration;

use api::v1 as pb;
use domain::SupplementPolicy;
use eventlog::EventLog;
use serde_json::json;
use testkit::schemathesis;
use testkit::{TestDb, TestNats};
use tests::lifecycle::Stack;
use tests::portal::{PortalReceiver, RunningPortalSync, SyncSettings};
use tests::processing::{ManualClock, RunningProcessing, receive_days, watcher};
use tests::{
    AUDITOR, COUNTER_DISTRICT, RunningIntake, RunningRelay, authed, eventually_some, local,
};

const WAIT: Duration = Duration::from_secs(30);

/// Schemathesis on the document the server at `addr` serves, with `token` when given.
async fn check_served(addr: SocketAddr, token: Option<&str>, extra: &[&str]) -> Output {
    check(&format!("http://{addr}/openapi.json"), addr, token, extra).await
}

async fn check(location: &str, addr: SocketAddr, token: Option<&str>, extra: &[&str]) -> Output {
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args: Vec<&str> = Vec::new();
    if let Some(header) = &header {
        args.extend(["--header", header]);
    }
    args.extend_from_slice(extra);
    let out = schemathesis::run(location, addr, &args).await;
    eprintln!("{}", schemathesis::text(&out));
    out
}

/// Processing with its HTTP route and two dossiers due soon (the watcher at their apology
/// deadline), so the list answers warnings and a next page.
async fn processing_with_warnings() -> (TestDb, RunningIntake, RunningProcessing) {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let processing =
        RunningProcessing::start_with_http(log.clone(), SupplementPolicy::Restart, &[]).await;
    let monday = local(2024, 4, 22, 9, 0);
    let mut client = intake.client().await;
    for id in ["HS-OA-W1", "HS-OA-W2"] {
        client
            .receive_dossier(authed(COUNTER_DISTRICT, receive_days(id, monday, 3)))
            .await
            .expect("receive");
    }
    // Due Thursday 25 April 09:00; warned from Wednesday 24 April 09:00.
    let clock = ManualClock::new(local(2024, 4, 24, 9, 0));
    let report = watcher(&log, clock).await.tick().await.expect("tick");
    assert_eq!(report.raised.len(), 2, "{report:?}");
    (db, intake, processing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_conforms_to_its_openapi_description_and_a_misstated_one_is_caught() {
    let (_db, intake, processing) = processing_with_warnings().await;
    let addr = processing.http_addr.expect("the HTTP route");
    let out = check_served(addr, Some(AUDITOR), &[]).await;
    schemathesis::assert_conforms(&out);

    // The due time said to be a number: the generated schema is what the check holds to.
    let wrong = schemathesis::edited(
        processing::openapi::DOCUMENT,
        "/components/schemas/DueSoon/properties/dueAt",
        json!({"type": "integer"}),
    );
    let out = check(
        &wrong.location(),
        addr,
        Some(AUDITOR),
        &["--phases", "examples,coverage"],
    )
    .await;
    schemathesis::assert_caught(&out);
    processing.stop().await;
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_citizen_lookup_conforms_to_its_openapi_description() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let mut deps = svc::ServiceDeps::for_tests(log.clone(), tests::test_tokens());
    deps.keyring = Some(personal::Keyring::generate("k1").expect("a master key"));
    // Limits far above what the run sends: every answer is the lookup's, not the limiter's
    // (429 is documented all the same).
    let app = intake::build_with_lookup(
        deps,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        intake::LookupLimits {
            per_client_per_minute: 100_000,
            per_dossier_per_minute: 100_000,
            max_tracked: 100_000,
        },
        None,
    )
    .await
    .expect("intake");
    let grpc = app.local_addr();
    let lookup = app.http_addr("lookup").expect("the lookup's HTTP port");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    let mut client =
        api::v1::intake_service_client::IntakeServiceClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
    let mut request = tests::receive_request("HS-OA-L1", local(2024, 4, 22, 9, 0));
    request.applicant = Some(pb::Applicant {
        owner_name: "Trần Văn Thử".into(),
        document: Some(pb::IdentityDocument {
            kind: pb::DocumentKind::Cccd as i32,
            number: "079188004243".into(),
        }),
        phone: "0912777333".into(),
        email: String::new(),
        address: "1 Đường Thử".into(),
        representative: None,
    });
    let secret = client
        .receive_dossier(authed(COUNTER_DISTRICT, request))
        .await
        .expect("receive")
        .into_inner()
        .lookup_secret;
    // The document's example with this dossier's secret, so the run gets the 200 answer too.
    let with_secret = schemathesis::edited(
        intake::openapi::DOCUMENT,
        "/paths/~1v1~1lookup/post/requestBody/content/application~1json/example",
        json!({"dossierId": "HS-OA-L1", "secret": secret}),
    );
    let answer = tests::http::request(
        lookup,
        "POST",
        "/v1/lookup",
        &[("Content-Type", "application/json")],
        Some(
            json!({"dossier_id": "HS-OA-L1", "secret": secret})
                .to_string()
                .as_bytes(),
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let looked_up: pb::LookUpDossierResponse =
        serde_json::from_slice(&answer.body).expect("the proto3 JSON mapping");
    assert_eq!(looked_up.status, 2, "received: being processed");
    let out = check(&with_secret.location(), lookup, None, &[]).await;
    schemathesis::assert_conforms(&out);
    // And from what the port serves.
    let served = tests::http::get(lookup, "/openapi.json", None).await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), intake::openapi::DOCUMENT);
    stop.cancel();
    task.await.expect("join").expect("intake stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sync_conforms_to_its_openapi_description_and_a_misstated_one_is_caught() {
    let db = TestDb::new().await;
    let nats = TestNats::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let stack = Stack::start(log.clone()).await;
    let relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let receiver = PortalReceiver::start("openapi-test-credentials").await;
    // One dossier the portal takes (the document's example id), one it refuses.
    receiver.refuse_dossier("HS-OA-0002", 42);
    let sync = RunningPortalSync::start(SyncSettings::new(&db, &nats, &receiver)).await;
    let t0 = local(2024, 5, 14, 9, 0);
    stack.receive("HS-OA-0001", t0, false).await;
    stack.receive("HS-OA-0002", t0, false).await;
    for (id, done) in [("HS-OA-0001", "synchronised"), ("HS-OA-0002", "refused")] {
        eventually_some(&format!("{id} {done}"), WAIT, || async {
            let row = portal_sync::store::sync_row(log.pool(), id)
                .await
                .expect("row")?;
            (row.record_version >= 1 || row.refused_version.is_some()).then_some(())
        })
        .await;
    }
    let out = check_served(sync.http_addr, Some(AUDITOR), &[]).await;
    schemathesis::assert_conforms(&out);

    // A count said to be text: the hand-written schema is what the check holds to.
    let wrong = schemathesis::edited(
        portal_sync::openapi::DOCUMENT,
        "/components/schemas/Reconciliation/properties/should",
        json!({"type": "string"}),
    );
    let out = check(
        &wrong.location(),
        sync.http_addr,
        Some(AUDITOR),
        &[
            "--include-path",
            "/v1/reconciliation",
            "--phases",
            "examples,coverage",
        ],
    )
    .await;
    schemathesis::assert_caught(&out);
    sync.stop().await;
    relay.stop().await;
}
