//! `ensure_stream`: creates, leaves alone, updates.

use std::time::Duration;

use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use relay::{RelayError, ensure_stream};
use testkit::TestNats;

use crate::support::{self, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_stream_is_idempotent_and_applies_a_changed_window() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);

    let created = ensure_stream(&js, &cfg).await.expect("creates the stream");
    let info = created.cached_info().clone();
    assert_eq!(info.config.subjects, vec![format!("{}.>", nats.prefix)]);
    assert_eq!(info.config.storage, StorageType::File);
    assert_eq!(info.config.num_replicas, 1);
    assert_eq!(
        info.config.duplicate_window,
        Duration::from_secs(2 * 60 * 60)
    );
    assert_eq!(info.config.retention, RetentionPolicy::Limits);
    assert_eq!(info.config.discard, DiscardPolicy::Old);
    assert!(info.config.allow_direct, "direct get (NATS 2.9)");
    assert!(info.config.deny_delete && info.config.deny_purge);

    let again = ensure_stream(&js, &cfg).await.expect("second call");
    assert_eq!(again.cached_info().created, info.created, "not recreated");
    assert_eq!(again.cached_info().config, info.config, "not changed");

    // With messages in it, a changed duplicate window updates the stream in place.
    let head = support::append_dossiers(&log, "e", 3, 2).await;
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(head).await;
    relay.stop().await.unwrap();

    let mut shorter = cfg.clone();
    shorter.duplicate_window = Duration::from_secs(10 * 60);
    let updated = ensure_stream(&js, &shorter).await.expect("update");
    assert_eq!(
        updated.cached_info().config.duplicate_window,
        Duration::from_secs(600)
    );
    assert_eq!(updated.cached_info().created, info.created);
    assert_eq!(
        updated.cached_info().state.messages,
        head as u64,
        "messages kept"
    );
    let same = ensure_stream(&js, &shorter).await.unwrap();
    assert_eq!(same.cached_info().config, updated.cached_info().config);

    // A relay started with the new configuration goes on from the stream.
    let head = support::append_dossiers(&log, "f", 2, 2).await;
    let mut relay = Running::start(&log, js.clone(), shorter.clone());
    relay.published(head).await;
    relay.stop().await.unwrap();
    support::assert_stream_is_log(&js, &shorter, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_before_any_request() {
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let mut cfg = support::config(&nats.stream, &nats.prefix);
    cfg.stream = "has.dots".into();
    assert!(matches!(
        ensure_stream(&js, &cfg).await,
        Err(RelayError::Config(_))
    ));
    let mut cfg = support::config(&nats.stream, &nats.prefix);
    cfg.replicas = 3;
    let refused = ensure_stream(&js, &cfg)
        .await
        .expect_err("3 replicas on one server");
    assert!(
        matches!(refused, RelayError::StreamSetup { .. }),
        "{refused:?}"
    );
    assert!(!refused.is_transient());
}
