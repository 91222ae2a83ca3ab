//! The consumer: a durable JetStream pull consumer on `{prefix}.>` with explicit acks. For each
//! message it applies the message's dossier ([`crate::store::apply_dossier`]), commits, then
//! acks. A redelivery or a restart re-applies a dossier, which changes nothing once applied.
//! Several instances may share the durable consumer: the server splits the messages, and the
//! row lock of the apply step serializes the work on one dossier.
//!
//! A dossier whose apply fails is never silently left out: each failure is recorded in
//! `projection_failures` ([`store::record_failure`], its own transaction), the message is
//! negatively acknowledged with a delay that doubles with the dossier's failed attempts
//! ([`ConsumerConfig::failure_delay`], bounded), and [`ConsumerStatus`] counts the failing
//! dossiers (the service reports NOT_SERVING while there is one; `projection verify` lists
//! them). The row goes in the transaction of the next successful apply.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use eventlog::EventLog;
use futures::StreamExt;
use tokio::sync::watch;
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
    /// The redelivery delay after a dossier's first failed apply; doubled at each further
    /// failure of the same dossier, up to [`ConsumerConfig::max_failure_delay`].
    pub first_failure_delay: Duration,
    pub max_failure_delay: Duration,
    /// How often the failing-dossier count is read again from the database (another instance
    /// may have applied a dossier this one saw failing).
    pub status_refresh: Duration,
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
            first_failure_delay: Duration::from_secs(1),
            max_failure_delay: Duration::from_secs(300),
            status_refresh: Duration::from_secs(10),
        }
    }

    /// The redelivery delay after a dossier's `attempts`-th failed apply in a row (1, 2, …):
    /// `first_failure_delay × 2^(attempts − 1)`, at most `max_failure_delay`.
    pub fn failure_delay(&self, attempts: i64) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.first_failure_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_failure_delay)
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

/// What the consumer reports, as plain values: the service's health reads it, and the metrics
/// named in the comments export it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStatus {
    /// Dossiers with a failed apply not yet followed by a successful one (rows of
    /// `projection_failures`, all instances): their figures are missing.
    /// `motcua_projection_failing_dossiers`.
    pub failing_dossiers: u64,
    /// Failed applies by this instance since it started.
    /// `motcua_projection_apply_failures_total`.
    pub apply_failures_total: u64,
    /// The highest log position (`Dossier-Position`) of a message received.
    /// `motcua_projection_stream_position`.
    pub stream_position: i64,
    /// The highest log position of a message applied and acknowledged.
    /// `motcua_projection_applied_position`.
    pub applied_position: i64,
}

impl ConsumerStatus {
    /// Whether every dossier the consumer was given is in the figures (no apply failing).
    pub fn is_healthy(&self) -> bool {
        self.failing_dossiers == 0
    }
}

/// Consumes until `shutdown` is cancelled. Errors of NATS or PostgreSQL are logged and retried
/// with backoff; a message that could not be applied is negatively acknowledged with a growing
/// delay, so the server delivers it again, and the failure is recorded (see the module docs).
/// `status` is updated as messages are handled.
pub async fn run(
    log: EventLog,
    js: jetstream::Context,
    config: ConsumerConfig,
    status: watch::Sender<ConsumerStatus>,
    shutdown: CancellationToken,
) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = FIRST_BACKOFF;
    refresh_failing(&log, &status).await;
    while !shutdown.is_cancelled() {
        let mut consumed = false;
        match consume(&log, &js, &config, &status, &shutdown, &mut consumed).await {
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
    status: &watch::Sender<ConsumerStatus>,
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
    let mut refresh = tokio::time::interval(config.status_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = refresh.tick() => {
                refresh_failing(log, status).await;
                continue;
            }
            next = messages.next() => match next {
                Some(message) => message?,
                None => return Err("the consumer's message stream ended".into()),
            },
        };
        handle(log, &message, config, status).await?;
        *consumed = true;
    }
}

/// Reads the failing-dossier count again (kept as it was when the database cannot answer).
async fn refresh_failing(log: &EventLog, status: &watch::Sender<ConsumerStatus>) {
    match store::failing_dossiers(log.pool()).await {
        Ok(n) => {
            let n = u64::try_from(n).unwrap_or(0);
            status.send_if_modified(|s| {
                let changed = s.failing_dossiers != n;
                s.failing_dossiers = n;
                changed
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the failing dossiers"),
    }
}

/// The message's log position (`Dossier-Position`), if it carries a valid one; a malformed one
/// (not a decimal event position ≥ 1) is logged and ignored, never read as another number.
fn position(message: &jetstream::Message) -> Option<i64> {
    let value = message
        .headers
        .as_ref()
        .and_then(|h| h.get(relay::HEADER_POSITION))?
        .as_str();
    match value
        .parse::<eventlog::Position>()
        .and_then(|p| eventlog::Position::of_event(p.get()))
    {
        Ok(p) => Some(p.as_i64()),
        Err(e) => {
            tracing::warn!(subject = %message.subject, error = %e, "malformed Dossier-Position header; not counted as the stream position");
            None
        }
    }
}

/// Applies one message's dossier and acks it once committed.
async fn handle(
    log: &EventLog,
    message: &jetstream::Message,
    config: &ConsumerConfig,
    status: &watch::Sender<ConsumerStatus>,
) -> Result<(), async_nats::Error> {
    let position = position(message);
    if let Some(p) = position {
        status.send_if_modified(|s| {
            let changed = p > s.stream_position;
            s.stream_position = s.stream_position.max(p);
            changed
        });
    }
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
            let was_failing = status.borrow().failing_dossiers > 0;
            if let Some(p) = position {
                status.send_if_modified(|s| {
                    let changed = p > s.applied_position;
                    s.applied_position = s.applied_position.max(p);
                    changed
                });
            }
            if was_failing {
                // This may have been one of them (its row went with the apply's commit).
                refresh_failing(log, status).await;
            }
        }
        Err(e) => {
            let delay = match store::record_failure(log.pool(), &dossier_id, &e).await {
                Ok(attempts) => {
                    let delay = config.failure_delay(attempts);
                    tracing::error!(
                        %dossier_id, attempts, error = %e, ?delay,
                        "applying the dossier failed; its figures are missing until it applies"
                    );
                    delay
                }
                Err(record) => {
                    // PostgreSQL is most likely unreachable: nothing can apply now.
                    tracing::warn!(
                        %dossier_id, error = %e, record_error = %record,
                        "applying the dossier failed and the failure could not be recorded"
                    );
                    config.max_backoff
                }
            };
            // Counted once recorded, so that a reader of the status finds the row.
            status.send_modify(|s| s.apply_failures_total += 1);
            refresh_failing(log, status).await;
            message.ack_with(AckKind::Nak(Some(delay))).await?;
        }
    }
    Ok(())
}
