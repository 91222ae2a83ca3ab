//! Helpers shared by the tests.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use eventlog::{DossierAppend, EventLog, ExpectedVersion, NewEvent, Routing, StoredEvent};
use sha2::{Digest, Sha256};
use testkit::TestDb;
use uuid::Uuid;

/// A fresh database with the log's migrations applied.
pub async fn log() -> (TestDb, EventLog) {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.expect("migrate");
    (db, log)
}

pub fn routing() -> Routing {
    Routing {
        level: "district".into(),
        agency: "ubnd-huyen-son-tinh".into(),
        sector: "dat_dai".into(),
    }
}

pub fn new_event(event_type: &str) -> NewEvent {
    let event_id = Uuid::new_v4();
    NewEvent {
        event_id,
        event_type: event_type.into(),
        occurred_at: Utc::now(),
        payload: serde_json::json!({"note": format!("event {event_id}"), "n": 1, "ok": true}),
        fingerprint: Sha256::digest(event_id.as_bytes()).into(),
    }
}

pub fn events(n: usize) -> Vec<NewEvent> {
    (0..n).map(|_| new_event("received")).collect()
}

pub fn dossier(id: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> DossierAppend {
    DossierAppend {
        dossier_id: id.into(),
        expected_version: expected,
        routing: routing(),
        events,
    }
}

/// Recomputes the hash chain from the genesis with SHA-256 directly, and checks positions are
/// exactly 1..=n and `recorded_at` never decreases.
pub fn assert_valid_log(all: &[StoredEvent]) {
    let mut previous = [0u8; 32];
    let mut last_recorded: Option<DateTime<Utc>> = None;
    for (i, event) in all.iter().enumerate() {
        assert_eq!(
            event.position,
            i as i64 + 1,
            "positions are 1..=n without gaps"
        );
        let mut leaf = Sha256::new();
        leaf.update([0u8]);
        leaf.update(eventlog::canonical_bytes(event));
        let leaf: [u8; 32] = leaf.finalize().into();
        assert_eq!(event.event_hash, leaf, "event hash at {}", event.position);
        let mut link = Sha256::new();
        link.update(previous);
        link.update(leaf);
        let link: [u8; 32] = link.finalize().into();
        assert_eq!(event.chain_hash, link, "chain hash at {}", event.position);
        previous = link;
        if let Some(last) = last_recorded {
            assert!(
                event.recorded_at >= last,
                "recorded_at decreases at {}",
                event.position
            );
        }
        last_recorded = Some(event.recorded_at);
    }
}

/// The whole log, in position order.
pub async fn read_all(log: &EventLog) -> Vec<StoredEvent> {
    log.read_after(0, i64::MAX).await.expect("read_after")
}

pub async fn count_rows(log: &EventLog) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(log.pool())
        .await
        .expect("count")
}

/// Polls `condition` every 10 ms until it holds; panics after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let polled = tokio::time::timeout(within, async {
        loop {
            if condition().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(polled.is_ok(), "timed out waiting for: {what}");
}

/// How many sessions of this database are waiting for a lock at the sequencer
/// (`UPDATE log_head …`), according to `pg_stat_activity` and `pg_locks`.
pub async fn waiting_at_sequencer(log: &EventLog) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity a
         WHERE a.datname = current_database()
           AND a.wait_event_type = 'Lock'
           AND a.query LIKE '%UPDATE log_head%position = position +%'
           AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)",
    )
    .fetch_one(log.pool())
    .await
    .expect("pg_stat_activity")
}

/// Waits until `n` appends made through `log` after `before` (its `group_commit_stats().calls`
/// then) are taken into groups (or queued for one) and at least one group is blocked at the
/// sequencer. With group commit, concurrent appends of one handle may share a group, so fewer
/// than `n` sessions may be blocked: counting sessions alone would wait forever.
pub async fn wait_for_racing_appends(log: &EventLog, before: u64, n: u64) {
    eventually(
        Duration::from_secs(20),
        "appends taken into groups, one blocked at the sequencer",
        || async {
            let stats = log.group_commit_stats();
            stats.calls + stats.queued >= before + n && waiting_at_sequencer(log).await >= 1
        },
    )
    .await;
}

/// Waits until `n` appends are blocked at the sequencer.
pub async fn wait_for_blocked_writers(log: &EventLog, n: i64) {
    eventually(
        Duration::from_secs(20),
        "writers blocked at the sequencer",
        || async { waiting_at_sequencer(log).await >= n },
    )
    .await;
}
