//! Batched loads (`EventLog::load_dossier_for_append`): loads asked for together are read by
//! one statement, and each gets exactly its own dossier.
//!
//! A batch is formed deterministically: a connection of the test holds `events` locked, every
//! slot of the handle's loader is taken by a "plug" load blocked on that lock (checked through
//! `pg_locks`), and the loads under test are queued one after another (checked through the
//! loader's queue count). Releasing the lock lets the plugs finish; the loader then takes every
//! queued load as one batch.

use std::time::Duration;

use eventlog::load::LOADS_IN_FLIGHT;
use eventlog::{EventLog, ExpectedVersion, LoadedDossier, ReadError};
use tokio::task::JoinHandle;

use crate::support::*;

type Load = JoinHandle<Result<LoadedDossier, ReadError>>;

fn spawn_load(log: &EventLog, dossier_id: &str) -> Load {
    let (log, id) = (log.clone(), dossier_id.to_owned());
    tokio::spawn(async move { log.load_dossier_for_append(&id).await })
}

/// Backends of this database waiting for a lock on `events`.
async fn blocked_readers(log: &EventLog) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
         WHERE a.datname = current_database() AND NOT l.granted
           AND l.relation = 'events'::regclass",
    )
    .fetch_one(log.pool())
    .await
    .expect("pg_locks")
}

#[tokio::test]
async fn loads_asked_together_are_read_at_once_and_each_gets_its_own_dossier() {
    let (db, log) = log().await;
    log.append(vec![
        dossier("D-A", ExpectedVersion::NoStream, events(3)),
        dossier("D-B", ExpectedVersion::NoStream, events(1)),
        dossier("D-P", ExpectedVersion::NoStream, events(2)),
    ])
    .await
    .unwrap();
    let before = log.load_batch_stats();

    // Hold `events` and fill every slot of the loader with a blocked load.
    let mut holder = db.connect().await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut plugs = Vec::new();
    for i in 0..LOADS_IN_FLIGHT {
        plugs.push(spawn_load(&log, "D-P"));
        eventually(
            Duration::from_secs(20),
            "a plug blocked on events",
            || async { blocked_readers(&log).await > i as i64 },
        )
        .await;
    }
    // Queue the loads under test, one after another: two of the same dossier, one unknown.
    let ids = ["D-A", "D-B", "D-A", "D-unknown", "D-P"];
    let mut loads = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        loads.push(spawn_load(&log, id));
        eventually(Duration::from_secs(20), "the load is queued", || async {
            log.load_batch_stats().queued > i as u64
        })
        .await;
    }
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();

    for plug in plugs {
        let plug = plug.await.unwrap().unwrap();
        assert_eq!(plug.head().expected_version(), ExpectedVersion::Exact(2));
    }
    for (id, load) in ids.iter().zip(loads) {
        let loaded = load.await.unwrap().unwrap();
        let (events, head) = loaded.into_parts();
        let alone = log.load_dossier(id).await.unwrap();
        assert_eq!(
            events, alone,
            "{id}: the batch's answer is what a read of its own gives"
        );
        assert!(events.iter().all(|e| e.dossier_id == *id), "{id}");
        let want = match alone.len() {
            0 => ExpectedVersion::NoStream,
            n => ExpectedVersion::Exact(n as u32),
        };
        assert_eq!(head.expected_version(), want, "{id}");
    }
    let after = log.load_batch_stats();
    assert_eq!(
        after.loads - before.loads,
        (LOADS_IN_FLIGHT + ids.len()) as u64
    );
    assert_eq!(
        after.batches - before.batches,
        LOADS_IN_FLIGHT as u64 + 1,
        "the queued loads were read as one batch"
    );
    assert_eq!(after.queued, 0);
}
