//! The batched apply (issue 10, point 3): many messages, each touched dossier recomputed once,
//! one transaction, acks after the commit. The tests prove that batching keeps what the
//! one-message apply guaranteed: a dossier named by several messages of a batch counts once;
//! a failing dossier fails alone (the rest of its batch commits) and is retried; a batch
//! delivered again after its commit changes nothing; overlapping batches of concurrent
//! instances neither deadlock nor count twice. `verify` (an independent recomputation) is the
//! judge of exactness throughout.

use std::time::Duration;

use async_nats::jetstream;
use eventlog::EventLog;
use futures::StreamExt;
use projection::verify::verify;
use projection::{Applied, ConsumerConfig, ConsumerStatus, store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::support::{Rng, answers, append_dossier, append_resolution, migrated_db};

/// Far more than the tests need; only a bound so that a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

fn date(y: i32, m: u32, d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

async fn assert_exact(pool: &sqlx::PgPool) {
    let report = verify(pool, 100).await.expect("verify");
    assert!(report.is_exact(), "{report}");
}

#[tokio::test]
async fn a_dossier_named_by_several_messages_of_a_batch_is_applied_once() {
    let (db, log) = migrated_db().await;
    // A: received, applied at version 1 alone, then resolved (behind). B: received and
    // resolved, never applied. C: received, applied, nothing new (up to date).
    append_dossier(&log, "HS-B-A", 1, date(2024, 3, 4), None).await;
    append_dossier(&log, "HS-B-C", 7, date(2024, 6, 1), None).await;
    store::apply_and_commit(&log, "HS-B-A").await.unwrap();
    store::apply_and_commit(&log, "HS-B-C").await.unwrap();
    append_resolution(&log, "HS-B-A", 1, date(2024, 3, 4), date(2024, 3, 20)).await;
    append_dossier(&log, "HS-B-B", 4, date(2024, 5, 2), Some(date(2024, 5, 9))).await;

    // Named several times and out of order, as the messages of a batch name their dossiers.
    let ids: Vec<String> = ["HS-B-B", "HS-B-A", "HS-B-C", "HS-B-A", "HS-B-B", "HS-B-A"]
        .map(str::to_owned)
        .to_vec();
    let applied = store::apply_batch_and_commit(&log, &ids).await.unwrap();
    let versions: Vec<(&str, Applied)> = applied.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert!(
        matches!(
            versions.as_slice(),
            [
                ("HS-B-A", Applied::Updated { version: 2, .. }),
                ("HS-B-B", Applied::Updated { version: 2, .. }),
                ("HS-B-C", Applied::UpToDate { version: 1 }),
            ]
        ),
        "{versions:?}"
    );
    assert_exact(&db.pool).await;
    let figures = answers(&db.pool).await;

    // The same batch again (a redelivery): nothing changes.
    let again = store::apply_batch_and_commit(&log, &ids).await.unwrap();
    assert!(
        again
            .values()
            .all(|a| matches!(a, Applied::UpToDate { .. })),
        "{again:?}"
    );
    assert_eq!(answers(&db.pool).await, figures);
    assert_exact(&db.pool).await;
}

#[tokio::test]
async fn concurrent_overlapping_batches_neither_deadlock_nor_count_twice() {
    const DOSSIERS: usize = 80;
    const TASKS: usize = 4;
    const ROUNDS: usize = 30;
    let (db, log) = migrated_db().await;
    let id = |i: usize| format!("HS-C-{i:03}");
    let received = |i: usize| date(2024, 1, 2) + chrono::Days::new((i * 7 % 300) as u64);
    for i in 0..DOSSIERS {
        append_dossier(&log, &id(i), i, received(i), None).await;
    }
    // Every task applies random overlapping sets of dossiers, in random order (most rows are
    // still to be created when the first batches run), sometimes one dossier alone as the
    // fallback does, while resolving its own share of the dossiers: the batches of different
    // tasks share dossiers and cells and wait for each other's locks.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(0xba7c_0000 + t as u64);
            let mut mine: Vec<usize> = (0..DOSSIERS).filter(|i| i % TASKS == t).collect();
            for round in 0..ROUNDS {
                if round % 3 == 1
                    && let Some(i) = mine.pop()
                {
                    let day = received(i) + chrono::Days::new(1 + rng.below(20));
                    append_resolution(&log, &id(i), i, received(i), day).await;
                }
                if rng.chance(15) {
                    let i = rng.below(DOSSIERS as u64) as usize;
                    store::apply_and_commit(&log, &id(i))
                        .await
                        .unwrap_or_else(|e| panic!("task {t}, round {round}, alone: {e}"));
                    continue;
                }
                let ids: Vec<String> = (0..5 + rng.below(30))
                    .map(|_| id(rng.below(DOSSIERS as u64) as usize))
                    .collect();
                store::apply_batch_and_commit(&log, &ids)
                    .await
                    .unwrap_or_else(|e| panic!("task {t}, round {round}: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("no batch failed (a deadlock would)");
    }
    let all: Vec<String> = (0..DOSSIERS).map(id).collect();
    store::apply_batch_and_commit(&log, &all).await.unwrap();
    assert_exact(&db.pool).await;
}

/// A relay publishing `log` to the test's stream, until the token is cancelled.
fn start_relay(
    log: &EventLog,
    js: &jetstream::Context,
    nats: &testkit::TestNats,
    stop: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let relay = relay::Relay::new(
        log.clone(),
        js.clone(),
        relay::RelayConfig {
            stream: nats.stream.clone(),
            subject_prefix: nats.prefix.clone(),
            max_backoff: Duration::from_millis(500),
            poll_interval: Duration::from_millis(100),
            ..relay::RelayConfig::default()
        },
    );
    let stop = stop.clone();
    tokio::spawn(async move { relay.run(stop).await.expect("relay runs") })
}

/// Waits until the stream holds `n` messages.
async fn wait_published(js: &jetstream::Context, stream: &str, n: u64) {
    let published = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(mut s) = js.get_stream(stream).await
                && s.info().await.is_ok_and(|i| i.state.messages >= n)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(published.is_ok(), "the relay did not publish {n} messages");
}

async fn wait_for(
    status: &mut watch::Receiver<ConsumerStatus>,
    what: &str,
    f: impl FnMut(&ConsumerStatus) -> bool,
) -> ConsumerStatus {
    let seen = tokio::time::timeout(PATIENCE, async {
        status
            .wait_for(f)
            .await
            .map(|s| *s)
            .expect("the consumer's status is kept")
    })
    .await;
    seen.unwrap_or_else(|_| panic!("waiting for {what}: {:?}", *status.borrow()))
}

/// Runs `projection::consumer::run` until the token is cancelled.
fn start_consumer(
    log: &EventLog,
    js: &jetstream::Context,
    config: ConsumerConfig,
    stop: &CancellationToken,
) -> (watch::Receiver<ConsumerStatus>, tokio::task::JoinHandle<()>) {
    let status = watch::Sender::new(ConsumerStatus::default());
    let receiver = status.subscribe();
    let handle = tokio::spawn(projection::consumer::run(
        log.clone(),
        js.clone(),
        config,
        status,
        stop.clone(),
    ));
    (receiver, handle)
}

const BAD: &str = "HS-P-BAD";

#[tokio::test]
async fn a_failing_dossier_fails_alone_and_the_rest_of_its_batch_commits() {
    const DOSSIERS: usize = 40;
    let (db, log) = migrated_db().await;
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();
    let stop = CancellationToken::new();
    let relay = start_relay(&log, &js, &nats, &stop);
    // Applying BAD fails while this constraint stands; so does any batch holding it.
    sqlx::query(
        "ALTER TABLE projection_contributions ADD CONSTRAINT test_refuses_bad \
         CHECK (dossier_id <> 'HS-P-BAD')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Published before the consumer starts: it finds them waiting and takes them in batches.
    let mut ids = Vec::new();
    for i in 0..DOSSIERS {
        let id = if i == DOSSIERS / 2 {
            BAD.to_owned()
        } else {
            format!("HS-P-{i:03}")
        };
        append_dossier(
            &log,
            &id,
            i,
            date(2024, 4, 1) + chrono::Days::new(i as u64),
            None,
        )
        .await;
        ids.push(id);
    }
    wait_published(&js, &nats.stream, DOSSIERS as u64).await;

    let mut config = ConsumerConfig::new(
        &nats.stream,
        &nats.prefix,
        &format!("projection-batch-{}", testkit::unique_suffix()),
    );
    config.first_failure_delay = Duration::from_millis(200);
    config.max_failure_delay = Duration::from_millis(400);
    config.status_refresh = Duration::from_millis(200);
    let (mut status, consumer) = start_consumer(&log, &js, config, &stop);

    // A batch held BAD and fell back; everything else applied; BAD failed and was retried.
    let seen = wait_for(&mut status, "the failing dossier's retries", |s| {
        s.failing_dossiers == 1
            && s.apply_failures_total >= 3
            && s.applied_position == DOSSIERS as i64
    })
    .await;
    assert!(seen.batch_fallbacks_total >= 1, "{seen:?}");
    for id in ids.iter().filter(|id| *id != BAD) {
        assert_eq!(
            store::applied_version(&db.pool, id).await.unwrap(),
            1,
            "{id} applied despite the failing one ({seen:?})"
        );
    }
    assert_eq!(store::applied_version(&db.pool, BAD).await.unwrap(), 0);
    let (attempts, last_error): (i64, String) = sqlx::query_as(
        "SELECT attempts, last_error FROM projection_failures WHERE dossier_id = $1",
    )
    .bind(BAD)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(attempts >= 3, "{attempts}");
    assert!(last_error.contains("test_refuses_bad"), "{last_error}");
    let report = verify(&db.pool, 100).await.unwrap();
    assert!(report.is_consistent(), "{report}");
    assert_eq!(report.failing.len(), 1, "{report}");

    // The cause goes: the next redelivery applies it and the figures are exact.
    sqlx::query("ALTER TABLE projection_contributions DROP CONSTRAINT test_refuses_bad")
        .execute(&db.pool)
        .await
        .unwrap();
    wait_for(&mut status, "the dossier to apply", |s| {
        s.failing_dossiers == 0 && s.applied_position == DOSSIERS as i64
    })
    .await;
    assert_eq!(store::applied_version(&db.pool, BAD).await.unwrap(), 1);
    assert_exact(&db.pool).await;
    stop.cancel();
    consumer.await.unwrap();
    relay.await.unwrap();
}

#[tokio::test]
async fn a_batch_redelivered_after_its_commit_changes_nothing() {
    const DOSSIERS: usize = 12;
    const ACK_WAIT: Duration = Duration::from_secs(1);
    let (db, log) = migrated_db().await;
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();
    let stop = CancellationToken::new();
    let relay = start_relay(&log, &js, &nats, &stop);
    // Several messages per dossier: a reception, then a resolution appended apart.
    for i in 0..DOSSIERS {
        let received = date(2024, 2, 1) + chrono::Days::new(3 * i as u64);
        append_dossier(&log, &format!("HS-R-{i:03}"), i, received, None).await;
    }
    for i in (0..DOSSIERS).step_by(2) {
        let received = date(2024, 2, 1) + chrono::Days::new(3 * i as u64);
        let day = received + chrono::Days::new(5);
        append_resolution(&log, &format!("HS-R-{i:03}"), i, received, day).await;
    }
    let messages = (DOSSIERS + DOSSIERS / 2) as u64;
    wait_published(&js, &nats.stream, messages).await;

    let mut config = ConsumerConfig::new(
        &nats.stream,
        &nats.prefix,
        &format!("projection-redelivery-{}", testkit::unique_suffix()),
    );
    config.ack_wait = ACK_WAIT;
    let stream = js.get_stream(&nats.stream).await.unwrap();
    let durable: jetstream::consumer::PullConsumer =
        stream.create_consumer(config.pull_config()).await.unwrap();

    // An instance takes the whole batch, commits it, and dies before acknowledging.
    let mut batch = durable
        .fetch()
        .max_messages(messages as usize)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();
    let mut taken = Vec::new();
    while let Some(message) = batch.next().await {
        taken.push(message.unwrap());
    }
    assert_eq!(taken.len() as u64, messages);
    let ids: Vec<String> = taken
        .iter()
        .map(|m| {
            m.headers
                .as_ref()
                .unwrap()
                .get(relay::HEADER_DOSSIER_ID)
                .unwrap()
                .as_str()
                .to_owned()
        })
        .collect();
    store::apply_batch_and_commit(&log, &ids).await.unwrap();
    drop(taken);
    assert_exact(&db.pool).await;
    let figures = answers(&db.pool).await;

    // The next instance gets the whole batch again once ack_wait has passed.
    let (mut status, consumer) = start_consumer(&log, &js, config, &stop);
    wait_for(&mut status, "the redelivered batch", |s| {
        s.applied_position == messages as i64
    })
    .await;
    let info = tokio::time::timeout(PATIENCE, async {
        loop {
            let info = stream
                .consumer_info(durable.cached_info().name.as_str())
                .await
                .unwrap();
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("everything acknowledged");
    // Every message of the batch was delivered a second time.
    assert!(
        info.delivered.consumer_sequence - info.delivered.stream_sequence >= messages,
        "{info:?}"
    );
    assert_eq!(answers(&db.pool).await, figures);
    assert_exact(&db.pool).await;
    stop.cancel();
    consumer.await.unwrap();
    relay.await.unwrap();
}

#[tokio::test]
async fn the_configured_ack_wait_replaces_an_existing_consumers() {
    let (_db, log) = migrated_db().await;
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();
    let stop = CancellationToken::new();
    let relay = start_relay(&log, &js, &nats, &stop);
    append_dossier(&log, "HS-W-001", 1, date(2024, 3, 4), None).await;
    wait_published(&js, &nats.stream, 1).await;
    let mut config = ConsumerConfig::new(
        &nats.stream,
        &nats.prefix,
        &format!("projection-ackwait-{}", testkit::unique_suffix()),
    );
    let stream = js.get_stream(&nats.stream).await.unwrap();
    // Created by an older version with another ack_wait.
    config.ack_wait = Duration::from_secs(30);
    stream.create_consumer(config.pull_config()).await.unwrap();
    config.ack_wait = Duration::from_secs(7);
    let (mut status, consumer) = start_consumer(&log, &js, config.clone(), &stop);
    wait_for(&mut status, "the message", |s| s.applied_position == 1).await;
    let info = stream.consumer_info(&config.durable).await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(info.config.filter_subject, format!("{}.>", nats.prefix));
    stop.cancel();
    consumer.await.unwrap();
    relay.await.unwrap();
}
