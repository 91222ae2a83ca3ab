//! Idempotent appends keyed by the client's event ids.

use eventlog::{AppendError, ExpectedVersion};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_returns_the_original_and_stores_once() {
    let (_db, log) = log().await;
    log.append(vec![dossier("other", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    let call = vec![dossier("D", ExpectedVersion::NoStream, events(3))];
    let first = log.append(call.clone()).await.unwrap();
    assert_eq!(first.duplicate, vec![false]);

    // Later appends move the head; the retry still answers with the original events.
    log.append(vec![dossier("D", ExpectedVersion::Exact(3), events(1))])
        .await
        .unwrap();
    let retry = log.append(call.clone()).await.unwrap();
    assert_eq!(retry.duplicate, vec![true]);
    assert_eq!(
        retry.events, first.events,
        "same positions, versions, recorded_at, hashes"
    );
    assert_eq!(count_rows(&log).await, 5);
    assert_eq!(log.head().await.unwrap(), 5);

    // In the caller's transaction too.
    let mut tx = log.pool().begin().await.unwrap();
    let again = log.append_in(&mut tx, call.clone()).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again, retry);

    // A retried dossier next to a new one: only the new one is written.
    let mixed = log
        .append(vec![
            call[0].clone(),
            dossier("E", ExpectedVersion::NoStream, events(2)),
        ])
        .await
        .unwrap();
    assert_eq!(mixed.duplicate, vec![true, false]);
    assert_eq!(mixed.events[..3], first.events[..]);
    assert_eq!(
        mixed.events[3..]
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        [6, 7]
    );
    assert_eq!(count_rows(&log).await, 7);
    assert_valid_log(&read_all(&log).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_event_id_is_refused() {
    let (_db, log) = log().await;
    let original = dossier("D", ExpectedVersion::NoStream, events(2));
    log.append(vec![original.clone()]).await.unwrap();
    let reused = original.events[1].event_id;

    // Same id, another fingerprint (another request).
    let mut other_request = original.clone();
    other_request.events[1].fingerprint = [9; 32];
    let err = log.append(vec![other_request]).await.unwrap_err();
    assert!(
        matches!(err, AppendError::EventIdReused { event_id } if event_id == reused),
        "{err:?}"
    );

    // Same id and fingerprint, but for another dossier.
    let mut other_dossier = original.clone();
    other_dossier.dossier_id = "E".into();
    let err = log.append(vec![other_dossier]).await.unwrap_err();
    assert!(matches!(err, AppendError::EventIdReused { .. }), "{err:?}");

    // Only part of the dossier's events exist.
    let mut partial = original.clone();
    partial.expected_version = ExpectedVersion::Exact(2);
    partial.events.push(new_event("paid"));
    let err = log.append(vec![partial]).await.unwrap_err();
    assert!(matches!(err, AppendError::EventIdReused { .. }), "{err:?}");

    // The whole call is refused, including an innocent dossier next to the offender.
    let mut one_reused = events(1);
    one_reused[0].event_id = reused;
    let err = log
        .append(vec![
            dossier("F", ExpectedVersion::NoStream, events(1)),
            dossier("G", ExpectedVersion::NoStream, one_reused),
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::EventIdReused { .. }), "{err:?}");

    assert_eq!(count_rows(&log).await, 2);
    assert_eq!(log.head().await.unwrap(), 2);
}

/// Two identical retries at once, deterministically: a held transaction keeps the sequencer
/// while both pass their (empty) idempotency lookup and block at the sequencer; when it
/// commits, one writes and the other hits the unique event id, retries from the top, and
/// answers with the same events as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_retries_racing_store_once() {
    let (_db, log) = log().await;
    let mut holder = log.pool().begin().await.unwrap();
    log.append_in(
        &mut holder,
        vec![dossier("H", ExpectedVersion::NoStream, events(1))],
    )
    .await
    .unwrap();

    let call = vec![dossier("D", ExpectedVersion::NoStream, events(3))];
    let before = log.group_commit_stats().calls;
    let one = tokio::spawn({
        let (log, call) = (log.clone(), call.clone());
        async move { log.append(call).await }
    });
    let two = tokio::spawn({
        let (log, call) = (log.clone(), call.clone());
        async move { log.append(call).await }
    });
    wait_for_racing_appends(&log, before, 2).await;
    holder.commit().await.unwrap();

    let one = one.await.unwrap().expect("first retry");
    let two = two.await.unwrap().expect("second retry");
    assert_eq!(one.events, two.events, "both callers get the same answer");
    let mut flags = vec![one.duplicate[0], two.duplicate[0]];
    flags.sort();
    assert_eq!(flags, vec![false, true], "exactly one of them wrote");
    assert_eq!(
        one.events.iter().map(|e| e.position).collect::<Vec<_>>(),
        [2, 3, 4]
    );
    assert_eq!(count_rows(&log).await, 4);
    assert_eq!(log.head().await.unwrap(), 4);
    assert_valid_log(&read_all(&log).await);
}

/// Many identical appends at once, free-running (no held sequencer), round after round: every
/// caller gets the one stored answer, never a Conflict. An identical append that commits between
/// a caller's lookups must look like a duplicate to it, which depends on the order of those
/// lookups (versions first, then event ids).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn free_running_identical_appends_never_conflict() {
    let (_db, log) = log().await;
    for round in 0..40 {
        let call = vec![dossier(
            &format!("R{round}"),
            ExpectedVersion::NoStream,
            events(1),
        )];
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let (log, call) = (log.clone(), call.clone());
                tokio::spawn(async move { log.append(call).await })
            })
            .collect();
        let mut answers = Vec::new();
        for caller in callers {
            answers.push(
                caller
                    .await
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e:?}")),
            );
        }
        assert!(
            answers.windows(2).all(|w| w[0].events == w[1].events),
            "round {round}: one answer"
        );
        assert_eq!(
            answers.iter().filter(|a| !a.duplicate[0]).count(),
            1,
            "round {round}: one writer"
        );
    }
    assert_eq!(count_rows(&log).await, 40);
    assert_valid_log(&read_all(&log).await);
}

/// Two writers on one dossier at once, both with the same (then current) expected version: the
/// loser gets a Conflict with the actual version, never an interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_on_one_dossier_conflict() {
    let (_db, log) = log().await;
    log.append(vec![dossier("D", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    let mut holder = log.pool().begin().await.unwrap();
    log.append_in(
        &mut holder,
        vec![dossier("H", ExpectedVersion::NoStream, events(1))],
    )
    .await
    .unwrap();

    let spawn = |n| {
        let log = log.clone();
        tokio::spawn(async move {
            log.append(vec![dossier("D", ExpectedVersion::Exact(1), events(n))])
                .await
        })
    };
    let before = log.group_commit_stats().calls;
    let (one, two) = (spawn(2), spawn(3));
    wait_for_racing_appends(&log, before, 2).await;
    holder.commit().await.unwrap();

    let results = [one.await.unwrap(), two.await.unwrap()];
    let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    let written = won[0].events.len() as u32;
    let lost = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    match lost {
        AppendError::Conflict {
            dossier_id,
            expected,
            actual,
        } => {
            assert_eq!(dossier_id, "D");
            assert_eq!(*expected, ExpectedVersion::Exact(1));
            assert_eq!(*actual, 1 + written);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let d = log.load_dossier("D").await.unwrap();
    assert_eq!(
        d.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=1 + written as i32).collect::<Vec<_>>()
    );
    assert_valid_log(&read_all(&log).await);
}
