//! Following the log: commit order, no skipped event, notifications.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use eventlog::{EventLog, ExpectedVersion, StoredEvent};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::support::*;

/// Runs `log.follow(after)` in a task, forwarding every event to a channel.
fn start_follower(
    log: &EventLog,
    after: i64,
) -> (
    mpsc::UnboundedReceiver<StoredEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let stream = log.follow(after);
    let task = tokio::spawn(async move {
        let mut stream = stream;
        while let Some(item) = stream.next().await {
            if tx.send(item.expect("follow yields no error here")).is_err() {
                return;
            }
        }
    });
    (rx, task)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<StoredEvent>) -> StoredEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the follower delivers within 10 s")
        .expect("follower alive")
}

/// THE property: a transaction that took its position first but commits last is never skipped.
///
/// A holds the sequencer (positions 2..3 assigned, not committed); B and C, on other dossiers,
/// pass their checks and block at the sequencer. Nothing of A, B or C may reach the follower
/// until A commits; then all of them arrive, once, in position order, without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_sees_commit_order_and_skips_nothing() {
    let (_db, log) = log().await;
    let (mut rx, follower) = start_follower(&log, 0);

    // The follower is live.
    let seed = log
        .append(vec![dossier("seed", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, seed.events[0]);

    let mut a_tx = log.pool().begin().await.unwrap();
    let a = log
        .append_in(
            &mut a_tx,
            vec![dossier("A", ExpectedVersion::NoStream, events(2))],
        )
        .await
        .unwrap();
    assert_eq!(
        a.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [2, 3]
    );

    let writer = |id: &'static str, n: usize| {
        let log = log.clone();
        tokio::spawn(async move {
            log.append(vec![dossier(id, ExpectedVersion::NoStream, events(n))])
                .await
        })
    };
    let before = log.group_commit_stats().calls;
    let b = writer("B", 3);
    let c = writer("C", 1);
    wait_for_racing_appends(&log, before, 2).await;

    // Nothing of A, B, C is visible yet: not to a reader, not to the follower. Asserting an
    // absence takes a while: 1.5 s spans at least one of the follower's 1 s fallback polls.
    assert!(log.read_after(1, 100).await.unwrap().is_empty());
    assert_eq!(log.head().await.unwrap(), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), rx.recv())
            .await
            .is_err(),
        "the follower delivered an event before it was committed"
    );
    // B and C may share one group (then one session waits at the sequencer) or not (two):
    // either way neither has finished and the sequencer still holds them.
    assert!(
        waiting_at_sequencer(&log).await >= 1,
        "B and C still wait for A"
    );
    assert!(
        !b.is_finished() && !c.is_finished(),
        "B and C still wait for A"
    );

    a_tx.commit().await.unwrap();
    let b = b.await.unwrap().expect("B appends once A has committed");
    let c = c.await.unwrap().expect("C appends once A has committed");

    // A sentinel after all of them: what arrives before it is everything, exactly once.
    let sentinel = log
        .append(vec![dossier(
            "sentinel",
            ExpectedVersion::NoStream,
            events(1),
        )])
        .await
        .unwrap();
    let mut delivered = Vec::new();
    loop {
        let event = next(&mut rx).await;
        if event.event_id == sentinel.events[0].event_id {
            break;
        }
        delivered.push(event);
    }

    let mut expected: Vec<StoredEvent> = a
        .events
        .iter()
        .chain(&b.events)
        .chain(&c.events)
        .cloned()
        .collect();
    expected.sort_by_key(|e| e.position);
    assert_eq!(
        delivered, expected,
        "A, B and C exactly once, in position order"
    );
    let positions: Vec<i64> = delivered.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (2..=7).collect::<Vec<_>>(),
        "strictly increasing, no gap"
    );
    assert_eq!(
        &delivered[..2],
        &a.events[..],
        "A, sequenced first, comes first"
    );
    assert_eq!(
        delivered
            .iter()
            .map(|e| e.event_id)
            .collect::<HashSet<_>>()
            .len(),
        delivered.len()
    );
    assert_eq!(sentinel.events[0].position, 8);
    assert_valid_log(&read_all(&log).await);
    follower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_from_a_cursor_and_keep_following() {
    let (_db, log) = log().await;
    let first = log
        .append(vec![dossier("D", ExpectedVersion::NoStream, events(5))])
        .await
        .unwrap();
    let (mut rx, follower) = start_follower(&log, 2);
    for want in &first.events[2..] {
        assert_eq!(&next(&mut rx).await, want);
    }
    // Larger than one read batch of the follower (1000).
    let batch: Vec<_> = (0..1_200)
        .map(|i| dossier(&format!("E{i}"), ExpectedVersion::NoStream, events(1)))
        .collect();
    let more = log.append(batch).await.unwrap();
    for want in &more.events {
        assert_eq!(&next(&mut rx).await, want);
    }
    follower.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_wake_on_append_and_time_out_otherwise() {
    let (_db, log) = log().await;
    let mut changes = log.changes().await.unwrap();

    let started = Instant::now();
    changes.wait(Duration::from_millis(100)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "nothing happened: times out"
    );

    log.append(vec![dossier("D", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        changes.wait(Duration::from_secs(3600)),
    )
    .await
    .expect("woken by the append's notification");
}

/// When the listening connection dies, `wait` neither fails nor hangs, and wake-ups resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_survive_a_lost_connection() {
    let (_db, log) = log().await;
    let mut changes = log.changes().await.unwrap();

    let listeners = || async {
        sqlx::query_scalar::<_, i32>(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
        )
        .fetch_all(log.pool())
        .await
        .unwrap()
    };
    let pids = listeners().await;
    assert_eq!(pids.len(), 1);
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pids[0])
        .execute(log.pool())
        .await
        .unwrap();

    // Never an error and never past `at_most`; within a few calls it listens again.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            changes.wait(Duration::from_millis(200)).await;
            let now = listeners().await;
            if now.len() == 1 && now[0] != pids[0] {
                return;
            }
        }
    })
    .await
    .expect("listening again");

    log.append(vec![dossier("D", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        changes.wait(Duration::from_secs(3600)),
    )
    .await
    .expect("woken after reconnecting");
}
