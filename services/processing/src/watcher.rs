//! The deadline watcher: records `late` for a dossier, exactly once, when its due time passes
//! with no resolution — and never while it waits for a supplement.
//!
//! # Finding dossiers that fell due without scanning the log
//!
//! The watcher keeps a small read model in PostgreSQL (migration `20001_deadline_watch.sql`):
//! `deadline_watch(dossier_id, due_at, paused, closed, late_marked)` and the one-row
//! `deadline_watch_cursor(position)`. A tick
//!
//! 1. **catches up**: reads the log after the cursor in batches ([`EventLog::read_after`]) and,
//!    for each batch, updates the table and moves the cursor **in one transaction**, which first
//!    locks the cursor row (`FOR UPDATE`) and applies the batch only if the cursor is still where
//!    the batch starts. A crash loses nothing and applies nothing twice; a second watcher waits
//!    on the lock, sees the cursor moved, and reads on from there. Positions are gapless and
//!    become visible in order, so reading `position > cursor` misses nothing;
//! 2. **marks**: `SELECT … WHERE due_at < now AND NOT paused AND NOT closed AND NOT late_marked`
//!    (a partial index holds exactly those rows) and runs the `MarkLate` command for each
//!    through the shared write path, like any client command.
//!
//! # Why `late` is never written twice
//!
//! - The rules (`domain::decide`) refuse `MarkLate` on a dossier already marked late, resolved,
//!   ended, paused, or not yet due: those refusals are the expected answer to a race with a
//!   command or another watcher, logged at debug level.
//! - Every watcher builds the *identical* request for a dossier and due time: event id = UUID
//!   v5 of ([`MARK_LATE_NAMESPACE`], `dossier_id@due_at` in RFC 3339) and a fingerprint derived
//!   from the same. A second watcher (or the same one after a crash) therefore gets the first
//!   one's event back as a duplicate from the log's idempotency, or `already_marked_late`.
//! - Two appends on one dossier at the same version cannot both commit (optimistic
//!   concurrency on `(dossier_id, version)`); the loser decides again and is refused.
//!
//! The event's business time is the due time itself (`domain::event_time`), so the statistics
//! never depend on when a watcher noticed; `recorded_at` says when.
//!
//! # Automatic closing (procedure catalogue)
//!
//! The same way, and after marking, a tick closes every dossier whose supplement request went
//! unanswered past its procedure's `closes_at` (carried by `supplement_requested`, kept in
//! `deadline_watch.closes_at`, migration 20020): `CloseUnsupplemented` through the write path,
//! with an id derived from ([`CLOSE_NAMESPACE`], `dossier_id@closes_at`). The rules refuse it
//! once the supplement arrived or the dossier ended; the `stopped` event is dated `closes_at`.
//! # The early warning
//!
//! The same read model holds each dossier's agencies, apology and deadlines; after catching up,
//! a tick syncs the list of dossiers due soon with it (`crate::warnings`), marks, and then
//! publishes the list's changes from their outbox (`crate::publish`).
//!
//! The clock is injected ([`writepath::Clock`]): tests set the time and call [`Watcher::tick`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use domain::{Action, Command, DossierEvent, DossierId, EventId, WarningHorizon};
use eventlog::{EventLog, StoredEvent};
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use writepath::{Clock, WriteError, WriteOutcome, WritePath, WriteRequest};

use crate::publish::WarningPublisher;
use crate::warnings;

/// The namespace of the `late` event ids the watcher derives (UUID v5). Never change it: ids
/// derived with another namespace would not be recognised as the same request.
pub const MARK_LATE_NAMESPACE: Uuid = Uuid::from_u128(0x6d0c_5a4e_3f1b_4c8e_9a27_5be1_d4f0_a6c3);

/// The namespace of the automatic-closing `stopped` event ids (UUID v5 of
/// `dossier_id@closes_at`). Never change it.
pub const CLOSE_NAMESPACE: Uuid = Uuid::from_u128(0x3a51_9c0e_77d2_4f65_b1a8_0c4e_92d7_5f13);

/// What the watcher records when a deadline passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Duty {
    /// The due time passed: `late`.
    MarkLate,
    /// A supplement request went unanswered past the procedure's deadline: `stopped`.
    Close,
}

impl Duty {
    fn event_id(self, dossier_id: &str, deadline: DateTime<Utc>) -> Uuid {
        match self {
            Duty::MarkLate => mark_late_event_id(dossier_id, deadline),
            Duty::Close => Uuid::new_v5(
                &CLOSE_NAMESPACE,
                mark_late_key(dossier_id, deadline).as_bytes(),
            ),
        }
    }

    fn fingerprint(self, dossier_id: &str, deadline: DateTime<Utc>) -> [u8; 32] {
        match self {
            Duty::MarkLate => mark_late_fingerprint(dossier_id, deadline),
            Duty::Close => {
                let mut h = Sha256::new();
                h.update(b"dossier.v1.DeadlineWatcher/CloseUnsupplemented");
                h.update([0u8]);
                h.update(mark_late_key(dossier_id, deadline).as_bytes());
                h.finalize().into()
            }
        }
    }

    fn action(self) -> Action {
        match self {
            Duty::MarkLate => Action::MarkLate,
            Duty::Close => Action::CloseUnsupplemented,
        }
    }
}

/// How long a tick in progress may go on after a stop signal before it is abandoned (safe at
/// any point: everything it writes is transactional).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The event id every watcher uses for the `late` of `dossier_id` due at `due_at`.
pub fn mark_late_event_id(dossier_id: &str, due_at: DateTime<Utc>) -> Uuid {
    Uuid::new_v5(
        &MARK_LATE_NAMESPACE,
        mark_late_key(dossier_id, due_at).as_bytes(),
    )
}

/// `dossier_id@due_at`: `@` never occurs in a dossier id, so the key is unambiguous.
fn mark_late_key(dossier_id: &str, due_at: DateTime<Utc>) -> String {
    format!(
        "{dossier_id}@{}",
        due_at.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

/// The request fingerprint of a watcher's `MarkLate`: equal for every watcher and every retry.
fn mark_late_fingerprint(dossier_id: &str, due_at: DateTime<Utc>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"dossier.v1.DeadlineWatcher/MarkLate");
    h.update([0u8]);
    h.update(mark_late_key(dossier_id, due_at).as_bytes());
    h.finalize().into()
}

/// Applies the watcher's migrations (versions 20001 and up). Migrations of other crates in the
/// same `_sqlx_migrations` table (the log's 10001…) are ignored, not refused.
pub async fn migrate(log: &EventLog) -> Result<(), WatcherError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
        .run(log.pool())
        .await
        .map_err(WatcherError::Migrate)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatcherConfig {
    /// Time between ticks (the first runs at start).
    pub interval: Duration,
    /// Log events applied per catch-up transaction.
    pub catch_up_batch: i64,
    /// Due dossiers read per query while marking.
    pub mark_page: i64,
    /// From how long before its due time a running dossier is warned about.
    pub horizon: WarningHorizon,
    /// Warnings raised per transaction.
    pub raise_page: i64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            interval: Duration::from_secs(30),
            catch_up_batch: 1000,
            mark_page: 500,
            horizon: WarningHorizon::default(),
            raise_page: 5000,
        }
    }
}

impl WatcherConfig {
    /// `processing.watcher_interval_secs` (at least one second) and
    /// `processing.warning_horizon_minutes` (absent: the apology notice, one day in the write
    /// path's `apology_notice` unit).
    pub fn from_config(config: &crate::ProcessingConfig) -> Self {
        WatcherConfig {
            interval: Duration::from_secs(config.watcher_interval_secs.max(1)),
            horizon: config
                .warning_horizon_minutes
                .map_or(WarningHorizon::ApologyNotice, |m| {
                    WarningHorizon::Working(calendar::WorkingDuration::from_minutes(m))
                }),
            ..WatcherConfig::default()
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Log events applied to the read model while catching up.
    pub applied: u64,
    /// The log position the read model is up to date with.
    pub position: i64,
    /// Dossiers this tick recorded `late` for.
    pub marked: Vec<String>,
    /// Dossiers this tick closed (`stopped`) because a supplement request went unanswered
    /// past the procedure's deadline.
    pub closed: Vec<String>,
    /// Dossiers whose identical `late` was already recorded (by another watcher, or before a
    /// crash): nothing written.
    pub duplicates: Vec<String>,
    /// Dossiers the rules refused to mark, with the refusal code (a race with a command or
    /// another watcher: `already_marked_late`, `not_yet_due`, `already_resolved`…).
    pub refused: Vec<(String, &'static str)>,
    /// Dossiers that could not be marked for another reason (logged as errors); retried at the
    /// next tick.
    pub failed: Vec<String>,
    /// Early warnings this tick raised (dossiers now due soon).
    pub raised: Vec<String>,
    /// Early warnings this tick withdrew, with the reason (`closed`, `apologised`, `paused`,
    /// `due_time_moved`, `transferred`, `deadline_changed`).
    pub withdrawn: Vec<(String, &'static str)>,
    /// Warning changes this tick published on NATS (from the outbox, possibly older ticks').
    pub published: u64,
}

/// Why a tick stopped early. The next tick starts over safely.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// PostgreSQL could not be reached or failed a statement: retry at the next tick.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored event the watcher needs does not decode: the read model stops before it and an
    /// operator must look (the same error repeats every tick).
    #[error("stored event at position {position} cannot be applied: {reason}")]
    Corrupt { position: i64, reason: String },
    /// The warnings outbox could not be published: it stays stored and is published at the
    /// next tick.
    #[error("publishing early warnings: {0}")]
    Publish(#[from] crate::publish::PublishError),
    /// The watcher's schema could not be applied.
    #[error("deadline watcher migrations refused: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for WatcherError {
    fn from(e: sqlx::Error) -> Self {
        WatcherError::Unavailable(e.to_string())
    }
}

impl From<eventlog::ReadError> for WatcherError {
    fn from(e: eventlog::ReadError) -> Self {
        match e {
            eventlog::ReadError::Unavailable(e) => WatcherError::Unavailable(e.to_string()),
            eventlog::ReadError::Corrupt { position, reason } => {
                WatcherError::Corrupt { position, reason }
            }
        }
    }
}

/// The deadline watcher. Stateless apart from its read model in PostgreSQL: any number may run
/// at once, and a new one continues where the last stopped.
#[derive(Debug, Clone)]
pub struct Watcher {
    write: WritePath,
    clock: Arc<dyn Clock>,
    config: WatcherConfig,
    status: WatcherStatus,
    publisher: Option<WarningPublisher>,
    /// Whether this instance has recomputed the stored deadlines with its calendar and horizon.
    recomputed: Arc<std::sync::atomic::AtomicBool>,
}

/// What the watcher exposes to metrics and health (plain values, shared by its clones).
#[derive(Debug, Clone)]
pub struct WatcherStatus {
    /// `late` events this watcher recorded (`motcua_watcher_marks_total`).
    pub marks: Arc<std::sync::atomic::AtomicU64>,
    /// Why the last tick failed, while it keeps failing (`None` after a tick that succeeded).
    pub failing: Arc<std::sync::Mutex<Option<String>>>,
    /// The early-warning outbox as the last tick left it (`motcua_warning_outbox_*`).
    pub backlog: Arc<tokio::sync::watch::Sender<OutboxBacklog>>,
}

impl Default for WatcherStatus {
    fn default() -> Self {
        WatcherStatus {
            marks: Arc::default(),
            failing: Arc::default(),
            backlog: Arc::new(tokio::sync::watch::Sender::new(OutboxBacklog::default())),
        }
    }
}

/// The changes of the early warning not yet published on NATS (`deadline_warning_outbox`),
/// read at the end of every tick, after publishing (also when publishing failed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxBacklog {
    /// Rows left in the outbox.
    pub rows: i64,
    /// When the oldest of them was made (the watcher's clock; `None`: the outbox is empty).
    pub oldest_at: Option<DateTime<Utc>>,
}

impl OutboxBacklog {
    /// Seconds since the oldest unpublished change was made, at `now` (0 when none).
    pub fn age_secs(&self, now: DateTime<Utc>) -> i64 {
        self.oldest_at
            .map_or(0, |at| (now - at).num_seconds().max(0))
    }
}

impl Watcher {
    /// A watcher writing through `write`, telling time by `clock`. Its schema must be applied
    /// ([`migrate`]).
    pub fn new(write: WritePath, clock: Arc<dyn Clock>, config: WatcherConfig) -> Watcher {
        Watcher {
            write,
            clock,
            config,
            status: WatcherStatus::default(),
            publisher: None,
            recomputed: Arc::default(),
        }
    }

    /// Publishes the early warnings' changes through `publisher` at the end of every tick.
    #[must_use]
    pub fn with_publisher(mut self, publisher: WarningPublisher) -> Watcher {
        self.publisher = Some(publisher);
        self
    }

    /// The watcher's counters and health, for the service's metrics.
    pub fn status(&self) -> WatcherStatus {
        self.status.clone()
    }

    fn set_failing(&self, reason: Option<String>) {
        *self
            .status
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }

    /// Ticks at start and then every `interval` until `shutdown` is cancelled. A failed tick is
    /// logged and retried at the next interval.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(interval = ?self.config.interval, "deadline watcher started");
        let mut interval = tokio::time::interval(self.config.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let outcome = tokio::select! {
                outcome = self.tick_until(&shutdown) => outcome,
                () = async { shutdown.cancelled().await; tokio::time::sleep(STOP_GRACE).await } => {
                    tracing::warn!("deadline watcher abandoned a tick at shutdown");
                    break;
                }
            };
            self.set_failing(outcome.as_ref().err().map(ToString::to_string));
            match outcome {
                Ok(report)
                    if report.marked.is_empty()
                        && report.closed.is_empty()
                        && report.failed.is_empty()
                        && report.raised.is_empty()
                        && report.withdrawn.is_empty() =>
                {
                    tracing::debug!(?report, "deadline watcher tick");
                }
                Ok(report) => tracing::info!(
                    marked = report.marked.len(),
                    closed = report.closed.len(),
                    duplicates = report.duplicates.len(),
                    refused = report.refused.len(),
                    failed = report.failed.len(),
                    raised = report.raised.len(),
                    withdrawn = report.withdrawn.len(),
                    published = report.published,
                    position = report.position,
                    "deadline watcher tick"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "deadline watcher tick failed; retrying at the next interval")
                }
            }
        }
        tracing::info!("deadline watcher stopped");
    }

    /// One tick: catch the read model up with the log, then record `late` for every dossier
    /// whose due time is before the clock's now, that is not paused, closed or already marked.
    pub async fn tick(&self) -> Result<TickReport, WatcherError> {
        self.tick_until(&CancellationToken::new()).await
    }

    async fn tick_until(&self, stop: &CancellationToken) -> Result<TickReport, WatcherError> {
        let pool = self.write.log().pool();
        if !self.recomputed.load(std::sync::atomic::Ordering::Relaxed) {
            let changed = warnings::recompute_deadlines(pool, self.deadlines()).await?;
            if changed > 0 {
                tracing::info!(
                    changed,
                    "recomputed the deadlines of running dossiers (calendar, apology notice or warning horizon changed)"
                );
            }
            self.recomputed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let (applied, position) = self.catch_up(stop).await?;
        let mut report = TickReport {
            applied,
            position,
            ..TickReport::default()
        };
        let now = self.clock.now();
        let sync = warnings::sync(pool, now, self.config.raise_page).await?;
        report.raised = sync.raised;
        report.withdrawn = sync.withdrawn;
        let mut after = (DateTime::<Utc>::UNIX_EPOCH, String::new());
        while !stop.is_cancelled() {
            let due: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT dossier_id, due_at FROM deadline_watch \
                 WHERE due_at < $1 AND NOT paused AND NOT closed AND NOT late_marked \
                   AND (due_at, dossier_id) > ($2, $3) \
                 ORDER BY due_at, dossier_id LIMIT $4",
            )
            .bind(now)
            .bind(after.0)
            .bind(&after.1)
            .bind(self.config.mark_page)
            .fetch_all(self.write.log().pool())
            .await?;
            let full_page = i64::try_from(due.len()).unwrap_or(i64::MAX) >= self.config.mark_page;
            for (dossier_id, due_at) in due {
                if stop.is_cancelled() {
                    break;
                }
                self.mark(Duty::MarkLate, &dossier_id, due_at, &mut report)
                    .await?;
                after = (due_at, dossier_id);
            }
            if !full_page {
                break;
            }
        }
        self.close_unsupplemented(now, stop, &mut report).await?;
        let published = match &self.publisher {
            Some(publisher) => publisher.publish_pending(pool).await,
            None => Ok(0),
        };
        // Also after a failed publication: that is when the backlog grows.
        self.measure_backlog(pool).await;
        report.published = published?;
        Ok(report)
    }

    /// Reads what is left in the outbox into [`WatcherStatus::backlog`]; on a database error the
    /// last reading stays (its age keeps growing on the scrapes).
    async fn measure_backlog(&self, pool: &sqlx::PgPool) {
        let read: Result<(i64, Option<DateTime<Utc>>), sqlx::Error> =
            sqlx::query_as("SELECT count(*), min(at) FROM deadline_warning_outbox")
                .fetch_one(pool)
                .await;
        match read {
            Ok((rows, oldest_at)) => {
                self.status
                    .backlog
                    .send_replace(OutboxBacklog { rows, oldest_at });
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the warnings outbox's backlog"),
        }
    }

    /// What the read model's deadlines are computed with: the write path's calendar and
    /// apology notice (the rule `decide` answers `on_time` with) and this watcher's horizon.
    fn deadlines(&self) -> Deadlines<'_> {
        let rules = self.write.rules();
        Deadlines {
            calendar: rules.calendar,
            notice: rules.apology_notice,
            horizon: self.config.horizon,
        }
    }

    /// Closes every dossier whose supplement request's closing deadline is before `now`.
    async fn close_unsupplemented(
        &self,
        now: DateTime<Utc>,
        stop: &CancellationToken,
        report: &mut TickReport,
    ) -> Result<(), WatcherError> {
        let mut after = (DateTime::<Utc>::UNIX_EPOCH, String::new());
        while !stop.is_cancelled() {
            let due: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT dossier_id, closes_at FROM deadline_watch \
                 WHERE closes_at < $1 AND closes_at IS NOT NULL AND NOT closed \
                   AND (closes_at, dossier_id) > ($2, $3) \
                 ORDER BY closes_at, dossier_id LIMIT $4",
            )
            .bind(now)
            .bind(after.0)
            .bind(&after.1)
            .bind(self.config.mark_page)
            .fetch_all(self.write.log().pool())
            .await?;
            let full_page = i64::try_from(due.len()).unwrap_or(i64::MAX) >= self.config.mark_page;
            for (dossier_id, closes_at) in due {
                if stop.is_cancelled() {
                    break;
                }
                self.mark(Duty::Close, &dossier_id, closes_at, report)
                    .await?;
                after = (closes_at, dossier_id);
            }
            if !full_page {
                break;
            }
        }
        Ok(())
    }

    /// Runs the duty's command for one dossier through the write path with the deterministic
    /// id derived from the dossier and the deadline (`due_at`: the due time or closing time).
    async fn mark(
        &self,
        duty: Duty,
        dossier_id: &str,
        due_at: DateTime<Utc>,
        report: &mut TickReport,
    ) -> Result<(), WatcherError> {
        let ids = DossierId::parse(dossier_id)
            .and_then(|id| EventId::from_uuid(duty.event_id(dossier_id, due_at)).map(|e| (id, e)));
        let (id, event_id) = match ids {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(dossier = dossier_id, reason = %e.reason, "dossier id in the log is not valid; not marking it late");
                report.failed.push(dossier_id.to_owned());
                return Ok(());
            }
        };
        let request = WriteRequest {
            event_id,
            dossier_id: id,
            command: Command {
                occurred_at: self.clock.now(),
                action: duty.action(),
            },
            expected_version: None,
            fingerprint: duty.fingerprint(dossier_id, due_at),
        };
        match self.write.execute(&request, |_| Ok(())).await {
            Ok(WriteOutcome::Written(_)) if duty == Duty::Close => {
                tracing::info!(dossier = dossier_id, closes_at = %due_at, "dossier closed: supplement not received");
                report.closed.push(dossier_id.to_owned());
            }
            Ok(WriteOutcome::Written(_)) => {
                tracing::info!(dossier = dossier_id, %due_at, "dossier is late");
                self.status
                    .marks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                report.marked.push(dossier_id.to_owned());
            }
            Ok(WriteOutcome::Duplicate(_) | WriteOutcome::AlreadyApplied(_)) => {
                tracing::debug!(
                    dossier = dossier_id,
                    "late already recorded by another watcher"
                );
                report.duplicates.push(dossier_id.to_owned());
            }
            Err(WriteError::Refused(refusal)) => {
                tracing::debug!(dossier = dossier_id, code = refusal.code(), %refusal, "not marking late");
                report.refused.push((dossier_id.to_owned(), refusal.code()));
            }
            Err(WriteError::Unavailable(e)) => return Err(WatcherError::Unavailable(e)),
            Err(e) => {
                tracing::error!(dossier = dossier_id, error = %e, "could not record late; retrying at the next tick");
                report.failed.push(dossier_id.to_owned());
            }
        }
        Ok(())
    }

    /// Applies the log after the cursor to the read model, one transaction per batch; returns
    /// the number of events applied and the cursor reached.
    async fn catch_up(&self, stop: &CancellationToken) -> Result<(u64, i64), WatcherError> {
        let log = self.write.log();
        let mut applied = 0u64;
        loop {
            // Read the batch holding no lock (and no connection), then apply it only if the
            // cursor is still where the batch starts: when another watcher applied it
            // meanwhile, we waited on its lock, see the cursor moved, and read again.
            let position: i64 =
                sqlx::query_scalar("SELECT position FROM deadline_watch_cursor WHERE singleton")
                    .fetch_one(log.pool())
                    .await?;
            let events = log.read_after(position, self.config.catch_up_batch).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok((applied, position));
            };
            let mut tx = log.pool().begin().await?;
            let locked: i64 = sqlx::query_scalar(
                "SELECT position FROM deadline_watch_cursor WHERE singleton FOR UPDATE",
            )
            .fetch_one(&mut *tx)
            .await?;
            if locked != position {
                tx.rollback().await?;
                continue;
            }
            apply(&mut tx, &events, self.deadlines()).await?;
            sqlx::query("UPDATE deadline_watch_cursor SET position = $1 WHERE singleton")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            applied += events.len() as u64;
            let full_batch =
                i64::try_from(events.len()).unwrap_or(i64::MAX) >= self.config.catch_up_batch;
            if !full_batch || stop.is_cancelled() {
                return Ok((applied, last));
            }
        }
    }
}

/// What the read model's deadlines are computed with: the calendar, the apology's notice unit
/// (`[processing] apology_notice`) and the warning horizon.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines<'a> {
    pub calendar: &'a calendar::Calendar,
    pub notice: domain::NoticeUnit,
    pub horizon: WarningHorizon,
}

impl Deadlines<'_> {
    /// The apology deadline and the start of the warning for a dossier due at `due_at`.
    pub fn of(&self, due_at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (
            domain::apology_deadline(self.calendar, self.notice, due_at),
            self.horizon.warn_from(self.calendar, self.notice, due_at),
        )
    }
}

/// What a batch of events changes for one dossier; `None` leaves a column as it is.
#[derive(Debug, Default)]
struct Patch {
    /// The batch holds the dossier's reception: insert its row.
    received: bool,
    agency: Option<String>,
    holding_agency: Option<String>,
    due_at: Option<DateTime<Utc>>,
    paused: Option<bool>,
    closed: Option<bool>,
    late_marked: Option<bool>,
    /// The pending supplement request's closing deadline: `Some(None)` clears it.
    closes_at: Option<Option<DateTime<Utc>>>,
    apologised: Option<bool>,
}

/// The event types that change the read model.
fn watched(event_type: &str) -> bool {
    matches!(
        event_type,
        "received"
            | "transferred"
            | "supplement_requested"
            | "supplement_received"
            | "late"
            | "apology_issued"
            | "resolved"
            | "late_withdrawn"
            | "withdrawn"
            | "stopped"
            | "financial_obligation_requested"
            | "financial_obligation_fulfilled"
    )
}

/// Folds a batch into one patch per dossier and writes them with two statements.
async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    events: &[StoredEvent],
    deadlines: Deadlines<'_>,
) -> Result<(), WatcherError> {
    let mut patches: HashMap<&str, Patch> = HashMap::new();
    for stored in events.iter().filter(|e| watched(&e.event_type)) {
        let event = writepath::decode(stored)
            .map_err(|e| WatcherError::Corrupt {
                position: stored.position,
                reason: e.to_string(),
            })?
            .body;
        let patch = patches.entry(stored.dossier_id.as_str()).or_default();
        match event {
            DossierEvent::Received {
                due_at, profile, ..
            } => {
                *patch = Patch {
                    received: true,
                    agency: Some(profile.agency.as_str().to_owned()),
                    holding_agency: Some(profile.agency.as_str().to_owned()),
                    due_at: Some(due_at),
                    paused: Some(false),
                    closed: Some(false),
                    late_marked: Some(false),
                    apologised: Some(false),
                    closes_at: Some(None),
                };
            }
            DossierEvent::Transferred { to_agency, .. } => {
                patch.holding_agency = Some(to_agency.as_str().to_owned());
            }
            DossierEvent::SupplementRequested { closes_at, .. } => {
                patch.paused = Some(true);
                patch.closes_at = Some(closes_at);
            }
            DossierEvent::FinancialObligationRequested {
                pauses_clock: true, ..
            } => patch.paused = Some(true),
            DossierEvent::SupplementReceived { due_at, .. }
            | DossierEvent::FinancialObligationFulfilled { due_at, .. } => {
                patch.paused = Some(false);
                patch.due_at = Some(due_at);
                patch.closes_at = Some(None);
            }
            DossierEvent::Late { .. } => patch.late_marked = Some(true),
            // Written with the resolution that contradicts the mark (same append), which closes
            // the row and so withdraws its warning (`closed`); the mark itself no longer stands.
            DossierEvent::LateWithdrawn { .. } => patch.late_marked = Some(false),
            DossierEvent::ApologyIssued { .. } => patch.apologised = Some(true),
            DossierEvent::Resolved { .. }
            | DossierEvent::Withdrawn { .. }
            | DossierEvent::Stopped { .. } => patch.closed = Some(true),
            _ => {}
        }
    }

    let (new, changed): (Vec<_>, Vec<_>) = patches.into_iter().partition(|(_, p)| p.received);
    for (rows, insert) in [(new, true), (changed, false)] {
        if rows.is_empty() {
            continue;
        }
        let mut columns = Columns::with_capacity(rows.len());
        for (id, p) in rows {
            let (apology_deadline, warn_from) = p.due_at.map(|d| deadlines.of(d)).unzip();
            columns.ids.push(id.to_owned());
            columns.agency.push(p.agency);
            columns.holding.push(p.holding_agency);
            columns.due.push(p.due_at);
            columns.apology_deadline.push(apology_deadline);
            columns.warn_from.push(warn_from);
            columns.paused.push(p.paused);
            columns.closed.push(p.closed);
            columns.late.push(p.late_marked);
            columns.apologised.push(p.apologised);
            columns.closes.push(p.closes_at.flatten());
            columns.set_closes.push(p.closes_at.is_some());
        }
        // A reception sets every column; a later event only those it names (COALESCE).
        let statement = if insert {
            "INSERT INTO deadline_watch (dossier_id, agency, holding_agency, due_at, \
               apology_deadline, warn_from, paused, closed, late_marked, apologised, closes_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], \
               $5::timestamptz[], $6::timestamptz[], $7::bool[], $8::bool[], $9::bool[], $10::bool[], \
               $11::timestamptz[]) \
             ON CONFLICT (dossier_id) DO UPDATE SET agency = EXCLUDED.agency, \
               holding_agency = EXCLUDED.holding_agency, due_at = EXCLUDED.due_at, \
               apology_deadline = EXCLUDED.apology_deadline, warn_from = EXCLUDED.warn_from, \
               paused = EXCLUDED.paused, closed = EXCLUDED.closed, \
               late_marked = EXCLUDED.late_marked, apologised = EXCLUDED.apologised, \
               closes_at = EXCLUDED.closes_at"
        } else {
            "UPDATE deadline_watch AS w SET \
               agency = COALESCE(u.agency, w.agency), \
               holding_agency = COALESCE(u.holding_agency, w.holding_agency), \
               due_at = COALESCE(u.due_at, w.due_at), \
               apology_deadline = COALESCE(u.apology_deadline, w.apology_deadline), \
               warn_from = COALESCE(u.warn_from, w.warn_from), \
               paused = COALESCE(u.paused, w.paused), \
               closed = COALESCE(u.closed, w.closed), \
               late_marked = COALESCE(u.late_marked, w.late_marked), \
               apologised = COALESCE(u.apologised, w.apologised), \
               closes_at = CASE WHEN u.set_closes THEN u.closes_at ELSE w.closes_at END \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], \
               $5::timestamptz[], $6::timestamptz[], $7::bool[], $8::bool[], $9::bool[], $10::bool[], \
               $11::timestamptz[], $12::bool[]) \
               AS u(dossier_id, agency, holding_agency, due_at, apology_deadline, warn_from, \
                    paused, closed, late_marked, apologised, closes_at, set_closes) \
             WHERE w.dossier_id = u.dossier_id"
        };
        let query = sqlx::query(statement)
            .bind(columns.ids)
            .bind(columns.agency)
            .bind(columns.holding)
            .bind(columns.due)
            .bind(columns.apology_deadline)
            .bind(columns.warn_from)
            .bind(columns.paused)
            .bind(columns.closed)
            .bind(columns.late)
            .bind(columns.apologised)
            .bind(columns.closes);
        // Only an update distinguishes "clear the closing deadline" from "unchanged".
        let query = if insert {
            query
        } else {
            query.bind(columns.set_closes)
        };
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The patches of a batch, column by column (`NULL`: unchanged).
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    agency: Vec<Option<String>>,
    holding: Vec<Option<String>>,
    due: Vec<Option<DateTime<Utc>>>,
    apology_deadline: Vec<Option<DateTime<Utc>>>,
    warn_from: Vec<Option<DateTime<Utc>>>,
    paused: Vec<Option<bool>>,
    closed: Vec<Option<bool>>,
    late: Vec<Option<bool>>,
    apologised: Vec<Option<bool>>,
    /// The pending supplement request's closing deadline (`NULL`: none).
    closes: Vec<Option<DateTime<Utc>>>,
    /// Whether the batch set or cleared the closing deadline (else it is unchanged).
    set_closes: Vec<bool>,
}

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            ids: Vec::with_capacity(n),
            ..Columns::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_ids_are_deterministic_and_distinct() {
        let due = DateTime::parse_from_rfc3339("2024-05-02T02:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = mark_late_event_id("HS-1", due);
        assert_eq!(a, mark_late_event_id("HS-1", due));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, mark_late_event_id("HS-2", due));
        assert_ne!(
            a,
            mark_late_event_id("HS-1", due + chrono::Duration::minutes(1))
        );
        assert_eq!(
            mark_late_fingerprint("HS-1", due),
            mark_late_fingerprint("HS-1", due)
        );
        assert_ne!(
            mark_late_fingerprint("HS-1", due),
            mark_late_fingerprint("HS-2", due)
        );
        assert_eq!(
            mark_late_key("HS-1", due),
            "HS-1@2024-05-02T02:00:00.000000Z"
        );
    }

    #[test]
    fn interval_comes_from_the_config() {
        let mut config = crate::ProcessingConfig::default();
        assert_eq!(
            WatcherConfig::from_config(&config).interval,
            Duration::from_secs(30)
        );
        config.watcher_interval_secs = 0;
        assert_eq!(
            WatcherConfig::from_config(&config).interval,
            Duration::from_secs(1)
        );
    }
}
