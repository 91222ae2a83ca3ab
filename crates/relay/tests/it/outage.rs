//! NATS goes away (a private server: never the machine's shared one) and comes back.

use async_nats::connection::State;
use async_nats::jetstream;
use testkit::NatsServer;

use relay::RelayState;

use crate::support::{self, Running, assert_stream_is_log, eventually, stream_reaches};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_appended_while_nats_is_down_are_published_once_when_it_returns() {
    let (_db, log) = support::log().await;
    let mut server = NatsServer::start().await;
    let client = support::connect_quickly(&server.url()).await;
    let js = jetstream::new(client.clone());
    let cfg = support::config("OUTAGE", "outage.dossier");

    let head = support::append_dossiers(&log, "before", 10, 2).await;
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(head).await;

    server.stop().await;
    eventually("the client to notice", || async {
        client.connection_state() != State::Connected
    })
    .await;
    // The relay is woken by these appends, fails to publish them, backs off and retries.
    let failed_before = *relay.failures.borrow();
    let head = support::append_dossiers(&log, "during", 15, 2).await;
    relay.failed(failed_before + 2).await;
    assert_eq!(
        *relay.progress.borrow(),
        20,
        "nothing published while NATS is down"
    );

    server.restart().await;
    relay.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;

    // And it goes on normally afterwards.
    let head = support::append_dossiers(&log, "after", 5, 1).await;
    relay.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_started_while_nats_is_down_waits_for_it() {
    let (_db, log) = support::log().await;
    let mut server = NatsServer::start().await;
    let client = support::connect_quickly(&server.url()).await;
    let js = jetstream::new(client.clone());
    let cfg = support::config("OUTAGE", "outage.dossier");
    server.stop().await;
    eventually("the client to notice", || async {
        client.connection_state() != State::Connected
    })
    .await;

    let head = support::append_dossiers(&log, "x", 8, 3).await;
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.failed(2).await;
    assert_eq!(*relay.progress.borrow(), 0);
    server.restart().await;
    relay.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_that_lost_its_data_gets_everything_again_once() {
    let (_db, log) = support::log().await;
    let mut server = NatsServer::start().await;
    let client = support::connect_quickly(&server.url()).await;
    let js = jetstream::new(client.clone());
    let cfg = support::config("WIPED", "wiped.dossier");

    let head = support::append_dossiers(&log, "before", 20, 2).await;
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(head).await;

    // NATS comes back empty. The relay is idle; it notices the reconnection, recreates the
    // stream and republishes the whole log, without waiting for a new event.
    server.wipe_and_restart().await;
    stream_reaches(&js, &cfg, head).await;
    assert_stream_is_log(&js, &cfg, &log).await;

    // Wiped again while events keep coming.
    server.wipe_and_restart().await;
    let head = support::append_dossiers(&log, "after", 10, 3).await;
    stream_reaches(&js, &cfg, head).await;
    relay.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;
    relay.stop().await.unwrap();
}

/// NATS lost acknowledged messages (the stream's tail) while the relay was not looking: its next
/// publication expects a sequence the stream no longer has, is refused ("wrong last
/// sequence"), and the relay resyncs and republishes from what the stream really holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_lost_its_tail_is_completed_in_order() {
    let (_db, log) = support::log().await;
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let head = support::append_dossiers(&log, "before", 20, 2).await;
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(head).await;
    let failed_before = *relay.failures.borrow();

    // Replace the stream by one holding only positions 1..=10, as the relay would have written.
    js.delete_stream(&nats.stream).await.unwrap();
    relay::ensure_stream(&js, &cfg).await.unwrap();
    let kept = log.read_after(0, 10).await.unwrap();
    for (i, event) in kept.iter().enumerate() {
        let message = jetstream::message::PublishMessage::build()
            .payload(eventlog::canonical_bytes(event).into())
            .headers(relay::headers_for(&cfg.stream, event, i as u64));
        let ack = js
            .send_publish(relay::subject_for(&cfg.subject_prefix, event), message)
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(ack.sequence, i as u64 + 1);
    }

    let head = support::append_dossiers(&log, "after", 3, 2).await;
    relay.failed(failed_before + 1).await;
    stream_reaches(&js, &cfg, head).await;
    relay.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_that_go_on_show_as_stalled_until_publication_moves_again() {
    let (_db, log) = support::log().await;
    let mut server = NatsServer::start().await;
    let client = support::connect_quickly(&server.url()).await;
    let js = jetstream::new(client.clone());
    let mut cfg = support::config("STALL", "stall.dossier");
    cfg.stall_after = std::time::Duration::from_secs(2);

    let head = support::append_dossiers(&log, "before", 2, 1).await;
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(head).await;
    relay
        .status_until("running", |s| s.state == RelayState::Running)
        .await;

    server.stop().await;
    let head = support::append_dossiers(&log, "during", 2, 1).await;
    // First retrying (not yet an alert), then stalled, with the reason and the log's head.
    let retrying = relay
        .status_until("retrying", |s| {
            matches!(s.state, RelayState::Retrying { .. })
        })
        .await;
    assert!(!retrying.state.is_stalled());
    let stalled = relay
        .status_until("stalled", |s| matches!(s.state, RelayState::Stalled { .. }))
        .await;
    assert!(stalled.state.is_stalled() && !stalled.state.is_diverged());
    assert_eq!(stalled.log_head, head);
    assert_eq!(
        stalled.published,
        head - 2,
        "nothing published while NATS is down"
    );
    assert!(stalled.failures >= 2, "{stalled:?}");

    server.restart().await;
    relay.published(head).await;
    let running = relay
        .status_until("running and caught up", |s| {
            s.state == RelayState::Running && s.published == head
        })
        .await;
    assert_eq!(running.log_head, head);
    relay.stop().await.unwrap();
}
