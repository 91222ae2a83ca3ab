//! Several relays at once: the expected-last-sequence rule lets one win each append.

use testkit::TestNats;

use crate::support::{self, Running, append, assert_stream_is_log, routing, stream_reaches};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_each_event_once() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let mut cfg = support::config(&nats.stream, &nats.prefix);
    cfg.max_batch = 7;

    // A backlog both start on at once, then appends while both run.
    let head = support::append_dossiers(&log, "backlog", 40, 3).await;
    let mut one = Running::start(&log, js.clone(), cfg.clone());
    let mut two = Running::start(&log, nats.jetstream(), cfg.clone());
    let land = routing("district", "000.00.12.H40", "land");
    let mut version = 0;
    for _ in 0..30 {
        version = append(&log, "live", &land, version, &["processing", "transferred"]).await;
    }
    let head = head + 60;
    assert_eq!(log.head().await.unwrap(), head);

    stream_reaches(&js, &cfg, head).await;
    one.published(head).await;
    two.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_relays_on_separate_connections_publish_each_event_once() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let cfg = support::config(&nats.stream, &nats.prefix);
    let mut relays = Vec::new();
    let mut contexts = Vec::new();
    for _ in 0..3 {
        let client = async_nats::connect(&nats.url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        relays.push(Running::start(&log, js.clone(), cfg.clone()));
        contexts.push(js);
    }
    let mut head = 0;
    for round in 0..5 {
        head = support::append_dossiers(&log, &format!("round{round}"), 10, 2).await;
    }
    stream_reaches(&contexts[0], &cfg, head).await;
    for relay in &mut relays {
        relay.published(head).await;
    }
    assert_stream_is_log(&contexts[0], &cfg, &log).await;
    for relay in relays {
        relay.stop().await.unwrap();
    }
}
