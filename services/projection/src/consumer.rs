//! The consumer: a durable JetStream pull consumer on `{prefix}.>` with explicit acks. For each
//! message it applies the message's dossier ([`crate::store::apply_dossier`]), commits, then
//! acks. A redelivery or a restart re-applies a dossier, which changes nothing once applied.
//! Several instances may share the durable consumer: the server splits the messages, and the
//! row lock of the apply step serializes the work on one dossier.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use eventlog::EventLog;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::store::{self, Applied};

/// Where the consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The stream the relay publishes to (the relay creates it).
    pub stream: String,
    /// Subjects `{subject_prefix}.>`.
    pub subject_prefix: String,
    /// The durable consumer's name, shared by every instance.
    pub durable: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Messages pulled per request. Messages are applied one at a time, so a pulled message
    /// waits for those before it: the batch must be applied well within `ack_wait`, or the
    /// server redelivers messages still waiting in the client's buffer (harmless — apply
    /// recomputes — but wasted work). 32 within 30 s holds down to about one apply per second.
    pub pull_batch: usize,
    /// The longest wait between attempts when NATS or PostgreSQL is unavailable.
    pub max_backoff: Duration,
}

impl ConsumerConfig {
    pub fn new(stream: &str, subject_prefix: &str, durable: &str) -> ConsumerConfig {
        ConsumerConfig {
            stream: stream.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
            durable: durable.to_owned(),
            ack_wait: Duration::from_secs(30),
            pull_batch: 32,
            max_backoff: Duration::from_secs(5),
        }
    }

    /// The durable pull consumer's configuration (only what NATS 2.9 supports).
    pub fn pull_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some("projection: statistics aggregates".to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            filter_subject: format!("{}.>", self.subject_prefix),
            ..Default::default()
        }
    }
}

/// Consumes until `shutdown` is cancelled. Errors of NATS or PostgreSQL are logged and retried
/// with backoff; a message that could not be applied is not acked (negatively acknowledged),
/// so the server delivers it again.
pub async fn run(
    log: EventLog,
    js: jetstream::Context,
    config: ConsumerConfig,
    shutdown: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    while !shutdown.is_cancelled() {
        let mut consumed = false;
        match consume(&log, &js, &config, &shutdown, &mut consumed).await {
            Ok(()) => return,
            Err(e) => {
                if consumed {
                    // The session worked for a while: start the backoff over.
                    backoff = FIRST_BACKOFF;
                }
                tracing::warn!(error = %e, ?backoff, "projection consumer interrupted; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.max_backoff);
            }
        }
    }
}

/// One session: binds the durable consumer and handles messages until shutdown (`Ok`) or an
/// error of NATS (`Err`, the caller retries). Sets `consumed` once a message was handled.
async fn consume(
    log: &EventLog,
    js: &jetstream::Context,
    config: &ConsumerConfig,
    shutdown: &CancellationToken,
    consumed: &mut bool,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream(&config.stream).await?;
    let consumer = stream
        .get_or_create_consumer(&config.durable, config.pull_config())
        .await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.pull_batch)
        .messages()
        .await?;
    tracing::info!(stream = %config.stream, consumer = %config.durable, "projection consuming");
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            next = messages.next() => match next {
                Some(message) => message?,
                None => return Err("the consumer's message stream ended".into()),
            },
        };
        handle(log, &message, config).await?;
        *consumed = true;
    }
}

/// Applies one message's dossier and acks it once committed.
async fn handle(
    log: &EventLog,
    message: &jetstream::Message,
    config: &ConsumerConfig,
) -> Result<(), async_nats::Error> {
    let dossier_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(relay::HEADER_DOSSIER_ID))
        .map(|v| v.as_str().to_owned());
    let Some(dossier_id) = dossier_id else {
        tracing::error!(subject = %message.subject, "message without Dossier-Id; not applied");
        message.ack_with(AckKind::Term).await?;
        return Ok(());
    };
    match store::apply_and_commit(log, &dossier_id).await {
        Ok(applied) => {
            match applied {
                Applied::Updated { version, cells } => {
                    tracing::debug!(%dossier_id, version, cells, "dossier applied");
                }
                Applied::UpToDate { version } => {
                    tracing::debug!(%dossier_id, version, "dossier already applied");
                }
            }
            message.ack().await?;
        }
        Err(e) => {
            tracing::warn!(%dossier_id, error = %e, "applying the dossier failed; redelivery asked");
            message
                .ack_with(AckKind::Nak(Some(config.max_backoff)))
                .await?;
        }
    }
    Ok(())
}
