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
