//! The running server against its OpenAPI description (`GET /openapi.json`), checked by
//! schemathesis: every route, parameter and answer it generates (valid and invalid requests,
//! with and without a token) must get a documented status, media type, headers and body shape.
//! And the check can fail: a description that misstates one field of an answer is caught.
//!
//! Schemathesis (Python, from PyPI) runs from a virtual environment under `target/venv`;
//! `cargo xtask test` installs it there, and so does this test when it is missing.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Mutex;

use chrono::NaiveDate;
use projection::{QueryLimits, store};

use crate::limits::{AUDITOR, Running};
use crate::support::{append_paid_dossier, migrated_db};

/// The pinned schemathesis release (also what `cargo xtask test` installs).
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/requirements.txt");

/// The dossier the document's example names (`components.parameters`, route `id`).
const DOSSIER: &str = "HS-OA-0001";

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// `target/venv/bin/schemathesis`, installed first when missing (once per test binary).
fn schemathesis() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target_dir().join("venv");
    let binary = venv.join("bin/schemathesis");
    if binary.is_file() {
        return binary;
    }
    let run = |c: &mut Command, what: &str| {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed (on Debian: apt-get install python3-venv; `cargo xtask test` does \
             it): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv target/venv",
    );
    run(
        Command::new(venv.join("bin/pip")).args(["install", "--quiet", "-r", REQUIREMENTS]),
        "pip install schemathesis",
    );
    binary
}

/// A projection with one dossier in its figures, serving HTTP.
async fn running() -> (testkit::TestDb, Running) {
    let (db, log) = migrated_db().await;
    let day = NaiveDate::from_ymd_opt(2024, 5, 14).unwrap();
    append_paid_dossier(&log, DOSSIER, 1, day, 1, 50_000).await;
    store::apply_and_commit(&log, DOSSIER).await.unwrap();
    let running = Running::start(&log, QueryLimits::default()).await;
    (db, running)
}

/// Runs schemathesis on `location` (a URL or a file) against the server at `http`.
async fn check(location: String, http: std::net::SocketAddr, extra: &[&str]) -> Output {
    let binary = schemathesis();
    let mut c = Command::new(binary);
    c.arg("run")
        .arg(location)
        .args(["--url", &format!("http://{http}")])
        .args(["--header", &format!("Authorization: Bearer {AUDITOR}")])
        // Valid-looking requests the server rightly refuses (`to` before `from`, a period over
        // `max_period_days`, `group_by` on a fixed form) cannot be told from valid ones by a
        // schema: every other check runs.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        // The live notices never end: each request there would wait for its timeout (the
        // route and its events are described all the same).
        .args(["--exclude-path", "/v1/stream"])
        .args(["--max-examples", "25", "--workers", "1", "--seed", "13"])
        .args(["--request-timeout", "30", "--no-color"])
        .args(extra)
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(target_dir());
    tokio::task::spawn_blocking(move || c.output().expect("schemathesis runs"))
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_server_conforms_to_its_openapi_description() {
    let (_db, running) = running().await;
    let out = check(
        format!("http://{}/openapi.json", running.http),
        running.http,
        &[],
    )
    .await;
    eprintln!("{}", text(&out));
    assert!(out.status.success(), "schemathesis found: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_description_that_misstates_an_answer_is_caught() {
    let (_db, running) = running().await;
    // A count said to be a JSON number, where the proto3 JSON mapping writes an int64 as a
    // string.
    let mut doc: serde_json::Value = serde_json::from_str(projection::openapi::DOCUMENT).unwrap();
    doc["components"]["schemas"]["Rate"]["properties"]["numerator"] =
        serde_json::json!({"type": "integer"});
    let dir = tempdir();
    let path = dir.join("misstated.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let out = check(
        path.display().to_string(),
        running.http,
        &[
            "--include-path",
            "/v1/indicators",
            "--phases",
            "examples,coverage",
        ],
    )
    .await;
    let said = text(&out);
    assert!(!out.status.success(), "not caught: {said}");
    assert!(said.contains("Response violates schema"), "{said}");
    std::fs::remove_dir_all(dir).ok();
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("motcua-openapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
