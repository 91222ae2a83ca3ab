//! The projection's storage in PostgreSQL: per-dossier contributions and the pre-aggregated
//! `stats_rollup` (day, month and year grain, for a few rollups over the slice dimensions), the
//! apply step that keeps them exact, and the sums queries read.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use eventlog::EventLog;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgTransaction};
use stats::{Contribution, Dimension, GroupKey, Metric, MetricKind, Query, Slice, Totals};

use crate::rollup::{
    ALL_DIMENSIONS, Cell, Span, parse_sum, prefix_spans, rollup_cells, rollup_for, spans,
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
/// ([`stats::diff`]) to every cell of `stats_rollup` it touches ([`rollup_cells`]), storing the
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

    let new_json = new.as_ref().map(sqlx::types::Json);
    sqlx::query(
        "UPDATE projection_contributions SET contribution = $2, version = $3 \
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
            let body =
                domain::DossierEvent::from_parts(&e.event_type, &e.payload).map_err(|err| {
                    ApplyError::Corrupt(format!(
                        "event {} of dossier {dossier_id}: {err}",
                        e.version
                    ))
                })?;
            Ok((
                e.version,
                domain::Event {
                    occurred_at: e.occurred_at,
                    body,
                },
            ))
        })
        .collect()
}

/// Adds a dossier's diff to every rollup and grain of `stats_rollup` (see [`rollup_cells`]),
/// inside the caller's transaction. [`apply_dossier`] and [`apply_batch`] (all of a batch's
/// diffs at once) are its callers in the service; it is public so that tests and benchmarks can load aggregates exactly as apply writes them.
pub async fn add_diff(
    tx: &mut PgTransaction<'_>,
    diff: &[(stats::Slice, NaiveDate, Metric, i128)],
) -> Result<(), sqlx::Error> {
    let cells = rollup_cells(diff.iter().map(|(s, d, m, v)| (s, *d, *m, *v)));
    upsert_cells(tx, "stats_rollup", &cells).await
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
        let new_json = new
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| ApplyError::Corrupt(format!("contribution of dossier {id}: {e}")))?;
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
             SET contribution = u.contribution::jsonb, version = u.version \
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
/// ([`rollup_for`]) and only the periods [`spans`] decomposes the three sums into: whole years,
/// whole months and edge days. The number of rows read per cell is therefore at most about
/// 2 × 30 days + 2 × 11 months + the years of history, whatever the number of dossiers or days
/// behind it. Same answer as [`query_reference`] (tested).
pub async fn query(pool: &PgPool, query: &Query) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    let rollup = rollup_for(query);
    let flow_spans = spans(Some(query.from), query.to);
    let start_spans = prefix_spans(query.from);
    let end_spans = prefix_spans(query.to);

    // One index range scan on (rollup, grain, period) per span, summed: an OR of the spans in
    // one WHERE lets the planner read the whole rollup instead (measured: 0.6 s for a year by
    // agency at 1M dossiers). Only fixed column names and grain codes enter the SQL text; every
    // value is bound.
    let mut dates: Vec<NaiveDate> = Vec::new();
    let group_cols: Vec<&str> = query.group_by.iter().map(|d| d.as_str()).collect();
    let groups: String = group_cols.iter().map(|c| format!(", {c}")).collect();
    let mut legs: Vec<String> = Vec::new();
    for (spans, column, stocks_only) in [
        (&flow_spans, 0, false),
        (&start_spans, 1, true),
        (&end_spans, 2, true),
    ] {
        for condition in span_conditions(spans, &mut dates) {
            let values = ["0::numeric", "0::numeric", "0::numeric"]
                .iter()
                .enumerate()
                .map(|(k, zero)| if k == column { "value" } else { zero })
                .collect::<Vec<_>>()
                .join(", ");
            let stocks = if stocks_only {
                " AND metric = ANY($2)"
            } else {
                ""
            };
            legs.push(format!(
                "SELECT metric{groups}, {values} FROM stats_rollup \
                 WHERE rollup = $1 AND {condition}{stocks} FILTERS"
            ));
        }
    }
    let first_filter = dates.len() + 3;
    let mut binds: Vec<&str> = Vec::new();
    let mut filters = String::new();
    for d in Dimension::ALL {
        if let Some(v) = query.filter.value(d) {
            filters.push_str(&format!(
                " AND {} = ${}",
                d.as_str(),
                first_filter + binds.len()
            ));
            binds.push(v);
        }
    }
    let sql = if legs.is_empty() {
        // An empty period cannot reach here (`to > from`), but keep the statement valid.
        format!(
            "SELECT metric{groups}, 0::numeric, 0::numeric, 0::numeric FROM stats_rollup WHERE FALSE"
        )
    } else {
        format!(
            "SELECT metric{groups}, \
               COALESCE(SUM(f), 0)::text AS flow, \
               COALESCE(SUM(s), 0)::text AS at_start, \
               COALESCE(SUM(e), 0)::text AS at_end \
             FROM ({}) AS spans(metric{groups}, f, s, e) \
             GROUP BY metric{groups}",
            legs.join(" UNION ALL ").replace(" FILTERS", &filters)
        )
    };
    let stocks: Vec<&str> = Metric::stocks().map(Metric::as_str).collect();
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i16::from(rollup))
        .bind(stocks);
    for d in dates {
        q = q.bind(d);
    }
    for v in binds {
        q = q.bind(v);
    }
    let rows = q.fetch_all(pool).await?;
    collect_groups(query, &group_cols, rows)
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

/// One condition `grain = … AND period >= $n AND period < $m` per span, binding the bounds as
/// `$n` after the two fixed parameters (`$1` rollup, `$2` stock metrics) and the dates bound so
/// far.
fn span_conditions(spans: &[Span], dates: &mut Vec<NaiveDate>) -> Vec<String> {
    spans
        .iter()
        .map(|span| {
            let mut part = format!("grain = '{}'", span.grain.code());
            if let Some(from) = span.from {
                dates.push(from);
                part.push_str(&format!(" AND period >= ${}", dates.len() + 2));
            }
            if let Some(to) = span.to {
                dates.push(to);
                part.push_str(&format!(" AND period < ${}", dates.len() + 2));
            }
            part
        })
        .collect()
}

/// Adds `cells` to the table `table` (`stats_rollup` or a table of the same shape), in the
/// cells' order, one statement per 10 000 cells. `table` is one of the crate's fixed names,
/// never user input.
pub(crate) async fn upsert_cells(
    conn: &mut sqlx::PgConnection,
    table: &str,
    cells: &BTreeMap<Cell<'_>, i128>,
) -> Result<(), sqlx::Error> {
    const CHUNK: usize = 10_000;
    let cells: Vec<(&Cell<'_>, &i128)> = cells.iter().collect();
    for chunk in cells.chunks(CHUNK) {
        let n = chunk.len();
        let mut rollups = Vec::with_capacity(n);
        let mut grains = Vec::with_capacity(n);
        let mut periods = Vec::with_capacity(n);
        let mut dims: [Vec<&str>; 6] = std::array::from_fn(|_| Vec::with_capacity(n));
        let mut metrics = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        for (cell, value) in chunk {
            rollups.push(i16::from(cell.rollup));
            grains.push(cell.grain.code());
            periods.push(cell.period);
            for (i, v) in cell.dims.iter().enumerate() {
                dims[i].push(*v);
            }
            metrics.push(cell.metric.as_str());
            // `numeric` has no binary form sqlx encodes from `i128`: bound as text, exact.
            values.push(value.to_string());
        }
        let sql = format!(
            "INSERT INTO {table} \
               (rollup, grain, period, level, agency, sector, procedure, channel, \
                applicant_type, metric, value) \
             SELECT * FROM UNNEST($1::smallint[], $2::text[], $3::date[], $4::text[], \
                                  $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
                                  $10::text[], $11::numeric[]) \
             ON CONFLICT (rollup, grain, period, level, agency, sector, procedure, channel, \
                          applicant_type, metric) \
             DO UPDATE SET value = {table}.value + EXCLUDED.value"
        );
        let [d0, d1, d2, d3, d4, d5] = dims;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(rollups)
            .bind(grains)
            .bind(periods)
            .bind(d0)
            .bind(d1)
            .bind(d2)
            .bind(d3)
            .bind(d4)
            .bind(d5)
            .bind(metrics)
            .bind(values)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
