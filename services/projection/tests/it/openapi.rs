//! The running server against its OpenAPI description (`GET /openapi.json`), checked by
//! schemathesis through the shared harness (`testkit::schemathesis`): every route, parameter
//! and answer it generates (valid and invalid requests, with and without a token) must get a
//! documented status, media type, headers and body shape. And the check can fail: a
//! description that misstates one field of an answer is caught.

use chrono::NaiveDate;
use projection::{QueryLimits, store};
use testkit::schemathesis;

use crate::limits::{AUDITOR, Running};
use crate::support::{append_paid_dossier, migrated_db};

/// The dossier the document's example names (`components.parameters`, route `id`).
const DOSSIER: &str = "HS-OA-0001";

/// A projection with one dossier in its figures, serving HTTP.
async fn running() -> (testkit::TestDb, Running) {
    let (db, log) = migrated_db().await;
    let day = NaiveDate::from_ymd_opt(2024, 5, 14).unwrap();
    append_paid_dossier(&log, DOSSIER, 1, day, 1, 50_000).await;
    store::apply_and_commit(&log, DOSSIER).await.unwrap();
    let running = Running::start(&log, QueryLimits::default()).await;
    (db, running)
}

/// Schemathesis on `location` against the server at `http`, with an auditor's token.
async fn check(location: &str, http: std::net::SocketAddr, extra: &[&str]) -> std::process::Output {
    let header = format!("Authorization: Bearer {AUDITOR}");
    let mut args = vec![
        "--header",
        &header,
        // The live notices never end: each request there would wait for its timeout (the
        // route and its events are described all the same).
        "--exclude-path",
        "/v1/stream",
    ];
    args.extend_from_slice(extra);
    schemathesis::run(location, http, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_server_conforms_to_its_openapi_description() {
    let (_db, running) = running().await;
    let out = check(
        &format!("http://{}/openapi.json", running.http),
        running.http,
        &[],
    )
    .await;
    eprintln!("{}", schemathesis::text(&out));
    schemathesis::assert_conforms(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_that_misstates_an_answer_is_caught() {
    let (_db, running) = running().await;
    // A count said to be a JSON number, where the proto3 JSON mapping writes an int64 as a
    // string.
    let wrong = schemathesis::edited(
        projection::openapi::DOCUMENT,
        "/components/schemas/Rate/properties/numerator",
        serde_json::json!({"type": "integer"}),
    );
    let out = check(
        &wrong.location(),
        running.http,
        &[
            "--include-path",
            "/v1/indicators",
            "--phases",
            "examples,coverage",
        ],
    )
    .await;
    schemathesis::assert_caught(&out);
}
