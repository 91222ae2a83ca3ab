//! The projection's storage in PostgreSQL: per-dossier contributions and the pre-aggregated
//! wide rows of `stats_cells` by slice of the dictionary `stats_slice` (day, month and year
//! grain, for a few rollups over the slice dimensions), the
//! apply step that keeps them exact, and the sums queries read.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use eventlog::EventLog;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgTransaction};
use stats::{Contribution, Dimension, GroupKey, Metric, MetricKind, Query, Slice, Totals};

use crate::rollup::{
    ALL_DIMENSIONS, Cell, Grain, METRICS, Span, dimension_bit, metric_index, parse_sum,
    rollup_cells, rollup_for, spans, stock_spans,
};

/// Why applying a dossier failed. Nothing was written (the caller's transaction is to be
/// rolled back); applying again later is safe.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event or contribution does not decode: a bug or a corrupt row.
    #[error("undecodable data: {0}")]
    Corrupt(String),
    /// PostgreSQL did not finish the apply within [`APPLY_TIMEOUT`] (a database gone silent:
    /// a partition or a frozen host, where the connection looks healthy). Retried like any
    /// failed apply; the transaction is dropped, so nothing of it is committed.
    #[error("no answer from PostgreSQL within {0:?}")]
    TimedOut(std::time::Duration),
}

/// The longest one apply (one dossier, or one batch) may take before it counts as failed.
/// A healthy batch of hundreds of dossiers takes milliseconds to a few hundred ms.
pub const APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `apply` bounded by [`APPLY_TIMEOUT`].
async fn bounded<T>(
    apply: impl std::future::Future<Output = Result<T, ApplyError>>,
) -> Result<T, ApplyError> {
    tokio::time::timeout(APPLY_TIMEOUT, apply)
        .await
        .unwrap_or(Err(ApplyError::TimedOut(APPLY_TIMEOUT)))
}

/// What [`apply_dossier`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The aggregates now reflect the dossier up to `version`; `cells` aggregate cells changed.
    Updated { version: i32, cells: usize },
    /// The stored contribution already reflects `version`, the log's latest: nothing to do.
    UpToDate { version: i32 },
}

/// Applies the projection's migrations (versions 30001 and up). Migrations of other crates in
/// the same `_sqlx_migrations` table (the log's 10001…, the watcher's 20001…) are ignored.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Brings the aggregates up to date with the dossier's events in the log, inside `tx`.
///
/// Locks the dossier's contribution row (`SELECT … FOR UPDATE`, inserting it first when
/// missing), so that two instances never interleave on one dossier; then reads every event of
/// the dossier, folds its [`stats::contribution`] again, and adds `new − old`
/// ([`stats::diff`]) to every cell of `stats_cells` it touches ([`rollup_cells`]), storing the
/// new contribution and version, and deleting the dossier's row of `projection_failures` if
/// any ([`record_failure`]). Because it
/// recomputes from the log, applying twice, late or out of order changes nothing once applied:
/// when the stored version is at least the log's, it returns [`Applied::UpToDate`].
///
/// The caller commits; only then is the dossier's message to be acknowledged.
pub async fn apply_dossier(
    tx: &mut PgTransaction<'_>,
    dossier_id: &str,
) -> Result<Applied, ApplyError> {
    sqlx::query(
        "INSERT INTO projection_contributions (dossier_id) VALUES ($1) \
         ON CONFLICT (dossier_id) DO NOTHING",
    )
    .bind(dossier_id)
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(
        "SELECT contribution::text AS contribution, version FROM projection_contributions \
         WHERE dossier_id = $1 FOR UPDATE",
    )
    .bind(dossier_id)
    .fetch_one(&mut **tx)
    .await?;
    // As text, decoded straight into the contribution: a `serde_json::Value` would hold a
    // number beyond 64 bits only approximately.
    let stored_json: Option<String> = row.try_get("contribution")?;
    let stored_version: i32 = row.try_get("version")?;

    // Read after taking the lock: whatever another instance applied is committed by now, and
    // this read sees at least the events it saw. Read in the same transaction (on the same
    // connection), so that an apply never holds a connection while waiting for another: many
    // concurrent applies cannot exhaust the pool.
    let events = load_events(tx, dossier_id).await?;
    let log_version = events.last().map_or(0, |(version, _)| *version);
    // The dossier applies: whatever failure was recorded for it is over, with this commit.
    sqlx::query("DELETE FROM projection_failures WHERE dossier_id = $1")
        .bind(dossier_id)
        .execute(&mut **tx)
        .await?;
    if stored_version >= log_version {
        return Ok(Applied::UpToDate {
            version: stored_version,
        });
    }

    let decoded: Vec<domain::Event> = events.into_iter().map(|(_, e)| e).collect();
    let new = stats::contribution(&decoded);
    let old: Option<Contribution> = stored_json
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| {
            ApplyError::Corrupt(format!("stored contribution of dossier {dossier_id}: {e}"))
        })?;
    let diff = stats::diff(old.as_ref(), new.as_ref());
    add_diff(tx, &diff).await?;

    let new_json = contribution_text(new.as_ref(), dossier_id)?;
    sqlx::query(
        "UPDATE projection_contributions SET contribution = $2::json, version = $3 \
         WHERE dossier_id = $1",
    )
    .bind(dossier_id)
    .bind(new_json)
    .bind(log_version)
    .execute(&mut **tx)
    .await?;
    Ok(Applied::Updated {
        version: log_version,
        cells: diff.len(),
    })
}

/// The dossier's events in version order, decoded; read on the transaction's connection.
async fn load_events(
    tx: &mut PgTransaction<'_>,
    dossier_id: &str,
) -> Result<Vec<(i32, domain::Event)>, ApplyError> {
    let stored = eventlog::load_dossier_on(tx, dossier_id)
        .await
        .map_err(|e| match e {
            eventlog::ReadError::Unavailable(e) => ApplyError::Database(e),
            other => ApplyError::Corrupt(format!("dossier {dossier_id}: {other}")),
        })?;
    decode_events(dossier_id, stored)
}

/// A dossier's stored events decoded into domain events, with their versions.
fn decode_events(
    dossier_id: &str,
    stored: Vec<eventlog::StoredEvent>,
) -> Result<Vec<(i32, domain::Event)>, ApplyError> {
    stored
        .into_iter()
        .map(|e| {
            let event = writepath::decode(&e)
                .map_err(|err| ApplyError::Corrupt(format!("dossier {dossier_id}: {err}")))?;
            Ok((e.version, event))
        })
        .collect()
}

/// Adds a dossier's diff to every rollup and grain of `stats_cells` (see [`rollup_cells`]),
/// inside the caller's transaction. [`apply_dossier`] and [`apply_batch`] (all of a batch's
/// diffs at once) are its callers in the service; it is public so that tests and benchmarks can load aggregates exactly as apply writes them.
pub async fn add_diff(
    tx: &mut PgTransaction<'_>,
    diff: &[(stats::Slice, NaiveDate, Metric, i128)],
) -> Result<(), sqlx::Error> {
    let cells = rollup_cells(diff.iter().map(|(s, d, m, v)| (s, *d, *m, *v)));
    upsert_cells(tx, &cells).await
}

/// Records a failed apply of `dossier_id` in `projection_failures`, in a transaction of its own
/// (the apply's was rolled back), and returns how many applies of it have failed in a row.
/// The row goes when an apply succeeds ([`apply_dossier`] deletes it in its transaction).
pub async fn record_failure(
    pool: &PgPool,
    dossier_id: &str,
    error: &ApplyError,
) -> Result<i64, sqlx::Error> {
    /// The stored error text is cut to this many characters.
    const MAX_ERROR_CHARS: usize = 1000;
    let text: String = error.to_string().chars().take(MAX_ERROR_CHARS).collect();
    sqlx::query_scalar(
        "INSERT INTO projection_failures \
           (dossier_id, attempts, first_failed_at, last_failed_at, last_error) \
         VALUES ($1, 1, clock_timestamp(), clock_timestamp(), $2) \
         ON CONFLICT (dossier_id) DO UPDATE \
           SET attempts = projection_failures.attempts + 1, \
               last_failed_at = EXCLUDED.last_failed_at, \
               last_error = EXCLUDED.last_error \
         RETURNING attempts",
    )
    .bind(dossier_id)
    .bind(text)
    .fetch_one(pool)
    .await
}

/// How many dossiers have a failed apply not yet followed by a successful one.
pub async fn failing_dossiers(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM projection_failures")
        .fetch_one(pool)
        .await
}

/// [`apply_dossier`] in a transaction of its own, committed.
pub async fn apply_and_commit(log: &EventLog, dossier_id: &str) -> Result<Applied, ApplyError> {
    bounded(async {
        let mut tx = log.pool().begin().await?;
        let applied = apply_dossier(&mut tx, dossier_id).await?;
        tx.commit().await?;
        Ok(applied)
    })
    .await
}

/// A contribution as the text the `json` column keeps: `serde_json`'s, bound as text and cast
/// (a `jsonb` parameter would be parsed and printed back in another layout), exactly as the
/// rebuild's `COPY` writes it.
fn contribution_text(
    contribution: Option<&Contribution>,
    dossier_id: &str,
) -> Result<Option<String>, ApplyError> {
    contribution
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| ApplyError::Corrupt(format!("contribution of dossier {dossier_id}: {e}")))
}

/// Brings the aggregates up to date with several dossiers' events in the log, inside `tx`:
/// [`apply_dossier`] for many dossiers at once, with one statement per step instead of several
/// per dossier. Returns what was done for each distinct dossier of `dossier_ids` (a dossier
/// named twice is applied once).
///
/// 1. Creates the missing contribution rows and locks every row (`SELECT … ORDER BY dossier_id
///    FOR UPDATE`), both in byte order of the ids (`COLLATE "C"`): two batches sharing dossiers
///    lock them in the same order, so they wait for each other and never deadlock; against
///    [`apply_dossier`], which locks one row, the order is the same as between two applies
///    (contribution rows first, then cells).
/// 2. Reads every event of those dossiers in one statement ([`eventlog::load_dossiers_on`]),
///    after the locks, in the same transaction: as in [`apply_dossier`], whatever another
///    instance applied is committed by now and this read sees at least the events it saw.
/// 3. Recomputes each dossier's [`stats::contribution`] once, and adds the `new − old` diffs
///    of all the dossiers behind the log together through [`add_diff`] (one sorted set of
///    cells, summed across dossiers: a hot cell is written once per batch).
/// 4. Stores the new contributions and versions in one statement, and deletes the dossiers'
///    rows of `projection_failures`.
///
/// The caller commits; only then are the batch's messages to be acknowledged. On an error
/// nothing of the batch is to be kept (roll back): applying again, as a batch or one dossier at
/// a time, is safe.
pub async fn apply_batch(
    tx: &mut PgTransaction<'_>,
    dossier_ids: &[String],
) -> Result<BTreeMap<String, Applied>, ApplyError> {
    let mut ids: Vec<&str> = dossier_ids.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    sqlx::query(
        "INSERT INTO projection_contributions (dossier_id) \
         SELECT id FROM UNNEST($1::text[]) AS u(id) ORDER BY id COLLATE \"C\" \
         ON CONFLICT (dossier_id) DO NOTHING",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    let rows = sqlx::query(
        "SELECT dossier_id, contribution::text AS contribution, version \
         FROM projection_contributions WHERE dossier_id = ANY($1) \
         ORDER BY dossier_id COLLATE \"C\" FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored: BTreeMap<String, (Option<String>, i32)> = BTreeMap::new();
    for row in rows {
        stored.insert(
            row.try_get("dossier_id")?,
            (row.try_get("contribution")?, row.try_get("version")?),
        );
    }
    let mut events: BTreeMap<String, Vec<eventlog::StoredEvent>> = BTreeMap::new();
    for e in eventlog::load_dossiers_on(tx, &ids)
        .await
        .map_err(|e| match e {
            eventlog::ReadError::Unavailable(e) => ApplyError::Database(e),
            other => ApplyError::Corrupt(format!("the events of a batch of dossiers: {other}")),
        })?
    {
        events.entry(e.dossier_id.clone()).or_default().push(e);
    }
    sqlx::query("DELETE FROM projection_failures WHERE dossier_id = ANY($1)")
        .bind(&ids)
        .execute(&mut **tx)
        .await?;

    let mut applied: BTreeMap<String, Applied> = BTreeMap::new();
    // Every diff of the batch, added to the cells together.
    let mut deltas: Vec<(Slice, NaiveDate, Metric, i128)> = Vec::new();
    let mut updated: Vec<&str> = Vec::new();
    let mut contributions: Vec<Option<String>> = Vec::new();
    let mut versions: Vec<i32> = Vec::new();
    for id in &ids {
        let Some((stored_json, stored_version)) = stored.remove(*id) else {
            // Inserted or present, and locked, above: the database answered something else.
            return Err(ApplyError::Corrupt(format!(
                "the contribution row of dossier {id} is missing under its lock"
            )));
        };
        let decoded = decode_events(id, events.remove(*id).unwrap_or_default())?;
        let log_version = decoded.last().map_or(0, |(version, _)| *version);
        if stored_version >= log_version {
            applied.insert(
                (*id).to_owned(),
                Applied::UpToDate {
                    version: stored_version,
                },
            );
            continue;
        }
        let decoded: Vec<domain::Event> = decoded.into_iter().map(|(_, e)| e).collect();
        let new = stats::contribution(&decoded);
        let old: Option<Contribution> = stored_json
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| {
                ApplyError::Corrupt(format!("stored contribution of dossier {id}: {e}"))
            })?;
        let diff = stats::diff(old.as_ref(), new.as_ref());
        let new_json = contribution_text(new.as_ref(), id)?;
        applied.insert(
            (*id).to_owned(),
            Applied::Updated {
                version: log_version,
                cells: diff.len(),
            },
        );
        deltas.extend(diff);
        updated.push(id);
        contributions.push(new_json);
        versions.push(log_version);
    }
    add_diff(tx, &deltas).await?;
    if !updated.is_empty() {
        sqlx::query(
            "UPDATE projection_contributions AS c \
             SET contribution = u.contribution::json, version = u.version \
             FROM UNNEST($1::text[], $2::text[], $3::integer[]) \
               AS u(dossier_id, contribution, version) \
             WHERE c.dossier_id = u.dossier_id",
        )
        .bind(&updated)
        .bind(&contributions)
        .bind(&versions)
        .execute(&mut **tx)
        .await?;
    }
    Ok(applied)
}

/// [`apply_batch`] in a transaction of its own, committed.
pub async fn apply_batch_and_commit(
    log: &EventLog,
    dossier_ids: &[String],
) -> Result<BTreeMap<String, Applied>, ApplyError> {
    bounded(async {
        let mut tx = log.pool().begin().await?;
        let applied = apply_batch(&mut tx, dossier_ids).await?;
        tx.commit().await?;
        Ok(applied)
    })
    .await
}

/// The version of the dossier the aggregates reflect (0 when none was applied).
pub async fn applied_version(pool: &PgPool, dossier_id: &str) -> Result<i32, sqlx::Error> {
    let version: Option<i32> =
        sqlx::query_scalar("SELECT version FROM projection_contributions WHERE dossier_id = $1")
            .bind(dossier_id)
            .fetch_optional(pool)
            .await?;
    Ok(version.unwrap_or(0))
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The aggregates hold something this version does not know: a bug or a corrupt row.
    #[error("undecodable aggregates: {0}")]
    Corrupt(String),
}

/// The answer to `query` from the aggregates: one [`Totals`] per group with at least one
/// non-zero figure (without grouping, the one group `[]` is always present). Flows are summed
/// over `from <= day < to`, stocks over `day <= from` (at the start) and `day <= to` (at the end).
///
/// Reads the coarsest rollup holding every dimension the query filters or groups by
/// ([`rollup_for`]) and only the periods [`spans`] decomposes the sums into: whole years,
/// whole months and edge days; the two stock sums share their history years
/// ([`stock_spans`]). Two `SELECT`s, the flow metrics over the flow spans and the stock
/// metrics over the stock spans, each in one of two forms:
///
/// - with a filter: the rollup's slices that pass it (from the dictionary `stats_slice`, by its
///   key) × the spans, each pair one index range scan of `stats_cells` on its primary key
///   `(slice, grain, period)`;
/// - without one (province-wide, or grouped over the whole rollup): every slice of the rollup
///   is wanted, so each span is one index range scan of `stats_cells_by_rollup` on `(rollup,
///   grain, period)`, joined to the dictionary's rows of the rollup only to name the groups
///   (a year by agency: 5 range scans, whatever the number of agencies).
///
/// Either way a lateral subquery: the plan cannot become a scan of the table. The rows read
/// are therefore at most (slices) × (about 2 × 30 days + 2 × 11 months + the years of
/// history), whatever the number of dossiers. When a group is one slice of the rollup (at
/// most one per level: [`groups_are_slices`]), PostgreSQL returns the cells as they are and this
/// function sums them (`i128`, exact); otherwise each `SELECT` sums per group (`numeric`)
/// first. Same answer as [`query_reference`] (tested).
///
/// One round trip: the whole text goes in PostgreSQL's simple protocol, its values written as
/// literals ([`literal`]; every dimension value is a validated code), so every execution is
/// planned with its own values (a generic plan cannot know how few slices `rollup = 3` keeps
/// and scans the whole dictionary: BENCHMARKS.md, "Q after issue 10"). The `SELECT`s run in
/// the message's one implicit transaction, read-only, with `jit = off` (compiling costs more
/// than such a query) and `max_parallel_workers_per_gather = 0` (starting workers costs more
/// than reading a thousand rows), all three `SET LOCAL`: the pool's connections are left as
/// they were.
pub async fn query(pool: &PgPool, query: &Query) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    let sql = query_text(query);
    let rows = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?;
    collect_sums(query, rows)
}

/// Which sums a row of [`query`] feeds: its first column.
const FLOWS: i32 = 0;
const AT_START: i32 = 1;
const AT_END: i32 = 2;
/// Both stocks: the history years the two share ([`StockSpans::shared`]).
const AT_BOTH: i32 = 3;

/// Whether every group of `query` is one slice of the rollup it reads, or one per level: the
/// rollup's dimensions other than the level are all grouped by or filtered on (the level has
/// three values, and an agency has one). Then a group has at most three rows per span and the
/// cells are returned unsummed; otherwise (e.g. grouped by channel, which only the
/// all-dimension rollup holds) PostgreSQL sums them per group.
fn groups_are_slices(query: &Query, rollup: u8) -> bool {
    let kept = query
        .filter
        .dimensions()
        .chain(query.group_by.iter().copied())
        .fold(dimension_bit(Dimension::Level), |mask, d| {
            mask | dimension_bit(d)
        });
    rollup & !kept == 0
}

/// The text [`query`] sends (public for `EXPLAIN` and the benchmark, which times the database's
/// part apart): the `SET LOCAL`s, then one `SELECT` per kind of metric with spans (flows first;
/// a period `from >= to` has no flow span). Each row: which sums it feeds (0 flows, 1 the stock
/// at the start, 2 at the end, 3 both), the group columns in `group_by` order, then one column
/// per metric of the kind in [`Metric::ALL`] order (`numeric`, NULL for 0).
pub fn query_text(query: &Query) -> String {
    use std::fmt::Write as _;

    let rollup = rollup_for(query);
    let mut filters = String::new();
    for d in Dimension::ALL {
        if let Some(v) = query.filter.value(d) {
            let _ = write!(filters, " AND s.{} = {}", d.as_str(), literal::text(v));
        }
    }
    // Only fixed column names and literals enter the text.
    let groups: String = query
        .group_by
        .iter()
        .map(|d| format!(", s.{}", d.as_str()))
        .collect();
    let raw = groups_are_slices(query, rollup);
    let stocks = stock_spans(query.from, query.to);
    let flow_spans: Vec<(i32, Span)> = spans(Some(query.from), query.to)
        .into_iter()
        .map(|s| (FLOWS, s))
        .collect();
    let stock_spans: Vec<(i32, Span)> = [
        (AT_BOTH, stocks.shared),
        (AT_START, stocks.start),
        (AT_END, stocks.end),
    ]
    .into_iter()
    .flat_map(|(sums, spans)| spans.into_iter().map(move |s| (sums, s)))
    .collect();

    let mut sql = String::from(
        "SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0; \
         SET LOCAL transaction_read_only = on",
    );
    for (kind, spans) in [
        (MetricKind::Flow, flow_spans),
        (MetricKind::Stock, stock_spans),
    ] {
        if spans.is_empty() {
            continue;
        }
        let columns: Vec<&str> = Metric::ALL
            .iter()
            .filter(|m| m.kind() == kind)
            .map(|m| m.as_str())
            .collect();
        let outputs: String = columns
            .iter()
            .map(|m| {
                if raw {
                    format!(", c.{m}")
                } else {
                    format!(", sum(c.{m})")
                }
            })
            .collect();
        let values: Vec<String> = spans
            .iter()
            .map(|(sums, span)| {
                format!(
                    "({sums}, '{}'::\"char\", {}, {})",
                    span.grain.code(),
                    span.from
                        .map_or_else(|| "'-infinity'::date".to_owned(), literal::date),
                    span.to
                        .map_or_else(|| "'infinity'::date".to_owned(), literal::date),
                )
            })
            .collect();
        let values = values.join(", ");
        let columns = columns.join(", ");
        let group_by = if raw {
            String::new()
        } else {
            format!(" GROUP BY sp.sums{groups}")
        };
        // `OFFSET 0` keeps the lateral subquery from being pulled up into a join the planner
        // may turn into a scan of all of `stats_cells`: it stays one index range scan per
        // slice and span, or per span when every slice of the rollup is read.
        if filters.is_empty() {
            // Every slice of the rollup: per span, one range of `stats_cells_by_rollup` (the
            // rollup's rows of the span are adjacent), the dictionary joined only to name the
            // groups (its rows of the rollup, hashed once).
            let join = if groups.is_empty() {
                String::new()
            } else {
                format!(" JOIN stats_slice s ON s.id = c.slice AND s.rollup = {rollup}")
            };
            let _ = write!(
                sql,
                "; SELECT sp.sums{groups}{outputs} \
                 FROM (VALUES {values}) AS sp (sums, grain, lo, hi) \
                 CROSS JOIN LATERAL (SELECT slice, {columns} FROM stats_cells \
                   WHERE rollup = {rollup} AND grain = sp.grain \
                     AND period >= sp.lo AND period < sp.hi OFFSET 0) AS c{join}{group_by}"
            );
        } else {
            let _ = write!(
                sql,
                "; SELECT sp.sums{groups}{outputs} \
                 FROM stats_slice s \
                 CROSS JOIN (VALUES {values}) AS sp (sums, grain, lo, hi) \
                 CROSS JOIN LATERAL (SELECT {columns} FROM stats_cells \
                   WHERE slice = s.id AND grain = sp.grain \
                     AND period >= sp.lo AND period < sp.hi OFFSET 0) AS c \
                 WHERE s.rollup = {rollup}{filters}{group_by}"
            );
        }
    }
    sql
}

/// SQL literals for [`query`]'s text, which has no parameters.
mod literal {
    use chrono::NaiveDate;

    /// A string constant, exact whatever `standard_conforming_strings` says: an escape string
    /// with its backslashes and quotes doubled.
    pub(super) fn text(value: &str) -> String {
        let mut out = String::with_capacity(value.len() + 3);
        out.push_str("E'");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("''"),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    /// A date constant as days from 2000-01-01, which PostgreSQL folds when planning: exact for
    /// every date `chrono` holds (an ISO text would need a sign and more than four digits
    /// beyond year 9999); one outside PostgreSQL's range fails the statement, as a bound
    /// parameter would.
    pub(super) fn date(day: NaiveDate) -> String {
        let epoch = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or(NaiveDate::MIN);
        format!("(DATE '2000-01-01' + {})", (day - epoch).num_days())
    }
}

/// An integer `numeric` (a sum of `stats_cells`) decoded exactly, from either format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NumericInt(pub(crate) i128);

impl sqlx::Type<sqlx::Postgres> for NumericInt {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        // `numeric`'s OID, fixed in PostgreSQL's catalog.
        sqlx::postgres::PgTypeInfo::with_oid(sqlx::postgres::types::Oid(1700))
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for NumericInt {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let parsed = match value.format() {
            sqlx::postgres::PgValueFormat::Text => {
                let text = value.as_str()?;
                parse_sum(text).ok_or_else(|| format!("numeric {text} is no i128 integer"))?
            }
            sqlx::postgres::PgValueFormat::Binary => numeric_binary(value.as_bytes()?)?,
        };
        Ok(NumericInt(parsed))
    }
}

/// PostgreSQL's binary `numeric`: digit count, weight (of the first digit, in powers of
/// 10 000), sign, display scale, then the base-10 000 digits; an integer within `i128` only.
fn numeric_binary(bytes: &[u8]) -> Result<i128, String> {
    let word = |i: usize| -> Result<u16, String> {
        bytes
            .get(2 * i..2 * i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("numeric of {} bytes is cut short", bytes.len()))
    };
    let digits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let negative = match word(2)? {
        0x0000 => false,
        0x4000 => true,
        other => return Err(format!("numeric with sign word {other:#06x} is no integer")),
    };
    let mut value: i128 = 0;
    for i in 0..digits {
        let digit = word(4 + i)?;
        if digit >= 10_000 {
            return Err(format!("numeric digit {digit} is out of range"));
        }
        // The digit's power of 10 000; a non-zero one below 0 is a fraction.
        let power = weight - i as i32;
        if power < 0 {
            if digit != 0 {
                return Err("numeric with a fraction is no integer".to_owned());
            }
            continue;
        }
        value = value
            .checked_mul(10_000)
            .and_then(|v| v.checked_add(i128::from(digit)))
            .ok_or("numeric beyond i128")?;
    }
    // Digits after the last stored one are zeros, up to the units.
    let stored_last = weight - digits as i32 + 1;
    for _ in 0..stored_last.max(0) {
        value = value.checked_mul(10_000).ok_or("numeric beyond i128")?;
    }
    Ok(if negative { -value } else { value })
}

/// The sums of one group: per metric (index in [`Metric::ALL`]) the flows, the stock at the
/// start and the stock at the end.
type GroupSums = [[i128; METRICS]; 3];

/// Turns the rows of [`query_text`] into the answer: every row's cells added to its group's sums
/// (flows; the stock at the start, at the end, or both), then per group the non-zero figures,
/// in the normal form of [`stats::tidy`].
fn collect_sums(
    query: &Query,
    rows: Vec<sqlx::postgres::PgRow>,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    let flows: Vec<usize> = metrics_of(MetricKind::Flow);
    let stocks: Vec<usize> = metrics_of(MetricKind::Stock);
    let width = query.group_by.len();
    let mut sums: HashMap<GroupKey, GroupSums> = HashMap::new();
    for row in rows {
        let which: i32 = row.try_get(0)?;
        let key = (1..=width)
            .map(|i| row.try_get::<String, _>(i))
            .collect::<Result<GroupKey, _>>()?;
        let (metrics, targets): (&[usize], &[usize]) = match which {
            FLOWS => (&flows, &[0]),
            AT_START => (&stocks, &[1]),
            AT_END => (&stocks, &[2]),
            AT_BOTH => (&stocks, &[1, 2]),
            other => {
                return Err(QueryError::Corrupt(format!(
                    "a row of unknown sums {other}"
                )));
            }
        };
        let group = sums.entry(key).or_insert([[0; METRICS]; 3]);
        for (column, metric) in metrics.iter().enumerate() {
            let Some(NumericInt(value)) =
                row.try_get::<Option<NumericInt>, _>(1 + width + column)?
            else {
                continue;
            };
            for target in targets {
                let sum = &mut group[*target][*metric];
                *sum = sum.checked_add(value).ok_or_else(|| {
                    QueryError::Corrupt(format!(
                        "{} sums beyond i128",
                        Metric::ALL[*metric].as_str()
                    ))
                })?;
            }
        }
    }
    let mut groups: BTreeMap<GroupKey, Totals> = BTreeMap::new();
    for (key, group) in sums {
        let mut totals = Totals::empty(query.from, query.to);
        for (sums, figures) in
            group
                .iter()
                .zip([&mut totals.flows, &mut totals.at_start, &mut totals.at_end])
        {
            for (metric, value) in Metric::ALL.iter().zip(sums) {
                if *value != 0 {
                    figures.insert(*metric, *value);
                }
            }
        }
        groups.insert(key, totals);
    }
    Ok(stats::tidy(query, groups))
}

/// The indexes in [`Metric::ALL`] of the metrics of `kind`, in order.
fn metrics_of(kind: MetricKind) -> Vec<usize> {
    Metric::ALL
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind() == kind)
        .map(|(i, _)| i)
        .collect()
}

/// The reference answer to `query`: the plain sums over the day grain of every dimension
/// (what the projection answered before the rollups). Its cost grows with the history before
/// `to`; tests and benchmarks compare [`query`] with it.
pub async fn query_reference(
    pool: &PgPool,
    query: &Query,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    let group_cols: Vec<&str> = query.group_by.iter().map(|d| d.as_str()).collect();
    let mut select = String::from("SELECT metric");
    for c in &group_cols {
        select.push_str(", ");
        select.push_str(c);
    }
    let mut sql = format!(
        "{select}, \
           COALESCE(SUM(value) FILTER (WHERE period >= $1 AND period < $2), 0)::text AS flow, \
           COALESCE(SUM(value) FILTER (WHERE period <= $1), 0)::text AS at_start, \
           COALESCE(SUM(value), 0)::text AS at_end \
         FROM stats_rollup WHERE rollup = {ALL_DIMENSIONS} AND grain = 'd' AND period <= $2"
    );
    let mut binds: Vec<&str> = Vec::new();
    for d in Dimension::ALL {
        if let Some(v) = query.filter.value(d) {
            binds.push(v);
            sql.push_str(&format!(" AND {} = ${}", d.as_str(), binds.len() + 2));
        }
    }
    sql.push_str(" GROUP BY metric");
    for c in &group_cols {
        sql.push_str(", ");
        sql.push_str(c);
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(query.from)
        .bind(query.to);
    for v in binds {
        q = q.bind(v);
    }
    let rows = q.fetch_all(pool).await?;
    collect_groups(query, &group_cols, rows)
}

/// Turns rows `(metric, group columns…, flow, at_start, at_end)` into the answer: per group,
/// the flow sums of flow metrics and the start and end values of stock metrics, zeros left out.
fn collect_groups(
    query: &Query,
    group_cols: &[&str],
    rows: Vec<sqlx::postgres::PgRow>,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    let mut groups: BTreeMap<GroupKey, Totals> = BTreeMap::new();
    if query.group_by.is_empty() {
        groups.insert(Vec::new(), Totals::empty(query.from, query.to));
    }
    for row in rows {
        let name: String = row.try_get("metric")?;
        let metric = Metric::parse(&name)
            .ok_or_else(|| QueryError::Corrupt(format!("unknown metric {name}")))?;
        let key = group_cols
            .iter()
            .map(|c| row.try_get::<String, _>(*c))
            .collect::<Result<GroupKey, _>>()?;
        let flow = sum(&row, "flow")?;
        let start = sum(&row, "at_start")?;
        let end = sum(&row, "at_end")?;
        let (flow, start, end) = match metric.kind() {
            MetricKind::Flow => (flow, 0, 0),
            MetricKind::Stock => (0, start, end),
        };
        if flow == 0 && start == 0 && end == 0 {
            continue;
        }
        let totals = groups
            .entry(key)
            .or_insert_with(|| Totals::empty(query.from, query.to));
        if flow != 0 {
            totals.flows.insert(metric, flow);
        }
        if start != 0 {
            totals.at_start.insert(metric, start);
        }
        if end != 0 {
            totals.at_end.insert(metric, end);
        }
    }
    Ok(groups)
}

/// A sum of `stats_rollup.value` (`numeric`, read as its text: an integer of any size) as
/// `i128`, wide enough for any sum the log can produce (see the `stats` crate docs).
pub(crate) fn sum(row: &sqlx::postgres::PgRow, column: &str) -> Result<i128, QueryError> {
    let text: String = row.try_get(column)?;
    parse_sum(&text).ok_or_else(|| QueryError::Corrupt(format!("{column} = {text} is no integer")))
}

/// The id of every slice `(rollup, dims)` of `cells` in `stats_slice`, adding the missing ones
/// (in byte order of the tuples, so that two transactions adding the same new slices wait for
/// each other in one order and never deadlock; an existing slice is only read, not locked).
/// A slice added here is visible to others once the caller commits; one that another
/// transaction is adding makes this one wait for its commit (or rollback), so the id read is
/// always a committed (or own) one.
pub(crate) async fn slice_ids(
    conn: &mut sqlx::PgConnection,
    slices: &BTreeSet<(u8, [&str; 6])>,
) -> Result<HashMap<(u8, [String; 6]), i32>, sqlx::Error> {
    let mut ids: HashMap<(u8, [String; 6]), i32> = HashMap::with_capacity(slices.len());
    if slices.is_empty() {
        return Ok(ids);
    }
    read_slice_ids(conn, slices.iter(), &mut ids).await?;
    let missing: Vec<&(u8, [&str; 6])> = slices
        .iter()
        .filter(|(r, d)| !ids.contains_key(&(*r, d.map(str::to_owned))))
        .collect();
    if missing.is_empty() {
        return Ok(ids);
    }
    bind_slices(
        sqlx::query(
            "INSERT INTO stats_slice \
           (rollup, level, agency, sector, procedure, channel, applicant_type) \
         SELECT * FROM UNNEST($1::smallint[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[]) \
           AS u (rollup, level, agency, sector, procedure, channel, applicant_type) \
         ORDER BY rollup, level COLLATE \"C\", agency COLLATE \"C\", sector COLLATE \"C\", \
           procedure COLLATE \"C\", channel COLLATE \"C\", applicant_type COLLATE \"C\" \
         ON CONFLICT (rollup, level, agency, sector, procedure, channel, applicant_type) \
         DO NOTHING",
        ),
        missing.iter().copied(),
    )
    .execute(&mut *conn)
    .await?;
    read_slice_ids(conn, missing.into_iter(), &mut ids).await?;
    if ids.len() < slices.len() {
        // Inserted or present above: the database answered something else.
        return Err(sqlx::Error::Protocol(format!(
            "{} of {} slices have no id in stats_slice after their insert",
            slices.len() - ids.len(),
            slices.len()
        )));
    }
    Ok(ids)
}

/// Binds the columns of `slices` as arrays, as `$1` … `$7` of `query`: rollups, then the six
/// dimensions.
fn bind_slices<'q, 'a, 'b: 'a + 'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    slices: impl Iterator<Item = &'a (u8, [&'b str; 6])>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut rollups = Vec::new();
    let mut dims: [Vec<&str>; 6] = std::array::from_fn(|_| Vec::new());
    for (rollup, values) in slices {
        rollups.push(i16::from(*rollup));
        for (i, v) in values.iter().enumerate() {
            dims[i].push(*v);
        }
    }
    let mut query = query.bind(rollups);
    for column in dims {
        query = query.bind(column);
    }
    query
}

/// Reads the ids of those of `slices` that `stats_slice` holds into `ids`.
async fn read_slice_ids<'a, 'b: 'a>(
    conn: &mut sqlx::PgConnection,
    slices: impl Iterator<Item = &'a (u8, [&'b str; 6])>,
    ids: &mut HashMap<(u8, [String; 6]), i32>,
) -> Result<(), sqlx::Error> {
    let rows = bind_slices(
        sqlx::query(
            "SELECT s.id, s.rollup, s.level, s.agency, s.sector, s.procedure, s.channel, \
           s.applicant_type \
         FROM UNNEST($1::smallint[], $2::text[], $3::text[], $4::text[], $5::text[], \
                     $6::text[], $7::text[]) \
           AS u (rollup, level, agency, sector, procedure, channel, applicant_type) \
         JOIN stats_slice s USING (rollup, level, agency, sector, procedure, channel, \
           applicant_type)",
        ),
        slices,
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let rollup: i16 = row.try_get("rollup")?;
        let mut dims: [String; 6] = Default::default();
        for (i, d) in Dimension::ALL.into_iter().enumerate() {
            dims[i] = row.try_get(d.as_str())?;
        }
        ids.insert((rollup as u8, dims), row.try_get("id")?);
    }
    Ok(())
}

/// Adds `cells` to `stats_cells`: the slices' ids from the dictionary ([`slice_ids`]), then one
/// wide row per slice, grain and period, upserted in key order `(slice, grain, period)` (every
/// transaction locks the rows it adds to in that order), one statement per 5 000 rows. A sum
/// back at zero is stored as NULL (0); a row whose metrics are all NULL stays.
pub(crate) async fn upsert_cells(
    conn: &mut sqlx::PgConnection,
    cells: &BTreeMap<Cell<'_>, i128>,
) -> Result<(), sqlx::Error> {
    const CHUNK: usize = 5_000;
    if cells.is_empty() {
        return Ok(());
    }
    let slices: BTreeSet<(u8, [&str; 6])> = cells.keys().map(|c| (c.rollup, c.dims)).collect();
    let ids = slice_ids(conn, &slices).await?;
    // Keyed `(slice, grain, period)`; the rollup rides along (one per slice).
    let mut rows: BTreeMap<(i32, Grain, NaiveDate), (u8, [i128; METRICS])> = BTreeMap::new();
    for (cell, value) in cells {
        let id = ids
            .get(&(cell.rollup, cell.dims.map(str::to_owned)))
            .copied()
            .ok_or_else(|| sqlx::Error::Protocol("a slice without an id".into()))?;
        rows.entry((id, cell.grain, cell.period))
            .or_insert((cell.rollup, [0; METRICS]))
            .1[metric_index(cell.metric)] += *value;
    }
    let rows: Vec<_> = rows.into_iter().collect();
    let sql = upsert_sql();
    for chunk in rows.chunks(CHUNK) {
        let n = chunk.len();
        let mut slice = Vec::with_capacity(n);
        let mut rollups = Vec::with_capacity(n);
        let mut grains = Vec::with_capacity(n);
        let mut periods = Vec::with_capacity(n);
        let mut values: Vec<Vec<Option<String>>> =
            (0..METRICS).map(|_| Vec::with_capacity(n)).collect();
        for ((id, grain, period), (rollup, sums)) in chunk {
            slice.push(*id);
            rollups.push(i16::from(*rollup));
            grains.push(grain.code());
            periods.push(*period);
            for (column, v) in values.iter_mut().zip(sums) {
                // `numeric` has no binary form sqlx encodes from `i128`: bound as text, exact.
                column.push((*v != 0).then(|| v.to_string()));
            }
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(slice)
            .bind(rollups)
            .bind(grains)
            .bind(periods);
        for column in values {
            q = q.bind(column);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The upsert of [`upsert_cells`]: `$1` slices, `$2` their rollups, `$3` grains, `$4` periods,
/// then one `numeric` array per metric in [`Metric::ALL`] order.
fn upsert_sql() -> String {
    let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
    let arrays: String = (0..names.len())
        .map(|i| format!(", ${}::numeric[]", i + 5))
        .collect();
    let sets: Vec<String> = names
        .iter()
        .map(|m| {
            format!("{m} = NULLIF(COALESCE(stats_cells.{m}, 0) + COALESCE(EXCLUDED.{m}, 0), 0)")
        })
        .collect();
    format!(
        "INSERT INTO stats_cells (slice, rollup, grain, period, {cols}) \
         SELECT u.slice, u.rollup, u.grain::\"char\", u.period, {ucols} \
         FROM UNNEST($1::integer[], $2::smallint[], $3::text[], $4::date[]{arrays}) \
           AS u (slice, rollup, grain, period, {cols}) \
         ORDER BY u.slice, u.grain::\"char\", u.period \
         ON CONFLICT (slice, grain, period) DO UPDATE SET {sets}",
        cols = names.join(", "),
        ucols = names
            .iter()
            .map(|m| format!("u.{m}"))
            .collect::<Vec<_>>()
            .join(", "),
        sets = sets.join(", "),
    )
}

/// The read-only long-form view `stats_rollup` over `stats_cells` and `stats_slice` (one row per
/// non-NULL metric of a cell; a row whose `rollup` is not its slice's is left out, so that
/// `verify` reports it), as migration 30010 creates it; made again when a rebuild swaps
/// `stats_cells` (a view names the table it was made on).
pub(crate) fn rollup_view_sql() -> String {
    let values: Vec<String> = Metric::ALL
        .iter()
        .map(|m| format!("('{0}', c.{0})", m.as_str()))
        .collect();
    format!(
        "CREATE VIEW stats_rollup AS \
         SELECT s.rollup, c.grain::text AS grain, c.period, s.level, s.agency, s.sector, \
                s.procedure, s.channel, s.applicant_type, m.metric, m.value \
         FROM stats_cells c \
         JOIN stats_slice s ON s.id = c.slice AND s.rollup = c.rollup \
         CROSS JOIN LATERAL (VALUES {}) AS m (metric, value) \
         WHERE m.value IS NOT NULL",
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PostgreSQL's binary `numeric` of `value` with `dscale` and `fraction` base-10 000 digits
    /// after the point (written here independently of the decoder: divide by 10 000).
    fn encode(value: i128, fraction: &[u16], dscale: u16) -> Vec<u8> {
        let mut digits: Vec<u16> = Vec::new();
        let mut rest = value.unsigned_abs();
        while rest > 0 {
            digits.push((rest % 10_000) as u16);
            rest /= 10_000;
        }
        digits.reverse();
        let weight = digits.len() as i16 - 1;
        // PostgreSQL strips trailing zero digits; the weight keeps the magnitude.
        digits.extend_from_slice(fraction);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        let weight = if digits.is_empty() { 0 } else { weight };
        let sign: u16 = if value < 0 { 0x4000 } else { 0 };
        let mut out = Vec::new();
        for word in [digits.len() as u16, weight as u16, sign, dscale] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out
    }

    #[test]
    fn binary_numeric_integers_decode_exactly() {
        let mut values = vec![
            0,
            1,
            -5,
            9_999,
            10_000,
            12_345_678,
            100_000_000,
            -100_000_000_000_000_000,
            i128::from(i64::MAX) + 1,
            i128::MAX,
            i128::MIN + 1,
        ];
        let mut x: i128 = 7;
        for _ in 0..120 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            values.push(x >> (x as u32 % 100));
        }
        for v in values {
            assert_eq!(numeric_binary(&encode(v, &[], 0)), Ok(v), "{v}");
            // A display scale with zero fraction digits is still the integer.
            assert_eq!(numeric_binary(&encode(v, &[0], 2)), Ok(v), "{v}.00");
        }
        // 10 000 is one digit of weight 1: the units are implied zeros.
        assert_eq!(numeric_binary(&[0, 1, 0, 1, 0, 0, 0, 0, 0, 1]), Ok(10_000));
    }

    #[test]
    fn binary_numeric_fractions_specials_and_overflow_are_refused() {
        assert!(numeric_binary(&encode(1, &[5_000], 1)).is_err(), "1.5");
        assert!(numeric_binary(&encode(0, &[1], 4)).is_err(), "0.0001");
        // NaN, +infinity, -infinity.
        for sign in [0xC000u16, 0xD000, 0xF000] {
            let mut bytes = vec![0, 0, 0, 0];
            bytes.extend_from_slice(&sign.to_be_bytes());
            bytes.extend_from_slice(&[0, 0]);
            assert!(numeric_binary(&bytes).is_err(), "{sign:#x}");
        }
        // 10^40, beyond i128.
        let mut big = vec![0, 1, 0, 10, 0, 0, 0, 0];
        big.extend_from_slice(&1u16.to_be_bytes());
        assert!(numeric_binary(&big).is_err());
        // Cut short: two digits announced, one sent.
        assert!(numeric_binary(&[0, 2, 0, 1, 0, 0, 0, 0, 0, 1]).is_err());
        // A digit out of base.
        assert!(numeric_binary(&[0, 1, 0, 0, 0, 0, 0, 0, 0x27, 0x10]).is_err());
    }

    #[test]
    fn cells_come_back_unsummed_only_when_a_group_is_a_slice_or_one_per_level() {
        let year = |filter: stats::SliceFilter, group_by: Vec<Dimension>| Query {
            from: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            to: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
            filter,
            group_by,
        };
        let none = stats::SliceFilter::default;
        let sector = || stats::SliceFilter {
            sector: Some(domain::SectorCode::parse("land").unwrap()),
            ..Default::default()
        };
        let online = || stats::SliceFilter {
            channel: Some(domain::Channel::Online),
            ..Default::default()
        };
        let unsummed = |q: &Query| groups_are_slices(q, rollup_for(q));
        assert!(unsummed(&year(none(), vec![])));
        assert!(unsummed(&year(none(), vec![Dimension::Agency])));
        assert!(unsummed(&year(none(), vec![Dimension::Level])));
        assert!(unsummed(&year(sector(), vec![])));
        assert!(unsummed(&year(sector(), vec![Dimension::Agency])));
        // Only the all-dimension rollup holds the channel: many slices per group.
        assert!(!unsummed(&year(none(), vec![Dimension::Channel])));
        assert!(!unsummed(&year(online(), vec![])));
        assert!(!unsummed(&year(online(), vec![Dimension::Agency])));
        let text = query_text(&year(none(), vec![Dimension::Agency]));
        assert!(
            !text.contains("GROUP BY") && !text.contains("sum("),
            "{text}"
        );
        let text = query_text(&year(online(), vec![]));
        assert!(text.contains("GROUP BY sp.sums") && text.contains("s.channel = E'online'"));
    }

    #[test]
    fn text_literals_double_quotes_and_backslashes() {
        assert_eq!(literal::text("sector-03"), "E'sector-03'");
        assert_eq!(literal::text(r"a'b\c"), r"E'a''b\\c'");
        assert_eq!(
            literal::date(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()),
            "(DATE '2000-01-01' + 8766)"
        );
        assert_eq!(
            literal::date(NaiveDate::from_ymd_opt(1999, 12, 31).unwrap()),
            "(DATE '2000-01-01' + -1)"
        );
    }
}
