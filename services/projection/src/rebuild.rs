//! Rebuilding the read models from the event log in PostgreSQL (never from NATS, which may have
//! lost data), while the service keeps answering from the old tables.
//!
//! 1. [`prepare`] takes an advisory lock (one rebuild at a time), creates the shadow tables
//!    `projection_contributions_next` and `stats_cells_next` without keys, and reads the log in
//!    one `REPEATABLE READ` snapshot: the head position `P` and every event at or before it,
//!    ordered by dossier and version. A second thread decodes each dossier's events, computes its
//!    [`stats::contribution`] (streamed with `COPY` into the shadow contributions while the read
//!    goes on) and expands the day deltas into rollup cells ([`crate::rollup::rollup_cells`], the
//!    one definition apply also uses), summed in memory in compact form. At the end the cells are
//!    written with one `COPY`, then the primary keys are built (one sort each). Memory is bounded
//!    ([`RebuildOptions::memory_bytes`]): past it, the sums so far are spilled as a sorted run to
//!    an unlogged scratch table, and the runs are added up with one `GROUP BY` at the end.
//! 2. [`Shadow::swap`] replaces the live tables by the shadow ones in one transaction (queries
//!    see the old figures up to its commit and the new ones after it, never a mix), then applies
//!    again every dossier with an event after `P` ([`crate::store::apply_dossier`] recomputes a
//!    dossier from the log, so this is exact whatever the consumer did meanwhile).
//!
//! Why nothing is lost: an apply of the live consumer runs wholly before the swap (the swap's
//! `ACCESS EXCLUSIVE` lock waits for its transaction) or wholly after it. One before it changed
//! only the old tables, and only for events it could see, which were committed before the swap
//! and hence are either in the snapshot (position `<= P`) or re-applied (position `> P`). One
//! after it changes the new tables, which already reflect the log up to `P`; it recomputes its
//! dossier from the log, so it may overlap with the re-apply without counting twice.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use eventlog::EventLog;
use futures::TryStreamExt;
use sqlx::Connection;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgPoolCopyExt};
use stats::{Contribution, Metric};
use tokio::sync::{Notify, mpsc};

use crate::rollup::{self, Cell, Grain, METRICS, metric_index};
use crate::store::{self, ApplyError};

/// The advisory lock key a rebuild holds for its whole run ("projrbld").
const LOCK_KEY: i64 = 0x7072_6f6a_7262_6c64;

/// The default of [`RebuildOptions::memory_bytes`]: 1 GiB.
pub const DEFAULT_MEMORY_BYTES: usize = 1 << 30;
/// Dossiers handed from the reader to the computing thread at a time (or fewer, see
/// [`EVENTS_PER_BATCH`]).
const DOSSIERS_PER_BATCH: usize = 256;
/// Events handed over at a time, at most (a batch closes after the dossier that passes it).
const EVENTS_PER_BATCH: usize = 4096;
/// Batches in flight between the reader, the computing thread and the writers.
const CHANNEL_DEPTH: usize = 4;
/// `COPY` data is sent in chunks of about this many bytes.
const COPY_CHUNK: usize = 1 << 20;
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Bytes one summed cell takes in memory: its compact key (12 bytes, padded) and its `i128`.
const CELL_BYTES: usize = std::mem::size_of::<(CellKey, i128)>();

/// How a rebuild may use memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildOptions {
    /// About how many bytes the summed cells may take in the rebuild's process (`projection
    /// rebuild --memory-mb`). Below what the whole snapshot's cells need, the cells are summed
    /// in sorted runs spilled to an unlogged scratch table and added up there with one
    /// `GROUP BY` at the end (slower, same result). Also the session's `maintenance_work_mem`
    /// for building the keys (between 64 MiB and 2 GiB). Not counted: the distinct slices seen
    /// (a few hundred bytes each) and one batch of dossiers in flight.
    pub memory_bytes: usize,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            memory_bytes: DEFAULT_MEMORY_BYTES,
        }
    }
}

/// Why a rebuild failed. The live tables are unchanged unless the error came after the swap
/// (then only the re-apply of the dossiers after `P` is incomplete, which the consumer's next
/// delivery of those dossiers, or another rebuild, completes).
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Another rebuild holds the lock.
    #[error("another rebuild is running")]
    Busy,
    /// A stored event does not decode: a bug or a corrupt row. Nothing was swapped.
    #[error("undecodable event: {0}")]
    Corrupt(String),
    /// Re-applying a dossier after the swap failed.
    #[error("re-applying dossier {dossier_id} after the swap: {source}")]
    Reapply {
        dossier_id: String,
        source: ApplyError,
    },
    /// The computing thread stopped abnormally (a bug: it panicked). Nothing was swapped.
    #[error("the rebuild's computing thread failed: {0}")]
    Internal(String),
}

/// What a rebuild is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the snapshot and summing; contributions are written meanwhile.
    Reading,
    /// Writing the summed cells.
    Writing,
    /// Adding up the spilled runs (only when the cells did not fit in memory).
    Merging,
    /// Building the primary keys and analyzing the shadow tables.
    Indexing,
    /// The shadow tables are complete.
    Done,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Reading,
        Phase::Writing,
        Phase::Merging,
        Phase::Indexing,
        Phase::Done,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Phase::Reading => "reading",
            Phase::Writing => "writing cells",
            Phase::Merging => "adding up spilled runs",
            Phase::Indexing => "building keys",
            Phase::Done => "filled",
        }
    }
}

/// How far a rebuild has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub phase: Phase,
    /// Events read so far.
    pub events: u64,
    /// The snapshot's head position: positions are gapless from 1, so this many events in all.
    pub head: i64,
    pub dossiers: u64,
    /// Rows written so far to `stats_cells_next` (or, while spilling, to the runs).
    pub cells: u64,
    pub elapsed: Duration,
}

impl Progress {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let percent = if self.head > 0 {
            100.0 * self.events as f64 / self.head as f64
        } else {
            100.0
        };
        write!(
            f,
            "{}: {} of {} events ({percent:.1}%), {} dossiers, {} cells written, {:.0} events/s",
            self.phase.as_str(),
            self.events,
            self.head,
            self.dossiers,
            self.cells,
            self.events_per_second()
        )
    }
}

/// What a completed rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct RebuildReport {
    /// The snapshot's head position: the new tables were computed from the events up to it.
    pub position: i64,
    pub events: u64,
    pub dossiers: u64,
    /// Wide rows in the new `stats_cells`.
    pub cells: i64,
    /// Time to read the log and fill the shadow tables.
    pub fill: Duration,
    /// Sorted runs spilled because the cells did not fit in [`RebuildOptions::memory_bytes`]
    /// (0: summed wholly in memory).
    pub spilled_runs: u64,
    /// Where the computing thread spent the fill.
    pub compute_times: ComputeTimes,
    /// Dossiers with events after `position`, applied again after the swap.
    pub reapplied: u64,
}

/// Shadow tables filled from the log up to `position`, not yet swapped in. Holds the rebuild's
/// lock (on a connection of its own) until [`Shadow::swap`] or drop.
#[derive(Debug)]
pub struct Shadow {
    conn: PgConnection,
    pool: PgPool,
    pub position: i64,
    pub events: u64,
    pub dossiers: u64,
    pub fill: Duration,
    pub spilled_runs: u64,
    pub compute_times: ComputeTimes,
}

/// [`prepare_with`] with the default [`RebuildOptions`].
pub async fn prepare(
    pool: &PgPool,
    progress: impl FnMut(&Progress),
) -> Result<Shadow, RebuildError> {
    prepare_with(pool, RebuildOptions::default(), progress).await
}

/// Fills the shadow tables from the log (see the module docs), reporting progress about once a
/// second. The live tables are not touched.
pub async fn prepare_with(
    pool: &PgPool,
    options: RebuildOptions,
    mut progress: impl FnMut(&Progress),
) -> Result<Shadow, RebuildError> {
    let started = Instant::now();
    // A connection of its own, not the pool's: the session's advisory lock goes with it
    // whenever it is dropped, also when a `Shadow` is dropped without a swap.
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if !locked {
        return Err(RebuildError::Busy);
    }
    match fill(pool, &mut conn, options, started, &mut progress).await {
        Ok(filled) => Ok(Shadow {
            conn,
            pool: pool.clone(),
            position: filled.head,
            events: filled.events,
            dossiers: filled.dossiers,
            fill: started.elapsed(),
            spilled_runs: filled.spilled_runs,
            compute_times: filled.times,
        }),
        Err(e) => {
            let _ = conn.close().await;
            Err(e)
        }
    }
}

/// What [`fill`] did.
struct Filled {
    head: i64,
    events: u64,
    dossiers: u64,
    spilled_runs: u64,
    times: ComputeTimes,
}

/// The counters the progress reports read, shared by the reader, the computing thread and the
/// writers.
#[derive(Debug, Default)]
struct Counters {
    phase: AtomicU8,
    events: AtomicU64,
    dossiers: AtomicU64,
    cells: AtomicU64,
}

impl Counters {
    fn set_phase(&self, phase: Phase) {
        let code = Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0);
        self.phase.store(code as u8, Ordering::Relaxed);
    }

    fn snapshot(&self, head: i64, started: Instant) -> Progress {
        let phase = Phase::ALL
            .get(usize::from(self.phase.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(Phase::Reading);
        Progress {
            phase,
            events: self.events.load(Ordering::Relaxed),
            head,
            dossiers: self.dossiers.load(Ordering::Relaxed),
            cells: self.cells.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        }
    }
}

/// Creates the shadow tables on `conn` and fills them from one snapshot of the log.
///
/// Four parts run at once: the reader streams the snapshot in `(dossier_id, version)` order and
/// hands whole dossiers over in batches; a blocking thread decodes them, computes each
/// contribution, formats the contribution rows and sums every rollup cell in compact form
/// ([`CellSums`]); one `COPY` writes the contributions as they come (on `conn`), another the
/// cells (a pool connection) — at the end, or as sorted runs when memory runs short. The
/// shadow tables have no key while they are filled; the keys are built at the end, in one sort.
async fn fill(
    pool: &PgPool,
    conn: &mut PgConnection,
    options: RebuildOptions,
    started: Instant,
    progress: &mut impl FnMut(&Progress),
) -> Result<Filled, RebuildError> {
    create_shadow_tables(conn).await?;
    // The shadow tables are thrown away on any failure: their writes need not wait for the
    // WAL flush. The swap itself commits durably (`swap` resets this first).
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut *conn)
        .await?;
    let index_memory_kb = (options.memory_bytes / 1024).clamp(64 * 1024, 2 * 1024 * 1024 - 1);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET maintenance_work_mem = '{index_memory_kb}kB'"
    )))
    .execute(&mut *conn)
    .await?;

    let mut reader = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *reader)
        .await?;
    // The snapshot is taken at the first query: the head and the events come from one state.
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&mut *reader)
        .await?;

    let counters = Arc::new(Counters::default());
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(CHANNEL_DEPTH);
    let (contributions_tx, contributions_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
    let (cells_tx, cells_rx) = mpsc::channel::<ToWriter>(CHANNEL_DEPTH);
    let computing = {
        let counters = counters.clone();
        let memory = options.memory_bytes;
        tokio::task::spawn_blocking(move || {
            compute(batch_rx, contributions_tx, cells_tx, memory, &counters)
        })
    };

    let done = Notify::new();
    let work = async {
        let outcome = tokio::join!(
            read_snapshot(&mut reader, head, batch_tx, &counters),
            write_contributions(conn, contributions_rx),
            write_cells(pool, cells_rx, &counters),
        );
        done.notify_one();
        outcome
    };
    let ticker = async {
        loop {
            tokio::select! {
                _ = done.notified() => break,
                _ = tokio::time::sleep(PROGRESS_EVERY) => progress(&counters.snapshot(head, started)),
            }
        }
    };
    let ((read, contributions, cells), ()) = tokio::join!(work, ticker);
    let computed = computing
        .await
        .map_err(|e| RebuildError::Internal(e.to_string()))?;
    // The first failure is the cause; the others follow from the channels it closed (a
    // failing part closes its channels, and the parts it feeds or that feed it stop).
    if let Err(e @ RebuildError::Corrupt(_)) = computed {
        return Err(e);
    }
    contributions?;
    cells?;
    let (events, dossiers) = read?;
    let computed = computed?;
    reader.commit().await?;

    if computed.spilled_runs > 0 {
        counters.set_phase(Phase::Merging);
        progress(&counters.snapshot(head, started));
        let merged = sqlx::query(sqlx::AssertSqlSafe(merge_runs_sql()))
            .execute(&mut *conn)
            .await?;
        counters
            .cells
            .store(merged.rows_affected(), Ordering::Relaxed);
        sqlx::query("DROP TABLE stats_cells_runs")
            .execute(&mut *conn)
            .await?;
    }
    counters.set_phase(Phase::Indexing);
    progress(&counters.snapshot(head, started));
    for sql in [
        "ALTER TABLE projection_contributions_next \
           ADD CONSTRAINT projection_contributions_next_pkey PRIMARY KEY (dossier_id)",
        "ALTER TABLE stats_cells_next ADD CONSTRAINT stats_cells_next_pkey PRIMARY KEY \
           (slice, grain, period)",
        "CREATE INDEX stats_cells_next_by_rollup ON stats_cells_next \
           (rollup, grain, period, slice)",
        "ANALYZE projection_contributions_next, stats_cells_next",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    counters.set_phase(Phase::Done);
    progress(&counters.snapshot(head, started));
    Ok(Filled {
        head,
        events,
        dossiers,
        spilled_runs: computed.spilled_runs,
        times: computed.times,
    })
}

/// Drops any shadow left by an interrupted rebuild and creates empty ones shaped like the live
/// tables, without keys (built once filled, named as the live ones will be after the swap
/// renames them), and the unlogged scratch table for spilled runs.
///
/// The shadows are ordinary (logged) tables: they become the live tables at the swap and must
/// survive a crash from then on. Without an index, `COPY` writes each page to the WAL once.
async fn create_shadow_tables(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for sql in [
        "DROP TABLE IF EXISTS projection_contributions_next, stats_cells_next, \
           stats_cells_runs, stats_rollup_next, stats_rollup_runs",
        "CREATE TABLE projection_contributions_next \
           (LIKE projection_contributions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "CREATE TABLE stats_cells_next \
           (LIKE stats_cells INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "CREATE UNLOGGED TABLE stats_cells_runs (LIKE stats_cells)",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// One stored event as read, not yet decoded.
struct RawEvent {
    version: i32,
    event_type: String,
    occurred_at: DateTime<Utc>,
    payload: serde_json::Value,
}

/// One dossier's events up to the snapshot, in version order.
struct RawDossier {
    id: String,
    events: Vec<RawEvent>,
}

/// What the reader hands to the computing thread.
enum Batch {
    Dossiers(Vec<RawDossier>),
    /// The snapshot was read to its end. A channel closed without it means the reader failed:
    /// the computing thread then writes nothing more.
    End,
}

/// Streams every event of the snapshot up to `head` in `(dossier_id, version)` order (the
/// unique index) and sends whole dossiers in batches; returns `(events, dossiers)`.
async fn read_snapshot(
    reader: &mut PgConnection,
    head: i64,
    out: mpsc::Sender<Batch>,
    counters: &Counters,
) -> Result<(u64, u64), RebuildError> {
    let mut rows = sqlx::query(
        "SELECT dossier_id, version, event_type, occurred_at, payload FROM events \
         WHERE position <= $1 ORDER BY dossier_id, version",
    )
    .bind(head)
    .fetch(reader);
    let mut batch: Vec<RawDossier> = Vec::with_capacity(DOSSIERS_PER_BATCH);
    let mut batch_events = 0usize;
    let (mut events, mut dossiers) = (0u64, 0u64);
    // The computing thread hung up: its error (or the writer's that stopped it) is the cause.
    let gone = || RebuildError::Internal("the computing thread stopped".into());
    while let Some(row) = rows.try_next().await? {
        let dossier_id: String = row.try_get("dossier_id")?;
        let event = RawEvent {
            version: row.try_get("version")?,
            event_type: row.try_get("event_type")?,
            occurred_at: row.try_get("occurred_at")?,
            payload: row.try_get("payload")?,
        };
        match batch.last_mut() {
            Some(d) if d.id == dossier_id => d.events.push(event),
            _ => {
                if batch.len() >= DOSSIERS_PER_BATCH || batch_events >= EVENTS_PER_BATCH {
                    let full =
                        std::mem::replace(&mut batch, Vec::with_capacity(DOSSIERS_PER_BATCH));
                    out.send(Batch::Dossiers(full)).await.map_err(|_| gone())?;
                    batch_events = 0;
                }
                batch.push(RawDossier {
                    id: dossier_id,
                    events: vec![event],
                });
                dossiers += 1;
                counters.dossiers.store(dossiers, Ordering::Relaxed);
            }
        }
        batch_events += 1;
        events += 1;
        counters.events.store(events, Ordering::Relaxed);
    }
    if !batch.is_empty() {
        out.send(Batch::Dossiers(batch)).await.map_err(|_| gone())?;
    }
    out.send(Batch::End).await.map_err(|_| gone())?;
    Ok((events, dossiers))
}

/// Writes the contribution rows (`COPY` text format) as the computing thread formats them.
async fn write_contributions(
    conn: &mut PgConnection,
    mut rows: mpsc::Receiver<Vec<u8>>,
) -> Result<u64, sqlx::Error> {
    let mut copy = conn
        .copy_in_raw(
            "COPY projection_contributions_next (dossier_id, contribution, version) FROM STDIN",
        )
        .await?;
    while let Some(chunk) = rows.recv().await {
        copy.send(chunk).await?;
    }
    copy.finish().await
}

/// Where a chunk of cell rows goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A sorted run of partial sums, added up at the end.
    Runs,
    /// The final, summed cells.
    Shadow,
}

impl Target {
    fn copy_statement(self) -> &'static str {
        match self {
            // Every column, in the table's order: slice, rollup, grain, period, the metrics.
            Target::Runs => "COPY stats_cells_runs FROM STDIN",
            Target::Shadow => "COPY stats_cells_next FROM STDIN",
        }
    }
}

/// Writes the cell rows to their target, one `COPY` per change of target, each on a pool
/// connection of its own.
async fn write_cells(
    pool: &PgPool,
    mut rows: mpsc::Receiver<ToWriter>,
    counters: &Counters,
) -> Result<(), sqlx::Error> {
    let mut current = None;
    while let Some(message) = rows.recv().await {
        let (target, chunk) = match message {
            ToWriter::Rows(target, chunk) => (target, chunk),
            ToWriter::Slices(slices, reply) => {
                // Committed at once (a connection of its own, autocommit): ids never go back.
                let mut conn = pool.acquire().await?;
                let set: std::collections::BTreeSet<(u8, [&str; 6])> = slices
                    .iter()
                    .map(|(r, d)| (*r, d.each_ref().map(|s| &**s)))
                    .collect();
                let ids = store::slice_ids(&mut conn, &set).await?;
                let mut out = Vec::with_capacity(slices.len());
                for (rollup, dims) in &slices {
                    let id = ids.get(&(*rollup, dims.clone().map(String::from))).copied();
                    out.push(id.ok_or_else(|| {
                        sqlx::Error::Protocol("a slice without an id after its insert".into())
                    })?);
                }
                // The computing thread gone: its own error is the cause.
                let _ = reply.send(out);
                continue;
            }
        };
        let copy = match &mut current {
            Some((t, copy)) if *t == target => copy,
            _ => {
                if let Some((_, copy)) = current.take() {
                    sqlx::postgres::PgCopyIn::finish(copy).await?;
                }
                let copy = pool.copy_in_raw(target.copy_statement()).await?;
                &mut current.insert((target, copy)).1
            }
        };
        let lines = chunk.iter().filter(|b| **b == b'\n').count() as u64;
        copy.send(chunk).await?;
        counters.cells.fetch_add(lines, Ordering::Relaxed);
    }
    if let Some((_, copy)) = current.take() {
        copy.finish().await?;
    }
    Ok(())
}

/// What the computing thread sends the cells' writer.
enum ToWriter {
    /// Rows (`COPY` text) for a target.
    Rows(Target, Vec<u8>),
    /// Slices `(rollup, dims)` to number in `stats_slice`; their ids, in the same order, go
    /// back on the channel.
    Slices(
        Vec<(u8, [Box<str>; 6])>,
        tokio::sync::oneshot::Sender<Vec<i32>>,
    ),
}

/// What the computing thread did.
struct Computed {
    spilled_runs: u64,
    times: ComputeTimes,
}

/// The computing thread stopped early because the reader failed (it closed its channel without
/// [`Batch::End`]) or a writer did (it closed its): the cause is theirs.
struct Stopped;

impl From<Stopped> for RebuildError {
    fn from(_: Stopped) -> Self {
        RebuildError::Internal("a writer or the reader stopped".into())
    }
}

/// The computing thread: decodes each dossier's events, computes its contribution (written as a
/// `COPY` row), expands the batch's day deltas into rollup cells with [`rollup::rollup_cells`]
/// (the one definition of the cells, as apply uses it) and sums them in [`CellSums`]. Sends
/// the contribution rows and, when memory runs short and at the end, the cell rows.
fn compute(
    mut batches: mpsc::Receiver<Batch>,
    contributions: mpsc::Sender<Vec<u8>>,
    cells: mpsc::Sender<ToWriter>,
    memory_bytes: usize,
    counters: &Counters,
) -> Result<Computed, RebuildError> {
    // A quarter of the budget for the day sums, the rest for the expanded cells.
    let mut days = DaySums::new(memory_bytes / 4);
    let mut sums = CellSums::new(memory_bytes - memory_bytes / 4);
    let mut rows: Vec<u8> = Vec::with_capacity(COPY_CHUNK + COPY_CHUNK / 4);
    let mut spilled_runs = 0u64;
    let mut times = ComputeTimes::default();
    loop {
        let t = Instant::now();
        let batch = match batches.blocking_recv() {
            Some(Batch::Dossiers(batch)) => batch,
            Some(Batch::End) => break,
            None => return Err(Stopped.into()),
        };
        times.waiting_for_reader += t.elapsed();
        let mut computed: Vec<Option<Contribution>> = Vec::with_capacity(batch.len());
        for dossier in batch {
            let t = Instant::now();
            let version = dossier.events.last().map_or(0, |e| e.version);
            let events = decode(&dossier)?;
            let decoded = Instant::now();
            times.decoding += decoded - t;
            let contribution = stats::contribution(&events);
            push_escaped(&mut rows, &dossier.id);
            rows.push(b'\t');
            match &contribution {
                // As apply stores it (`sqlx::types::Json` serializes with `serde_json` too).
                Some(c) => {
                    let json = serde_json::to_string(c).map_err(|e| {
                        RebuildError::Corrupt(format!("contribution of {}: {e}", dossier.id))
                    })?;
                    push_escaped(&mut rows, &json);
                }
                None => rows.extend_from_slice(b"\\N"),
            }
            rows.push(b'\t');
            push_int(&mut rows, i128::from(version));
            rows.push(b'\n');
            computed.push(contribution);
            times.contributions += decoded.elapsed();
        }
        if rows.len() >= COPY_CHUNK {
            let t = Instant::now();
            let chunk =
                std::mem::replace(&mut rows, Vec::with_capacity(COPY_CHUNK + COPY_CHUNK / 4));
            contributions.blocking_send(chunk).map_err(|_| Stopped)?;
            times.waiting_for_writers += t.elapsed();
        }
        // The day deltas are summed per slice, day and metric first (a hash map of small
        // keys); each distinct one is expanded once, when the map is full or at the end.
        let t = Instant::now();
        for c in computed.iter().flatten() {
            let slice = days.slice(&c.slice);
            for ((day, metric), delta) in &c.deltas {
                days.add(slice, *day, *metric, *delta);
            }
        }
        times.summing += t.elapsed();
        if days.full() {
            spilled_runs += expand(&mut days, &mut sums, &cells, &mut times)?;
        }
    }
    spilled_runs += expand(&mut days, &mut sums, &cells, &mut times)?;
    if !rows.is_empty() {
        contributions.blocking_send(rows).map_err(|_| Stopped)?;
    }
    drop(contributions);
    counters.set_phase(Phase::Writing);
    let t = Instant::now();
    if spilled_runs > 0 {
        spill(&mut sums, Target::Runs, &cells)?;
        spilled_runs += 1;
    } else {
        spill(&mut sums, Target::Shadow, &cells)?;
    }
    times.writing_cells += t.elapsed();
    Ok(Computed {
        spilled_runs,
        times,
    })
}

/// Expands every day sum of `days` into its rollup cells with [`rollup::rollup_cells`] (the
/// one definition of the cells, as apply uses it: one delta per call, whose map stays small),
/// adds them to `sums` (spilling a run whenever it is full) and empties `days`; returns the
/// runs spilled. The sums are linear, so expanding sums of deltas is expanding the deltas.
fn expand(
    days: &mut DaySums,
    sums: &mut CellSums,
    cells: &mpsc::Sender<ToWriter>,
    times: &mut ComputeTimes,
) -> Result<u64, Stopped> {
    let mut spilled = 0;
    let mut entries: Vec<((u32, NaiveDate, Metric), i128)> = days.sums.drain().collect();
    // By slice: the cells of one slice share its strings, which `Dims::recent` recognizes.
    entries.sort_unstable_by_key(|(k, _)| *k);
    let mut last = None;
    for ((slice, day, metric), delta) in entries {
        if delta == 0 {
            continue;
        }
        if last != Some(slice) {
            sums.dims.forget_recent();
            last = Some(slice);
        }
        let t = Instant::now();
        let expanded = rollup::rollup_cells([(&days.slices[slice as usize], day, metric, delta)]);
        let summed = Instant::now();
        times.expanding += summed - t;
        let full = sums.add(&expanded);
        times.summing += summed.elapsed();
        if full {
            let t = Instant::now();
            spill(sums, Target::Runs, cells)?;
            times.writing_cells += t.elapsed();
            spilled += 1;
        }
    }
    Ok(spilled)
}

/// The dossiers' day deltas summed per slice (every dimension), day and metric, before any
/// expansion: many dossiers share a slice and a day.
struct DaySums {
    ids: HashMap<stats::Slice, u32>,
    slices: Vec<stats::Slice>,
    sums: HashMap<(u32, NaiveDate, Metric), i128, FxBuild>,
    /// Most entries kept before [`DaySums::full`] says to expand them.
    limit: usize,
}

impl DaySums {
    /// Bytes an entry takes in the map, roughly (key, value, the table's slack).
    const ENTRY_BYTES: usize = 48;

    fn new(memory_bytes: usize) -> DaySums {
        DaySums {
            ids: HashMap::new(),
            slices: Vec::new(),
            sums: HashMap::default(),
            limit: (memory_bytes / Self::ENTRY_BYTES).max(1024),
        }
    }

    fn slice(&mut self, slice: &stats::Slice) -> u32 {
        if let Some(id) = self.ids.get(slice) {
            return *id;
        }
        let id = self.slices.len() as u32;
        self.slices.push(slice.clone());
        self.ids.insert(slice.clone(), id);
        id
    }

    fn add(&mut self, slice: u32, day: NaiveDate, metric: Metric, delta: i128) {
        *self.sums.entry((slice, day, metric)).or_insert(0) += delta;
    }

    fn full(&self) -> bool {
        self.sums.len() >= self.limit
    }
}

/// Where the rebuild's computing thread spent its time (for benchmarks and tuning).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ComputeTimes {
    /// Waiting for the next batch of dossiers: the reader is the slower side.
    pub waiting_for_reader: Duration,
    /// Decoding events into domain events.
    pub decoding: Duration,
    /// `stats::contribution` and the contribution rows (JSON, `COPY` text).
    pub contributions: Duration,
    /// Waiting for the contributions' `COPY` to take a chunk.
    pub waiting_for_writers: Duration,
    /// `rollup::rollup_cells` over each distinct slice, day and metric sum.
    pub expanding: Duration,
    /// Summing the day deltas per slice, day and metric, and adding the expanded cells to the
    /// compact sums (numbering slices, sorting, summing up).
    pub summing: Duration,
    /// Formatting the cell rows and handing them to their `COPY` (which waits for the server).
    pub writing_cells: Duration,
}

/// Sums up `sums` and sends every cell with a non-zero metric to `target` as a wide row (the
/// slice's id, numbered first in `stats_slice` if new, its grain and period, one column per
/// metric, `\N` for 0), in key order; empties `sums`.
fn spill(sums: &mut CellSums, target: Target, out: &mpsc::Sender<ToWriter>) -> Result<(), Stopped> {
    sums.compact();
    sums.dims.register(out)?;
    let mut rows: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
    let cells = &sums.cells;
    let mut i = 0;
    while i < cells.len() {
        let (key, _) = cells[i];
        let mut values = [0i128; METRICS];
        while i < cells.len()
            && cells[i].0.dims == key.dims
            && cells[i].0.grain == key.grain
            && cells[i].0.period == key.period
        {
            values[metric_index(cells[i].0.metric)] += cells[i].1;
            i += 1;
        }
        if values.iter().all(|v| *v == 0) {
            continue;
        }
        push_int(&mut rows, i128::from(sums.dims.global(key.dims)));
        rows.push(b'\t');
        push_int(&mut rows, i128::from(sums.dims.rollup(key.dims)));
        rows.push(b'\t');
        rows.extend_from_slice(key.grain.code().as_bytes());
        rows.push(b'\t');
        push_date(&mut rows, key.period);
        for v in values {
            rows.push(b'\t');
            if v == 0 {
                rows.extend_from_slice(b"\\N");
            } else {
                push_int(&mut rows, v);
            }
        }
        rows.push(b'\n');
        if rows.len() >= COPY_CHUNK {
            let chunk = std::mem::replace(&mut rows, Vec::with_capacity(COPY_CHUNK + 4096));
            out.blocking_send(ToWriter::Rows(target, chunk))
                .map_err(|_| Stopped)?;
        }
    }
    if !rows.is_empty() {
        out.blocking_send(ToWriter::Rows(target, rows))
            .map_err(|_| Stopped)?;
    }
    sums.clear();
    Ok(())
}

/// Adds up the spilled runs into the shadow cells: per slice, grain and period, each metric's
/// sum (NULL for 0), rows whose metrics are all 0 left out.
fn merge_runs_sql() -> String {
    let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
    let sums: Vec<String> = names
        .iter()
        .map(|m| format!("NULLIF(sum({m}), 0)"))
        .collect();
    let any: Vec<String> = names.iter().map(|m| format!("sum({m}) <> 0")).collect();
    format!(
        "INSERT INTO stats_cells_next (slice, rollup, grain, period, {cols}) \
         SELECT slice, rollup, grain, period, {sums} FROM stats_cells_runs \
         GROUP BY slice, rollup, grain, period HAVING {any}",
        cols = names.join(", "),
        sums = sums.join(", "),
        any = any.join(" OR "),
    )
}

/// A dossier's events decoded into domain events, by the decoder apply uses.
fn decode(dossier: &RawDossier) -> Result<Vec<domain::Event>, RebuildError> {
    dossier
        .events
        .iter()
        .map(|e| {
            domain::Event::from_row(&e.event_type, e.occurred_at, &e.payload).map_err(|err| {
                RebuildError::Corrupt(format!(
                    "event {} of dossier {}: {err}",
                    e.version, dossier.id
                ))
            })
        })
        .collect()
}

/// A rollup cell in compact form: the rollup and dimension values (the slice) are an index
/// into [`Dims`]. Ordered by slice, grain, period, then metric: the metrics of one wide row of
/// `stats_cells` are adjacent once sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct CellKey {
    dims: u32,
    grain: Grain,
    period: NaiveDate,
    metric: Metric,
}

/// The rollup cells summed so far: a vector of `(key, partial sum)` that is sorted and summed
/// up ("compacted") whenever it has doubled since, so that it holds each cell about once or
/// twice; bounded by the memory budget, beyond which the caller spills it as a sorted run.
struct CellSums {
    cells: Vec<(CellKey, i128)>,
    /// Length after the last compaction.
    compacted: usize,
    memory_bytes: usize,
    dims: Dims,
}

impl CellSums {
    /// Fewest cells kept before a compaction, whatever the budget.
    const MIN_CELLS: usize = 1024;

    fn new(memory_bytes: usize) -> CellSums {
        CellSums {
            cells: Vec::new(),
            compacted: 0,
            memory_bytes,
            dims: Dims::default(),
        }
    }

    /// How many cells the budget leaves room for, besides the dimension values.
    fn limit(&self) -> usize {
        (self.memory_bytes.saturating_sub(self.dims.bytes) / CELL_BYTES).max(Self::MIN_CELLS)
    }

    /// Adds a batch's cells; true when the caller is to spill (memory is short even after
    /// summing up).
    fn add(&mut self, batch: &std::collections::BTreeMap<Cell<'_>, i128>) -> bool {
        let n = batch.len();
        let limit = self.limit();
        let mut spill = false;
        if self.cells.len() + n > limit
            || self.cells.len() >= 2 * self.compacted.max(Self::MIN_CELLS)
        {
            self.compact();
            // Summing up left more than three quarters of the budget: spill, so that the next
            // compaction comes after at least a quarter of it (amortized, never every batch).
            spill = self.cells.len() + n > limit / 4 * 3;
        }
        if self.cells.len() + n > self.cells.capacity() {
            let want = (self.cells.len() + n)
                .max(self.cells.capacity() * 2)
                .min(limit.max(self.cells.len() + n));
            self.cells.reserve_exact(want - self.cells.len());
        }
        for (cell, value) in batch {
            let key = CellKey {
                dims: self.dims.id(cell.rollup, &cell.dims),
                grain: cell.grain,
                period: cell.period,
                metric: cell.metric,
            };
            self.cells.push((key, *value));
        }
        spill
    }

    /// Sorts the cells by key and sums the equal ones (zeros stay: they are skipped when
    /// written).
    fn compact(&mut self) {
        self.cells.sort_unstable_by_key(|(k, _)| *k);
        let mut write = 0usize;
        for read in 0..self.cells.len() {
            let (key, value) = self.cells[read];
            if write > 0 && self.cells[write - 1].0 == key {
                self.cells[write - 1].1 += value;
            } else {
                self.cells[write] = (key, value);
                write += 1;
            }
        }
        self.cells.truncate(write);
        self.compacted = write;
    }

    fn clear(&mut self) {
        self.cells.clear();
        self.compacted = 0;
    }
}

/// A slice by its rollup and the addresses and lengths of its six strings.
type Address = (u8, [(usize, usize); 6]);

/// The distinct slices of the cells (a rollup and `[&str; 6]` in [`stats::Dimension::ALL`]
/// order), each given a local number, and the id `stats_slice` gives it once registered
/// ([`Dims::register`], before any row naming it is written).
#[derive(Default)]
struct Dims {
    ids: HashMap<Box<[u8]>, u32, FxBuild>,
    tuples: Vec<(u8, [Box<str>; 6])>,
    /// The `stats_slice` ids of `tuples[..global.len()]`.
    global: Vec<i32>,
    /// Bytes held, roughly.
    bytes: usize,
    /// The lookup key being built (reused).
    key: Vec<u8>,
    /// The last few tuples looked up, by the addresses and lengths of their strings: the cells
    /// of one slice borrow the same strings, so most lookups end here without hashing. Equal
    /// addresses and lengths mean equal strings; a miss only costs the hash lookup.
    recent: Vec<(Address, u32)>,
}

impl Dims {
    /// How many tuples [`Dims::recent`] keeps (a slice has one per rollup).
    const RECENT: usize = 8;

    /// Empties [`Dims::recent`]: its addresses may be reused once the strings they point to
    /// are dropped, so it must not outlive the slices it saw (called for each new slice).
    fn forget_recent(&mut self) {
        self.recent.clear();
    }

    fn id(&mut self, rollup: u8, dims: &[&str; 6]) -> u32 {
        let address = (rollup, dims.map(|d| (d.as_ptr() as usize, d.len())));
        if let Some((_, id)) = self.recent.iter().find(|(a, _)| *a == address) {
            return *id;
        }
        let id = self.lookup(rollup, dims);
        if self.recent.len() >= Self::RECENT {
            self.recent.remove(0);
        }
        self.recent.push((address, id));
        id
    }

    fn lookup(&mut self, rollup: u8, dims: &[&str; 6]) -> u32 {
        self.key.clear();
        self.key.push(rollup);
        for d in dims {
            self.key.extend_from_slice(&(d.len() as u32).to_le_bytes());
            self.key.extend_from_slice(d.as_bytes());
        }
        if let Some(id) = self.ids.get(self.key.as_slice()) {
            return *id;
        }
        let id = self.tuples.len() as u32;
        self.bytes += 3 * self.key.len() + 160;
        self.tuples.push((rollup, dims.map(Box::from)));
        self.ids.insert(self.key.clone().into_boxed_slice(), id);
        id
    }

    /// Numbers the slices not yet registered in `stats_slice` (through the cells' writer,
    /// committed there) and keeps their ids.
    fn register(&mut self, out: &mpsc::Sender<ToWriter>) -> Result<(), Stopped> {
        if self.global.len() == self.tuples.len() {
            return Ok(());
        }
        let new: Vec<(u8, [Box<str>; 6])> = self.tuples[self.global.len()..].to_vec();
        let n = new.len();
        let (reply, ids) = tokio::sync::oneshot::channel();
        out.blocking_send(ToWriter::Slices(new, reply))
            .map_err(|_| Stopped)?;
        let ids = ids.blocking_recv().map_err(|_| Stopped)?;
        if ids.len() != n {
            return Err(Stopped);
        }
        self.global.extend(ids);
        Ok(())
    }

    /// The `stats_slice` id of a registered slice.
    fn global(&self, id: u32) -> i32 {
        self.global.get(id as usize).copied().unwrap_or(-1)
    }

    /// The rollup of a slice.
    fn rollup(&self, id: u32) -> u8 {
        self.tuples[id as usize].0
    }
}

/// A fast non-cryptographic hash (the FxHash of rustc) for the dimension lookup: its keys are
/// the log's own codes, not attacker-chosen lookups into a long-lived table.
#[derive(Debug, Clone, Copy, Default)]
struct FxBuild;

impl BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Appends `text` escaped for `COPY`'s text format (backslash, newline, carriage return, tab).
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    for &b in text.as_bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// Appends `n` in decimal.
fn push_int(out: &mut Vec<u8>, n: i128) {
    if n < 0 {
        out.push(b'-');
    }
    let mut v = n.unsigned_abs();
    let mut digits = [0u8; 40];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends `day` as PostgreSQL reads a date under any `DateStyle`: ISO `YYYY-MM-DD`, with
/// ` BC` for years before 1 (chrono's year 0 is 1 BC).
fn push_date(out: &mut Vec<u8>, day: NaiveDate) {
    let year = day.year();
    let (shown, bc) = if year >= 1 {
        (year, false)
    } else {
        (1 - year, true)
    };
    push_padded(out, i128::from(shown), 4);
    out.push(b'-');
    push_padded(out, i128::from(day.month()), 2);
    out.push(b'-');
    push_padded(out, i128::from(day.day()), 2);
    if bc {
        out.extend_from_slice(b" BC");
    }
}

/// Appends `n >= 0` in decimal with at least `width` digits.
fn push_padded(out: &mut Vec<u8>, n: i128, width: usize) {
    let start = out.len();
    push_int(out, n);
    let len = out.len() - start;
    if len < width {
        out.splice(start..start, std::iter::repeat_n(b'0', width - len));
    }
}
impl Shadow {
    /// Swaps the shadow tables in (one transaction), then re-applies every dossier with events
    /// after [`Shadow::position`]. Waits up to `lock_timeout` for running queries and applies to
    /// finish before the swap (new ones wait behind it); on a timeout the live tables stay as
    /// they were and the error is returned (the shadow is dropped with its lock).
    pub async fn swap(mut self, lock_timeout: Duration) -> Result<RebuildReport, RebuildError> {
        let result = self.swap_tables(lock_timeout).await;
        if let Err(e) = result {
            let _ = self.conn.close().await;
            return Err(e.into());
        }
        let cells: i64 = sqlx::query_scalar("SELECT count(*) FROM stats_cells")
            .fetch_one(&mut self.conn)
            .await?;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LOCK_KEY)
            .execute(&mut self.conn)
            .await?;
        let reapplied = reapply_after(&self.pool, self.position).await?;
        Ok(RebuildReport {
            position: self.position,
            events: self.events,
            dossiers: self.dossiers,
            cells,
            fill: self.fill,
            spilled_runs: self.spilled_runs,
            compute_times: self.compute_times,
            reapplied,
        })
    }

    async fn swap_tables(&mut self, lock_timeout: Duration) -> Result<(), sqlx::Error> {
        sqlx::query("RESET synchronous_commit")
            .execute(&mut self.conn)
            .await?;
        let mut tx = sqlx::Connection::begin(&mut self.conn).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET LOCAL lock_timeout = '{}ms'",
            lock_timeout.as_millis()
        )))
        .execute(&mut *tx)
        .await?;
        let view = store::rollup_view_sql();
        for sql in [
            // The order apply takes them in: contributions, then aggregates. The dictionary
            // `stats_slice` is shared by both generations of cells: it stays.
            "LOCK TABLE projection_contributions, stats_cells IN ACCESS EXCLUSIVE MODE",
            "DROP VIEW stats_rollup",
            "DROP TABLE projection_contributions, stats_cells",
            "ALTER TABLE projection_contributions_next RENAME TO projection_contributions",
            "ALTER TABLE projection_contributions RENAME CONSTRAINT \
               projection_contributions_next_pkey TO projection_contributions_pkey",
            "ALTER TABLE stats_cells_next RENAME TO stats_cells",
            "ALTER TABLE stats_cells RENAME CONSTRAINT stats_cells_next_pkey \
               TO stats_cells_pkey",
            "ALTER INDEX stats_cells_next_by_rollup RENAME TO stats_cells_by_rollup",
            // The long-form view follows the table it was made on: made again on the new one.
            view.as_str(),
            // Every dossier of the snapshot is now in the figures: a failure recorded for one
            // is over (those with later events are applied again below, and a failure there is
            // recorded again).
            "DELETE FROM projection_failures f USING projection_contributions c \
               WHERE c.dossier_id = f.dossier_id",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// Applies again every dossier with an event after `position`; returns how many.
async fn reapply_after(pool: &PgPool, position: i64) -> Result<u64, RebuildError> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT dossier_id FROM events WHERE position > $1")
            .bind(position)
            .fetch_all(pool)
            .await?;
    let log = EventLog::from_pool(pool.clone());
    for dossier_id in &ids {
        if let Err(source) = store::apply_and_commit(&log, dossier_id).await {
            // Left for the consumer's redelivery: recorded, so that it is not silently missing.
            if let Err(e) = store::record_failure(pool, dossier_id, &source).await {
                tracing::warn!(%dossier_id, error = %e, "cannot record the failed re-apply");
            }
            return Err(RebuildError::Reapply {
                dossier_id: dossier_id.clone(),
                source,
            });
        }
    }
    Ok(ids.len() as u64)
}

/// [`rebuild_with`] with the default [`RebuildOptions`].
pub async fn rebuild(
    pool: &PgPool,
    progress: impl FnMut(&Progress),
) -> Result<RebuildReport, RebuildError> {
    rebuild_with(pool, RebuildOptions::default(), progress).await
}

/// [`prepare_with`] then [`Shadow::swap`]: what `projection rebuild` runs.
pub async fn rebuild_with(
    pool: &PgPool,
    options: RebuildOptions,
    progress: impl FnMut(&Progress),
) -> Result<RebuildReport, RebuildError> {
    let shadow = prepare_with(pool, options, progress).await?;
    shadow.swap(Duration::from_secs(30)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn copy_text_is_escaped_and_numbers_and_dates_are_exact() {
        assert_eq!(
            text(|o| push_escaped(o, "a\\b\tc\nd\re\"é")),
            "a\\\\b\\tc\\nd\\re\"é"
        );
        assert_eq!(text(|o| push_int(o, 0)), "0");
        assert_eq!(text(|o| push_int(o, -42)), "-42");
        assert_eq!(text(|o| push_int(o, i128::MAX)), i128::MAX.to_string());
        assert_eq!(text(|o| push_int(o, i128::MIN)), i128::MIN.to_string());
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(text(|o| push_date(o, day(2024, 3, 5))), "2024-03-05");
        assert_eq!(text(|o| push_date(o, day(987, 12, 31))), "0987-12-31");
        assert_eq!(text(|o| push_date(o, day(0, 1, 1))), "0001-01-01 BC");
        assert_eq!(text(|o| push_date(o, day(12345, 6, 7))), "12345-06-07");
    }

    #[test]
    fn cell_sums_add_up_equal_cells_and_ask_to_spill_only_past_the_budget() {
        let slice = |agency: &str| stats::Slice {
            level: domain::Level::District,
            agency: domain::AgencyCode::parse(agency).unwrap(),
            sector: domain::SectorCode::parse("land").unwrap(),
            procedure: domain::ProcedureCode::parse("1.001").unwrap(),
            channel: domain::Channel::Online,
            applicant_type: domain::ApplicantType::Citizen,
        };
        let day = NaiveDate::from_ymd_opt(2024, 3, 5).unwrap();
        let (a, b) = (slice("A"), slice("B"));
        let one = rollup::rollup_cells([(&a, day, Metric::Received, 1)]);
        let other = rollup::rollup_cells([(&b, day, Metric::Received, 2)]);
        let mut sums = CellSums::new(DEFAULT_MEMORY_BYTES);
        for _ in 0..3 {
            assert!(!sums.add(&one));
            assert!(!sums.add(&other));
        }
        sums.compact();
        let expected = rollup::rollup_cells([
            (&a, day, Metric::Received, 3),
            (&b, day, Metric::Received, 6),
        ]);
        assert_eq!(sums.cells.len(), expected.len());
        let found: std::collections::BTreeMap<(u8, Grain, NaiveDate, Vec<u8>, Metric), i128> = sums
            .cells
            .iter()
            .map(|(k, v)| {
                let (rollup, dims) = &sums.dims.tuples[k.dims as usize];
                let dims = dims.join("\t").into_bytes();
                ((*rollup, k.grain, k.period, dims, k.metric), *v)
            })
            .collect();
        for (cell, value) in &expected {
            let dims = cell.dims.join("\t").into_bytes();
            let key = (cell.rollup, cell.grain, cell.period, dims, cell.metric);
            assert_eq!(found.get(&key), Some(value), "{cell:?}");
        }

        // With room for the minimum only, adding past three quarters of it asks to spill.
        let mut small = CellSums::new(0);
        let mut asked = false;
        for i in 0..200 {
            let s = slice(&format!("X{i}"));
            let cells = rollup::rollup_cells([(&s, day, Metric::Received, 1)]);
            asked |= small.add(&cells);
        }
        assert!(asked);
    }
}
