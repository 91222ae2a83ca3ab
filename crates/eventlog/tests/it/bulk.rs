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
