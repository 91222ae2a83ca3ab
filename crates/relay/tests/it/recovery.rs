//! A database restored from a dump older than the stream: the relay reports the divergence and
//! publishes nothing; `recover_log` puts the lost events back, verified; the relay resumes by
//! itself. `reset_stream` starts the stream again from the log instead.

use std::path::Path;
use std::process::Command;

use async_nats::HeaderMap;
use relay::{RecoveryError, RelayConfig, RelayState};
use sqlx::{AssertSqlSafe, ConnectOptions};
use testkit::{TestDb, TestNats};

use crate::support::{self, Running};

/// The test database's URL for libpq (without sqlx's own query parameters).
fn libpq_url(db: &TestDb) -> String {
    db.url.split('?').next().unwrap_or(&db.url).to_owned()
}

/// `pg_dump -Fc` of the test database into `file`.
fn pg_dump(db: &TestDb, file: &Path) {
    let status = Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(file)
        .arg(libpq_url(db))
        .status()
        .expect("run pg_dump (PostgreSQL client tools)");
    assert!(status.success(), "pg_dump failed: {status}");
}

/// What an operator does to restore a backup: drop the database (ending its sessions, the
/// relay's included), create it again, `pg_restore` the dump into it in one transaction.
async fn restore(db: &TestDb, file: &Path) {
    let admin: sqlx::postgres::PgConnectOptions = testkit::admin_database_url().parse().unwrap();
    let mut conn = admin.connect().await.unwrap();
    for sql in [
        format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name),
        format!("CREATE DATABASE \"{}\"", db.name),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let file = file.to_owned();
    let url = libpq_url(db);
    let status = tokio::task::spawn_blocking(move || {
        Command::new("pg_restore")
            .args(["--single-transaction", "--exit-on-error", "--dbname"])
            .arg(url)
            .arg(file)
            .status()
    })
    .await
    .unwrap()
    .expect("run pg_restore");
    assert!(status.success(), "pg_restore failed: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restored_from_an_older_dump_is_recovered_from_the_stream() {
    let (db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let dump = std::env::temp_dir().join(format!("relay-recovery-{}.dump", db.name));

    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    let backed_up = support::append_dossiers(&log, "old", 3, 2).await;
    relay.published(backed_up).await;
    pg_dump(&db, &dump);
    // After the backup: new dossiers, and new events of a dossier the backup has.
    let old_0 = support::routing("district", "000.00.12.H40", "land");
    support::append(&log, "old-0", &old_0, 2, &["processing", "resolved"]).await;
    let head = support::append_dossiers(&log, "new", 30, 2).await;
    relay.published(head).await;
    let before = log.read_after(0, i64::MAX).await.unwrap();
    assert_eq!(before.len() as i64, head);

    // PostgreSQL restored from the older dump under the running relay.
    restore(&db, &dump).await;
    let _ = std::fs::remove_file(&dump);
    assert_eq!(
        log.head().await.unwrap(),
        backed_up,
        "the restore took the log back"
    );
    let status = relay
        .status_until("diverged", |s| s.state.is_diverged())
        .await;
    match &status.state {
        RelayState::Diverged {
            position,
            log_event_id: None,
            ..
        } => assert_eq!(*position, head),
        other => panic!("expected Diverged, got {other:?}"),
    }
    assert!(!relay.is_finished(), "the relay stays up");
    // The stream still holds exactly what it held: nothing published from the restored log.
    let at = relay::stream_position(&js, &cfg).await.unwrap();
    assert_eq!((at.position, at.last_sequence), (head, head as u64));

    // A dry run verifies and appends nothing.
    let dry = relay::recover_log(&log, &js, &cfg, true).await.unwrap();
    assert_eq!(
        (dry.log_head_before, dry.verified, dry.appended),
        (backed_up, head - backed_up, false)
    );
    assert_eq!(log.head().await.unwrap(), backed_up);

    let recovered = relay::recover_log(&log, &js, &cfg, false).await.unwrap();
    assert_eq!(recovered.verified, head - backed_up);
    assert!(recovered.appended);
    // Every event back, identical: ids, times, fingerprints, hashes.
    let after = log.read_after(0, i64::MAX).await.unwrap();
    assert_eq!(after, before);
    support::assert_chain_verifies(&after);
    assert_eq!(
        log.head_state().await.unwrap().chain_hash,
        before.last().unwrap().chain_hash
    );

    // Idempotent: nothing more to do.
    let again = relay::recover_log(&log, &js, &cfg, false).await.unwrap();
    assert_eq!((again.verified, again.appended), (0, false));

    // The relay resumes by itself and publishes what comes next, after the recovered events.
    relay
        .status_until("running", |s| s.state == RelayState::Running)
        .await;
    let next = support::append(&log, "old-0", &old_0, 4, &["returned"]).await;
    assert_eq!(next, 5);
    relay.published(head + 1).await;
    support::assert_stream_is_log(&js, &cfg, &log).await;
    // The write path goes on from the recovered dossier versions.
    assert_eq!(log.load_dossier("old-0").await.unwrap().len(), 5);
    relay.stop().await.unwrap();
}

/// Copies the stream of `from` into a new stream of `to`, message by message, with the body of
/// the message at `position` replaced by `alter`'s result and its headers by `headers`'.
async fn copy_stream(
    js: &async_nats::jetstream::Context,
    from: &RelayConfig,
    to: &RelayConfig,
    position: i64,
    alter: impl Fn(&[u8], &mut HeaderMap) -> Vec<u8>,
) {
    relay::ensure_stream(js, to).await.unwrap();
    for message in support::stream_messages(js, &from.stream).await {
        let mut headers = HeaderMap::new();
        for (name, values) in message.headers.iter() {
            let name: &[u8] = name.as_ref();
            let name = std::str::from_utf8(name).unwrap();
            if name.starts_with("Nats-Expected") {
                continue;
            }
            for value in values {
                headers.append(name, value.as_str());
            }
        }
        let mut body = message.payload.to_vec();
        if support::header(&message, "Dossier-Position") == position.to_string() {
            body = alter(&body, &mut headers);
        }
        js.publish_with_headers(format!("{}.copy", to.subject_prefix), headers, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// How a test alters a message's body (and headers).
type Alter = fn(&[u8], &mut HeaderMap) -> Vec<u8>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_stream_message_is_refused_and_nothing_is_appended() {
    let (_db_a, log_a) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let head = support::append_dossiers(&log_a, "a", 3, 2).await;
    let mut relay = Running::start(&log_a, js.clone(), cfg.clone());
    relay.published(head).await;
    relay.stop().await.unwrap();

    let forged_at = 4;
    let variants: [(&str, Alter, &str); 3] = [
        ("copy", |body, _| body.to_vec(), ""),
        (
            "body",
            |body, _| {
                String::from_utf8(body.to_vec())
                    .unwrap()
                    .replace("processing", "withdrawn")
                    .into_bytes()
            },
            "altered",
        ),
        (
            "rehashed",
            |body, headers| {
                let forged = String::from_utf8(body.to_vec())
                    .unwrap()
                    .replace("processing", "withdrawn")
                    .into_bytes();
                headers.insert(
                    "Dossier-Event-Hash",
                    hex::encode(eventlog::event_hash(&forged)).as_str(),
                );
                forged
            },
            "chain",
        ),
    ];
    for (i, (name, alter, refusal)) in variants.into_iter().enumerate() {
        let copy = RelayConfig {
            stream: format!("{}_{i}", cfg.stream),
            subject_prefix: format!("{}{i}", cfg.subject_prefix),
            ..cfg.clone()
        };
        copy_stream(&js, &cfg, &copy, forged_at, alter).await;
        // The database lost everything (an empty log): the copy holds it all.
        let (_db_b, log_b) = support::log().await;
        let outcome = relay::recover_log(&log_b, &js, &copy, false).await;
        let _ = js.delete_stream(&copy.stream).await;
        if refusal.is_empty() {
            assert_eq!(
                outcome.unwrap().verified,
                head,
                "{name}: the faithful copy recovers"
            );
            assert_eq!(
                log_b.read_after(0, i64::MAX).await.unwrap(),
                log_a.read_after(0, i64::MAX).await.unwrap()
            );
            continue;
        }
        match outcome {
            Err(RecoveryError::Refused { position, reason }) => {
                assert_eq!(position, forged_at, "{name}");
                assert!(reason.contains(refusal), "{name}: {reason}");
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        assert_eq!(
            log_b.head().await.unwrap(),
            0,
            "{name}: nothing appended, not even before the forged one"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_stream_starts_the_stream_again_from_the_log() {
    let (_db_a, log_a) = support::log().await;
    let (_db_b, log_b) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let head_a = support::append_dossiers(&log_a, "a", 2, 3).await;
    let mut relay = Running::start(&log_a, js.clone(), cfg.clone());
    relay.published(head_a).await;
    relay.stop().await.unwrap();

    // The relay of another database meets the stream: diverged.
    let head_b = support::append_dossiers(&log_b, "b", 3, 1).await;
    let mut relay_b = Running::start(&log_b, js.clone(), cfg.clone());
    relay_b
        .status_until("diverged", |s| s.state.is_diverged())
        .await;

    // Not without the stream's name.
    match relay::reset_stream(&log_b, &js, &cfg, "DOSSIER_EVENTS").await {
        Err(RecoveryError::NotConfirmed { .. }) => {}
        other => panic!("expected NotConfirmed, got {other:?}"),
    }
    support::assert_stream_is_log(&js, &cfg, &log_a).await;

    let reset = relay::reset_stream(&log_b, &js, &cfg, &cfg.stream)
        .await
        .unwrap();
    assert_eq!(
        (
            reset.deleted_messages,
            reset.deleted_position,
            reset.log_head
        ),
        (head_a as u64, head_a, head_b)
    );
    // The running relay resumes by itself and fills the new stream with log B.
    relay_b.published(head_b).await;
    relay_b
        .status_until("running", |s| s.state == RelayState::Running)
        .await;
    support::assert_stream_is_log(&js, &cfg, &log_b).await;
    relay_b.stop().await.unwrap();
}
