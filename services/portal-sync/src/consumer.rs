//! The feed: a durable JetStream pull consumer of its own (`portal.consumer`, default
//! `portal-sync`) on `{prefix}.>`. It only notes, per message, "dossier D has version V"
//! ([`store::announce`], one statement per batch of what has arrived), then acks and wakes the
//! sender; the sender reads the dossier from the log. Why the stream and not the log: the
//! stream already is the ordered, resumable feed other consumers use (the durable consumer is
//! the cursor), and a failed note is simply redelivered. A message is acked only after its note
//! committed, so a crash loses nothing (the note is idempotent: `GREATEST`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use eventlog::EventLog;
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use writepath::Clock;

use crate::store;

/// Where the consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    pub stream: String,
    pub subject_prefix: String,
    pub durable: String,
    /// JetStream redelivers a message not acknowledged within it.
    pub ack_wait: Duration,
    /// Messages noted in one statement.
    pub max_batch: usize,
}

impl FeedConfig {
    fn pull_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some("portal-sync: national portal synchronisation".to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            filter_subject: format!("{}.>", self.subject_prefix),
            ..Default::default()
        }
    }
}

/// Consumes until `shutdown`; NATS and PostgreSQL failures are logged and retried with a
/// backoff up to 5 s. `position` holds the highest log position noted.
pub async fn run(
    log: EventLog,
    js: jetstream::Context,
    config: FeedConfig,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    position: Arc<AtomicI64>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match consume(&log, &js, &config, &clock, &wake, &position, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, ?backoff, "portal-sync feed interrupted; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn consume(
    log: &EventLog,
    js: &jetstream::Context,
    config: &FeedConfig,
    clock: &Arc<dyn Clock>,
    wake: &Notify,
    position: &AtomicI64,
    shutdown: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream(&config.stream).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&config.durable, config.pull_config())
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.max_batch)
        .messages()
        .await?;
    tracing::info!(stream = %config.stream, consumer = %config.durable, "portal-sync consuming");
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = messages.next() => match next {
                Some(message) => message?,
                None => return Err("the consumer's message stream ended".into()),
            },
        };
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(message))) => batch.push(message),
                Some(Some(Err(e))) => {
                    note(log, batch, clock, wake, position).await?;
                    return Err(e.into());
                }
                _ => break,
            }
        }
        note(log, batch, clock, wake, position).await?;
    }
}

/// Notes a batch and acks it (or naks it when the database failed).
async fn note(
    log: &EventLog,
    batch: Vec<jetstream::Message>,
    clock: &Arc<dyn Clock>,
    wake: &Notify,
    position: &AtomicI64,
) -> Result<(), async_nats::Error> {
    let mut highest: BTreeMap<String, i32> = BTreeMap::new();
    let mut noted = Vec::with_capacity(batch.len());
    let mut max_position = 0;
    for message in batch {
        match parse(&message) {
            Some((id, version, pos)) => {
                let v = highest.entry(id).or_insert(version);
                *v = (*v).max(version);
                max_position = max_position.max(pos);
                noted.push(message);
            }
            None => {
                tracing::error!(subject = %message.subject, "message without valid Dossier-Id / Dossier-Version; not synchronised");
                message.ack_with(AckKind::Term).await?;
            }
        }
    }
    if noted.is_empty() {
        return Ok(());
    }
    let announced: Vec<(String, i32)> = highest.into_iter().collect();
    match store::announce(log.pool(), &announced, clock.now()).await {
        Ok(()) => {
            for message in &noted {
                message.ack().await?;
            }
            position.fetch_max(max_position, Ordering::Relaxed);
            wake.notify_one();
        }
        Err(e) => {
            tracing::warn!(error = %e, "portal-sync: cannot note announced versions; redelivered later");
            for message in &noted {
                message
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await?;
            }
        }
    }
    Ok(())
}

/// `(dossier id, version, position)` from the relay's headers.
fn parse(message: &jetstream::Message) -> Option<(String, i32, i64)> {
    let headers = message.headers.as_ref()?;
    let id = headers.get(relay::HEADER_DOSSIER_ID)?.as_str().to_owned();
    let version: eventlog::Version = headers.get(relay::HEADER_VERSION)?.as_str().parse().ok()?;
    let position: i64 = headers
        .get(relay::HEADER_POSITION)
        .and_then(|p| p.as_str().parse().ok())
        .unwrap_or(0);
    let version = i32::try_from(version.get()).ok()?;
    (!id.is_empty()).then_some((id, version, position))
}
