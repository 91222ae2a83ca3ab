//! Rebuilding the read models from the event log in PostgreSQL (never from NATS, which may have
//! lost data), while the service keeps answering from the old tables.
//!
//! 1. [`prepare`] takes an advisory lock (one rebuild at a time), creates the shadow tables
//!    `projection_contributions_next` and `stats_cells_next` without keys, and reads the log in
//!    one `REPEATABLE READ` snapshot: the head position `P` and every dossier up to it, through
//!    the log's one reader of that shape ([`eventlog::dossiers_up_to`], decoding only the
//!    columns figures need, the payload as text: [`eventlog::EventText`]). Two phases, each on
//!    every core:
//!    - *reading*: the reader hands whole dossiers in batches to a few worker threads (one per
//!      core, [`MAX_WORKERS`] at most) taking them from one queue. Each decodes its dossiers,
//!      computes their [`stats::contribution`] (streamed with `COPY` into the shadow
//!      contributions while the read goes on) and adds their day deltas to sums of its own per
//!      slice (every dimension), day and metric;
//!    - *writing the cells*: the slices' rollup projections are numbered in `stats_slice`, and
//!      each worker expands every day sum (of all the workers) into the rollup × grain cells of
//!      its own share of the rollup slices (a hash of the slice number: the shares are
//!      disjoint, so nothing is merged between workers), sums them in compact form and writes
//!      them as wide rows with a binary `COPY` of its own, all at once.
//!
//!    The cells are those of [`crate::rollup::rollup_cells`] (the one definition apply also
//!    uses): the expansion here projects each slice once with the same masks and grains, and a
//!    unit test holds the two equal. The keys are built at the end (one sort each): the
//!    contributions' while the cells are written, the cells' two at once. Memory is
//!    bounded ([`RebuildOptions::memory_bytes`]): past it, the cells summed so far are spilled
//!    as sorted runs to local files ([`spill`], one run per share), and each worker of the
//!    writing phase merges its share's runs with its last sums as it writes them.
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

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use eventlog::{DossierEvents, EventLog, EventText, ReadError, RoutingFilter};
use futures::TryStreamExt;
use sqlx::Connection;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgCopyIn, PgPool, PgPoolCopyExt, Postgres};
use stats::{Dimension, Metric};
use tokio::sync::mpsc;

use crate::rollup::{Grain, METRICS, ROLLUPS, dimension_bit, metric_index};
use crate::store::{self, ApplyError};

mod spill;

use spill::Spill;

/// The advisory lock key a rebuild holds for its whole run ("projrbld").
const LOCK_KEY: i64 = 0x7072_6f6a_7262_6c64;

/// The default of [`RebuildOptions::memory_bytes`]: 1 GiB.
pub const DEFAULT_MEMORY_BYTES: usize = 1 << 30;
/// Dossiers handed from the reader to a worker at a time (or fewer, see [`EVENTS_PER_BATCH`]).
const DOSSIERS_PER_BATCH: usize = 256;
/// Events handed over at a time, at most (a batch closes after the dossier that passes it).
const EVENTS_PER_BATCH: usize = 4096;
/// Batches in flight between the reader, the workers and the writers.
const CHANNEL_DEPTH: usize = 4;
/// `COPY` data is sent in chunks of about this many bytes.
const COPY_CHUNK: usize = 1 << 20;
/// The most worker threads a rebuild computes on (in each phase; fewer on fewer cores, and no
/// more than the pool has connections for the cells' writers, one each).
pub const MAX_WORKERS: usize = 8;
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How a rebuild may use memory and local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildOptions {
    /// About how many bytes the summed cells may take in the rebuild's process (`projection
    /// rebuild --memory-mb`). Below what the whole snapshot's cells need, the cells are summed
    /// in sorted runs spilled to local files in [`RebuildOptions::spill_dir`] and merged as
    /// they are written (slower, same result). Also the session's `maintenance_work_mem` for
    /// building the keys (between 64 MiB and 2 GiB). A quarter goes to the day sums of the
    /// reading phase, the rest to the expanded cells, each shared equally by the workers. Not
    /// counted: the distinct slices seen (a few hundred bytes each), the batches of dossiers in
    /// flight and the merge's read buffers (64 KiB per run, at most 64 runs per worker).
    pub memory_bytes: usize,
    /// Where spilled runs are written (`projection rebuild --spill-dir`; `None`: the system's
    /// temporary directory), in a directory of their own removed when the rebuild ends. A
    /// directory of this machine: directories there named after a process that no longer runs
    /// here are taken for a killed rebuild's and removed. They
    /// take 25 bytes per spilled day cell (less than the cell took in memory).
    pub spill_dir: Option<PathBuf>,
}

impl Default for RebuildOptions {
    fn default() -> Self {
        RebuildOptions {
            memory_bytes: DEFAULT_MEMORY_BYTES,
            spill_dir: None,
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
    /// A computing thread stopped abnormally (a bug: it panicked). Nothing was swapped.
    #[error("the rebuild's computing thread failed: {0}")]
    Internal(String),
    /// Writing or reading the runs spilled to local files failed (the spill directory missing
    /// or not writable, the disk full). Nothing was swapped.
    #[error("spilled runs at {}: {source}", path.display())]
    Spill {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a rebuild is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading the snapshot and summing; contributions are written meanwhile.
    Reading,
    /// Expanding the day sums into cells, summing and writing them.
    Writing,
    /// Expanding the day sums into cells, summing them and writing them merged with the runs
    /// spilled while reading (instead of [`Phase::Writing`] when the reading spilled).
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
            Phase::Merging => "writing cells merged with spilled runs",
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
    /// Rows written so far to `stats_cells_next`.
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
    /// Where the worker threads spent the fill.
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

/// The counters the progress reports read, shared by the reader, the workers and the
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

/// How many worker threads compute (in each phase): one per core, at most [`MAX_WORKERS`], and
/// no more than the pool's connections (each writer of the cells holds one).
fn worker_count(pool: &PgPool) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let connections = usize::try_from(pool.options().get_max_connections()).unwrap_or(1);
    cores.min(MAX_WORKERS).min(connections).max(1)
}

/// How the memory budget is shared.
#[derive(Debug, Clone, Copy)]
struct Budget {
    /// The day sums of one reading worker.
    days: usize,
    /// The expanded cells of one worker (of one share of the slices, or of a spill).
    cells: usize,
}

impl Budget {
    fn new(memory_bytes: usize, workers: usize) -> Budget {
        let days = memory_bytes / 4;
        Budget {
            days: days / workers,
            cells: (memory_bytes - days) / workers,
        }
    }
}

/// Creates the shadow tables on `conn` and fills them from one snapshot of the log.
///
/// Reading: the reader streams the snapshot's dossiers and hands them over in batches to the
/// workers, which decode them, compute each contribution, format the contribution rows (one
/// `COPY`, on `conn`, writes them as they come) and sum the day deltas ([`read_worker`]).
/// Writing the cells: the rollup slices are numbered in `stats_slice`, then each worker expands
/// and sums its share of the cells and writes them with a binary `COPY` on a pool connection of
/// its own ([`expand_share`]). The shadow tables have no key while they are filled; the keys are
/// built at the end, in one sort each ([`build_cell_keys`]).
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
    let workers = worker_count(pool);
    let budget = Budget::new(options.memory_bytes, workers);
    let spill = Arc::new(Spill::new(
        options.spill_dir.unwrap_or_else(std::env::temp_dir),
        workers,
    ));

    let mut reader = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *reader)
        .await?;
    // The snapshot is taken at the first query: the head and the events come from one state.
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&mut *reader)
        .await?;

    // Reading.
    let counters = Counters::default();
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(CHANNEL_DEPTH);
    let (contributions_tx, contributions_rx) = mpsc::channel::<Vec<u8>>(CHANNEL_DEPTH);
    let shared = Arc::new(Shared {
        queue: Mutex::new(batch_rx),
        book: Mutex::new(SliceBook::default()),
        spill: spill.clone(),
    });
    let reading: Vec<_> = (0..workers)
        .map(|_| {
            let shared = shared.clone();
            let contributions = contributions_tx.clone();
            tokio::task::spawn_blocking(move || {
                let result = read_worker(&shared, contributions, budget);
                if result.is_err() {
                    // The reader and the other workers stop too (the cause is this error).
                    if let Ok(mut queue) = shared.queue.lock() {
                        queue.close();
                    }
                }
                result
            })
        })
        .collect();
    drop(contributions_tx);
    let (read, contributions) = reporting(
        async {
            tokio::join!(
                read_snapshot(&mut reader, head, batch_tx, workers, &counters),
                write_contributions(conn, contributions_rx),
            )
        },
        &counters,
        head,
        started,
        progress,
    )
    .await;
    let mut summed = Vec::with_capacity(workers);
    let mut failed = None;
    for handle in reading {
        match handle.await {
            Ok(Ok(s)) => summed.push(s),
            Ok(Err(e)) => failed = first_cause(failed, e),
            Err(e) => failed = first_cause(failed, RebuildError::Internal(e.to_string())),
        }
    }
    // The first failure is the cause; the others follow from the channels it closed (a
    // failing part closes its channels, and the parts it feeds or that feed it stop).
    if let Some(e) = failed.take_if(|e| is_cause(e)) {
        return Err(e);
    }
    contributions?;
    let (events, dossiers) = read?;
    if let Some(e) = failed {
        return Err(e);
    }
    reader.commit().await?;

    // Writing the cells.
    let mut spilled_runs = 0u64;
    let mut times = ComputeTimes {
        workers,
        ..ComputeTimes::default()
    };
    let mut days = Vec::with_capacity(summed.len());
    for s in summed {
        spilled_runs += s.spilled_runs;
        times.add(&s.times);
        days.push(s.days);
    }
    counters.set_phase(if spilled_runs > 0 {
        Phase::Merging
    } else {
        Phase::Writing
    });
    progress(&counters.snapshot(head, started));
    let mut book = Arc::try_unwrap(shared)
        .map_err(|_| RebuildError::Internal("a worker outlived the reading".into()))?
        .book
        .into_inner()
        .map_err(|_| RebuildError::Internal("a worker panicked".into()))?;
    let new = book.dims.unnumbered();
    let ids = number_slices(pool, &new).await?;
    book.dims.numbered(ids)?;
    let all = Arc::new(Expansion {
        days,
        projections: book.projections,
        dims: book.dims,
    });
    let mut writers = Vec::with_capacity(workers);
    let expanding: Vec<_> = (0..workers)
        .map(|share| {
            let (tx, rx) = mpsc::channel::<Rows>(CHANNEL_DEPTH);
            writers.push(rx);
            let all = all.clone();
            let spill = spill.clone();
            let memory = budget.cells;
            tokio::task::spawn_blocking(move || {
                expand_share(share, workers, &all, &spill, &tx, memory)
            })
        })
        .collect();
    // The contributions are all written: their key is built (and they are analyzed) on this
    // connection while the cells are written on others.
    let contributions_keyed = async {
        for sql in [
            "ALTER TABLE projection_contributions_next \
               ADD CONSTRAINT projection_contributions_next_pkey PRIMARY KEY (dossier_id)",
            "ANALYZE projection_contributions_next",
        ] {
            sqlx::query(sql).execute(&mut *conn).await?;
        }
        Ok::<(), sqlx::Error>(())
    };
    let (written, contributions_keyed) = reporting(
        async {
            tokio::join!(
                futures::future::join_all(
                    writers
                        .into_iter()
                        .map(|rx| write_cells(pool, rx, &counters)),
                ),
                contributions_keyed,
            )
        },
        &counters,
        head,
        started,
        progress,
    )
    .await;
    let mut failed = None;
    for handle in expanding {
        match handle.await {
            Ok(Ok((runs, t))) => {
                spilled_runs += runs;
                times.add(&t);
            }
            Ok(Err(e)) => failed = first_cause(failed, e),
            Err(e) => failed = first_cause(failed, RebuildError::Internal(e.to_string())),
        }
    }
    for w in written {
        w?;
    }
    if let Some(e) = failed {
        return Err(e);
    }
    contributions_keyed?;
    drop(all);
    // The runs are read: removed now rather than after the keys are built.
    drop(spill);

    counters.set_phase(Phase::Indexing);
    progress(&counters.snapshot(head, started));
    build_cell_keys(pool, conn, index_memory_kb).await?;
    counters.set_phase(Phase::Done);
    progress(&counters.snapshot(head, started));
    Ok(Filled {
        head,
        events,
        dossiers,
        spilled_runs,
        times,
    })
}

/// Builds the shadow cells' two keys at once, each on a connection of its own with half the
/// index memory: the primary key's unique index and the rollup index (`CREATE INDEX` takes a
/// `SHARE` lock, which does not exclude another; `ADD PRIMARY KEY` would take `ACCESS
/// EXCLUSIVE`), then makes the first the primary key (`USING INDEX`: no second build) and
/// analyzes the table. The keys end up as the migrations define them.
async fn build_cell_keys(
    pool: &PgPool,
    conn: &mut PgConnection,
    index_memory_kb: usize,
) -> Result<(), sqlx::Error> {
    let half = format!(
        "SET maintenance_work_mem = '{}kB'",
        (index_memory_kb / 2).max(1024)
    );
    let mut other = PgConnection::connect_with(&pool.connect_options()).await?;
    let built = async {
        for sql in [half.as_str(), "SET synchronous_commit = off"] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut other)
                .await?;
        }
        tokio::try_join!(
            async {
                sqlx::query(sqlx::AssertSqlSafe(half.as_str()))
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(
                    "CREATE UNIQUE INDEX stats_cells_next_pkey ON stats_cells_next \
                       (slice, grain, period)",
                )
                .execute(&mut *conn)
                .await
            },
            sqlx::query(
                "CREATE INDEX stats_cells_next_by_rollup ON stats_cells_next \
                   (rollup, grain, period, slice)",
            )
            .execute(&mut other),
        )
    }
    .await;
    let _ = other.close().await;
    built?;
    for sql in [
        "ALTER TABLE stats_cells_next ADD CONSTRAINT stats_cells_next_pkey \
           PRIMARY KEY USING INDEX stats_cells_next_pkey",
        "ANALYZE stats_cells_next",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Keeps the first error that is a cause rather than a consequence: a corrupt event or a
/// failed spill over a stop on a closed channel.
fn first_cause(kept: Option<RebuildError>, new: RebuildError) -> Option<RebuildError> {
    match kept {
        None => Some(new),
        Some(RebuildError::Internal(_)) if is_cause(&new) => Some(new),
        Some(kept) => Some(kept),
    }
}

/// A worker's own failure, never the consequence of another part's.
fn is_cause(e: &RebuildError) -> bool {
    matches!(e, RebuildError::Corrupt(_) | RebuildError::Spill { .. })
}

/// Runs `work`, reporting progress about once a second until it is done.
async fn reporting<T>(
    work: impl Future<Output = T>,
    counters: &Counters,
    head: i64,
    started: Instant,
    progress: &mut impl FnMut(&Progress),
) -> T {
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tokio::time::sleep(PROGRESS_EVERY) => progress(&counters.snapshot(head, started)),
        }
    }
}
/// Drops any shadow left by an interrupted rebuild (and the scratch tables of earlier versions)
/// and creates empty ones shaped like the live tables, without keys (built once filled, named
/// as the live ones will be after the swap renames them).
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
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// What the reader hands to the workers.
enum Batch {
    Dossiers(Vec<DossierEvents<EventText>>),
    /// The snapshot was read to its end (one for each worker). A queue closed without it means
    /// the reader failed: the workers then write nothing more.
    End,
}

/// Streams every dossier of the snapshot up to `head` (the log's reader, `dossier_id` order)
/// and sends them in batches to the workers' queue, then one [`Batch::End`] per worker; returns
/// `(events, dossiers)`.
async fn read_snapshot(
    reader: &mut PgConnection,
    head: i64,
    out: mpsc::Sender<Batch>,
    workers: usize,
    counters: &Counters,
) -> Result<(u64, u64), RebuildError> {
    let everything = RoutingFilter::default();
    let mut stream = eventlog::dossiers_up_to::<EventText>(reader, head, &everything);
    let mut batch = Vec::with_capacity(DOSSIERS_PER_BATCH);
    let mut batch_events = 0usize;
    let (mut events, mut dossiers) = (0u64, 0u64);
    // The workers hung up: their error (or the writer's that stopped them) is the cause.
    let gone = || RebuildError::Internal("the workers stopped".into());
    while let Some(dossier) = stream.try_next().await.map_err(read_error)? {
        events += dossier.events.len() as u64;
        dossiers += 1;
        batch_events += dossier.events.len();
        batch.push(dossier);
        counters.events.store(events, Ordering::Relaxed);
        counters.dossiers.store(dossiers, Ordering::Relaxed);
        if batch.len() >= DOSSIERS_PER_BATCH || batch_events >= EVENTS_PER_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(DOSSIERS_PER_BATCH));
            out.send(Batch::Dossiers(full)).await.map_err(|_| gone())?;
            batch_events = 0;
        }
    }
    if !batch.is_empty() {
        out.send(Batch::Dossiers(batch)).await.map_err(|_| gone())?;
    }
    for _ in 0..workers {
        out.send(Batch::End).await.map_err(|_| gone())?;
    }
    Ok((events, dossiers))
}

fn read_error(e: ReadError) -> RebuildError {
    match e {
        ReadError::Unavailable(e) => RebuildError::Database(e),
        ReadError::Corrupt { position, reason } => {
            RebuildError::Corrupt(format!("event at position {position}: {reason}"))
        }
    }
}

/// Writes the contribution rows (`COPY` text format) as the workers format them (each chunk
/// holds whole rows).
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

/// The binary `COPY` of the cells, naming every column in the order [`push_cell_row`] writes
/// them.
fn copy_cells_statement() -> String {
    let metrics: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
    format!(
        "COPY stats_cells_next (slice, rollup, grain, period, {}) FROM STDIN (FORMAT binary)",
        metrics.join(", ")
    )
}

/// Writes the cell rows a worker sends with one binary `COPY` on a pool connection of its own
/// (opened at the first rows).
async fn write_cells(
    pool: &PgPool,
    mut rows: mpsc::Receiver<Rows>,
    counters: &Counters,
) -> Result<(), sqlx::Error> {
    let mut copy: Option<PgCopyIn<PoolConnection<Postgres>>> = None;
    while let Some(Rows(chunk, count)) = rows.recv().await {
        let copy = match &mut copy {
            Some(copy) => copy,
            None => {
                let mut opened = pool.copy_in_raw(&copy_cells_statement()).await?;
                opened.send(&BINARY_HEADER[..]).await?;
                copy.insert(opened)
            }
        };
        copy.send(chunk).await?;
        counters.cells.fetch_add(count, Ordering::Relaxed);
    }
    if let Some(copy) = copy {
        finish_binary(copy).await?;
    }
    Ok(())
}

/// Ends a binary `COPY` with its trailer.
async fn finish_binary(mut copy: PgCopyIn<PoolConnection<Postgres>>) -> Result<u64, sqlx::Error> {
    copy.send(&BINARY_TRAILER[..]).await?;
    copy.finish().await
}

/// Numbers `slices` (a rollup and its six dimension values) in `stats_slice` (the new ones are
/// inserted, committed at once on a connection of their own: ids never go back) and returns
/// their ids in the same order.
async fn number_slices(
    pool: &PgPool,
    slices: &[(u8, [Box<str>; 6])],
) -> Result<Vec<i32>, sqlx::Error> {
    if slices.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = pool.acquire().await?;
    let set: BTreeSet<(u8, [&str; 6])> = slices
        .iter()
        .map(|(r, d)| (*r, d.each_ref().map(|s| &**s)))
        .collect();
    let ids = store::slice_ids(&mut conn, &set).await?;
    slices
        .iter()
        .map(|(rollup, dims)| {
            ids.get(&(*rollup, dims.clone().map(String::from)))
                .copied()
                .ok_or_else(|| {
                    sqlx::Error::Protocol("a slice without an id after its insert".into())
                })
        })
        .collect()
}

/// What a worker sends its cells' writer: rows (binary `COPY` tuples, without header or
/// trailer), and how many.
struct Rows(Vec<u8>, u64);

/// A worker stopped early because the reader failed (it closed the queue without
/// [`Batch::End`]) or a writer did (it closed its channel): the cause is theirs.
struct Stopped;

impl From<Stopped> for RebuildError {
    fn from(_: Stopped) -> Self {
        RebuildError::Internal("a writer or the reader stopped".into())
    }
}

/// Locks a mutex the workers share (poisoned only when one of them panicked).
fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>, RebuildError> {
    mutex
        .lock()
        .map_err(|_| RebuildError::Internal("a worker panicked".into()))
}

/// What the reading workers share.
struct Shared {
    /// The reader's batches: each worker takes the next one (a many-consumer queue).
    queue: Mutex<mpsc::Receiver<Batch>>,
    book: Mutex<SliceBook>,
    /// Where cells that do not fit are spilled.
    spill: Arc<Spill>,
}

/// What a reading worker summed.
struct Summed {
    days: DaySums,
    spilled_runs: u64,
    times: ComputeTimes,
}

/// A reading worker: takes batches of dossiers from the queue until its [`Batch::End`]; for each
/// dossier decodes its events, computes its contribution (a `COPY` row sent to the
/// contributions' writer) and adds its day deltas to its own [`DaySums`]. When those pass their
/// budget, they are expanded and spilled as runs ([`spill_days`]).
fn read_worker(
    shared: &Shared,
    contributions: mpsc::Sender<Vec<u8>>,
    budget: Budget,
) -> Result<Summed, RebuildError> {
    let mut days = DaySums::new(budget.days);
    // The cells a spill expands the day sums into (allocated at the first spill).
    let mut spilled = CellSums::new(budget.cells);
    let mut rows: Vec<u8> = Vec::with_capacity(COPY_CHUNK + COPY_CHUNK / 4);
    let mut spilled_runs = 0u64;
    let mut times = ComputeTimes::default();
    loop {
        let t = Instant::now();
        let next = lock(&shared.queue)?.blocking_recv();
        times.waiting_for_reader += t.elapsed();
        let batch = match next {
            Some(Batch::Dossiers(batch)) => batch,
            Some(Batch::End) => break,
            None => return Err(Stopped.into()),
        };
        for dossier in &batch {
            let t = Instant::now();
            let events = decode(dossier)?;
            let decoded = Instant::now();
            times.decoding += decoded - t;
            let contribution = stats::contribution(&events);
            let version = dossier.events.last().map_or(0, |e| e.version);
            push_escaped(&mut rows, &dossier.dossier_id);
            rows.push(b'\t');
            match &contribution {
                // As apply stores it: `serde_json`'s text, kept as written by the `json` column.
                Some(c) => push_json(&mut rows, c).map_err(|e| {
                    RebuildError::Corrupt(format!("contribution of {}: {e}", dossier.dossier_id))
                })?,
                None => rows.extend_from_slice(b"\\N"),
            }
            rows.push(b'\t');
            push_int(&mut rows, i128::from(version));
            rows.push(b'\n');
            let contributed = Instant::now();
            times.contributions += contributed - decoded;
            if let Some(c) = contribution {
                let slice = lock(&shared.book)?.number(&c.slice);
                for ((day, metric), delta) in &c.deltas {
                    days.add(slice, *day, *metric, *delta);
                }
                times.summing += contributed.elapsed();
            }
        }
        if rows.len() >= COPY_CHUNK {
            let t = Instant::now();
            let chunk =
                std::mem::replace(&mut rows, Vec::with_capacity(COPY_CHUNK + COPY_CHUNK / 4));
            contributions.blocking_send(chunk).map_err(|_| Stopped)?;
            times.waiting_for_writers += t.elapsed();
        }
        if days.full() {
            spilled_runs += spill_days(&mut days, &mut spilled, shared, &mut times)?;
        }
    }
    if !rows.is_empty() {
        contributions.blocking_send(rows).map_err(|_| Stopped)?;
    }
    Ok(Summed {
        days,
        spilled_runs,
        times,
    })
}

/// Expands every day sum of `days` into its cells (every share) and spills them as sorted runs
/// (one whenever the cells pass their budget, and one at the end); empties `days` and `sums`
/// (the worker's, kept from one spill to the next with their room: memory touched once).
/// Returns the runs written.
fn spill_days(
    days: &mut DaySums,
    sums: &mut CellSums,
    shared: &Shared,
    times: &mut ComputeTimes,
) -> Result<u64, RebuildError> {
    let mut runs = 0u64;
    let t = Instant::now();
    let mut spilling = Duration::ZERO;
    {
        // The projections of the slices seen so far (numbers only grow: a copy serves).
        let book = lock(&shared.book)?;
        let projections = book.projections.clone();
        drop(book);
        for (slice, day, metric, delta) in days.iter() {
            if delta == 0 {
                continue;
            }
            let projections = projections
                .get(slice as usize)
                .ok_or_else(|| RebuildError::Internal(format!("slice {slice} not numbered")))?;
            if !sums.room_for(CELLS_PER_SUM) {
                let s = Instant::now();
                sums.compact();
                runs += u64::from(shared.spill.write_partitioned(&sums.cells)?);
                sums.clear();
                spilling += s.elapsed();
                sums.room_for(CELLS_PER_SUM);
            }
            expand_sum(sums, projections, |_| true, day, metric, delta);
        }
    }
    let s = Instant::now();
    sums.compact();
    runs += u64::from(shared.spill.write_partitioned(&sums.cells)?);
    sums.clear();
    days.clear();
    spilling += s.elapsed();
    times.spilling += spilling;
    times.expanding += t.elapsed().saturating_sub(spilling);
    Ok(runs)
}

/// The rollups (the first of [`ROLLUPS`]: `{}` and `{level}`) whose day cells are summed in a
/// map as they come ([`CellSums::add_coarse`]) instead of pushed to the sorted vector: they have
/// a handful of slices, so almost every day sum adds to a cell already there. A third of the
/// expansion then never reaches the vector (its memory, and the sort).
const COARSE_ROLLUPS: usize = 2;

/// The day cells one day sum pushes to the vector of [`CellSums`]: one per rollup but the
/// coarse ones (the month and year cells are summed from the day cells when they are written:
/// [`wide_rows`]).
const CELLS_PER_SUM: usize = ROLLUPS.len() - COARSE_ROLLUPS;

/// Adds the day cells of one day sum of a slice to `sums`: one for each rollup slice of
/// `projections` that `keep` keeps, all `delta`. With [`wide_rows`], what
/// [`crate::rollup::rollup_cells`] gives for the same delta (tested).
fn expand_sum(
    sums: &mut CellSums,
    projections: &[u32; ROLLUPS.len()],
    keep: impl Fn(u32) -> bool,
    day: NaiveDate,
    metric: Metric,
    delta: i128,
) {
    let (coarse, fine) = projections.split_at(COARSE_ROLLUPS);
    for &dims in coarse {
        if keep(dims) {
            sums.add_coarse(CellKey { dims, day, metric }, delta);
        }
    }
    for &dims in fine {
        if keep(dims) {
            sums.push(CellKey { dims, day, metric }, delta);
        }
    }
}

/// What the writing phase reads: every worker's day sums, the slices' projections and the
/// numbered rollup slices.
struct Expansion {
    days: Vec<DaySums>,
    projections: Vec<[u32; ROLLUPS.len()]>,
    dims: Dims,
}

/// Which of `shares` workers expands and writes the cells of rollup slice `dims`: a hash of its
/// number (numbers are given in order of appearance, so consecutive ones are of related slices).
fn share_of(dims: u32, shares: usize) -> usize {
    let hashed = u64::from(dims).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    usize::try_from(hashed).unwrap_or(0) % shares.max(1)
}

/// A writing worker: expands every day sum into the cells of its share of the rollup slices,
/// sums them and writes them as wide rows to the shadow; when they do not fit its budget, or
/// runs of this share were spilled while reading, merged with the share's spilled runs.
/// Returns the runs it spilled.
fn expand_share(
    share: usize,
    shares: usize,
    all: &Expansion,
    spill: &Spill,
    out: &mpsc::Sender<Rows>,
    memory: usize,
) -> Result<(u64, ComputeTimes), RebuildError> {
    let mut times = ComputeTimes::default();
    let mut sums = CellSums::new(memory);
    let mut runs = 0u64;
    let t = Instant::now();
    let mut spilling = Duration::ZERO;
    for days in &all.days {
        for (slice, day, metric, delta) in days.iter() {
            if delta == 0 {
                continue;
            }
            let projections = all
                .projections
                .get(slice as usize)
                .ok_or_else(|| RebuildError::Internal(format!("slice {slice} not numbered")))?;
            if !sums.room_for(CELLS_PER_SUM) {
                let s = Instant::now();
                sums.compact();
                spill.write_share(share, &sums.cells)?;
                sums.clear();
                runs += 1;
                spilling += s.elapsed();
                sums.room_for(CELLS_PER_SUM);
            }
            expand_sum(
                &mut sums,
                projections,
                |dims| share_of(dims, shares) == share,
                day,
                metric,
                delta,
            );
        }
    }
    times.spilling += spilling;
    times.expanding += t.elapsed().saturating_sub(spilling);
    let t = Instant::now();
    sums.compact();
    times.summing += t.elapsed();
    if spill.has_runs(share)? {
        let t = Instant::now();
        let merged = spill.merged(share, &sums.cells)?;
        times.spilling += t.elapsed();
        write_rows(merged, &all.dims, out, &mut times)?;
    } else {
        write_rows(
            sums.cells.iter().copied().map(Ok),
            &all.dims,
            out,
            &mut times,
        )?;
    }
    Ok((runs, times))
}

/// The dossiers' day deltas summed per slice (every dimension, numbered in the [`SliceBook`]),
/// day and metric, before any expansion: many dossiers share a slice and a day.
///
/// Compact: a key packs into a `u64` and a sum is an `i64` (16 bytes an entry, half of what
/// `(u32, NaiveDate, Metric)` and `i128` take), so twice the sums fit the same budget before a
/// spill. What does not fit that form goes to `wide`, exactly: a delta beyond `i64`, the part
/// of a sum that would leave it, a date outside the packed range. A key may then have a part in
/// each map; whoever reads them adds the parts up (the cells are summed anyway).
struct DaySums {
    sums: HashMap<u64, i64, FxBuild>,
    wide: HashMap<(u32, NaiveDate, Metric), i128, FxBuild>,
    /// Most entries kept before [`DaySums::full`] says to expand them.
    limit: usize,
}

impl DaySums {
    /// Bytes an entry takes in the map, roughly (key, value, the table's control byte and
    /// slack).
    const ENTRY_BYTES: usize = 24;
    /// Fewest entries kept before spilling, whatever the budget (a tiny budget spills every
    /// few dossiers: slow, still exact; the tests use one).
    const MIN_ENTRIES: usize = 64;
    /// Bits of the packed key that hold the day (days from the common era: up to the year
    /// 45,000) and the metric's index.
    const DAY_BITS: u32 = 24;
    const METRIC_BITS: u32 = 8;

    fn new(memory_bytes: usize) -> DaySums {
        DaySums {
            sums: HashMap::default(),
            wide: HashMap::default(),
            limit: (memory_bytes / Self::ENTRY_BYTES).max(Self::MIN_ENTRIES),
        }
    }

    fn pack(slice: u32, day: NaiveDate, metric: Metric) -> Option<u64> {
        let day = u64::try_from(day.num_days_from_ce()).ok()?;
        let metric = metric_index(metric) as u64;
        (day < 1 << Self::DAY_BITS && metric < 1 << Self::METRIC_BITS).then(|| {
            u64::from(slice) << (Self::DAY_BITS + Self::METRIC_BITS)
                | day << Self::METRIC_BITS
                | metric
        })
    }

    fn unpack(key: u64) -> (u32, NaiveDate, Metric) {
        let slice = (key >> (Self::DAY_BITS + Self::METRIC_BITS)) as u32;
        let day = ((key >> Self::METRIC_BITS) & ((1 << Self::DAY_BITS) - 1)) as i32;
        let metric = (key & ((1 << Self::METRIC_BITS) - 1)) as usize;
        (
            slice,
            NaiveDate::from_num_days_from_ce_opt(day).expect("packed from a date"),
            Metric::ALL[metric],
        )
    }

    fn add(&mut self, slice: u32, day: NaiveDate, metric: Metric, delta: i128) {
        if let (Some(key), Ok(small)) = (Self::pack(slice, day, metric), i64::try_from(delta)) {
            let sum = self.sums.entry(key).or_insert(0);
            if let Some(added) = sum.checked_add(small) {
                *sum = added;
                return;
            }
        }
        *self.wide.entry((slice, day, metric)).or_insert(0) += delta;
    }

    fn full(&self) -> bool {
        self.sums.len() + self.wide.len() >= self.limit
    }

    /// Every sum (a key may come twice: see the type), in no order.
    fn iter(&self) -> impl Iterator<Item = (u32, NaiveDate, Metric, i128)> + '_ {
        let sums = self.sums.iter().map(|(&key, &sum)| {
            let (slice, day, metric) = Self::unpack(key);
            (slice, day, metric, i128::from(sum))
        });
        let wide =
            (self.wide.iter()).map(|(&(slice, day, metric), &sum)| (slice, day, metric, sum));
        sums.chain(wide)
    }

    /// Empties the sums (keeping the maps' room).
    fn clear(&mut self) {
        self.sums.clear();
        self.wide.clear();
    }
}

/// The distinct slices (every dimension) of the snapshot, numbered, each with the numbers of
/// its projections onto the rollups ([`ROLLUPS`] order) in [`Dims`].
#[derive(Default)]
struct SliceBook {
    ids: HashMap<stats::Slice, u32, FxBuild>,
    projections: Vec<[u32; ROLLUPS.len()]>,
    dims: Dims,
}

impl SliceBook {
    /// The number of `slice`, given (with its projections) the first time it is seen.
    fn number(&mut self, slice: &stats::Slice) -> u32 {
        if let Some(id) = self.ids.get(slice) {
            return *id;
        }
        let values = Dimension::ALL.map(|d| d.value(slice));
        // As `rollup::rollup_cells` projects a delta's slice: a dimension outside the rollup
        // is "".
        let projections = ROLLUPS.map(|rollup| {
            let mut dims = [""; 6];
            for (i, d) in Dimension::ALL.into_iter().enumerate() {
                if rollup & dimension_bit(d) != 0 {
                    dims[i] = values[i];
                }
            }
            self.dims.lookup(rollup, &dims)
        });
        let id = self.projections.len() as u32;
        self.projections.push(projections);
        self.ids.insert(slice.clone(), id);
        id
    }
}

/// Where the rebuild's workers spent their time (for benchmarks and tuning), summed over the
/// worker threads (each phase runs [`ComputeTimes::workers`] of them at once, so a sum can be up
/// to that many times the phase's wall time).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ComputeTimes {
    /// Worker threads in each phase.
    pub workers: usize,
    /// Waiting for the next batch of dossiers: the reader is the slower side.
    pub waiting_for_reader: Duration,
    /// Decoding events into domain events.
    pub decoding: Duration,
    /// `stats::contribution` and the contribution rows (JSON, `COPY` text).
    pub contributions: Duration,
    /// Waiting for the contributions' `COPY` to take a chunk.
    pub waiting_for_writers: Duration,
    /// Expanding each day sum into its rollup and grain cells and adding them to the compact
    /// sums (with the sorts that sum them up as they grow).
    pub expanding: Duration,
    /// Summing the day deltas per slice, day and metric (numbering the slices), and the last
    /// sort and sum-up of the cells before they are written.
    pub summing: Duration,
    /// Formatting the cell rows (binary `COPY`) and handing them to their writer (which waits
    /// for the server); with spilled runs, also reading and merging them.
    pub writing_cells: Duration,
    /// Writing spilled runs to local files (and merging the oldest ones when a share has more
    /// than a merge reads at once).
    pub spilling: Duration,
}

impl ComputeTimes {
    fn add(&mut self, other: &ComputeTimes) {
        self.waiting_for_reader += other.waiting_for_reader;
        self.decoding += other.decoding;
        self.contributions += other.contributions;
        self.waiting_for_writers += other.waiting_for_writers;
        self.expanding += other.expanding;
        self.summing += other.summing;
        self.writing_cells += other.writing_cells;
        self.spilling += other.spilling;
    }
}

/// Sends every cell of `cells` (sorted by key) with a non-zero metric, at every grain, to the
/// cells' writer as a wide row ([`wide_rows`]: the slice's id in `stats_slice`, its rollup,
/// grain and period, one column per metric, NULL for 0).
fn write_rows(
    cells: impl Iterator<Item = spill::Cell>,
    dims: &Dims,
    out: &mpsc::Sender<Rows>,
    times: &mut ComputeTimes,
) -> Result<(), RebuildError> {
    let t = Instant::now();
    let mut rows: Vec<u8> = Vec::with_capacity(COPY_CHUNK + 4096);
    let mut count = 0u64;
    wide_rows(cells, |dims_id, grain, period, values| {
        let (slice, rollup) = dims.numbered_slice(dims_id)?;
        push_cell_row(&mut rows, slice, rollup, grain, period, values)?;
        count += 1;
        if rows.len() >= COPY_CHUNK {
            let chunk = std::mem::replace(&mut rows, Vec::with_capacity(COPY_CHUNK + 4096));
            out.blocking_send(Rows(chunk, count)).map_err(|_| Stopped)?;
            count = 0;
        }
        Ok::<(), RebuildError>(())
    })?;
    if !rows.is_empty() {
        out.blocking_send(Rows(rows, count)).map_err(|_| Stopped)?;
    }
    times.writing_cells += t.elapsed();
    Ok(())
}

/// Calls `row` with every wide row of the day cells `cells` (sorted by rollup slice, day and
/// metric; a key may come more than once, its values are added up): `(rollup slice, grain,
/// period, one value per metric)` for each day, and for each month and year summed from its
/// days (the days of one slice's month or year are adjacent in that order). Rows whose values
/// are all 0 are left out. Stops at the first error of `cells` or `row`.
fn wide_rows<E>(
    cells: impl IntoIterator<Item = Result<(CellKey, i128), E>>,
    mut row: impl FnMut(u32, Grain, NaiveDate, &[i128; METRICS]) -> Result<(), E>,
) -> Result<(), E> {
    /// A coarser row being summed: its slice, period and values.
    type Open = Option<(u32, NaiveDate, [i128; METRICS])>;
    fn roll<E>(
        open: &mut Open,
        grain: Grain,
        dims: u32,
        day: NaiveDate,
        values: &[i128; METRICS],
        row: &mut impl FnMut(u32, Grain, NaiveDate, &[i128; METRICS]) -> Result<(), E>,
    ) -> Result<(), E> {
        let period = grain.period(day);
        if let Some((d, p, sums)) = open
            && *d == dims
            && *p == period
        {
            for (sum, v) in sums.iter_mut().zip(values) {
                *sum += v;
            }
            return Ok(());
        }
        if let Some((d, p, sums)) = open.replace((dims, period, *values)) {
            emit(d, grain, p, &sums, row)?;
        }
        Ok(())
    }
    fn emit<E>(
        dims: u32,
        grain: Grain,
        period: NaiveDate,
        values: &[i128; METRICS],
        row: &mut impl FnMut(u32, Grain, NaiveDate, &[i128; METRICS]) -> Result<(), E>,
    ) -> Result<(), E> {
        if values.iter().any(|v| *v != 0) {
            row(dims, grain, period, values)?;
        }
        Ok(())
    }
    /// Ends the day row of `day` (its slice, day and values): emitted and rolled into its month
    /// and year.
    fn end_day<E>(
        (dims, day, values): (u32, NaiveDate, [i128; METRICS]),
        month: &mut Open,
        year: &mut Open,
        row: &mut impl FnMut(u32, Grain, NaiveDate, &[i128; METRICS]) -> Result<(), E>,
    ) -> Result<(), E> {
        emit(dims, Grain::Day, day, &values, row)?;
        roll(month, Grain::Month, dims, day, &values, row)?;
        roll(year, Grain::Year, dims, day, &values, row)
    }
    let (mut month, mut year): (Open, Open) = (None, None);
    let mut open_day: Option<(u32, NaiveDate, [i128; METRICS])> = None;
    for cell in cells {
        let (key, value) = cell?;
        match &mut open_day {
            Some((dims, day, values)) if *dims == key.dims && *day == key.day => {
                values[metric_index(key.metric)] += value;
            }
            _ => {
                let mut values = [0i128; METRICS];
                values[metric_index(key.metric)] = value;
                if let Some(ended) = open_day.replace((key.dims, key.day, values)) {
                    end_day(ended, &mut month, &mut year, &mut row)?;
                }
            }
        }
    }
    if let Some(ended) = open_day {
        end_day(ended, &mut month, &mut year, &mut row)?;
    }
    for (open, grain) in [(month, Grain::Month), (year, Grain::Year)] {
        if let Some((dims, period, values)) = open {
            emit(dims, grain, period, &values, &mut row)?;
        }
    }
    Ok(())
}

/// A dossier's events decoded into domain events: each payload's JSON text decoded (here, on a
/// worker thread, rather than on the reader's) by the one decoder's text form
/// ([`domain::Event::from_row_text`]: the answer of [`domain::Event::from_row`], with which
/// apply decodes the same row, without a `serde_json::Value` in between).
fn decode(dossier: &DossierEvents<EventText>) -> Result<Vec<domain::Event>, RebuildError> {
    dossier
        .events
        .iter()
        .map(|e| {
            domain::Event::from_row_text(&e.event_type, e.occurred_at, &e.payload).map_err(|err| {
                RebuildError::Corrupt(format!(
                    "event {} of dossier {}: {err}",
                    e.version, dossier.dossier_id
                ))
            })
        })
        .collect()
}

/// A day cell of a rollup in compact form: the rollup and dimension values (the rollup slice)
/// are a number in [`Dims`]. Ordered by slice, day, then metric: the metrics of one wide day row
/// are adjacent once sorted, and so are the days of one month and year.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct CellKey {
    dims: u32,
    day: NaiveDate,
    metric: Metric,
}

/// Bytes one summed cell takes in memory: its compact key (12 bytes, padded) and its `i128`.
const CELL_BYTES: usize = std::mem::size_of::<(CellKey, i128)>();

/// Rollup day cells summed so far: a vector of `(key, partial sum)` that grows up to its memory
/// budget and is sorted and summed up ("compacted") only when it is full, and once before it
/// is written: what fits the budget is sorted once (sorting every time the vector doubled took
/// ~40 % of the writing phase's CPU). Beyond the budget the caller spills it as a sorted run.
struct CellSums {
    cells: Vec<(CellKey, i128)>,
    /// Most cells held.
    limit: usize,
    /// The cells of the coarse rollups ([`COARSE_ROLLUPS`]), summed as they come; moved into
    /// `cells` at each compaction. Not counted in the budget: at most one entry per level, day
    /// and metric (and one per day and metric), a few megabytes for years of days.
    coarse: HashMap<CellKey, i128, FxBuild>,
}

impl CellSums {
    /// Fewest cells kept before a compaction, whatever the budget.
    const MIN_CELLS: usize = 1024;

    fn new(memory_bytes: usize) -> CellSums {
        CellSums {
            cells: Vec::new(),
            limit: (memory_bytes / CELL_BYTES).max(Self::MIN_CELLS),
            coarse: HashMap::default(),
        }
    }

    /// Makes room for `n` more cells: grows the vector (doubling, up to the budget), and only
    /// when it holds the budget sums it up; false when even summed up it holds more than three
    /// quarters of the budget: the caller is to spill it first (so that the next compaction
    /// comes after at least a quarter of the budget: amortized, never every sum).
    fn room_for(&mut self, n: usize) -> bool {
        let len = self.cells.len();
        if len + n <= self.cells.capacity() {
            return true;
        }
        if len + n <= self.limit {
            let grown = (2 * self.cells.capacity())
                .clamp(Self::MIN_CELLS, self.limit)
                .max(len + n);
            self.cells.reserve_exact(grown - len);
            return true;
        }
        self.compact();
        self.cells.len() + n <= self.limit / 4 * 3
    }

    /// Adds a cell (after [`CellSums::room_for`]).
    fn push(&mut self, key: CellKey, value: i128) {
        self.cells.push((key, value));
    }

    /// Adds a cell of a coarse rollup ([`COARSE_ROLLUPS`]) to its sum.
    fn add_coarse(&mut self, key: CellKey, value: i128) {
        *self.coarse.entry(key).or_insert(0) += value;
    }

    /// Moves the coarse sums into the vector, sorts the cells by key and sums the equal ones
    /// (zeros stay: they are skipped when written).
    fn compact(&mut self) {
        self.cells.reserve(self.coarse.len());
        self.cells.extend(self.coarse.drain());
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
    }

    /// Empties the sums (keeping the vector's room).
    fn clear(&mut self) {
        self.cells.clear();
        self.coarse.clear();
    }
}

/// The rollup slices of the cells (a rollup and `[&str; 6]` in [`stats::Dimension::ALL`]
/// order), each given a local number, and the id `stats_slice` gives it once numbered there
/// ([`Dims::numbered`], before any row naming it is written).
#[derive(Default)]
struct Dims {
    ids: HashMap<Box<[u8]>, u32, FxBuild>,
    tuples: Vec<(u8, [Box<str>; 6])>,
    /// The `stats_slice` ids of `tuples[..global.len()]`.
    global: Vec<i32>,
    /// The lookup key being built (reused).
    key: Vec<u8>,
}

impl Dims {
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
        self.tuples.push((rollup, dims.map(Box::from)));
        self.ids.insert(self.key.clone().into_boxed_slice(), id);
        id
    }

    /// The slices not yet numbered in `stats_slice`, in order.
    fn unnumbered(&self) -> Vec<(u8, [Box<str>; 6])> {
        self.tuples[self.global.len()..].to_vec()
    }

    /// Keeps the ids `stats_slice` gave [`Dims::unnumbered`].
    fn numbered(&mut self, ids: Vec<i32>) -> Result<(), RebuildError> {
        if self.global.len() + ids.len() != self.tuples.len() {
            return Err(RebuildError::Internal(format!(
                "{} slice ids for {} new slices",
                ids.len(),
                self.tuples.len() - self.global.len()
            )));
        }
        self.global.extend(ids);
        Ok(())
    }

    /// The `stats_slice` id and the rollup of a numbered slice.
    fn numbered_slice(&self, id: u32) -> Result<(i32, u8), RebuildError> {
        match (self.global.get(id as usize), self.tuples.get(id as usize)) {
            (Some(global), Some((rollup, _))) => Ok((*global, *rollup)),
            _ => Err(RebuildError::Internal(format!(
                "cells of slice {id} before it was numbered"
            ))),
        }
    }
}

/// A fast non-cryptographic hash (after rustc's FxHash) for the day sums and the dimension
/// lookup: their keys are the log's own codes, not attacker-chosen lookups into a long-lived
/// table.
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
    /// Mixes in `word` with a folded multiply (the product's high half added into its low
    /// half): every bit of the word reaches the low bits the table indexes by. A plain
    /// `wrapping_mul` leaves them to the word's low bits alone, and the day sums' packed keys
    /// hold their slice in the high bits (every slice of a day and metric collided).
    fn add(&mut self, word: u64) {
        let product = u128::from(self.0.rotate_left(5) ^ word) * 0x517c_c1b7_2722_0a95;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
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

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_i32(&mut self, n: i32) {
        self.add(u64::from(n as u32));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
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

/// Appends `value` as JSON (`serde_json`, as apply stores it) escaped for `COPY`'s text format.
/// Written in place: compact `serde_json` writes no raw tab, newline or carriage return (it
/// escapes control characters in strings with a backslash), so only JSON holding a backslash
/// needs escaping again.
fn push_json(out: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), serde_json::Error> {
    let start = out.len();
    serde_json::to_writer(&mut *out, value)?;
    if out[start..].contains(&b'\\') {
        let json = out.split_off(start);
        push_escaped(out, &String::from_utf8_lossy(&json));
    }
    Ok(())
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

/// What opens a binary `COPY` stream: the signature `PGCOPY\n\377\r\n\0`, the flags (none) and
/// the length of the header extension (none).
const BINARY_HEADER: [u8; 19] = *b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// What ends a binary `COPY` stream: a field count of -1.
const BINARY_TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// The fields of a row of `stats_cells`: slice, rollup, grain, period and the metrics.
const CELL_FIELDS: i16 = 4 + METRICS as i16;
/// `date`'s binary form counts days from 2000-01-01, day 730,120 of the common era.
const PG_EPOCH_DAYS_FROM_CE: i32 = 730_120;

/// Appends one wide row of `stats_cells` as a binary `COPY` tuple: the field count, then each
/// field as its length and its bytes (network order), a NULL as the length -1: `integer`
/// slice, `smallint` rollup, `"char"` grain, `date` period, and a `numeric` per metric (NULL for
/// 0).
fn push_cell_row(
    out: &mut Vec<u8>,
    slice: i32,
    rollup: u8,
    grain: Grain,
    period: NaiveDate,
    values: &[i128; METRICS],
) -> Result<(), RebuildError> {
    let [grain_code] = grain.code().as_bytes() else {
        return Err(RebuildError::Internal(format!(
            "grain code {:?} is not one byte",
            grain.code()
        )));
    };
    out.extend_from_slice(&CELL_FIELDS.to_be_bytes());
    out.extend_from_slice(&4i32.to_be_bytes());
    out.extend_from_slice(&slice.to_be_bytes());
    out.extend_from_slice(&2i32.to_be_bytes());
    out.extend_from_slice(&i16::from(rollup).to_be_bytes());
    out.extend_from_slice(&1i32.to_be_bytes());
    out.push(*grain_code);
    out.extend_from_slice(&4i32.to_be_bytes());
    out.extend_from_slice(&(period.num_days_from_ce() - PG_EPOCH_DAYS_FROM_CE).to_be_bytes());
    for v in values {
        if *v == 0 {
            out.extend_from_slice(&(-1i32).to_be_bytes());
        } else {
            push_numeric(out, *v);
        }
    }
    Ok(())
}

/// Appends an integer as a binary `numeric` field: its length, then the number of base-10,000
/// digits, the weight of the first one (its power of 10,000), the sign (`0x4000` negative), the
/// display scale (0) and the digits, most significant first (trailing zero digits left out, as
/// PostgreSQL stores them). Exact for every `i128`.
fn push_numeric(out: &mut Vec<u8>, n: i128) {
    const NEGATIVE: u16 = 0x4000;
    // 10,000^10 > 2^128: ten digits hold any `i128`; least significant first.
    let mut digits = [0i16; 10];
    let mut count = 0usize;
    let magnitude = n.unsigned_abs();
    // Most sums fit 64 bits, whose division is a few instructions (128 bits': a call).
    if let Ok(mut rest) = u64::try_from(magnitude) {
        while rest > 0 {
            digits[count] = (rest % 10_000) as i16;
            rest /= 10_000;
            count += 1;
        }
    } else {
        let mut rest = magnitude;
        while rest > 0 {
            digits[count] = (rest % 10_000) as i16;
            rest /= 10_000;
            count += 1;
        }
    }
    let zeros = digits[..count].iter().take_while(|d| **d == 0).count();
    let kept = count - zeros;
    let weight = count.saturating_sub(1) as i16;
    out.extend_from_slice(&(8 + 2 * kept as i32).to_be_bytes());
    out.extend_from_slice(&(kept as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&(if n < 0 { NEGATIVE } else { 0 }).to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    for d in digits[zeros..count].iter().rev() {
        out.extend_from_slice(&d.to_be_bytes());
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
    use crate::rollup;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn copy_text_is_escaped_and_numbers_are_exact() {
        assert_eq!(
            text(|o| push_escaped(o, "a\\b\tc\nd\re\"é")),
            "a\\\\b\\tc\\nd\\re\"é"
        );
        for json in [
            serde_json::json!({"slice": {"agency": "A"}, "deltas": [["2024-03-05", "received", 1]]}),
            serde_json::json!({"a": "quote \" backslash \\ tab \t newline \n cr \r é"}),
        ] {
            let mut written = b"x\t".to_vec();
            push_json(&mut written, &json).unwrap();
            let expected = text(|o| push_escaped(o, &serde_json::to_string(&json).unwrap()));
            assert_eq!(
                String::from_utf8(written).unwrap(),
                format!("x\t{expected}")
            );
        }
        assert_eq!(text(|o| push_int(o, 0)), "0");
        assert_eq!(text(|o| push_int(o, -42)), "-42");
        assert_eq!(text(|o| push_int(o, i128::MAX)), i128::MAX.to_string());
        assert_eq!(text(|o| push_int(o, i128::MIN)), i128::MIN.to_string());
    }

    /// A binary `numeric`: digit count, weight, sign, scale, digits.
    type Numeric = (i16, i16, u16, i16, Vec<i16>);

    /// The binary `numeric` of `n`.
    fn numeric(n: i128) -> Numeric {
        let mut out = Vec::new();
        push_numeric(&mut out, n);
        let word = |at: usize| [out[at], out[at + 1]];
        let len = i32::from_be_bytes([out[0], out[1], out[2], out[3]]);
        assert_eq!(len as usize, out.len() - 4, "{n}");
        let count = i16::from_be_bytes(word(4));
        let digits = (0..count as usize)
            .map(|i| i16::from_be_bytes(word(12 + 2 * i)))
            .collect();
        (
            count,
            i16::from_be_bytes(word(6)),
            u16::from_be_bytes(word(8)),
            i16::from_be_bytes(word(10)),
            digits,
        )
    }

    /// The value a binary `numeric` stands for, as PostgreSQL reads it.
    fn value((_, weight, sign, scale, digits): Numeric) -> i128 {
        assert_eq!(scale, 0);
        assert!(digits.iter().all(|d| (0..10_000).contains(d)));
        assert!(
            digits.last().is_none_or(|d| *d != 0),
            "trailing zeros stripped"
        );
        assert!(digits.first().is_none_or(|d| *d != 0), "no leading zeros");
        let mut v: u128 = 0;
        let mut power = i32::from(weight);
        for d in &digits {
            v = v * 10_000 + u128::try_from(*d).unwrap();
            power -= 1;
        }
        // The digits left out after the last one written are zeros.
        for _ in 0..=power {
            v *= 10_000;
        }
        match sign {
            0 => i128::try_from(v).unwrap(),
            // 2^127 is i128::MIN's magnitude: negated with wrapping.
            0x4000 => (v as i128).wrapping_neg(),
            other => panic!("sign {other:#x}"),
        }
    }

    #[test]
    fn binary_numerics_are_exact_for_every_i128() {
        assert_eq!(numeric(12_345_678), (2, 1, 0, 0, vec![1234, 5678]));
        assert_eq!(numeric(10_000), (1, 1, 0, 0, vec![1]));
        assert_eq!(numeric(-5), (1, 0, 0x4000, 0, vec![5]));
        assert_eq!(numeric(1_0000_0001_0000), (3, 3, 0, 0, vec![1, 0, 1]));
        for n in [
            1,
            -1,
            9_999,
            10_001,
            i128::from(i64::MAX),
            i128::from(i64::MAX) + 1,
            i128::from(i64::MIN) - 1,
            i128::from(u64::MAX) * 10_000,
            i128::MAX,
            i128::MIN + 1,
            i128::MIN,
        ] {
            assert_eq!(value(numeric(n)), n, "{n}");
        }
    }

    #[test]
    fn binary_rows_have_every_field_and_dates_count_from_2000() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(day(2000, 1, 1).num_days_from_ce(), PG_EPOCH_DAYS_FROM_CE);
        let mut values = [0i128; METRICS];
        values[1] = 7;
        let mut row = Vec::new();
        push_cell_row(&mut row, 42, 63, Grain::Month, day(2000, 2, 1), &values).unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(&(4 + METRICS as i16).to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 42]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0, 63]);
        expected.extend_from_slice(&[0, 0, 0, 1, b'm']);
        expected.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 31]);
        expected.extend_from_slice(&(-1i32).to_be_bytes());
        push_numeric(&mut expected, 7);
        for _ in 2..METRICS {
            expected.extend_from_slice(&(-1i32).to_be_bytes());
        }
        assert_eq!(row, expected);
        assert_eq!(BINARY_HEADER.len(), 19);
        assert_eq!(&BINARY_HEADER[..11], b"PGCOPY\n\xff\r\n\0");
    }

    fn slice(agency: &str, channel: domain::Channel) -> stats::Slice {
        stats::Slice {
            level: domain::Level::District,
            agency: domain::AgencyCode::parse(agency).unwrap(),
            sector: domain::SectorCode::parse("land").unwrap(),
            procedure: domain::ProcedureCode::parse("1.001").unwrap(),
            channel,
            applicant_type: domain::ApplicantType::Citizen,
        }
    }

    /// Cells by rollup, grain, period, dimension values and metric.
    type Cells = std::collections::BTreeMap<(u8, Grain, NaiveDate, [String; 6], Metric), i128>;

    /// Sums day deltas as the rebuild does (numbered slices, expanded per share, summed in
    /// compact form) and returns the cells by rollup, grain, period, dimension values and
    /// metric.
    fn rebuilt(deltas: &[(&stats::Slice, NaiveDate, Metric, i128)], shares: usize) -> Cells {
        let mut book = SliceBook::default();
        let mut days = DaySums::new(DEFAULT_MEMORY_BYTES);
        for (s, day, metric, delta) in deltas {
            let n = book.number(s);
            days.add(n, *day, *metric, *delta);
        }
        let mut found = std::collections::BTreeMap::new();
        for share in 0..shares {
            let mut sums = CellSums::new(DEFAULT_MEMORY_BYTES);
            for (n, day, metric, delta) in days.iter() {
                assert!(sums.room_for(CELLS_PER_SUM));
                let projections = &book.projections[n as usize];
                let keep = |dims| share_of(dims, shares) == share;
                expand_sum(&mut sums, projections, keep, day, metric, delta);
            }
            sums.compact();
            wide_rows(
                sums.cells.iter().copied().map(Ok),
                |n, grain, period, values| {
                    let (rollup, dims) = &book.dims.tuples[n as usize];
                    for (metric, v) in Metric::ALL.iter().copied().zip(values) {
                        if *v == 0 {
                            continue;
                        }
                        let dims = dims.clone().map(String::from);
                        let key = (*rollup, grain, period, dims, metric);
                        assert!(
                            found.insert(key, *v).is_none(),
                            "one share and row per cell"
                        );
                    }
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
        }
        found
    }

    #[test]
    fn the_rebuilds_expansion_gives_the_cells_of_rollup_cells_in_disjoint_shares() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let (a, b) = (
            slice("A", domain::Channel::Online),
            slice("B", domain::Channel::Direct),
        );
        let c = slice("A", domain::Channel::Direct);
        let deltas = [
            (&a, day(2024, 3, 5), Metric::Received, 1),
            (&a, day(2024, 3, 5), Metric::Received, 2),
            (&b, day(2024, 3, 5), Metric::Received, 2),
            (&c, day(2024, 3, 31), Metric::Received, 4),
            (&c, day(2024, 4, 1), Metric::Pending, -1),
            (&a, day(2023, 12, 31), Metric::Pending, 1),
            (&b, day(2024, 1, 1), Metric::Pending, -1),
            (&a, day(2024, 3, 6), Metric::Resolved, 0),
            // Days that cancel out in their month (and year): no month cell.
            (&b, day(2022, 5, 5), Metric::Pending, 1),
            (&b, day(2022, 5, 20), Metric::Pending, -1),
            // Sums past `i64` and dates outside the day sums' packed range: exact all the same.
            (&a, day(2024, 3, 5), Metric::Received, i128::from(i64::MAX)),
            (
                &c,
                day(2024, 6, 1),
                Metric::Received,
                i128::from(i64::MIN) * 3,
            ),
            (&b, day(-3, 2, 1), Metric::Received, 5),
            (&a, day(50_000, 1, 1), Metric::Resolved, 6),
        ];
        let expected: Cells = rollup::rollup_cells(deltas)
            .into_iter()
            .map(|(cell, v)| {
                let dims = cell.dims.map(String::from);
                ((cell.rollup, cell.grain, cell.period, dims, cell.metric), v)
            })
            .collect();
        assert!(expected.len() > 50, "{}", expected.len());
        for shares in [1, 2, 3] {
            assert_eq!(rebuilt(&deltas, shares), expected, "{shares} shares");
        }
    }

    #[test]
    fn day_sums_stay_exact_past_i64_and_outside_the_packed_dates() {
        let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        let last = *Metric::ALL.last().unwrap();
        let adds = [
            (7, day(2024, 1, 1), Metric::Received, 1),
            // The sum leaves `i64`, then comes back into it.
            (7, day(2024, 1, 1), Metric::Received, i128::from(i64::MAX)),
            (7, day(2024, 1, 1), Metric::Received, 5),
            (7, day(2024, 1, 1), Metric::Received, -i128::from(i64::MAX)),
            (u32::MAX, day(2024, 12, 31), last, i128::MIN + 1),
            (u32::MAX, day(2024, 12, 31), last, i128::MAX),
            (0, day(1, 1, 1), Metric::Received, 2),
            (0, day(0, 12, 31), Metric::Received, 3),
            (0, day(45_000, 1, 1), Metric::Received, 4),
            (0, day(46_000, 1, 1), Metric::Received, 5),
            (0, NaiveDate::MIN, Metric::Received, 6),
            (0, NaiveDate::MAX, last, 7),
        ];
        let mut days = DaySums::new(DEFAULT_MEMORY_BYTES);
        let mut expected = std::collections::BTreeMap::new();
        for (slice, day, metric, delta) in adds {
            days.add(slice, day, metric, delta);
            *expected.entry((slice, day, metric)).or_insert(0i128) += delta;
        }
        let mut found = std::collections::BTreeMap::new();
        for (slice, day, metric, delta) in days.iter() {
            *found.entry((slice, day, metric)).or_insert(0i128) += delta;
        }
        assert_eq!(found, expected);
        assert!(days.wide.len() >= 4, "{}", days.wide.len());
        assert!(!days.sums.is_empty());
        days.clear();
        assert_eq!(days.iter().count(), 0);
    }

    #[test]
    fn cell_sums_ask_to_spill_only_past_three_quarters_of_the_budget() {
        let key = |dims| CellKey {
            dims,
            day: NaiveDate::from_ymd_opt(2024, 3, 5).unwrap(),
            metric: Metric::Received,
        };
        // Equal cells sum up: never short of room.
        let mut sums = CellSums::new(0);
        for _ in 0..10_000 {
            assert!(sums.room_for(1));
            sums.push(key(1), 1);
        }
        sums.compact();
        assert_eq!(sums.cells, vec![(key(1), 10_000)]);
        // Distinct cells: the minimum budget (1,024 cells) fills, then asks to spill (summing
        // up leaves more than three quarters of it).
        let mut sums = CellSums::new(0);
        let mut pushed = 0;
        while sums.room_for(1) {
            sums.push(key(pushed), 1);
            pushed += 1;
            assert!(pushed <= 1024);
            assert!(sums.cells.capacity() <= 1024, "{}", sums.cells.capacity());
        }
        assert_eq!(pushed, 1024);
        // 700 distinct cells and then one repeated: summing up leaves 701, under three quarters.
        let mut sums = CellSums::new(0);
        for i in 0..10_000 {
            assert!(sums.room_for(1), "{i}");
            sums.push(key(i.min(700)), 1);
        }
        sums.clear();
        assert!(sums.room_for(1));
    }
}
