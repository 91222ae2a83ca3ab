//! The relay refuses to go on when the stream cannot be trusted to say where it stands.

use relay::RelayError;
use testkit::TestNats;

use crate::support::{self, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_filled_from_another_log_is_refused() {
    let (_db_a, log_a) = support::log().await;
    let (_db_b, log_b) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);

    let head = support::append_dossiers(&log_a, "a", 2, 3).await;
    let mut relay = Running::start(&log_a, js.clone(), cfg.clone());
    relay.published(head).await;
    relay.stop().await.unwrap();

    // Another database, empty: the stream is ahead of it.
    let outcome = Running::start(&log_b, js.clone(), cfg.clone())
        .ended()
        .await;
    match outcome {
        Err(RelayError::Diverged {
            position,
            log_event_id: None,
            ..
        }) => assert_eq!(position, head),
        other => panic!("expected Diverged, got {other:?}"),
    }

    // Another database with as many events, but other ones.
    support::append_dossiers(&log_b, "b", 2, 3).await;
    let outcome = Running::start(&log_b, js.clone(), cfg.clone())
        .ended()
        .await;
    assert!(
        matches!(
            outcome,
            Err(RelayError::Diverged {
                log_event_id: Some(_),
                ..
            })
        ),
        "{outcome:?}"
    );
    // Nothing was published from the wrong log.
    support::assert_stream_is_log(&js, &cfg, &log_a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_another_publisher_is_refused() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    relay::ensure_stream(&js, &cfg).await.unwrap();
    js.publish(format!("{}.x.y.z.w", nats.prefix), "not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    support::append_dossiers(&log, "f", 1, 1).await;
    let outcome = Running::start(&log, js.clone(), cfg).ended().await;
    assert!(
        matches!(outcome, Err(RelayError::ForeignMessage { sequence: 1, .. })),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_nats_stops_the_relay_instead_of_skipping_it() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let head = support::append_dossiers(&log, "ok", 2, 1).await;
    let mut event = support::new_event("received");
    event.payload = serde_json::json!({ "scan": "x".repeat(2 * 1024 * 1024) });
    log.append(vec![eventlog::DossierAppend {
        dossier_id: "huge".into(),
        expected_version: eventlog::ExpectedVersion::NoStream,
        routing: support::routing("district", "000.00.12.H40", "land"),
        events: vec![event],
    }])
    .await
    .unwrap();

    let relay = Running::start(&log, js.clone(), cfg.clone());
    match relay.ended().await {
        Err(RelayError::TooLarge { position, .. }) => assert_eq!(position, head + 1),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // The events before it were published (in the same batch); nothing after it.
    support::stream_reaches(&js, &cfg, head).await;
    let at = relay::stream_position(&js, &cfg).await.unwrap();
    assert_eq!(
        at.position, head,
        "nothing from the event that does not fit on"
    );
}
