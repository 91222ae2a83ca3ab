//! Appending and reading back: versions, positions, hashes, conflicts, atomic batches.

use std::collections::HashSet;

use chrono::{TimeZone, Utc};
use eventlog::{AppendError, ExpectedVersion, StoredEvent};
use sqlx::Row;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_read_back() {
    let (_db, log) = log().await;

    let mut first = events(3);
    // Nanoseconds are truncated to microseconds by the log.
    first[0].occurred_at = Utc.with_ymd_and_hms(2024, 3, 1, 8, 30, 0).unwrap()
        + chrono::Duration::nanoseconds(123_456_789);
    first[1].payload = serde_json::json!({
        "components": [{"code": "GT-01", "digitized": true}, {"code": "GT-02", "reused": false}],
        "fee_vnd": 150000,
        "big": 18446744073709551615u64,
        "neg": -42,
        "text": "Hồ sơ \"đất đai\"\n\t\\ \u{1}",
    });
    let a = log
        .append(vec![dossier(
            "QN-1",
            ExpectedVersion::NoStream,
            first.clone(),
        )])
        .await
        .expect("first append");
    assert_eq!(a.duplicate, vec![false]);
    assert_eq!(
        a.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        a.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        a.events[0].occurred_at,
        Utc.with_ymd_and_hms(2024, 3, 1, 8, 30, 0).unwrap()
            + chrono::Duration::microseconds(123_456)
    );
    for (stored, new) in a.events.iter().zip(&first) {
        assert_eq!(stored.event_id, new.event_id);
        assert_eq!(stored.dossier_id, "QN-1");
        assert_eq!(stored.event_type, new.event_type);
        assert_eq!(stored.payload, new.payload);
        assert_eq!(stored.fingerprint, new.fingerprint);
        assert_eq!(stored.routing, routing());
        // One sequencing step: one recorded_at for the whole call.
        assert_eq!(stored.recorded_at, a.events[0].recorded_at);
    }

    // Next call: a follow-up of QN-1 (its stored routing wins) and a new dossier.
    let mut follow_up = dossier("QN-1", ExpectedVersion::Exact(3), events(2));
    follow_up.routing.agency = "ignored".into();
    let b = log
        .append(vec![
            follow_up,
            dossier("QN-2", ExpectedVersion::NoStream, events(1)),
        ])
        .await
        .expect("second append");
    assert_eq!(b.duplicate, vec![false, false]);
    assert_eq!(
        b.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert_eq!(
        b.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [4, 5, 1]
    );
    assert_eq!(b.events[0].routing, routing());
    assert!(b.events[0].recorded_at >= a.events[2].recorded_at);

    // Everything read back is exactly what the appends returned.
    let all = read_all(&log).await;
    let returned: Vec<StoredEvent> = a.events.iter().chain(&b.events).cloned().collect();
    assert_eq!(all, returned);
    assert_valid_log(&all);
    assert_eq!(log.head().await.unwrap(), 6);

    let head_row = sqlx::query("SELECT position, chain_hash, recorded_at FROM log_head")
        .fetch_one(log.pool())
        .await
        .unwrap();
    assert_eq!(head_row.get::<i64, _>("position"), 6);
    assert_eq!(
        head_row.get::<Vec<u8>, _>("chain_hash"),
        all[5].chain_hash.to_vec()
    );

    let qn1 = log.load_dossier("QN-1").await.unwrap();
    assert_eq!(
        qn1.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(log.load_dossier("nope").await.unwrap().is_empty());

    let many = log
        .load_dossiers(&["QN-2".into(), "QN-1".into(), "nope".into()])
        .await
        .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(many["QN-1"], qn1);
    assert_eq!(many["QN-2"], vec![b.events[2].clone()]);

    let found = log
        .find_events(&[
            b.events[2].event_id,
            uuid::Uuid::new_v4(),
            a.events[1].event_id,
        ])
        .await
        .unwrap();
    assert_eq!(found, vec![a.events[1].clone(), b.events[2].clone()]);

    let page = log.read_after(2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.position).collect::<Vec<_>>(), [3, 4]);
    assert!(log.read_after(6, 10).await.unwrap().is_empty());
}

/// The canonical form, written out by hand for one stored event, and its hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canonical_bytes_and_hashes_match_the_documented_format() {
    let (_db, log) = log().await;
    let mut event = new_event("supplement_requested");
    event.occurred_at =
        Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(120);
    event.payload = serde_json::json!({"zeta": [2, {"y": false, "x": null}], "alpha": "a\"b"});
    let stored = log
        .append(vec![dossier(
            "D/1",
            ExpectedVersion::NoStream,
            vec![event.clone()],
        )])
        .await
        .unwrap()
        .events
        .remove(0);
    let recorded = stored
        .recorded_at
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let expected = format!(
        concat!(
            r#"{{"agency":"ubnd-huyen-son-tinh","dossier_id":"D/1","event_id":"{id}","#,
            r#""event_type":"supplement_requested","level":"district","#,
            r#""occurred_at":"2024-01-02T03:04:05.000120Z","#,
            r#""payload":{{"alpha":"a\"b","zeta":[2,{{"x":null,"y":false}}]}},"#,
            r#""position":1,"recorded_at":"{recorded}","sector":"dat_dai","version":1}}"#
        ),
        id = event.event_id.hyphenated(),
        recorded = recorded,
    );
    assert_eq!(
        String::from_utf8(eventlog::canonical_bytes(&stored)).unwrap(),
        expected
    );
    assert_valid_log(std::slice::from_ref(&stored));
    assert_eq!(stored.event_hash, eventlog::event_hash(expected.as_bytes()));
    assert_eq!(
        stored.chain_hash,
        eventlog::chain_hash(&eventlog::GENESIS_CHAIN_HASH, &stored.event_hash)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_expected_version_is_a_conflict() {
    let (_db, log) = log().await;
    log.append(vec![dossier("D", ExpectedVersion::NoStream, events(2))])
        .await
        .unwrap();

    for stale in [
        ExpectedVersion::Exact(1),
        ExpectedVersion::Exact(5),
        ExpectedVersion::NoStream,
    ] {
        let err = log
            .append(vec![dossier("D", stale, events(1))])
            .await
            .expect_err("stale version must be refused");
        match err {
            AppendError::Conflict {
                dossier_id,
                expected,
                actual,
            } => {
                assert_eq!(dossier_id, "D");
                assert_eq!(expected, stale);
                assert_eq!(actual, 2);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }
    // Exact on a dossier that does not exist.
    let err = log
        .append(vec![dossier(
            "missing",
            ExpectedVersion::Exact(1),
            events(1),
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(err, AppendError::Conflict { actual: 0, .. }),
        "{err:?}"
    );

    assert_eq!(count_rows(&log).await, 2);
    assert_eq!(log.head().await.unwrap(), 2);
    let ok = log
        .append(vec![dossier("D", ExpectedVersion::Exact(2), events(1))])
        .await
        .unwrap();
    assert_eq!((ok.events[0].position, ok.events[0].version), (3, 3));
}

/// A conflict in one dossier of a batch writes nothing of the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_dossier_batch_is_atomic() {
    let (_db, log) = log().await;
    log.append(vec![dossier("A", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();

    let err = log
        .append(vec![
            dossier("B", ExpectedVersion::NoStream, events(2)),
            dossier("A", ExpectedVersion::Exact(7), events(1)),
            dossier("C", ExpectedVersion::NoStream, events(1)),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, AppendError::Conflict { dossier_id, actual: 1, .. } if dossier_id == "A"),
        "{err:?}"
    );
    assert_eq!(count_rows(&log).await, 1);
    assert_eq!(log.head().await.unwrap(), 1);
    assert!(log.load_dossier("B").await.unwrap().is_empty());

    let ok = log
        .append(vec![
            dossier("B", ExpectedVersion::NoStream, events(2)),
            dossier("A", ExpectedVersion::Exact(1), events(1)),
            dossier("C", ExpectedVersion::NoStream, events(1)),
        ])
        .await
        .unwrap();
    assert_eq!(
        ok.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [2, 3, 4, 5]
    );
    assert_eq!(
        ok.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 2, 1]
    );
    assert_eq!(
        ok.events
            .iter()
            .map(|e| e.recorded_at)
            .collect::<HashSet<_>>()
            .len(),
        1,
        "one sequencing step for the whole batch"
    );
    assert_valid_log(&read_all(&log).await);
}

/// A large multi-dossier batch (the bulk-import path) in one call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_batch() {
    let (_db, log) = log().await;
    let batch: Vec<_> = (0..2_000)
        .map(|i| {
            dossier(
                &format!("IMPORT-{i:05}"),
                ExpectedVersion::NoStream,
                events(5),
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let done = log.append(batch).await.unwrap();
    eprintln!("bulk append of 10 000 events: {:?}", started.elapsed());
    assert_eq!(done.events.len(), 10_000);
    assert_eq!(done.duplicate, vec![false; 2_000]);
    let all = read_all(&log).await;
    assert_eq!(all, done.events);
    assert_valid_log(&all);
}

/// A rolled-back append (in the caller's transaction) leaves no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_append_leaves_no_gap() {
    let (_db, log) = log().await;
    log.append(vec![dossier("A", ExpectedVersion::NoStream, events(2))])
        .await
        .unwrap();

    let mut tx = log.pool().begin().await.unwrap();
    let held = log
        .append_in(
            &mut tx,
            vec![dossier("B", ExpectedVersion::NoStream, events(3))],
        )
        .await
        .unwrap();
    assert_eq!(
        held.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    tx.rollback().await.unwrap();

    assert_eq!(log.head().await.unwrap(), 2);
    let next = log
        .append(vec![dossier("B", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    assert_eq!(next.events[0].position, 3);
    assert_valid_log(&read_all(&log).await);
}

/// Checks take no lock: a transaction that has been refused (or has only read) while still
/// open does not hold the sequencer, and a caller's transaction can append after its own work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_transaction_that_has_not_sequenced_blocks_nobody() {
    let (_db, log) = log().await;
    let original = vec![dossier("A", ExpectedVersion::NoStream, events(1))];
    log.append(original.clone()).await.unwrap();

    // Refused by the version check, transaction left open.
    let mut refused = log.pool().begin().await.unwrap();
    let err = log
        .append_in(
            &mut refused,
            vec![dossier("A", ExpectedVersion::NoStream, events(1))],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err:?}");

    // Answered as a duplicate (read only), transaction left open.
    let mut retried = log.pool().begin().await.unwrap();
    let dup = log.append_in(&mut retried, original).await.unwrap();
    assert_eq!(dup.duplicate, vec![true]);

    // Both transactions are still open; another writer goes through.
    let other = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        log.append(vec![dossier("B", ExpectedVersion::NoStream, events(1))]),
    )
    .await
    .expect("an open, unsequenced transaction must not block appends")
    .unwrap();
    assert_eq!(other.events[0].position, 2);

    // The refused transaction is still usable: it may append something valid and commit.
    let late = log
        .append_in(
            &mut refused,
            vec![dossier("A", ExpectedVersion::Exact(1), events(1))],
        )
        .await
        .unwrap();
    refused.commit().await.unwrap();
    retried.rollback().await.unwrap();
    assert_eq!(late.events[0].position, 3);
    assert_valid_log(&read_all(&log).await);
}
