//! Helpers shared by the relay's integration tests.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, message::StreamMessage};
use chrono::Utc;
use eventlog::{DossierAppend, EventLog, ExpectedVersion, NewEvent, Routing, StoredEvent};
use relay::{Relay, RelayConfig, RelayError, RelayStatus};
use testkit::TestDb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest a test waits for a condition before failing.
pub const WAIT: Duration = Duration::from_secs(60);

/// Relay logs on stderr when `RUST_LOG` is set (e.g. `RUST_LOG=relay=debug`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A fresh database with the log's migrations applied.
pub async fn log() -> (TestDb, EventLog) {
    init_tracing();
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.expect("migrate");
    (db, log)
}

/// A configuration for tests: small batches (so a backlog takes several), short backoff and
/// poll, so recoveries are quick.
pub fn config(stream: &str, prefix: &str) -> RelayConfig {
    RelayConfig {
        stream: stream.to_owned(),
        subject_prefix: prefix.to_owned(),
        max_batch: 25,
        publish_timeout: Duration::from_secs(2),
        max_backoff: Duration::from_millis(400),
        poll_interval: Duration::from_millis(500),
        ..RelayConfig::default()
    }
}

/// A client for a private server that reconnects quickly, forever.
pub async fn connect_quickly(url: &str) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_| Duration::from_millis(100))
        .connect(url)
        .await
        .expect("connect to the private nats-server")
}

pub fn routing(level: &str, agency: &str, sector: &str) -> Routing {
    Routing {
        level: level.into(),
        agency: agency.into(),
        sector: sector.into(),
    }
}

pub fn new_event(event_type: &str) -> NewEvent {
    let event_id = Uuid::new_v4();
    let mut fingerprint = [0u8; 32];
    fingerprint[..16].copy_from_slice(event_id.as_bytes());
    NewEvent {
        event_id,
        event_type: event_type.into(),
        occurred_at: Utc::now(),
        payload: serde_json::json!({"note": format!("event {event_id}"), "n": 1}),
        fingerprint,
    }
}

/// Appends `types` to dossier `id`, which has `version` events so far; returns the new version.
pub async fn append(
    log: &EventLog,
    id: &str,
    routing: &Routing,
    version: u32,
    types: &[&str],
) -> u32 {
    let expected_version = if version == 0 {
        ExpectedVersion::NoStream
    } else {
        ExpectedVersion::Exact(version)
    };
    log.append(vec![DossierAppend {
        dossier_id: id.to_owned(),
        expected_version,
        routing: routing.clone(),
        events: types.iter().map(|t| new_event(t)).collect(),
    }])
    .await
    .expect("append");
    version + types.len() as u32
}

/// Appends `dossiers` new dossiers of `events_each` events each (`received`, then `processing`),
/// one append per dossier. Returns the log's head.
pub async fn append_dossiers(
    log: &EventLog,
    tag: &str,
    dossiers: usize,
    events_each: usize,
) -> i64 {
    let routing = routing("district", "000.00.12.H40", "land");
    let mut types = vec!["received"];
    types.resize(events_each.max(1), "processing");
    for d in 0..dossiers {
        append(log, &format!("{tag}-{d}"), &routing, 0, &types).await;
    }
    log.head().await.expect("head")
}

/// A relay running in a task.
pub struct Running {
    pub token: CancellationToken,
    pub progress: watch::Receiver<i64>,
    pub failures: watch::Receiver<u64>,
    pub status: watch::Receiver<RelayStatus>,
    handle: JoinHandle<Result<(), RelayError>>,
}

impl Running {
    pub fn start(log: &EventLog, js: jetstream::Context, cfg: RelayConfig) -> Running {
        let relay = Relay::new(log.clone(), js, cfg);
        let progress = relay.progress();
        let failures = relay.failures();
        let status = relay.status();
        let token = CancellationToken::new();
        let handle = tokio::spawn(relay.run(token.clone()));
        Running {
            token,
            progress,
            failures,
            status,
            handle,
        }
    }

    /// Waits until the relay's status satisfies `what`; returns that status.
    pub async fn status_until(
        &mut self,
        description: &str,
        what: impl Fn(&RelayStatus) -> bool,
    ) -> RelayStatus {
        let wait = async { self.status.wait_for(|s| what(s)).await.map(|s| s.clone()) };
        match tokio::time::timeout(WAIT, wait).await {
            Ok(Ok(status)) => status,
            Ok(Err(_)) => panic!("relay ended before its status was {description}"),
            Err(_) => panic!(
                "relay status not {description} within {WAIT:?}: {:?}",
                *self.status.borrow()
            ),
        }
    }

    /// Whether `run` has returned.
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits until the relay reports `position` as published.
    pub async fn published(&mut self, position: i64) {
        let wait = async { self.progress.wait_for(|p| *p >= position).await.map(|_| ()) };
        let reached = tokio::time::timeout(WAIT, wait).await;
        match reached {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("relay ended before publishing position {position}"),
            Err(_) => panic!(
                "relay did not publish position {position} within {WAIT:?} (at {})",
                *self.progress.borrow()
            ),
        }
    }

    /// Waits until the relay has met at least `count` transient failures since it started.
    pub async fn failed(&mut self, count: u64) {
        let wait = async { self.failures.wait_for(|n| *n >= count).await.map(|_| ()) };
        match tokio::time::timeout(WAIT, wait).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("relay ended before failing {count} times"),
            Err(_) => panic!("relay did not fail {count} times within {WAIT:?}"),
        }
    }

    /// Cancels the relay and returns what `run` returned.
    pub async fn stop(self) -> Result<(), RelayError> {
        self.token.cancel();
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("relay stops when cancelled")
            .expect("relay task did not panic")
    }

    /// What `run` returns by itself (a permanent error), within the wait bound.
    pub async fn ended(self) -> Result<(), RelayError> {
        let outcome = tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("relay ended by itself");
        outcome.expect("relay task did not panic")
    }
}

/// Polls `check` until it returns true, within [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the stream's last message carries log position `position`.
pub async fn stream_reaches(js: &jetstream::Context, cfg: &RelayConfig, position: i64) {
    eventually(
        &format!("stream {} at position {position}", cfg.stream),
        || async {
            matches!(relay::stream_position(js, cfg).await, Ok(at) if at.position >= position)
        },
    )
    .await;
}

/// Every message of the stream, in sequence order.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<StreamMessage> {
    let stream = js.get_stream(stream).await.expect("stream exists");
    let state = stream.cached_info().state.clone();
    let mut messages = Vec::with_capacity(state.messages as usize);
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        messages.push(
            stream
                .get_raw_message(sequence)
                .await
                .unwrap_or_else(|e| panic!("message {sequence}: {e}")),
        );
    }
    messages
}

pub fn header<'a>(message: &'a StreamMessage, name: &str) -> &'a str {
    message
        .headers
        .get_last(name)
        .unwrap_or_else(|| panic!("message {} has no {name} header", message.sequence))
        .as_str()
}

/// The stream holds exactly the log, once each, in position order, each message with the
/// event's subject, headers and canonical bytes.
pub async fn assert_stream_is_log(js: &jetstream::Context, cfg: &RelayConfig, log: &EventLog) {
    let events: Vec<StoredEvent> = log.read_after(0, i64::MAX).await.expect("read the log");
    let messages = stream_messages(js, &cfg.stream).await;
    let positions: Vec<i64> = messages
        .iter()
        .map(|m| header(m, "Dossier-Position").parse().expect("position"))
        .collect();
    let expected: Vec<i64> = events.iter().map(|e| e.position).collect();
    assert_eq!(
        positions, expected,
        "the stream holds every position once, in order"
    );
    assert!(
        messages
            .windows(2)
            .all(|w| w[1].sequence == w[0].sequence + 1),
        "sequences are contiguous"
    );
    for (message, event) in messages.iter().zip(&events) {
        assert_eq!(
            message.subject.as_str(),
            relay::subject_for(&cfg.subject_prefix, event)
        );
        assert_eq!(header(message, "Nats-Msg-Id"), event.event_id.to_string());
        assert_eq!(header(message, "Dossier-Id"), event.dossier_id);
        assert_eq!(
            header(message, "Dossier-Version"),
            event.version.to_string()
        );
        assert_eq!(header(message, "Dossier-Event-Type"), event.event_type);
        assert_eq!(header(message, "Content-Type"), "application/json");
        assert_eq!(
            message.payload.as_ref(),
            eventlog::canonical_bytes(event).as_slice(),
            "payload is the canonical bytes of position {}",
            event.position
        );
    }
}

/// Stores `event` as the next event of the log, as a new dossier, bypassing the write path's
/// checks (its size limit above all): an "old row" written before the limits existed. Goes
/// through `append_recovered`, which computes nothing but checks the chain, so the row is
/// exactly what the log would have stored.
pub async fn store_old_row(log: &EventLog, dossier_id: &str, event: NewEvent) -> StoredEvent {
    use chrono::SubsecRound;
    let head = log.head_state().await.expect("head");
    let mut stored = StoredEvent {
        position: head.position + 1,
        event_id: event.event_id,
        dossier_id: dossier_id.to_owned(),
        version: 1,
        event_type: event.event_type,
        occurred_at: event.occurred_at.trunc_subsecs(6),
        recorded_at: Utc::now().trunc_subsecs(6).max(head.recorded_at),
        routing: routing("district", "000.00.12.H40", "land"),
        payload: event.payload,
        fingerprint: event.fingerprint,
        event_hash: [0; 32],
        chain_hash: [0; 32],
    };
    stored.event_hash = eventlog::event_hash(&eventlog::canonical_bytes(&stored));
    stored.chain_hash = eventlog::chain_hash(&head.chain_hash, &stored.event_hash);
    log.append_recovered(&head, std::slice::from_ref(&stored))
        .await
        .expect("store the old row");
    stored
}

/// The log's hash chain recomputed from the rows, as an auditor does: each `event_hash` from
/// the event's canonical bytes, each `chain_hash` from the previous one, positions 1, 2, ….
pub fn assert_chain_verifies(events: &[StoredEvent]) {
    let mut chain = eventlog::GENESIS_CHAIN_HASH;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as i64 + 1, "positions are gapless");
        assert_eq!(
            eventlog::event_hash(&eventlog::canonical_bytes(e)),
            e.event_hash,
            "event_hash of position {}",
            e.position
        );
        chain = eventlog::chain_hash(&chain, &e.event_hash);
        assert_eq!(chain, e.chain_hash, "chain_hash of position {}", e.position);
    }
}
