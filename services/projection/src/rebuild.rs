//! Rebuilding the read models from the event log in PostgreSQL (never from NATS, which may have
//! lost data), while the service keeps answering from the old tables.
//!
//! 1. [`prepare`] takes an advisory lock (one rebuild at a time), creates the shadow tables
//!    `projection_contributions_next` and `stats_rollup_next`, and reads the log in one
//!    `REPEATABLE READ` snapshot: the head position `P` and every event at or before it, ordered
//!    by dossier and version. Each dossier's [`stats::contribution`] goes to the shadow
//!    contributions; the day deltas are summed in memory up to a bound, then expanded into
//!    rollup cells ([`crate::store::rollup_cells`], the one definition apply also uses) and
//!    added to the shadow aggregates. Memory stays bounded whatever the length of the log.
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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use eventlog::EventLog;
use futures::TryStreamExt;
use sqlx::Connection;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};
use stats::{Contribution, Metric, Slice};

use crate::store::{self, ApplyError};

/// The advisory lock key a rebuild holds for its whole run ("projrbld").
const LOCK_KEY: i64 = 0x7072_6f6a_7262_6c64;

/// Day deltas kept in memory before they are expanded into rollup cells and written.
const CELLS_IN_MEMORY: usize = 200_000;
/// Contributions written per statement.
const CONTRIBUTIONS_PER_INSERT: usize = 2_000;
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

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
}

/// How far a rebuild has read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Events read so far.
    pub events: u64,
    /// The snapshot's head position: positions are gapless from 1, so this many events in all.
    pub head: i64,
    pub dossiers: u64,
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
            "{} of {} events ({percent:.1}%), {} dossiers, {:.0} events/s",
            self.events,
            self.head,
            self.dossiers,
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
    /// Cells in the new `stats_rollup`.
    pub cells: i64,
    /// Time to read the log and fill the shadow tables.
    pub fill: Duration,
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
}

/// Fills the shadow tables from the log (see the module docs), reporting progress about once a
/// second. The live tables are not touched.
pub async fn prepare(
    pool: &PgPool,
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
    match fill(pool, &mut conn, started, &mut progress).await {
        Ok((position, events, dossiers)) => Ok(Shadow {
            conn,
            pool: pool.clone(),
            position,
            events,
            dossiers,
            fill: started.elapsed(),
        }),
        Err(e) => {
            let _ = conn.close().await;
            Err(e)
        }
    }
}

/// Creates the shadow tables on `conn` and fills them from one snapshot of the log; returns
/// `(P, events, dossiers)`.
async fn fill(
    pool: &PgPool,
    conn: &mut PgConnection,
    started: Instant,
    progress: &mut impl FnMut(&Progress),
) -> Result<(i64, u64, u64), RebuildError> {
    create_shadow_tables(conn).await?;
    // The shadow tables are thrown away on any failure: their writes need not wait for the
    // WAL flush. The swap itself commits durably (`swap` resets this first).
    sqlx::query("SET synchronous_commit = off")
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

    let mut sink = Sink::default();
    let mut current: Option<(String, i32, Vec<domain::Event>)> = None;
    let mut events = 0u64;
    let mut last_report = Instant::now();
    {
        let mut rows = sqlx::query(
            "SELECT dossier_id, version, event_type, occurred_at, payload FROM events \
             WHERE position <= $1 ORDER BY dossier_id, version",
        )
        .bind(head)
        .fetch(&mut *reader);
        while let Some(row) = rows.try_next().await? {
            let dossier_id: String = row.try_get("dossier_id")?;
            let version: i32 = row.try_get("version")?;
            let event = decode(&row, &dossier_id, version)?;
            match &mut current {
                Some((id, v, list)) if *id == dossier_id => {
                    *v = version;
                    list.push(event);
                }
                _ => {
                    if let Some((id, v, list)) = current.take() {
                        sink.add(conn, id, v, &list).await?;
                    }
                    current = Some((dossier_id, version, vec![event]));
                }
            }
            events += 1;
            if events % 4096 == 0 && last_report.elapsed() >= PROGRESS_EVERY {
                last_report = Instant::now();
                progress(&Progress {
                    events,
                    head,
                    dossiers: sink.dossiers,
                    elapsed: started.elapsed(),
                });
            }
        }
    }
    if let Some((id, v, list)) = current.take() {
        sink.add(conn, id, v, &list).await?;
    }
    sink.flush_contributions(conn).await?;
    sink.flush_cells(conn).await?;
    reader.commit().await?;
    // Cancelled deltas leave zero cells behind; the live tables never need them.
    sqlx::query("DELETE FROM stats_rollup_next WHERE value = 0")
        .execute(&mut *conn)
        .await?;
    sqlx::query("ANALYZE projection_contributions_next, stats_rollup_next")
        .execute(&mut *conn)
        .await?;
    progress(&Progress {
        events,
        head,
        dossiers: sink.dossiers,
        elapsed: started.elapsed(),
    });
    Ok((head, events, sink.dossiers))
}

/// Drops any shadow left by an interrupted rebuild and creates empty ones shaped like the live
/// tables, with primary keys named as the live ones will be after the swap renames them.
async fn create_shadow_tables(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for sql in [
        "DROP TABLE IF EXISTS projection_contributions_next, stats_rollup_next",
        "CREATE TABLE projection_contributions_next \
           (LIKE projection_contributions INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "ALTER TABLE projection_contributions_next \
           ADD CONSTRAINT projection_contributions_next_pkey PRIMARY KEY (dossier_id)",
        "CREATE TABLE stats_rollup_next \
           (LIKE stats_rollup INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        "ALTER TABLE stats_rollup_next ADD CONSTRAINT stats_rollup_next_pkey PRIMARY KEY \
           (rollup, grain, period, level, agency, sector, procedure, channel, applicant_type, \
            metric)",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

fn decode(
    row: &sqlx::postgres::PgRow,
    dossier_id: &str,
    version: i32,
) -> Result<domain::Event, RebuildError> {
    let event_type: String = row.try_get("event_type")?;
    let payload: serde_json::Value = row.try_get("payload")?;
    let body = domain::DossierEvent::from_parts(&event_type, &payload).map_err(|e| {
        RebuildError::Corrupt(format!("event {version} of dossier {dossier_id}: {e}"))
    })?;
    Ok(domain::Event {
        occurred_at: row.try_get("occurred_at")?,
        body,
    })
}

/// Contributions and day deltas waiting to be written to the shadow tables.
#[derive(Debug, Default)]
struct Sink {
    ids: Vec<String>,
    /// As JSON text: a `serde_json::Value` would hold a delta beyond 64 bits approximately.
    contributions: Vec<Option<String>>,
    versions: Vec<i32>,
    cells: BTreeMap<(Slice, NaiveDate, Metric), i128>,
    dossiers: u64,
}

impl Sink {
    async fn add(
        &mut self,
        conn: &mut PgConnection,
        dossier_id: String,
        version: i32,
        events: &[domain::Event],
    ) -> Result<(), RebuildError> {
        let contribution: Option<Contribution> = stats::contribution(events);
        let json = contribution
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| RebuildError::Corrupt(format!("contribution of {dossier_id}: {e}")))?;
        if let Some(c) = contribution {
            for ((day, metric), delta) in c.deltas {
                let v = self
                    .cells
                    .entry((c.slice.clone(), day, metric))
                    .or_insert(0);
                *v += delta;
            }
        }
        self.ids.push(dossier_id);
        self.contributions.push(json);
        self.versions.push(version);
        self.dossiers += 1;
        if self.ids.len() >= CONTRIBUTIONS_PER_INSERT {
            self.flush_contributions(conn).await?;
        }
        if self.cells.len() >= CELLS_IN_MEMORY {
            self.flush_cells(conn).await?;
        }
        Ok(())
    }

    async fn flush_contributions(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO projection_contributions_next (dossier_id, contribution, version) \
             SELECT id, contribution::jsonb, version \
             FROM UNNEST($1::text[], $2::text[], $3::integer[]) AS u (id, contribution, version)",
        )
        .bind(std::mem::take(&mut self.ids))
        .bind(std::mem::take(&mut self.contributions))
        .bind(std::mem::take(&mut self.versions))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn flush_cells(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let cells = std::mem::take(&mut self.cells);
        let rollup = store::rollup_cells(cells.iter().map(|((s, d, m), v)| (s, *d, *m, *v)));
        store::upsert_cells(conn, "stats_rollup_next", &rollup).await
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
        let cells: i64 = sqlx::query_scalar("SELECT count(*) FROM stats_rollup")
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
        for sql in [
            // The order apply takes them in: contributions, then aggregates.
            "LOCK TABLE projection_contributions, stats_rollup IN ACCESS EXCLUSIVE MODE",
            "DROP TABLE projection_contributions, stats_rollup",
            "ALTER TABLE projection_contributions_next RENAME TO projection_contributions",
            "ALTER TABLE projection_contributions RENAME CONSTRAINT \
               projection_contributions_next_pkey TO projection_contributions_pkey",
            "ALTER TABLE stats_rollup_next RENAME TO stats_rollup",
            "ALTER TABLE stats_rollup RENAME CONSTRAINT stats_rollup_next_pkey \
               TO stats_rollup_pkey",
            // Every dossier of the snapshot is now in the figures: a failure recorded for one
            // is over (those with later events are applied again below, and a failure there is
            // recorded again).
            "DELETE FROM projection_failures f USING projection_contributions c \
               WHERE c.dossier_id = f.dossier_id",
        ] {
            sqlx::query(sql).execute(&mut *tx).await?;
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

/// [`prepare`] then [`Shadow::swap`]: what `projection rebuild` runs.
pub async fn rebuild(
    pool: &PgPool,
    progress: impl FnMut(&Progress),
) -> Result<RebuildReport, RebuildError> {
    let shadow = prepare(pool, progress).await?;
    shadow.swap(Duration::from_secs(30)).await
}
