//! Checked appends (`CheckedAppend`, `EventLog::append_checked`): the bulk import's path, which
//! skips the append's lookups. Same positions, hashes and chain as `append`; a stale check is
//! caught by the unique constraints and writes nothing.

use eventlog::{CheckedAppend, CheckedAppendError, ExpectedVersion};

use crate::support::*;

/// More events than `append::PARALLEL_HASH_MIN` (1024), so the event hashes are computed on
/// several threads: every hash and chain link is recomputed here one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_checked_append_chains_like_an_append() {
    let (_db, log) = log().await;
    // A plain append first, so the checked one continues an existing chain.
    log.append(vec![dossier("D-0", ExpectedVersion::NoStream, events(3))])
        .await
        .unwrap();
    let mut batch = vec![dossier("D-0", ExpectedVersion::Exact(3), events(2))];
    for i in 1..400 {
        batch.push(dossier(
            &format!("D-{i}"),
            ExpectedVersion::NoStream,
            events(7),
        ));
    }
    let ids: Vec<_> = batch
        .iter()
        .flat_map(|d| d.events.iter().map(|e| e.event_id))
        .collect();
    let checked = CheckedAppend::new(batch).expect("valid");
    assert_eq!(checked.len(), 2 + 399 * 7);
    let stored = log.append_checked(checked).await.expect("written");
    assert_eq!(
        stored.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        ids,
        "the stored events, in the order given"
    );
    assert_eq!(
        (stored[0].dossier_id.as_str(), stored[0].version),
        ("D-0", 4)
    );
    assert_eq!(
        (stored[1].dossier_id.as_str(), stored[1].version),
        ("D-0", 5)
    );
    assert_eq!(stored[2].version, 1);
    let all = read_all(&log).await;
    assert_eq!(all.len(), 3 + ids.len());
    assert_eq!(&all[3..], &stored[..], "returned as stored");
    assert_valid_log(&all);
    assert_eq!(log.head().await.unwrap(), all.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_checked_append_is_raced_and_writes_nothing() {
    let (_db, log) = log().await;
    let first = events(2);
    log.append(vec![dossier("D", ExpectedVersion::NoStream, first.clone())])
        .await
        .unwrap();
    let before = read_all(&log).await;

    // The dossier has events already: its versions 1 and 2 are taken.
    let stale_version = CheckedAppend::new(vec![
        dossier("NEW", ExpectedVersion::NoStream, events(1)),
        dossier("D", ExpectedVersion::NoStream, events(1)),
    ])
    .unwrap();
    assert!(matches!(
        log.append_checked(stale_version).await,
        Err(CheckedAppendError::Raced("dossier version"))
    ));
    // An id stored already (the lookup the caller did is out of date).
    let reused = CheckedAppend::new(vec![dossier(
        "OTHER",
        ExpectedVersion::NoStream,
        vec![first[0].clone()],
    )])
    .unwrap();
    assert!(matches!(
        log.append_checked(reused).await,
        Err(CheckedAppendError::Raced("event id"))
    ));

    assert_eq!(read_all(&log).await, before, "nothing written");
    assert_eq!(log.head().await.unwrap(), 2, "no position lost");
    // The log goes on from there, without a gap.
    log.append_checked(
        CheckedAppend::new(vec![dossier("D", ExpectedVersion::Exact(2), events(1))]).unwrap(),
    )
    .await
    .expect("written");
    assert_valid_log(&read_all(&log).await);
}

/// The binary `COPY` writes every value as `append` would: text with tabs, backslashes, newlines
/// and non-ASCII (no escaping in the binary format), payloads with nested values, escapes and the
/// largest integers, times before 2000 and with microseconds. Read back, each row is the row
/// returned and hashes to its stored hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_append_stores_every_value_exactly() {
    use chrono::TimeZone;

    let (_db, log) = log().await;
    let mut tricky = events(4);
    tricky[0].payload = serde_json::json!({
        "z": [1, -2, {"b": true, "a": null}, [], {}],
        "a\"\n\t\\": "x\u{1}y\u{7f}\u{2028}",
        "é": 18446744073709551615u64,
        "min": -9223372036854775807i64,
        "emoji": "Đơn đề nghị 📄",
    });
    tricky[1].occurred_at = chrono::Utc
        .with_ymd_and_hms(1999, 12, 31, 23, 59, 59)
        .unwrap()
        + chrono::Duration::microseconds(999_999);
    tricky[2].payload = serde_json::json!("a bare string\\");
    tricky[3].occurred_at = chrono::Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap();
    let mut odd = dossier(
        "QN-2024\\000001 hồ sơ \"x\"",
        ExpectedVersion::NoStream,
        tricky,
    );
    odd.routing.agency = "Sở Tư pháp\t\\ \"tỉnh\"\n".into();
    odd.routing.sector = String::new();
    let plain = dossier("D-plain", ExpectedVersion::NoStream, events(2));
    let stored = log
        .append_checked(CheckedAppend::new(vec![odd, plain]).expect("valid"))
        .await
        .expect("written");
    let all = read_all(&log).await;
    assert_eq!(all, stored, "read back exactly as returned");
    assert_valid_log(&all);
}

/// A checked append wakes the followers (`pg_notify` with the new head, at commit), as `append`
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checked_append_notifies_its_new_head() {
    let (_db, log) = log().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(log.pool())
        .await
        .expect("listener");
    listener.listen(eventlog::CHANNEL).await.expect("LISTEN");
    log.append(vec![dossier("D-0", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("notified")
        .expect("notification");
    assert_eq!(first.payload(), "1");
    log.append_checked(
        CheckedAppend::new(vec![dossier("D-1", ExpectedVersion::NoStream, events(3))]).unwrap(),
    )
    .await
    .expect("written");
    let second = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("notified")
        .expect("notification");
    assert_eq!(second.payload(), "4", "the new head");
}

/// A follower started before a mix of checked appends (large batches, written by `COPY`) and
/// plain appends, all racing, gets every event exactly once in position order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_checked_and_plain_appends_exactly_once() {
    use futures::StreamExt;

    let (_db, log) = log().await;
    let mut follower = log.follow(0);
    let batches = 6usize;
    let mut writers = Vec::new();
    for b in 0..batches {
        let checked = log.clone();
        writers.push(tokio::spawn(async move {
            let batch: Vec<_> = (0..200)
                .map(|i| dossier(&format!("B{b}-{i}"), ExpectedVersion::NoStream, events(3)))
                .collect();
            checked
                .append_checked(CheckedAppend::new(batch).unwrap())
                .await
                .expect("written")
                .len()
        }));
        let plain = log.clone();
        writers.push(tokio::spawn(async move {
            plain
                .append(vec![dossier(
                    &format!("L{b}"),
                    ExpectedVersion::NoStream,
                    events(1),
                )])
                .await
                .expect("appended")
                .events
                .len()
        }));
    }
    let mut total = 0;
    for writer in writers {
        total += writer.await.unwrap();
    }
    assert_eq!(total, batches * (600 + 1));
    let mut seen = Vec::with_capacity(total);
    while seen.len() < total {
        let event = tokio::time::timeout(std::time::Duration::from_secs(20), follower.next())
            .await
            .expect("the follower keeps up")
            .expect("never ends")
            .expect("read");
        seen.push(event);
    }
    assert_eq!(
        seen.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=total as i64).collect::<Vec<_>>(),
        "every position once, in order"
    );
    assert_eq!(seen, read_all(&log).await);
    assert_valid_log(&seen);
}
