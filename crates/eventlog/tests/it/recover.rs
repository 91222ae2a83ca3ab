//! `append_recovered`: events the log lost, put back exactly, and nothing else.

use chrono::Duration;
use eventlog::{
    EventLog, ExpectedVersion, LogHead, RecoverError, StoredEvent, canonical_bytes, chain_hash,
    event_hash, parse_canonical,
};

use crate::support::{self, assert_valid_log, dossier, events};

/// Events' hashes recomputed as the log would have, continuing `head`'s chain, so that a test
/// can break one rule at a time while the hashes stay right.
fn rehash(head: &LogHead, events: &mut [StoredEvent]) {
    let mut chain = head.chain_hash;
    for e in events {
        e.event_hash = event_hash(&canonical_bytes(e));
        chain = chain_hash(&chain, &e.event_hash);
        e.chain_hash = chain;
    }
}

/// A log with 7 events: dossiers a (3 events, in two appends), b (2), c (2).
async fn source() -> (testkit::TestDb, EventLog, Vec<StoredEvent>) {
    let (db, log) = support::log().await;
    log.append(vec![
        dossier("a", ExpectedVersion::NoStream, events(2)),
        dossier("b", ExpectedVersion::NoStream, events(2)),
    ])
    .await
    .unwrap();
    log.append(vec![dossier("c", ExpectedVersion::NoStream, events(2))])
        .await
        .unwrap();
    log.append(vec![dossier("a", ExpectedVersion::Exact(2), events(1))])
        .await
        .unwrap();
    let all = log.read_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 7);
    (db, log, all)
}

async fn assert_untouched(log: &EventLog, head: &LogHead) {
    assert_eq!(log.head_state().await.unwrap(), *head);
    assert_eq!(
        log.read_after(0, 100).await.unwrap().len() as i64,
        head.position
    );
}

#[tokio::test]
async fn lost_events_are_put_back_exactly_and_the_log_goes_on() {
    let (_a, source_log, all) = source().await;
    let (_b, log) = support::log().await;
    // The restored log holds the first 3 events, as a backup would.
    let empty = log.head_state().await.unwrap();
    let head = log.append_recovered(&empty, &all[..3]).await.unwrap();
    assert_eq!(head.position, 3);
    let head = log.append_recovered(&head, &all[3..]).await.unwrap();
    assert_eq!(head, source_log.head_state().await.unwrap());
    assert_eq!(log.read_after(0, 100).await.unwrap(), all);
    // Nothing to do is nothing done.
    assert_eq!(log.append_recovered(&head, &[]).await.unwrap(), head);

    // The write path continues the recovered dossiers and the chain.
    log.append(vec![dossier("a", ExpectedVersion::Exact(3), events(1))])
        .await
        .unwrap();
    let after = log.read_after(0, 100).await.unwrap();
    assert_eq!(after.len(), 8);
    assert_valid_log(&after);
    // A client retrying a recovered event is answered as a duplicate (same fingerprint).
    let retry = source_log.load_dossier("c").await.unwrap();
    let again = log
        .append(vec![support::dossier(
            "c",
            ExpectedVersion::NoStream,
            retry
                .iter()
                .map(|e| eventlog::NewEvent {
                    event_id: e.event_id,
                    event_type: e.event_type.clone(),
                    occurred_at: e.occurred_at,
                    payload: e.payload.clone(),
                    fingerprint: e.fingerprint,
                })
                .collect(),
        )])
        .await
        .unwrap();
    assert_eq!(again.duplicate, vec![true]);
}

#[tokio::test]
async fn events_that_do_not_continue_the_log_are_refused_and_nothing_is_written() {
    let (_a, _source_log, all) = source().await;
    let (_b, log) = support::log().await;
    let empty = log.head_state().await.unwrap();
    let head = log.append_recovered(&empty, &all[..3]).await.unwrap();
    let rest = &all[3..];

    let refused = |outcome: Result<LogHead, RecoverError>, at: i64, what: &str| match outcome {
        Err(RecoverError::Refused { position, reason }) => {
            assert_eq!(position, at, "{what}: {reason}");
            reason
        }
        other => panic!("{what}: expected Refused, got {other:?}"),
    };

    // The head moved since the caller read it.
    match log.append_recovered(&empty, rest).await {
        Err(RecoverError::HeadMoved { expected, actual }) => assert_eq!((expected, actual), (0, 3)),
        other => panic!("expected HeadMoved, got {other:?}"),
    }
    // A gap.
    refused(log.append_recovered(&head, &rest[1..]).await, 5, "gap");
    // A payload altered after hashing.
    let mut altered = rest.to_vec();
    altered[1].payload = serde_json::json!({"n": 2});
    let reason = refused(log.append_recovered(&head, &altered).await, 5, "payload");
    assert!(reason.contains("event_hash"), "{reason}");
    // A chain hash that does not follow.
    let mut altered = rest.to_vec();
    altered[0].chain_hash[0] ^= 1;
    let reason = refused(log.append_recovered(&head, &altered).await, 4, "chain");
    assert!(reason.contains("chain"), "{reason}");
    // A dossier version that skips one (hashes right).
    let mut altered = rest.to_vec();
    altered[0].version += 1;
    rehash(&head, &mut altered);
    let reason = refused(log.append_recovered(&head, &altered).await, 4, "version");
    assert!(reason.contains("version"), "{reason}");
    // Another routing for a dossier the log has.
    let mut altered = rest.to_vec();
    let existing = altered.iter().position(|e| e.dossier_id == "a").unwrap();
    altered[existing].routing.sector = "other".into();
    rehash(&head, &mut altered);
    let at = altered[existing].position;
    let reason = refused(log.append_recovered(&head, &altered).await, at, "routing");
    assert!(reason.contains("routed"), "{reason}");
    // recorded_at going back.
    let mut altered = rest.to_vec();
    altered[1].recorded_at = altered[0].recorded_at - Duration::seconds(1);
    rehash(&head, &mut altered);
    refused(
        log.append_recovered(&head, &altered).await,
        5,
        "recorded_at",
    );
    // An event id the log already has (hashes right): the table's constraint refuses it.
    let mut altered = rest.to_vec();
    altered[0].event_id = all[0].event_id;
    rehash(&head, &mut altered);
    match log.append_recovered(&head, &altered).await {
        Err(RecoverError::Constraint(_)) => {}
        other => panic!("expected Constraint, got {other:?}"),
    }
    assert_untouched(&log, &head).await;
    // And the genuine events still go in.
    log.append_recovered(&head, rest).await.unwrap();
    assert_valid_log(&log.read_after(0, 100).await.unwrap());
}

#[test]
fn only_canonical_bytes_parse() {
    let mut event = StoredEvent {
        position: 9,
        event_id: uuid::Uuid::new_v4(),
        dossier_id: "QN-1".into(),
        version: 2,
        event_type: "received".into(),
        occurred_at: chrono::Utc::now(),
        recorded_at: chrono::Utc::now(),
        routing: support::routing(),
        payload: serde_json::json!({"b": [1, {"z": null, "a": "é\n"}], "a": true}),
        fingerprint: [7; 32],
        event_hash: [0; 32],
        chain_hash: [0; 32],
    };
    use chrono::SubsecRound;
    event.occurred_at = event.occurred_at.trunc_subsecs(6);
    event.recorded_at = event.recorded_at.trunc_subsecs(6);
    let previous = [3u8; 32];
    let bytes = canonical_bytes(&event);
    event.event_hash = event_hash(&bytes);
    event.chain_hash = chain_hash(&previous, &event.event_hash);
    assert_eq!(parse_canonical(&bytes, [7; 32], &previous).unwrap(), event);

    let text = String::from_utf8(bytes).unwrap();
    for other in [
        text.replacen(',', ", ", 1),
        text.replacen("\"a\":true", "\"a\": true", 1),
        text.replacen(".", ".0", 1),
        text.replacen("{\"agency\"", "{\"extra\":1,\"agency\"", 1),
        text.replacen("\"version\":2", "\"version\":2.0", 1),
    ] {
        assert!(
            parse_canonical(other.as_bytes(), [7; 32], &previous).is_err(),
            "{other}"
        );
    }
}
