//! The projection's storage in PostgreSQL: per-dossier contributions and the pre-aggregated
//! `stats_rollup` (day, month and year grain, for a few rollups over the slice dimensions), the
//! apply step that keeps them exact, and the sums queries read.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate};
use eventlog::EventLog;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgTransaction};
use stats::{Contribution, Dimension, GroupKey, Metric, MetricKind, Query, Slice, Totals};

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
            let event = writepath::decode(&e)
                .map_err(|err| ApplyError::Corrupt(format!("dossier {dossier_id}: {err}")))?;
            Ok((e.version, event))
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

/// `numeric` text of an integer as `i128` (`None` for a fraction or beyond `i128`).
pub fn parse_sum(text: &str) -> Option<i128> {
    text.parse().ok()
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

/// The rollups kept, as bit masks over [`Dimension::ALL`] (bit `i` is `Dimension::ALL[i]`),
/// coarsest first: {}, {level}, {level, agency}, {level, sector}, {level, agency, sector},
/// every dimension. The report forms group by level, agency and sector; filters on procedure,
/// channel or applicant type fall back to the full rollup.
pub const ROLLUPS: [u8; 6] = [0, 1, 3, 5, 7, ALL_DIMENSIONS];

/// The rollup of every dimension: its day grain is the plain per-slice, per-day aggregate.
pub const ALL_DIMENSIONS: u8 = 63;

/// A dimension's bit in a rollup mask.
pub fn dimension_bit(dimension: Dimension) -> u8 {
    match dimension {
        Dimension::Level => 1,
        Dimension::Agency => 2,
        Dimension::Sector => 4,
        Dimension::Procedure => 8,
        Dimension::Channel => 16,
        Dimension::ApplicantType => 32,
    }
}

/// The coarsest rollup holding every dimension `query` filters or groups by. The rollups are
/// ordered by how many rows a period holds (fewest first), so the first fit reads least.
pub fn rollup_for(query: &Query) -> u8 {
    let needed = query
        .filter
        .dimensions()
        .chain(query.group_by.iter().copied())
        .fold(0u8, |mask, d| mask | dimension_bit(d));
    ROLLUPS
        .into_iter()
        .find(|r| r & needed == needed)
        .unwrap_or(ALL_DIMENSIONS)
}

/// The period lengths the aggregates are kept at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grain {
    Day,
    Month,
    Year,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Day, Grain::Month, Grain::Year];

    /// The code stored in `stats_rollup.grain`.
    pub fn code(self) -> &'static str {
        match self {
            Grain::Day => "d",
            Grain::Month => "m",
            Grain::Year => "y",
        }
    }

    pub fn parse(code: &str) -> Option<Grain> {
        Grain::ALL.into_iter().find(|g| g.code() == code)
    }

    /// The first day of the period of this grain holding `day`.
    pub fn period(self, day: NaiveDate) -> NaiveDate {
        match self {
            Grain::Day => day,
            // Day 1 and day-of-year 1 exist in every month and year chrono represents.
            Grain::Month => day.with_day(1).unwrap_or(day),
            Grain::Year => day.with_ordinal(1).unwrap_or(day),
        }
    }
}

/// A run of periods of one grain: those whose first day `p` has `from <= p < to` (`None`: no
/// bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub grain: Grain,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

impl Span {
    fn new(grain: Grain, from: Option<NaiveDate>, to: Option<NaiveDate>) -> Span {
        Span { grain, from, to }
    }
}

/// The days `from <= d < to` (`from = None`: every day before `to`) as disjoint spans of whole
/// years, whole months and edge days: at most day, month, year, month, day spans, the days and
/// months at most one month and one year's worth on each side.
pub fn spans(from: Option<NaiveDate>, to: NaiveDate) -> Vec<Span> {
    let days_only = |from: Option<NaiveDate>| vec![Span::new(Grain::Day, from, Some(to))];
    if from.is_some_and(|f| f >= to) {
        return Vec::new();
    }
    // The first month start at or after `from`; the month start at or before `to`.
    let first_month = match from {
        None => None,
        Some(f) if f.day() == 1 => Some(f),
        Some(f) => match next_month_start(f) {
            Some(m) => Some(m),
            None => return days_only(from),
        },
    };
    let last_month = Grain::Month.period(to);
    if first_month.is_some_and(|m| m > last_month) {
        return days_only(from);
    }
    let mut out = Vec::new();
    if let (Some(f), Some(m)) = (from, first_month)
        && f < m
    {
        out.push(Span::new(Grain::Day, Some(f), Some(m)));
    }
    // Whole months [first_month, last_month): whole years inside, months at the edges.
    let first_year = match first_month {
        None => None,
        Some(m) if m.month() == 1 => Some(m),
        Some(m) => match m.with_ordinal(1).and_then(|y| y.with_year(y.year() + 1)) {
            Some(y) => Some(y),
            None => return days_only(from),
        },
    };
    let last_year = Grain::Year.period(last_month);
    match first_year {
        Some(y) if y >= last_year => {
            if first_month.is_some_and(|m| m < last_month) {
                out.push(Span::new(Grain::Month, first_month, Some(last_month)));
            }
        }
        _ => {
            if let (Some(m), Some(y)) = (first_month, first_year)
                && m < y
            {
                out.push(Span::new(Grain::Month, Some(m), Some(y)));
            }
            out.push(Span::new(Grain::Year, first_year, Some(last_year)));
            if last_year < last_month {
                out.push(Span::new(Grain::Month, Some(last_year), Some(last_month)));
            }
        }
    }
    if last_month < to {
        out.push(Span::new(Grain::Day, Some(last_month), Some(to)));
    }
    out
}

/// The days `d <= day`: what a stock at the start of `day` sums.
pub fn prefix_spans(day: NaiveDate) -> Vec<Span> {
    match day.succ_opt() {
        Some(next) => spans(None, next),
        None => vec![Span::new(Grain::Year, None, None)],
    }
}

/// The first day of the month after `day`'s.
fn next_month_start(day: NaiveDate) -> Option<NaiveDate> {
    let (y, m) = if day.month() == 12 {
        (day.year() + 1, 1)
    } else {
        (day.year(), day.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
}

/// One cell of `stats_rollup`: a rollup, a period, the slice's values in the rollup's
/// dimensions (`""` outside it) and a metric. Ordered, so that a sorted batch of cells is
/// locked in the same order by every transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell<'a> {
    pub rollup: u8,
    pub grain: Grain,
    pub period: NaiveDate,
    /// In [`Dimension::ALL`] order.
    pub dims: [&'a str; 6],
    pub metric: Metric,
}

/// Every rollup and grain cell the day deltas `(slice, day, metric, delta)` add to, with the
/// summed delta (exact `i128`: see the `stats` crate docs); zero sums are left out. Apply and
/// rebuild write `stats_rollup` through it; verify does not (it expands its expected cells in
/// SQL, independently: see [`crate::verify`]).
pub fn rollup_cells<'a>(
    deltas: impl IntoIterator<Item = (&'a Slice, NaiveDate, Metric, i128)>,
) -> BTreeMap<Cell<'a>, i128> {
    let mut cells: BTreeMap<Cell<'a>, i128> = BTreeMap::new();
    for (slice, day, metric, delta) in deltas {
        if delta == 0 {
            continue;
        }
        let values = Dimension::ALL.map(|d| d.value(slice));
        for rollup in ROLLUPS {
            let mut dims = [""; 6];
            for (i, d) in Dimension::ALL.into_iter().enumerate() {
                if rollup & dimension_bit(d) != 0 {
                    dims[i] = values[i];
                }
            }
            for grain in Grain::ALL {
                let cell = Cell {
                    rollup,
                    grain,
                    period: grain.period(day),
                    dims,
                    metric,
                };
                *cells.entry(cell).or_insert(0) += delta;
            }
        }
    }
    cells.retain(|_, v| *v != 0);
    cells
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

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    /// Whether `day` lies in one of `spans` (a period of the span's grain holding `day` has
    /// its first day within the span's bounds), and in exactly one.
    fn covered(spans: &[Span], day: NaiveDate) -> usize {
        spans
            .iter()
            .filter(|s| {
                let p = s.grain.period(day);
                s.from.is_none_or(|f| f <= p) && s.to.is_none_or(|t| p < t)
            })
            .count()
    }

    /// Every span of a grain coarser than a day covers whole periods only: its bounds are
    /// period starts of that grain.
    fn aligned(spans: &[Span]) -> bool {
        spans.iter().all(|s| {
            [s.from, s.to]
                .into_iter()
                .flatten()
                .all(|b| s.grain.period(b) == b)
        })
    }

    #[test]
    fn spans_cover_each_day_of_the_period_exactly_once() {
        let days: Vec<NaiveDate> = date(2021, 11, 25)
            .iter_days()
            .take_while(|d| *d <= date(2024, 2, 5))
            .collect();
        // Every pair is too many for a unit test; every 7th `from` against every 2nd `to`
        // crosses all month and year edges in both positions.
        for from in days.iter().step_by(7) {
            for to in days.iter().step_by(2) {
                let spans = spans(Some(*from), *to);
                assert!(aligned(&spans), "{from}..{to}: {spans:?}");
                assert!(spans.len() <= 5, "{from}..{to}: {spans:?}");
                for day in &days {
                    let expected = usize::from(from <= day && day < to);
                    assert_eq!(
                        covered(&spans, *day),
                        expected,
                        "{from}..{to} at {day}: {spans:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn prefix_spans_cover_every_day_up_to_and_including_the_day() {
        let days: Vec<NaiveDate> = date(2019, 12, 1)
            .iter_days()
            .take_while(|d| *d <= date(2022, 2, 1))
            .collect();
        for at in &days {
            let spans = prefix_spans(*at);
            assert!(aligned(&spans), "{at}: {spans:?}");
            for day in &days {
                assert_eq!(
                    covered(&spans, *day),
                    usize::from(day <= at),
                    "{at} at {day}"
                );
            }
            // Long before the period: still counted (the years before).
            assert_eq!(covered(&spans, date(1990, 6, 15)), 1);
        }
        assert_eq!(covered(&prefix_spans(NaiveDate::MAX), NaiveDate::MAX), 1);
    }

    #[test]
    fn a_period_within_a_month_reads_days_only_and_a_year_reads_one_row() {
        assert_eq!(
            spans(Some(date(2024, 3, 5)), date(2024, 3, 9)),
            vec![Span::new(
                Grain::Day,
                Some(date(2024, 3, 5)),
                Some(date(2024, 3, 9))
            )]
        );
        assert_eq!(
            spans(Some(date(2024, 1, 1)), date(2025, 1, 1)),
            vec![Span::new(
                Grain::Year,
                Some(date(2024, 1, 1)),
                Some(date(2025, 1, 1))
            )]
        );
        assert!(spans(Some(date(2024, 1, 1)), date(2024, 1, 1)).is_empty());
    }

    #[test]
    fn the_coarsest_rollup_with_the_needed_dimensions_is_chosen() {
        let q = |filter: SliceFilterSpec, group_by: Vec<Dimension>| Query {
            from: date(2024, 1, 1),
            to: date(2025, 1, 1),
            filter: filter.0,
            group_by,
        };
        struct SliceFilterSpec(stats::SliceFilter);
        let none = || SliceFilterSpec(stats::SliceFilter::default());
        assert_eq!(rollup_for(&q(none(), vec![])), 0);
        assert_eq!(rollup_for(&q(none(), vec![Dimension::Level])), 1);
        assert_eq!(rollup_for(&q(none(), vec![Dimension::Agency])), 3);
        assert_eq!(rollup_for(&q(none(), vec![Dimension::Sector])), 5);
        assert_eq!(
            rollup_for(&q(none(), vec![Dimension::Sector, Dimension::Agency])),
            7
        );
        let by_channel = stats::SliceFilter {
            channel: Some(domain::Channel::Online),
            ..Default::default()
        };
        assert_eq!(rollup_for(&q(SliceFilterSpec(by_channel), vec![])), 63);
    }

    #[test]
    fn rollup_cells_sum_each_delta_into_every_rollup_and_grain() {
        let slice = |agency: &str| Slice {
            level: domain::Level::District,
            agency: domain::AgencyCode::parse(agency).unwrap(),
            sector: domain::SectorCode::parse("land").unwrap(),
            procedure: domain::ProcedureCode::parse("1.001").unwrap(),
            channel: domain::Channel::Online,
            applicant_type: domain::ApplicantType::Citizen,
        };
        let (a, b) = (slice("A"), slice("B"));
        let cells = rollup_cells([
            (&a, date(2024, 3, 5), Metric::Received, 1),
            (&b, date(2024, 3, 6), Metric::Received, 2),
            (&b, date(2024, 4, 6), Metric::Pending, 1),
            (&b, date(2024, 4, 7), Metric::Pending, -1),
        ]);
        let get = |rollup, grain, period, agency, metric| {
            let dims = if rollup & 2 != 0 {
                [
                    if rollup & 1 != 0 { "district" } else { "" },
                    agency,
                    "",
                    "",
                    "",
                    "",
                ]
            } else {
                [
                    if rollup & 1 != 0 { "district" } else { "" },
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            };
            cells
                .iter()
                .find(|(c, _)| {
                    c.rollup == rollup
                        && c.grain == grain
                        && c.period == period
                        && c.dims[..2] == dims[..2]
                        && c.metric == metric
                })
                .map(|(_, v)| *v)
        };
        assert_eq!(
            get(0, Grain::Year, date(2024, 1, 1), "", Metric::Received),
            Some(3)
        );
        assert_eq!(
            get(1, Grain::Month, date(2024, 3, 1), "", Metric::Received),
            Some(3)
        );
        assert_eq!(
            get(3, Grain::Month, date(2024, 3, 1), "B", Metric::Received),
            Some(2)
        );
        assert_eq!(
            get(3, Grain::Day, date(2024, 3, 5), "A", Metric::Received),
            Some(1)
        );
        // The two stock deltas cancel within the month and year: no cell; the days keep them.
        assert_eq!(
            get(0, Grain::Month, date(2024, 4, 1), "", Metric::Pending),
            None
        );
        assert_eq!(
            get(0, Grain::Day, date(2024, 4, 7), "", Metric::Pending),
            Some(-1)
        );
        let full = cells
            .keys()
            .find(|c| c.rollup == 63 && c.grain == Grain::Day && c.dims[1] == "A")
            .unwrap();
        assert_eq!(
            full.dims,
            ["district", "A", "land", "1.001", "online", "citizen"]
        );
    }
}
