//! Helpers shared by the tests.

use std::sync::Arc;

use audit::verify::{Finding, Outcome, Problem};
use audit::{Checkpointer, Tick};
use chrono::Utc;
use eventlog::{DossierAppend, EventLog, ExpectedVersion, NewEvent, Routing, StoredEvent};
use merkle::{Signer, VerifierKey};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, Connection};
use testkit::TestDb;
use uuid::Uuid;

/// A fresh database with the log's and the audit's migrations.
pub async fn setup() -> (TestDb, EventLog) {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.expect("log migrations");
    audit::store::migrate(log.pool())
        .await
        .expect("audit migrations");
    (db, log)
}

pub const ORIGIN: &str = "test.motcua/log";

pub fn signer() -> Signer {
    Signer::from_seed(ORIGIN, [42; 32]).unwrap()
}

pub fn verifier() -> VerifierKey {
    signer().verifier()
}

pub fn checkpointer(log: &EventLog) -> Checkpointer {
    Checkpointer::new(log.pool().clone(), Arc::new(signer()), None)
}

pub async fn tick(log: &EventLog) -> Tick {
    checkpointer(log).tick().await.expect("checkpoint")
}

pub fn new_event(n: usize) -> NewEvent {
    let event_id = Uuid::new_v4();
    NewEvent {
        event_id,
        event_type: if n == 0 { "received" } else { "transferred" }.into(),
        occurred_at: svc::status::truncate_micros(Utc::now()),
        payload: serde_json::json!({"note": format!("event {n}"), "n": n, "ok": true}),
        fingerprint: Sha256::digest(event_id.as_bytes()).into(),
    }
}

/// Appends `events` events to each of the dossiers `ids` (one append per dossier, in order);
/// returns the stored events.
pub async fn append(log: &EventLog, ids: &[&str], events: usize) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    for id in ids {
        let existing = log.load_dossier(id).await.unwrap().len();
        let expected = if existing == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(existing as u32)
        };
        let appended = log
            .append(vec![DossierAppend {
                dossier_id: (*id).into(),
                expected_version: expected,
                routing: Routing {
                    level: "district".into(),
                    agency: format!("agency-{}", &id[..1]),
                    sector: "dat_dai".into(),
                },
                events: (existing..existing + events).map(new_event).collect(),
            }])
            .await
            .expect("append");
        out.extend(appended.events);
    }
    out
}

/// Runs statements as the superuser with the triggers bypassed, in one transaction: what an
/// attacker with database access can do.
pub async fn tamper(db: &TestDb, statements: &[&str]) {
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    for statement in statements {
        sqlx::query(AssertSqlSafe(statement.to_string()))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    tx.commit().await.unwrap();
}

pub async fn verify(log: &EventLog) -> Outcome {
    audit::verify::verify_database(log.pool(), Some(&verifier()))
        .await
        .expect("verify")
}

pub async fn assert_finding(log: &EventLog, position: u64, problem: Problem) {
    assert_eq!(
        verify(log).await,
        Outcome::Tampered(Finding { position, problem })
    );
}

pub async fn assert_intact(log: &EventLog) -> audit::verify::Report {
    match verify(log).await {
        Outcome::Intact(report) => report,
        Outcome::Tampered(finding) => panic!("expected an intact log, found: {finding}"),
    }
}
