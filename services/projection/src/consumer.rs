//! The consumer: a durable JetStream pull consumer on `{prefix}.>` with explicit acks. It takes
//! the messages in batches — what has arrived, up to [`ConsumerConfig::max_batch`] — and
//! applies every dossier of a batch once, in one transaction ([`crate::store::apply_batch`]),
//! commits, then acks every message of the batch. A redelivery or a restart re-applies a
//! dossier, which changes nothing once applied. Several instances may share the durable
//! consumer: the server splits the messages, and the row locks of the apply step (taken in one
//! order by every batch) serialize the work on one dossier.
//!
//! A dossier whose apply fails is never silently left out, and never holds the others back:
//! when a batch's transaction fails, its dossiers are applied again one at a time
//! ([`crate::store::apply_dossier`]), so only the failing one fails. Each failure is recorded in
//! `projection_failures` ([`store::record_failure`], its own transaction), the dossier's
//! messages are negatively acknowledged with a delay that doubles with the dossier's failed
//! attempts ([`ConsumerConfig::failure_delay`], bounded), and [`ConsumerStatus`] counts the
//! failing dossiers (the service reports NOT_SERVING while there is one; `projection verify`
//! lists them). The row goes in the transaction of the next successful apply.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use eventlog::EventLog;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{self, Applied};

/// Where the consumer reads and how it batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The stream the relay publishes to (the relay creates it).
    pub stream: String,
    /// Subjects `{subject_prefix}.>`.
    pub subject_prefix: String,
    /// The durable consumer's name, shared by every instance.
    pub durable: String,
    /// How long the server waits for an ack before redelivering. Set on the durable consumer
    /// when it is created, and on an existing one whose value differs (see [`bind`]).
    pub ack_wait: Duration,
    /// The most messages applied in one transaction; also the size of each pull request. A
    /// pulled message waits in the client for the batch before it, and its ack timer runs
    /// meanwhile: a batch must commit well within `ack_wait`. While a batch's transaction
    /// runs, the consumer tells the server every third of `ack_wait` that its messages are in
    /// progress, so a slow batch is not redelivered to another instance.
    pub max_batch: usize,
    /// How long a batch waits for more messages after its first one, once messages are
    /// flowing (more than one was already there). A lone message is applied at once.
    pub batch_linger: Duration,
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
        let defaults = ApplySettings::default();
        let mut config = ConsumerConfig {
            stream: stream.to_owned(),
            subject_prefix: subject_prefix.to_owned(),
            durable: durable.to_owned(),
            ack_wait: Duration::ZERO,
            max_batch: 0,
            batch_linger: Duration::ZERO,
            max_backoff: Duration::from_secs(5),
            first_failure_delay: Duration::from_secs(1),
            max_failure_delay: Duration::from_secs(300),
            status_refresh: Duration::from_secs(10),
        };
        defaults.apply_to(&mut config);
        config
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

/// How the consumer batches, `[projection.apply]` (per instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplySettings {
    /// The most messages applied in one transaction (1 to [`ApplySettings::MAX_BATCH`]).
    pub max_batch: u32,
    /// How long a batch waits for more messages once messages are flowing, in milliseconds
    /// (at most 1000); a lone message never waits.
    pub linger_ms: u32,
    /// How long JetStream waits for an ack before redelivering a message, in seconds (at
    /// least 1, and more than the linger).
    pub ack_wait_secs: u32,
}

impl Default for ApplySettings {
    fn default() -> Self {
        ApplySettings {
            max_batch: 256,
            linger_ms: 5,
            ack_wait_secs: 30,
        }
    }
}

impl ApplySettings {
    /// The largest batch: below JetStream's default `max_ack_pending` (1000), which an
    /// instance holding a batch and the next one's pulled messages must stay under.
    pub const MAX_BATCH: u32 = 500;

    /// Why the settings cannot be used, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_BATCH).contains(&self.max_batch) {
            return Err(format!(
                "apply.max_batch must be between 1 and {}, not {}",
                Self::MAX_BATCH,
                self.max_batch
            ));
        }
        if self.linger_ms > 1000 {
            return Err(format!(
                "apply.linger_ms must be at most 1000, not {}",
                self.linger_ms
            ));
        }
        if self.ack_wait_secs == 0 || self.ack_wait_secs > 3600 {
            return Err(format!(
                "apply.ack_wait_secs must be between 1 and 3600, not {}",
                self.ack_wait_secs
            ));
        }
        Ok(())
    }

    /// Sets the batching fields of `config`.
    pub fn apply_to(&self, config: &mut ConsumerConfig) {
        config.max_batch = usize::try_from(self.max_batch.max(1)).unwrap_or(1);
        config.batch_linger = Duration::from_millis(u64::from(self.linger_ms));
        config.ack_wait = Duration::from_secs(u64::from(self.ack_wait_secs.max(1)));
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
    /// Transactions of several dossiers committed by this instance since it started.
    /// `motcua_projection_batches_total`.
    pub batches_total: u64,
    /// Batches whose transaction failed, and whose dossiers were then applied one at a time.
    /// `motcua_projection_batch_fallbacks_total`.
    pub batch_fallbacks_total: u64,
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

/// One session: binds the durable consumer and handles batches until shutdown (`Ok`) or an
/// error of NATS (`Err`, the caller retries). Sets `consumed` once a batch was handled.
async fn consume(
    log: &EventLog,
    js: &jetstream::Context,
    config: &ConsumerConfig,
    status: &watch::Sender<ConsumerStatus>,
    shutdown: &CancellationToken,
    consumed: &mut bool,
) -> Result<(), async_nats::Error> {
    let stream = js.get_stream(&config.stream).await?;
    let consumer = bind(&stream, config).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.max_batch)
        .messages()
        .await?;
    tracing::info!(
        stream = %config.stream, consumer = %config.durable, max_batch = config.max_batch,
        "projection consuming"
    );
    let mut refresh = tokio::time::interval(config.status_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
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
        let (batch, interrupted) = collect(first, &mut messages, config).await;
        // What was taken is applied even when the stream failed after it.
        handle_batch(log, batch, config, status).await?;
        *consumed = true;
        if let Some(e) = interrupted {
            return Err(e);
        }
    }
}

/// The durable consumer, created with [`ConsumerConfig::pull_config`] when missing. An
/// existing one keeps its configuration (it may have been created by an older version) except
/// `ack_wait`, which is updated in place when it differs from the configured one (JetStream
/// edits it on a live consumer); if the server refuses, the existing value is kept and logged.
async fn bind(
    stream: &jetstream::stream::Stream,
    config: &ConsumerConfig,
) -> Result<jetstream::consumer::PullConsumer, async_nats::Error> {
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&config.durable, config.pull_config())
        .await?;
    let existing = consumer.cached_info().config.clone();
    if existing.ack_wait == config.ack_wait {
        return Ok(consumer);
    }
    let previous = existing.ack_wait;
    let updated = jetstream::consumer::Config {
        ack_wait: config.ack_wait,
        ..existing
    };
    match stream.create_consumer(updated).await {
        Ok(_) => {
            tracing::info!(
                consumer = %config.durable, ?previous, ack_wait = ?config.ack_wait,
                "updated the durable consumer's ack_wait"
            );
            Ok(stream.get_consumer(&config.durable).await?)
        }
        Err(e) => {
            tracing::warn!(
                consumer = %config.durable, error = %e, ?previous, wanted = ?config.ack_wait,
                "cannot update the durable consumer's ack_wait; keeping it"
            );
            Ok(consumer)
        }
    }
}

/// The batch starting with `first`: every message already received, up to `max_batch`; when
/// more than one was there (messages are flowing), also those arriving within `batch_linger`
/// of the first. A lone message is not kept waiting. Returns the stream's error, if one ended
/// the batch, for the caller to handle after applying what was taken.
async fn collect(
    first: jetstream::Message,
    messages: &mut pull::Stream,
    config: &ConsumerConfig,
) -> (Vec<jetstream::Message>, Option<async_nats::Error>) {
    let until = Instant::now() + config.batch_linger;
    let mut batch = vec![first];
    let mut flowing = false;
    while batch.len() < config.max_batch {
        let next = match messages.next().now_or_never() {
            Some(next) => next,
            None if !flowing && batch.len() == 1 => break,
            None => match tokio::time::timeout_at(until, messages.next()).await {
                Ok(next) => next,
                Err(_) => break,
            },
        };
        match next {
            Some(Ok(message)) => {
                batch.push(message);
                flowing = true;
            }
            Some(Err(e)) => return (batch, Some(e.into())),
            None => {
                return (batch, Some("the consumer's message stream ended".into()));
            }
        }
    }
    (batch, None)
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

fn dossier_id(message: &jetstream::Message) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(relay::HEADER_DOSSIER_ID))
        .map(|v| v.as_str().to_owned())
}

/// The messages of one dossier within a batch.
type ByDossier = BTreeMap<String, Vec<jetstream::Message>>;

/// Applies a batch and acks its messages once committed: every dossier in one transaction,
/// or, when that fails (or the batch holds one dossier), one dossier at a time.
async fn handle_batch(
    log: &EventLog,
    batch: Vec<jetstream::Message>,
    config: &ConsumerConfig,
    status: &watch::Sender<ConsumerStatus>,
) -> Result<(), async_nats::Error> {
    if let Some(p) = batch.iter().filter_map(position).max() {
        status.send_if_modified(|s| {
            let changed = p > s.stream_position;
            s.stream_position = s.stream_position.max(p);
            changed
        });
    }
    let mut by_dossier = ByDossier::new();
    for message in batch {
        match dossier_id(&message) {
            Some(id) => by_dossier.entry(id).or_default().push(message),
            None => {
                tracing::error!(subject = %message.subject, "message without Dossier-Id; not applied");
                message.ack_with(AckKind::Term).await?;
            }
        }
    }
    if by_dossier.len() > 1 {
        let ids: Vec<String> = by_dossier.keys().cloned().collect();
        let applying = store::apply_batch_and_commit(log, &ids);
        match in_progress(applying, &by_dossier, config).await {
            Ok(applied) => {
                let updated = applied
                    .values()
                    .filter(|a| matches!(a, Applied::Updated { .. }))
                    .count();
                let cells: usize = applied
                    .values()
                    .map(|a| match a {
                        Applied::Updated { cells, .. } => *cells,
                        Applied::UpToDate { .. } => 0,
                    })
                    .sum();
                tracing::debug!(
                    dossiers = applied.len(),
                    updated,
                    cells,
                    messages = by_dossier.values().map(Vec::len).sum::<usize>(),
                    "batch applied"
                );
                status.send_modify(|s| s.batches_total += 1);
                let messages: Vec<jetstream::Message> =
                    by_dossier.into_values().flatten().collect();
                acknowledge(log, &messages, status).await?;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(
                    dossiers = by_dossier.len(), error = %e,
                    "applying a batch failed; applying its dossiers one at a time"
                );
                status.send_modify(|s| s.batch_fallbacks_total += 1);
            }
        }
    }
    // One at a time: a dossier that fails delays only itself.
    let mut unreachable = false;
    for (dossier_id, messages) in by_dossier {
        if unreachable {
            // PostgreSQL did not even take a failure record: nothing can apply now.
            for message in &messages {
                message
                    .ack_with(AckKind::Nak(Some(config.max_backoff)))
                    .await?;
            }
            continue;
        }
        unreachable = !handle_dossier(log, &dossier_id, &messages, config, status).await?;
    }
    Ok(())
}

/// Awaits `applying` while telling the server every third of `ack_wait` that the batch's
/// messages are still being worked on, so that it does not redeliver them meanwhile. The apply
/// is never abandoned half-way for NATS: if the server cannot be told, the messages may be
/// redelivered, which is harmless (apply recomputes).
async fn in_progress<T>(
    applying: impl Future<Output = T>,
    by_dossier: &ByDossier,
    config: &ConsumerConfig,
) -> T {
    let every = (config.ack_wait / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    let mut telling = true;
    tokio::pin!(applying);
    loop {
        tokio::select! {
            done = &mut applying => return done,
            _ = tick.tick(), if telling => {
                for message in by_dossier.values().flatten() {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(error = %e, "cannot tell JetStream a batch is in progress");
                        telling = false;
                        break;
                    }
                }
            }
        }
    }
}

/// Acks messages whose dossiers are committed, and records their positions as applied.
async fn acknowledge(
    log: &EventLog,
    messages: &[jetstream::Message],
    status: &watch::Sender<ConsumerStatus>,
) -> Result<(), async_nats::Error> {
    for message in messages {
        message.ack().await?;
    }
    let was_failing = status.borrow().failing_dossiers > 0;
    if let Some(p) = messages.iter().filter_map(position).max() {
        status.send_if_modified(|s| {
            let changed = p > s.applied_position;
            s.applied_position = s.applied_position.max(p);
            changed
        });
    }
    if was_failing {
        // One of them may have been failing (its row went with the apply's commit).
        refresh_failing(log, status).await;
    }
    Ok(())
}

/// Applies one dossier in a transaction of its own and acks its messages once committed; on
/// failure records it and naks them with the dossier's delay. Returns `false` when even the
/// failure could not be recorded (PostgreSQL is most likely unreachable).
async fn handle_dossier(
    log: &EventLog,
    dossier_id: &str,
    messages: &[jetstream::Message],
    config: &ConsumerConfig,
    status: &watch::Sender<ConsumerStatus>,
) -> Result<bool, async_nats::Error> {
    match store::apply_and_commit(log, dossier_id).await {
        Ok(applied) => {
            match applied {
                Applied::Updated { version, cells } => {
                    tracing::debug!(%dossier_id, version, cells, "dossier applied");
                }
                Applied::UpToDate { version } => {
                    tracing::debug!(%dossier_id, version, "dossier already applied");
                }
            }
            acknowledge(log, messages, status).await?;
            Ok(true)
        }
        Err(e) => {
            let (delay, recorded) = match store::record_failure(log.pool(), dossier_id, &e).await {
                Ok(attempts) => {
                    let delay = config.failure_delay(attempts);
                    tracing::error!(
                        %dossier_id, attempts, error = %e, ?delay,
                        "applying the dossier failed; its figures are missing until it applies"
                    );
                    (delay, true)
                }
                Err(record) => {
                    tracing::warn!(
                        %dossier_id, error = %e, record_error = %record,
                        "applying the dossier failed and the failure could not be recorded"
                    );
                    (config.max_backoff, false)
                }
            };
            // Counted once recorded, so that a reader of the status finds the row.
            status.send_modify(|s| s.apply_failures_total += 1);
            refresh_failing(log, status).await;
            for message in messages {
                message.ack_with(AckKind::Nak(Some(delay))).await?;
            }
            Ok(recorded)
        }
    }
}
