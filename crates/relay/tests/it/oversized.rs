//! Events that do not fit in a NATS message: publication goes on past them, with a placeholder
//! in their place; and a server too small for the largest event the log accepts is refused.

use relay::{RecoveryError, RelayError, RelayState};
use testkit::NatsServer;

use crate::support::{self, Running};

/// A server that fits every event the write path accepts, and no more (plus 1 KiB).
fn just_enough(stream: &str) -> usize {
    eventlog::MAX_EVENT_BYTES + relay::max_headers_len(stream) + 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_the_server_is_published_as_a_placeholder_in_order() {
    let (_db, log) = support::log().await;
    let cfg = support::config("OVERSIZED", "over.dossier");
    let server = NatsServer::start_with_max_payload(Some(just_enough(&cfg.stream))).await;
    let js = async_nats::jetstream::new(support::connect_quickly(&server.url()).await);

    let before = support::append_dossiers(&log, "before", 2, 2).await;
    // An old row, larger than the server accepts (written before the write path had limits).
    let mut huge = support::new_event("received");
    huge.payload = serde_json::json!({ "scan": "x".repeat(eventlog::MAX_EVENT_BYTES + 8 * 1024) });
    let huge = support::store_old_row(&log, "huge", huge).await;
    assert_eq!(huge.position, before + 1);
    let head = support::append_dossiers(&log, "after", 2, 2).await;

    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(head).await;
    let status = relay
        .status_until("running and caught up", |s| {
            s.state == RelayState::Running && s.published == head
        })
        .await;
    assert_eq!(status.oversized_events, 1, "the placeholder is counted");
    assert_eq!(status.log_head, head);

    // Every position once, in order; the oversized one as a placeholder with every header.
    let messages = support::stream_messages(&js, &cfg.stream).await;
    let events = log.read_after(0, i64::MAX).await.unwrap();
    assert_eq!(messages.len(), events.len());
    for (message, event) in messages.iter().zip(&events) {
        assert_eq!(
            support::header(message, "Dossier-Position"),
            event.position.to_string()
        );
        assert_eq!(support::header(message, "Dossier-Id"), event.dossier_id);
        assert_eq!(
            message.subject.as_str(),
            relay::subject_for(&cfg.subject_prefix, event)
        );
        if event.position == huge.position {
            assert_eq!(
                support::header(message, "Dossier-Body-Omitted"),
                "too-large"
            );
            let body: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(body["omitted"], "too-large");
            assert_eq!(body["position"], huge.position);
            assert_eq!(body["event_id"], huge.event_id.to_string());
            assert_eq!(body["event_hash"], hex::encode(huge.event_hash));
            assert_eq!(body["bytes"], eventlog::canonical_bytes(&huge).len() as u64);
        } else {
            assert!(message.headers.get("Dossier-Body-Omitted").is_none());
            assert_eq!(
                message.payload.as_ref(),
                eventlog::canonical_bytes(event).as_slice()
            );
        }
    }

    // A placeholder cannot give its event back: recover-log into an empty log says so.
    let (_db2, empty) = support::log().await;
    match relay::recover_log(&empty, &js, &cfg, true).await {
        Err(RecoveryError::Refused { position, reason }) => {
            assert_eq!(position, huge.position);
            assert!(reason.contains("placeholder"), "{reason}");
        }
        other => panic!("expected a refusal at the placeholder, got {other:?}"),
    }
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_max_payload_cannot_hold_the_largest_event_is_refused_at_start() {
    let (_db, log) = support::log().await;
    let cfg = support::config("SMALL", "small.dossier");
    let needed = eventlog::MAX_EVENT_BYTES + relay::max_headers_len(&cfg.stream);
    let small = needed - 1;
    let server = NatsServer::start_with_max_payload(Some(small)).await;
    let js = async_nats::jetstream::new(support::connect_quickly(&server.url()).await);
    support::append_dossiers(&log, "d", 1, 1).await;

    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    let status = relay
        .status_until("stalled", |s| s.state.is_stalled())
        .await;
    match &status.state {
        RelayState::Stalled { reason, .. } => {
            assert!(reason.contains(&small.to_string()), "{reason}");
            assert!(reason.contains(&needed.to_string()), "{reason}");
        }
        other => panic!("expected Stalled, got {other:?}"),
    }
    match relay.ended().await {
        Err(RelayError::MaxPayloadTooSmall {
            max_payload,
            needed: n,
        }) => {
            assert_eq!(max_payload, small);
            assert_eq!(n, needed);
        }
        other => panic!("expected MaxPayloadTooSmall, got {other:?}"),
    }
    // Nothing was published (the stream was not even created).
    assert!(js.get_stream(&cfg.stream).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_holds_the_largest_event_is_accepted() {
    let (_db, log) = support::log().await;
    let cfg = support::config("ENOUGH", "enough.dossier");
    let needed = eventlog::MAX_EVENT_BYTES + relay::max_headers_len(&cfg.stream);
    let server = NatsServer::start_with_max_payload(Some(needed)).await;
    let js = async_nats::jetstream::new(support::connect_quickly(&server.url()).await);
    // The largest event the write path may store fits, with no placeholder.
    let mut event = support::new_event("received");
    event.payload = serde_json::json!({ "scan": "" });
    let base = {
        let mut probe = support::store_old_row(&log, "probe", event.clone()).await;
        probe.payload = serde_json::json!({ "scan": "" });
        eventlog::canonical_bytes(&probe).len()
    };
    let mut largest = support::new_event("received");
    // Same shape as the probe (a dossier id of the same length), padded up to exactly
    // MAX_EVENT_BYTES canonical bytes (the position gains no digit between 1 and 2).
    largest.payload = serde_json::json!({ "scan": "y".repeat(eventlog::MAX_EVENT_BYTES - base) });
    let stored = support::store_old_row(&log, "large", largest).await;
    assert_eq!(
        eventlog::canonical_bytes(&stored).len(),
        eventlog::MAX_EVENT_BYTES
    );
    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(stored.position).await;
    assert_eq!(relay.status.borrow().oversized_events, 0);
    relay.stop().await.unwrap();
}
