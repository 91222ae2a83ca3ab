//! The relay refuses to go on when the stream cannot be trusted to say where it stands.

use relay::{RecoveryError, RelayError, RelayState};
use testkit::TestNats;

use crate::support::{self, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_filled_from_another_log_is_reported_diverged_and_nothing_is_published() {
    let (_db_a, log_a) = support::log().await;
    let (_db_b, log_b) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);

    let head = support::append_dossiers(&log_a, "a", 2, 3).await;
    let mut relay = Running::start(&log_a, js.clone(), cfg.clone());
    relay.published(head).await;
    relay.stop().await.unwrap();

    // Another database, empty: the stream is ahead of it. The relay stays up, says so, and
    // publishes nothing.
    let mut relay_b = Running::start(&log_b, js.clone(), cfg.clone());
    let status = relay_b
        .status_until("diverged", |s| s.state.is_diverged())
        .await;
    match status.state {
        RelayState::Diverged {
            position,
            log_event_id: None,
            ..
        } => assert_eq!(position, head),
        other => panic!("expected Diverged with no log event, got {other:?}"),
    }
    assert!(status.state.is_stalled(), "a divergence counts as a stall");

    // Another database with as many events, but other ones: still diverged, now naming the
    // log's event at that position.
    support::append_dossiers(&log_b, "b", 2, 3).await;
    let status = relay_b
        .status_until("diverged with a log event", |s| {
            matches!(
                s.state,
                RelayState::Diverged {
                    log_event_id: Some(_),
                    ..
                }
            )
        })
        .await;
    assert_eq!(
        status.log_head, head,
        "the log head is reported while diverged"
    );
    assert!(
        !relay_b.is_finished(),
        "the relay does not exit on a divergence"
    );
    // Nothing was published from the wrong log.
    support::assert_stream_is_log(&js, &cfg, &log_a).await;
    // recover-log refuses: the stream does not continue log B.
    match relay::recover_log(&log_b, &js, &cfg, false).await {
        Err(RecoveryError::Refused { position, .. }) => assert_eq!(position, head),
        other => panic!("expected a refusal, got {other:?}"),
    }
    relay_b.stop().await.unwrap();
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
