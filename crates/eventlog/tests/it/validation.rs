//! Input the log refuses before touching the database.

use chrono::{TimeZone, Utc};
use eventlog::{AppendError, DossierAppend, ExpectedVersion};
use uuid::Uuid;

use crate::support::*;

async fn refused(log: &eventlog::EventLog, batch: Vec<DossierAppend>) -> (Uuid, String) {
    match log.append(batch).await {
        Err(AppendError::InvalidEvent { event_id, reason }) => (event_id, reason),
        other => panic!("expected InvalidEvent, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused() {
    let (_db, log) = log().await;

    for bad_type in ["", "Received", "received-1", "nhận", "a b"] {
        let mut e = events(1);
        e[0].event_type = bad_type.into();
        let id = e[0].event_id;
        let (event_id, reason) =
            refused(&log, vec![dossier("D", ExpectedVersion::NoStream, e)]).await;
        assert_eq!(event_id, id);
        assert!(reason.contains("event type"), "{reason}");
    }

    let mut e = events(2);
    e[1].payload = serde_json::json!({"amount": {"vnd": 1.5}});
    let id = e[1].event_id;
    let (event_id, reason) = refused(&log, vec![dossier("D", ExpectedVersion::NoStream, e)]).await;
    assert_eq!(event_id, id);
    assert!(reason.contains("float"), "{reason}");

    let mut e = events(1);
    e[0].payload = serde_json::json!(["nul \u{0} inside"]);
    refused(&log, vec![dossier("D", ExpectedVersion::NoStream, e)]).await;

    for bad_id in [String::new(), "x".repeat(129), "tab\there".into()] {
        let (_, reason) = refused(
            &log,
            vec![dossier(&bad_id, ExpectedVersion::NoStream, events(1))],
        )
        .await;
        assert!(reason.contains("dossier id"), "{reason}");
    }
    // 128 characters (not bytes) is fine.
    log.append(vec![dossier(
        &"đ".repeat(128),
        ExpectedVersion::NoStream,
        events(1),
    )])
    .await
    .expect("128 characters");

    // The same event id twice in one call, across dossiers.
    let e = events(1);
    let (event_id, reason) = refused(
        &log,
        vec![
            dossier("A", ExpectedVersion::NoStream, e.clone()),
            dossier("B", ExpectedVersion::NoStream, e.clone()),
        ],
    )
    .await;
    assert_eq!(event_id, e[0].event_id);
    assert!(reason.contains("more than once"), "{reason}");

    // The same dossier twice in one call.
    let (_, reason) = refused(
        &log,
        vec![
            dossier("A", ExpectedVersion::NoStream, events(1)),
            dossier("A", ExpectedVersion::Exact(1), events(1)),
        ],
    )
    .await;
    assert!(reason.contains("more than once"), "{reason}");

    // No events.
    let (event_id, _) = refused(&log, vec![dossier("A", ExpectedVersion::NoStream, vec![])]).await;
    assert!(event_id.is_nil());

    // Nil event id; a time outside the representable years.
    let mut e = events(1);
    e[0].event_id = Uuid::nil();
    refused(&log, vec![dossier("A", ExpectedVersion::NoStream, e)]).await;
    let mut e = events(1);
    e[0].occurred_at = Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap();
    refused(&log, vec![dossier("A", ExpectedVersion::NoStream, e)]).await;

    // Nothing but the valid dossier was written; an empty call is a no-op.
    assert_eq!(count_rows(&log).await, 1);
    let nothing = log.append(vec![]).await.unwrap();
    assert!(nothing.events.is_empty() && nothing.duplicate.is_empty());
    assert_eq!(log.head().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_is_unavailable() {
    let err = eventlog::EventLog::connect("postgres://127.0.0.1:99999999/x", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, eventlog::ConnectError::Invalid(_)), "{err:?}");

    // Nothing listens on port 1.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(1))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let log = eventlog::EventLog::from_pool(pool);
    let err = log
        .append(vec![dossier("D", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Unavailable(_)), "{err:?}");
    assert!(matches!(
        log.head().await,
        Err(eventlog::ReadError::Unavailable(_))
    ));
    assert!(matches!(
        log.migrate().await,
        Err(eventlog::MigrateError::Unavailable(_))
    ));
}

/// The canonical size of `event` as dossier `dossier_id`'s first event at the longest position
/// and `recorded_at` there can be: what the append's guard measures.
fn worst_case_size(dossier_id: &str, event: &eventlog::NewEvent) -> usize {
    let stored = eventlog::StoredEvent {
        position: i64::MIN,
        event_id: event.event_id,
        dossier_id: dossier_id.into(),
        version: 1,
        event_type: event.event_type.clone(),
        occurred_at: event.occurred_at,
        recorded_at: Utc
            .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
            .unwrap()
            .checked_add_signed(chrono::Duration::microseconds(999_999))
            .unwrap(),
        routing: routing(),
        payload: event.payload.clone(),
        fingerprint: event.fingerprint,
        event_hash: [0; 32],
        chain_hash: [0; 32],
    };
    eventlog::canonical_bytes(&stored).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_to_publish_is_refused_and_nothing_is_written() {
    use eventlog::MAX_EVENT_BYTES;
    let (_db, log) = log().await;
    let with_text = |n: usize| {
        let mut e = new_event("received");
        // A control character takes 6 bytes in the canonical JSON: the guard counts bytes.
        e.payload = serde_json::json!({"text": "\u{1}".repeat(n)});
        e
    };
    let base = worst_case_size("B", &with_text(0));
    assert_eq!(worst_case_size("B", &with_text(10)), base + 60);
    let room = MAX_EVENT_BYTES - base;
    let mut over = with_text(room / 6);
    over.payload = serde_json::json!({"text": format!("{}{}", "\u{1}".repeat(room / 6), "x".repeat(room % 6 + 1))});
    assert_eq!(worst_case_size("B", &over), MAX_EVENT_BYTES + 1);
    let mut fits = over.clone();
    fits.event_id = Uuid::new_v4();
    fits.payload = serde_json::json!({"text": format!("{}{}", "\u{1}".repeat(room / 6), "x".repeat(room % 6))});
    assert_eq!(worst_case_size("B", &fits), MAX_EVENT_BYTES);

    // One byte over: refused, and nothing of the call is written (the other dossier neither).
    let err = log
        .append(vec![
            dossier("A", ExpectedVersion::NoStream, events(1)),
            dossier("B", ExpectedVersion::NoStream, vec![over.clone()]),
        ])
        .await
        .unwrap_err();
    match err {
        AppendError::EventTooLarge {
            event_id,
            bytes,
            max,
        } => {
            assert_eq!(event_id, over.event_id);
            assert_eq!(bytes, MAX_EVENT_BYTES + 1);
            assert_eq!(max, MAX_EVENT_BYTES);
        }
        other => panic!("expected EventTooLarge, got {other:?}"),
    }
    assert_eq!(log.head().await.unwrap(), 0);
    assert_eq!(count_rows(&log).await, 0);

    // Exactly the limit is stored, and its canonical bytes are within it.
    let appended = log
        .append(vec![dossier("B", ExpectedVersion::NoStream, vec![fits])])
        .await
        .expect("an event of exactly MAX_EVENT_BYTES at the worst position");
    let stored = &appended.events[0];
    assert!(eventlog::canonical_bytes(stored).len() <= MAX_EVENT_BYTES);
    assert_eq!(log.head().await.unwrap(), 1);
}
