//! Figures "as recorded at T" from checkpoints of the log, without rescanning its prefix.
//!
//! `recorded_at` never decreases along positions, so "recorded up to `T`" is the log up to a
//! position `P(T)`. A background checkpointer ([`run`], [`checkpoint_once`]) cuts the log into
//! windows of consecutive positions and stores, per window `k` = `(P_{k−1}, P_k]`, the change of
//! the coarse figures between the two positions:
//!
//! `D_k = Σ_{d with an event in window k} contribution(d, ≤ P_k) − contribution(d, ≤ P_{k−1})`,
//!
//! expanded into the rollups [`CHECKPOINT_ROLLUPS`] (the province and by level) at every grain. A dossier without an event in
//! a window has the same contribution at both ends, so the sum telescopes:
//! `Σ_{k ≤ K} D_k = Σ_d contribution(d, ≤ P_K)`, the figures as of `P_K`. The figures as of `T`
//! ([`as_recorded_at`]) are those of the last checkpoint `K` recorded at or before `T`, plus the
//! same difference computed in memory for the dossiers with an event in `(P_K, P(T)]` (at most
//! one window: checkpoint `K + 1` was recorded after `T`), read with
//! [`eventlog::these_dossiers_up_to`].
//!
//! Blocks (`asof_cells`, migration 30020): tier 0 block `b` is window `b + 1`; tier `t` block `b`
//! is the sum of windows `b·F^t + 1 ..= (b + 1)·F^t` (`F` = [`FANOUT`]), written in the same
//! transaction as the window that completes it. `Σ_{k ≤ K}` is then at most `F − 1` blocks per
//! tier ([`blocks_up_to`]): ≤ 60 rows per cell for 65 536 windows.
//!
//! Exactness: the checkpoint transaction takes a transaction-level advisory lock (a second
//! instance skips its turn), reads the last checkpoint and the head inside it, and writes the
//! window, the blocks it completes and the checkpoint row together: a crash leaves nothing
//! half-written, and two instances cannot write one window twice (the lock, and `seq`'s and
//! `position`'s keys behind it). Queries the checkpointed rollups cannot answer (filters or
//! groups on agency, sector, procedure, channel or applicant type) return `None`, and the caller
//! scans the log ([`crate::figures`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool, Row};
use stats::{Aggregates, Dimension, GroupKey, Metric, MetricKind, Query, Slice, Totals};
use tokio_util::sync::CancellationToken;

use crate::rollup::{self, Grain, Span};
use crate::store::{self, QueryError};

/// Blocks of tier `t + 1` sum this many blocks of tier `t`.
pub const FANOUT: i64 = 16;

/// The rollups checkpointed (bit masks as `stats_rollup.rollup`): the province ({}) and by
/// level ({level}). A query filtering or grouping by any other dimension scans the log.
///
/// Why not {level, agency} and {level, sector} as well: a window's change touches nearly as
/// many of their cells as it has events (each dossier its own agency × sector × days × metrics
/// × grains), so their checkpoints would outweigh the log itself — measured: 48,000 cells per
/// window of 1,024 events, 17.7 × the size of `events` (BENCHMARKS.md, "As recorded at T").
pub const CHECKPOINT_ROLLUPS: [u8; 2] = [0, 1];

/// Above this many events between the last checkpoint and `P(T)` (a checkpointer far behind,
/// or none running), [`as_recorded_at`] answers `None`: reading that many dossiers by id would
/// cost more than the scan.
pub const MAX_PARTIAL_EVENTS: i64 = 100_000;

/// The advisory lock key of the checkpointer (`pg_try_advisory_xact_lock`): ASCII "asof_ckp".
const LOCK_KEY: i64 = 0x6173_6f66_5f63_6b70;

/// `[projection.checkpoints]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSettings {
    /// Whether this instance runs the checkpointer (several may: one works at a time).
    pub enabled: bool,
    /// Events per window (16–100 000). Smaller windows make the in-memory part of a query
    /// cheaper and store more rows; see BENCHMARKS.md, "As recorded at T".
    pub window_events: u32,
    /// How long the checkpointer waits when less than a window is waiting (10–60 000 ms).
    pub idle_poll_ms: u64,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            enabled: true,
            window_events: 1024,
            idle_poll_ms: 1000,
        }
    }
}

impl CheckpointSettings {
    pub fn validate(&self) -> Result<(), String> {
        if !(16..=100_000).contains(&self.window_events) {
            return Err(format!(
                "checkpoints.window_events = {} is outside 16..=100000",
                self.window_events
            ));
        }
        if !(10..=60_000).contains(&self.idle_poll_ms) {
            return Err(format!(
                "checkpoints.idle_poll_ms = {} is outside 10..=60000",
                self.idle_poll_ms
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks (pure)
// ---------------------------------------------------------------------------------------------

/// The blocks `(tier, block)` whose windows are exactly `1..=k`: the base-[`FANOUT`] digits of
/// `k`, highest tier first; at most `FANOUT − 1` per tier.
pub fn blocks_up_to(k: i64) -> Vec<(i16, i64)> {
    let mut out = Vec::new();
    if k <= 0 {
        return out;
    }
    let mut tier: i16 = 0;
    let mut size: i64 = 1;
    while size <= k / FANOUT {
        size *= FANOUT;
        tier += 1;
    }
    let mut done: i64 = 0;
    loop {
        let n = (k - done) / size;
        for i in 0..n {
            out.push((tier, done / size + i));
        }
        done += n * size;
        if tier == 0 {
            break;
        }
        tier -= 1;
        size /= FANOUT;
    }
    out
}

/// The blocks of tier ≥ 1 that window `k` completes (their last window is `k`), lowest tier
/// first: each is the sum of `FANOUT` blocks of the tier below, all complete by then.
pub fn blocks_completed_by(k: i64) -> Vec<(i16, i64)> {
    let mut out = Vec::new();
    let mut tier: i16 = 1;
    let mut size = FANOUT;
    while k > 0 && k % size == 0 {
        out.push((tier, k / size - 1));
        tier += 1;
        match size.checked_mul(FANOUT) {
            Some(s) => size = s,
            None => break,
        }
    }
    out
}

/// The coarsest checkpointed rollup holding every dimension `query` filters or groups by;
/// `None` when it needs another one.
pub fn checkpoint_rollup_for(query: &Query) -> Option<u8> {
    let needed = query
        .filter
        .dimensions()
        .chain(query.group_by.iter().copied())
        .fold(0u8, |mask, d| mask | rollup::dimension_bit(d));
    CHECKPOINT_ROLLUPS
        .into_iter()
        .find(|r| r & needed == needed)
}

/// A cell of `asof_cells` within a block: rollup, grain, period, (level, agency, sector) as in
/// the rollup (`""` outside it), metric.
pub type CheckpointCell<'a> = (u8, Grain, NaiveDate, [&'a str; 3], Metric);

/// Adds day deltas `(slice, day, metric, delta)` into every checkpointed rollup and grain cell;
/// zero sums are dropped by [`retain_nonzero`].
pub fn add_checkpoint_cells<'a>(
    deltas: impl IntoIterator<Item = (&'a Slice, NaiveDate, Metric, i128)>,
    cells: &mut BTreeMap<CheckpointCell<'a>, i128>,
) {
    // Summed first over the three dimensions the checkpoints drop.
    let mut coarse: BTreeMap<([&'a str; 3], NaiveDate, Metric), i128> = BTreeMap::new();
    for (slice, day, metric, delta) in deltas {
        if delta == 0 {
            continue;
        }
        let dims = [
            slice.level.as_str(),
            slice.agency.as_str(),
            slice.sector.as_str(),
        ];
        *coarse.entry((dims, day, metric)).or_insert(0) += delta;
    }
    for ((dims, day, metric), delta) in coarse {
        for rollup in CHECKPOINT_ROLLUPS {
            let mut kept = [""; 3];
            for (i, d) in [Dimension::Level, Dimension::Agency, Dimension::Sector]
                .into_iter()
                .enumerate()
            {
                if rollup & rollup::dimension_bit(d) != 0 {
                    kept[i] = dims[i];
                }
            }
            for grain in Grain::ALL {
                *cells
                    .entry((rollup, grain, grain.period(day), kept, metric))
                    .or_insert(0) += delta;
            }
        }
    }
}

/// Drops the zero cells.
pub fn retain_nonzero(cells: &mut BTreeMap<CheckpointCell<'_>, i128>) {
    cells.retain(|_, v| *v != 0);
}

// ---------------------------------------------------------------------------------------------
// The checkpointer
// ---------------------------------------------------------------------------------------------

/// Why a checkpoint could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot read the log: {0}")]
    Log(#[from] eventlog::ReadError),
    /// An event of the window's dossiers does not decode: nothing is written.
    #[error("event at position {position} does not decode: {reason}")]
    Corrupt { position: i64, reason: String },
}

/// What one checkpoint wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    pub seq: i64,
    pub position: i64,
    pub dossiers: usize,
    pub cells: usize,
    /// Blocks of tier ≥ 1 completed (and written) with it.
    pub merged_blocks: usize,
}

/// The last checkpoint `(seq, position)`, `(0, 0)` before the first.
pub async fn last_checkpoint(conn: &mut PgConnection) -> Result<(i64, i64), sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT seq, position FROM asof_checkpoints ORDER BY seq DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    Ok(row.unwrap_or((0, 0)))
}

/// Writes the next checkpoint when at least `window_events` events follow the last one, in one
/// transaction; `None` when fewer are waiting or another instance holds the checkpointer's lock.
pub async fn checkpoint_once(
    pool: &PgPool,
    window_events: u32,
) -> Result<Option<Checkpointed>, CheckpointError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let (seq, from) = last_checkpoint(&mut tx).await?;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&mut *tx)
        .await?;
    let to = from + i64::from(window_events);
    if head < to {
        return Ok(None);
    }
    let k = seq + 1;
    let recorded_at: DateTime<Utc> =
        sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
            .bind(to)
            .fetch_one(&mut *tx)
            .await?;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT dossier_id FROM events WHERE position > $1 AND position <= $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let dossiers: Vec<eventlog::DossierEvents> =
        eventlog::these_dossiers_up_to(&mut tx, &id_refs, to).await?;
    let diffs = window_diffs(&dossiers, from)?;
    let mut cells = BTreeMap::new();
    add_checkpoint_cells(diffs.iter().map(|(s, d, m, v)| (s, *d, *m, *v)), &mut cells);
    retain_nonzero(&mut cells);
    insert_cells(&mut tx, 0, seq, &cells).await?;
    let merged = blocks_completed_by(k);
    for &(tier, block) in &merged {
        sqlx::query(
            "INSERT INTO asof_cells \
               (tier, block, rollup, grain, period, level, agency, sector, metric, value) \
             SELECT $1, $2, rollup, grain, period, level, agency, sector, metric, SUM(value) \
             FROM asof_cells WHERE tier = $3 AND block >= $4 AND block < $5 \
             GROUP BY rollup, grain, period, level, agency, sector, metric \
             HAVING SUM(value) <> 0",
        )
        .bind(tier)
        .bind(block)
        .bind(tier - 1)
        .bind(block * FANOUT)
        .bind((block + 1) * FANOUT)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query(
        "INSERT INTO asof_checkpoints (seq, position, recorded_at, dossiers, cells) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(k)
    .bind(to)
    .bind(recorded_at)
    .bind(i32::try_from(dossiers.len()).unwrap_or(i32::MAX))
    .bind(i32::try_from(cells.len()).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Checkpointed {
        seq: k,
        position: to,
        dossiers: dossiers.len(),
        cells: cells.len(),
        merged_blocks: merged.len(),
    }))
}

/// What the checkpointer has seen, for its metrics (`motcua_asof_*`). Every instance reports the
/// shared state of the checkpoints (any instance may have written the last one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointerStatus {
    /// The log position the last checkpoint covers (0 before the first).
    pub checkpointed_position: i64,
    /// The log's head, read in the same statement.
    pub head_position: i64,
    /// Checkpoints of this instance that failed (and wrote nothing) since it started.
    pub failures_total: u64,
}

impl CheckpointerStatus {
    /// Events recorded after the last checkpoint: what an "as recorded at" answer near the
    /// head reads dossier by dossier (past [`MAX_PARTIAL_EVENTS`] it scans the log instead).
    pub fn events_past_checkpoint(&self) -> i64 {
        (self.head_position - self.checkpointed_position).max(0)
    }
}

/// The last checkpoint's position and the log's head, in one statement.
pub async fn progress(pool: &PgPool) -> Result<(i64, i64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE((SELECT position FROM asof_checkpoints ORDER BY seq DESC LIMIT 1), 0), \
                (SELECT position FROM log_head)",
    )
    .fetch_one(pool)
    .await
}

/// Checkpoints until `stop`: as many windows as are waiting, then a pause of `idle_poll_ms`;
/// an error is logged and retried after the same pause (nothing was written). After each step
/// the shared progress is read into `status`.
pub async fn run(
    pool: PgPool,
    settings: CheckpointSettings,
    status: tokio::sync::watch::Sender<CheckpointerStatus>,
    stop: CancellationToken,
) {
    let pause = Duration::from_millis(settings.idle_poll_ms);
    while !stop.is_cancelled() {
        let idle = match checkpoint_once(&pool, settings.window_events).await {
            Ok(Some(c)) => {
                tracing::debug!(
                    seq = c.seq,
                    position = c.position,
                    cells = c.cells,
                    "checkpoint"
                );
                false
            }
            Ok(None) => true,
            Err(error) => {
                tracing::warn!(%error, "as-of checkpoint failed; retrying");
                status.send_modify(|s| s.failures_total += 1);
                true
            }
        };
        match progress(&pool).await {
            Ok((checkpointed, head)) => status.send_modify(|s| {
                s.checkpointed_position = checkpointed;
                s.head_position = head;
            }),
            Err(error) => tracing::warn!(%error, "cannot read the as-of checkpoints' progress"),
        }
        if idle {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// Σ over `dossiers` (each with its events up to the window's end) of contribution(all) −
/// contribution(events ≤ `before`).
fn window_diffs(
    dossiers: &[eventlog::DossierEvents],
    before: i64,
) -> Result<Vec<(Slice, NaiveDate, Metric, i128)>, CheckpointError> {
    let mut out = Vec::new();
    for d in dossiers {
        let (old, new) = old_and_new(d, before)?;
        out.extend(stats::diff(old.as_ref(), new.as_ref()));
    }
    Ok(out)
}

/// A dossier's contribution from its events `<= before`, and from all the events given.
fn old_and_new(
    dossier: &eventlog::DossierEvents,
    before: i64,
) -> Result<(Option<stats::Contribution>, Option<stats::Contribution>), CheckpointError> {
    let mut events = Vec::with_capacity(dossier.events.len());
    let mut old_len = 0;
    for e in &dossier.events {
        events.push(
            writepath::decode(e).map_err(|err| CheckpointError::Corrupt {
                position: e.position,
                reason: err.to_string(),
            })?,
        );
        if e.position <= before {
            old_len = events.len();
        }
    }
    let old = stats::contribution(&events[..old_len]);
    let new = stats::contribution(&events);
    Ok((old, new))
}

/// Inserts a block's cells, one statement per 10 000.
async fn insert_cells(
    conn: &mut PgConnection,
    tier: i16,
    block: i64,
    cells: &BTreeMap<CheckpointCell<'_>, i128>,
) -> Result<(), sqlx::Error> {
    let all: Vec<_> = cells.iter().collect();
    for chunk in all.chunks(10_000) {
        let mut rollups = Vec::with_capacity(chunk.len());
        let mut grains = Vec::with_capacity(chunk.len());
        let mut periods = Vec::with_capacity(chunk.len());
        let mut dims: [Vec<&str>; 3] = std::array::from_fn(|_| Vec::with_capacity(chunk.len()));
        let mut metrics = Vec::with_capacity(chunk.len());
        let mut values = Vec::with_capacity(chunk.len());
        for ((rollup, grain, period, d, metric), value) in chunk {
            rollups.push(i16::from(*rollup));
            grains.push(grain.code());
            periods.push(*period);
            for i in 0..3 {
                dims[i].push(d[i]);
            }
            metrics.push(metric.as_str());
            values.push(value.to_string());
        }
        sqlx::query(
            "INSERT INTO asof_cells \
               (tier, block, rollup, grain, period, level, agency, sector, metric, value) \
             SELECT $1, $2, r, g, p, l, a, s, m, v::numeric \
             FROM UNNEST($3::smallint[], $4::text[], $5::date[], $6::text[], $7::text[], \
                         $8::text[], $9::text[], $10::text[]) AS u(r, g, p, l, a, s, m, v)",
        )
        .bind(tier)
        .bind(block)
        .bind(rollups)
        .bind(grains)
        .bind(periods)
        .bind(&dims[0])
        .bind(&dims[1])
        .bind(&dims[2])
        .bind(metrics)
        .bind(values)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------------------------

/// The checkpoint a query at `at` starts from, and where its in-memory part ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The last checkpoint recorded at or before `at` (0: none).
    pub seq: i64,
    /// Its position (0: none).
    pub position: i64,
    /// The next checkpoint's position, if any: `P(at)` is below it.
    pub next_position: Option<i64>,
}

/// Finds the last checkpoint recorded at or before `at`.
pub async fn cut_at(conn: &mut PgConnection, at: DateTime<Utc>) -> Result<Cut, sqlx::Error> {
    let last: Option<(i64, i64)> = sqlx::query_as(
        "SELECT seq, position FROM asof_checkpoints WHERE recorded_at <= $1 \
         ORDER BY recorded_at DESC, seq DESC LIMIT 1",
    )
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    let (seq, position) = last.unwrap_or((0, 0));
    let next_position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM asof_checkpoints WHERE seq = $1")
            .bind(seq + 1)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Cut {
        seq,
        position,
        next_position,
    })
}

/// `P(at)`: the last position recorded at or before `at` (0: none), looked for after the cut.
pub async fn position_at(
    conn: &mut PgConnection,
    cut: &Cut,
    at: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let p: Option<i64> = sqlx::query_scalar(
        "SELECT max(position) FROM events \
         WHERE position > $1 AND ($2::bigint IS NULL OR position < $2) AND recorded_at <= $3",
    )
    .bind(cut.position)
    .bind(cut.next_position)
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(p.unwrap_or(cut.position))
}

/// The answer to `query` counting the events recorded up to `at`, from the checkpoints; `None`
/// when they cannot answer it (a dimension outside [`CHECKPOINT_ROLLUPS`], or more than
/// [`MAX_PARTIAL_EVENTS`] events since the last checkpoint): the caller scans the log.
pub async fn as_recorded_at(
    pool: &PgPool,
    query: &Query,
    at: DateTime<Utc>,
) -> Result<Option<BTreeMap<GroupKey, Totals>>, QueryError> {
    let Some(rollup) = checkpoint_rollup_for(query) else {
        return Ok(None);
    };
    let mut conn = pool.acquire().await?;
    let cut = cut_at(&mut conn, at).await?;
    // The events after the cut recorded up to `at`: a run of positions before the next
    // checkpoint (recorded after `at`), or, after the last one, before the head. Kept by the
    // filter's routing columns (a dossier's are the same on all its events).
    let upper = cut
        .next_position
        .unwrap_or(cut.position.saturating_add(MAX_PARTIAL_EVENTS + 1));
    if cut.next_position.is_none() {
        // Nothing bounds the run but the head: too long a run is the scan's.
        let beyond: Option<i64> = sqlx::query_scalar(
            "SELECT position FROM events WHERE position = $1 AND recorded_at <= $2",
        )
        .bind(upper)
        .bind(at)
        .fetch_optional(&mut *conn)
        .await?;
        if beyond.is_some() {
            return Ok(None);
        }
    }
    let f = &query.filter;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT position, dossier_id FROM events \
         WHERE position > $1 AND position < $2 AND recorded_at <= $3 \
           AND ($4::text IS NULL OR level = $4) \
           AND ($5::text IS NULL OR agency = $5) \
           AND ($6::text IS NULL OR sector = $6)",
    )
    .bind(cut.position)
    .bind(upper)
    .bind(at)
    .bind(f.value(Dimension::Level))
    .bind(f.value(Dimension::Agency))
    .bind(f.value(Dimension::Sector))
    .fetch_all(&mut *conn)
    .await?;
    let ids: BTreeSet<&str> = rows.iter().map(|(_, d)| d.as_str()).collect();
    let mut partial = Aggregates::new();
    if let Some(up_to) = rows.iter().map(|(p, _)| *p).max() {
        let ids: Vec<&str> = ids.into_iter().collect();
        let dossiers: Vec<eventlog::DossierEvents> =
            eventlog::these_dossiers_up_to(&mut conn, &ids, up_to)
                .await
                .map_err(|e| QueryError::Corrupt(format!("cannot read the log: {e}")))?;
        for d in &dossiers {
            let (old, new) = old_and_new(d, cut.position).map_err(|e| match e {
                CheckpointError::Corrupt { position, reason } => QueryError::Corrupt(format!(
                    "the event at position {position} does not decode: {reason}"
                )),
                other => QueryError::Corrupt(other.to_string()),
            })?;
            partial.apply(&stats::diff(old.as_ref(), new.as_ref()));
        }
    }
    // JIT off for this one statement: it sums a few thousand rows, far less than what JIT
    // compilation (PostgreSQL's default once a plan's estimate passes `jit_above_cost`) costs.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
    let mut groups = checkpoint_totals(&mut tx, query, rollup, cut.seq).await?;
    tx.commit().await?;
    for (key, totals) in partial.grouped(
        query.from,
        query.to,
        |s| query.filter.matches(s),
        |s| query.group_of(s),
    ) {
        groups
            .entry(key)
            .or_insert_with(|| Totals::empty(query.from, query.to))
            .merge(&totals);
    }
    Ok(Some(stats::tidy(query, groups)))
}

/// The figures of `query` as of checkpoint `k` (Σ of windows `1..=k`), per group, zeros kept.
pub async fn checkpoint_totals(
    conn: &mut PgConnection,
    query: &Query,
    rollup: u8,
    k: i64,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    let mut groups: BTreeMap<GroupKey, Totals> = BTreeMap::new();
    let blocks = blocks_up_to(k);
    if blocks.is_empty() {
        return Ok(groups);
    }
    let tiers: Vec<i16> = blocks.iter().map(|b| b.0).collect();
    let ids: Vec<i64> = blocks.iter().map(|b| b.1).collect();
    // Parameters: $1 tiers, $2 blocks, $3 rollup, $4 stock metrics, then dates, then filters.
    let mut dates: Vec<NaiveDate> = Vec::new();
    let group_cols: Vec<&str> = query.group_by.iter().map(|d| d.as_str()).collect();
    let groups_sql: String = group_cols.iter().map(|c| format!(", c.{c}")).collect();
    let mut legs = Vec::new();
    for (spans, column, stocks_only) in [
        (rollup::spans(Some(query.from), query.to), 0, false),
        (rollup::prefix_spans(query.from), 1, true),
        (rollup::prefix_spans(query.to), 2, true),
    ] {
        for condition in span_conditions(&spans, &mut dates) {
            let values = (0..3)
                .map(|k| if k == column { "c.value" } else { "0::numeric" })
                .collect::<Vec<_>>()
                .join(", ");
            let stocks = if stocks_only {
                " AND c.metric = ANY($4)"
            } else {
                ""
            };
            legs.push(format!(
                "SELECT c.metric{groups_sql}, {values} FROM asof_cells c \
                 JOIN UNNEST($1::smallint[], $2::bigint[]) AS b(tier, block) \
                   ON c.tier = b.tier AND c.block = b.block \
                 WHERE c.rollup = $3 AND {condition}{stocks} FILTERS"
            ));
        }
    }
    if legs.is_empty() {
        return Ok(groups);
    }
    let first_filter = dates.len() + 5;
    let mut binds: Vec<&str> = Vec::new();
    let mut filters = String::new();
    for d in [Dimension::Level, Dimension::Agency, Dimension::Sector] {
        if let Some(v) = query.filter.value(d) {
            filters.push_str(&format!(
                " AND c.{} = ${}",
                d.as_str(),
                first_filter + binds.len()
            ));
            binds.push(v);
        }
    }
    let outer_groups: String = group_cols.iter().map(|c| format!(", {c}")).collect();
    let sql = format!(
        "SELECT metric{outer_groups}, \
           COALESCE(SUM(f), 0)::text AS flow, \
           COALESCE(SUM(s), 0)::text AS at_start, \
           COALESCE(SUM(e), 0)::text AS at_end \
         FROM ({}) AS legs(metric{outer_groups}, f, s, e) \
         GROUP BY metric{outer_groups}",
        legs.join(" UNION ALL ").replace(" FILTERS", &filters)
    );
    let stocks: Vec<&str> = Metric::stocks().map(Metric::as_str).collect();
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .persistent(false)
        .bind(tiers)
        .bind(ids)
        .bind(i16::from(rollup))
        .bind(stocks);
    for d in dates {
        q = q.bind(d);
    }
    for v in binds {
        q = q.bind(v);
    }
    let rows = q.fetch(&mut *conn);
    futures::pin_mut!(rows);
    while let Some(row) = rows.try_next().await? {
        let name: String = row.try_get("metric")?;
        let metric = Metric::parse(&name)
            .ok_or_else(|| QueryError::Corrupt(format!("unknown metric {name}")))?;
        let key = group_cols
            .iter()
            .map(|c| row.try_get::<String, _>(*c))
            .collect::<Result<GroupKey, _>>()?;
        let totals = groups
            .entry(key)
            .or_insert_with(|| Totals::empty(query.from, query.to));
        match metric.kind() {
            MetricKind::Flow => {
                *totals.flows.entry(metric).or_insert(0) += store::sum(&row, "flow")?;
            }
            MetricKind::Stock => {
                *totals.at_start.entry(metric).or_insert(0) += store::sum(&row, "at_start")?;
                *totals.at_end.entry(metric).or_insert(0) += store::sum(&row, "at_end")?;
            }
        }
    }
    Ok(groups)
}

/// `c.grain = … AND c.period >= $n AND c.period < $m` per span, numbering the dates after the
/// four fixed parameters.
fn span_conditions(spans: &[Span], dates: &mut Vec<NaiveDate>) -> Vec<String> {
    spans
        .iter()
        .map(|span| {
            let mut part = format!("c.grain = '{}'", span.grain.code());
            if let Some(from) = span.from {
                dates.push(from);
                part.push_str(&format!(" AND c.period >= ${}", dates.len() + 4));
            }
            if let Some(to) = span.to {
                dates.push(to);
                part.push_str(&format!(" AND c.period < ${}", dates.len() + 4));
            }
            part
        })
        .collect()
}

/// The answer to `query` from the log itself: every dossier up to `P(at)` (kept by the filter's
/// routing columns) folded into [`Aggregates`]. The reference the checkpoints are tested
/// against, and the fallback for what they cannot answer.
pub async fn scan(
    pool: &PgPool,
    query: &Query,
    at: DateTime<Utc>,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    Ok(scan_aggregates(pool, query, at).await?.query(query))
}

/// The aggregates [`scan`] answers from.
pub async fn scan_aggregates(
    pool: &PgPool,
    query: &Query,
    at: DateTime<Utc>,
) -> Result<Aggregates, QueryError> {
    let mut conn = pool.acquire().await?;
    let cut = cut_at(&mut conn, at).await?;
    let up_to = position_at(&mut conn, &cut, at).await?;
    let f = &query.filter;
    let routing = eventlog::RoutingFilter {
        level: f.value(Dimension::Level).map(str::to_owned),
        agency: f.value(Dimension::Agency).map(str::to_owned),
        sector: f.value(Dimension::Sector).map(str::to_owned),
    };
    let mut aggregates = Aggregates::new();
    let mut dossiers =
        eventlog::dossiers_up_to::<eventlog::StoredEvent>(&mut conn, up_to, &routing);
    while let Some(d) = dossiers
        .try_next()
        .await
        .map_err(|e| QueryError::Corrupt(format!("cannot read the log: {e}")))?
    {
        let (_, new) = old_and_new(&d, 0).map_err(|e| QueryError::Corrupt(e.to_string()))?;
        if let Some(c) = new {
            aggregates.add_contribution(&c);
        }
    }
    Ok(aggregates)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows a list of blocks covers, each once.
    fn windows(blocks: &[(i16, i64)]) -> Vec<i64> {
        let mut out = Vec::new();
        for &(tier, block) in blocks {
            let size = FANOUT.pow(u32::try_from(tier).unwrap());
            out.extend(block * size + 1..=(block + 1) * size);
        }
        out.sort_unstable();
        out
    }

    #[test]
    fn the_blocks_up_to_k_cover_windows_one_to_k_exactly_once() {
        for k in (0..5000).chain([65_535, 65_536, 65_537, 1_000_000]) {
            let blocks = blocks_up_to(k);
            assert_eq!(windows(&blocks), (1..=k).collect::<Vec<_>>(), "k = {k}");
            let tiers: BTreeSet<i16> = blocks.iter().map(|b| b.0).collect();
            for t in tiers {
                let n = blocks.iter().filter(|b| b.0 == t).count();
                assert!(n < FANOUT as usize, "k = {k}: {n} blocks of tier {t}");
            }
        }
    }

    #[test]
    fn every_block_used_is_completed_by_a_window_at_or_before_k() {
        let mut written: BTreeSet<(i16, i64)> = BTreeSet::new();
        for k in 1..6000 {
            written.insert((0, k - 1));
            for b in blocks_completed_by(k) {
                // Its parts exist already.
                let (tier, block) = b;
                for i in 0..FANOUT {
                    assert!(written.contains(&(tier - 1, block * FANOUT + i)), "{b:?}");
                }
                assert!(written.insert(b), "{b:?} written twice");
            }
            for b in blocks_up_to(k) {
                assert!(written.contains(&b), "k = {k}: {b:?} not written yet");
            }
        }
    }

    #[test]
    fn the_checkpointed_rollups_are_stored_ones() {
        for r in CHECKPOINT_ROLLUPS {
            assert!(rollup::ROLLUPS.contains(&r));
        }
    }
}
