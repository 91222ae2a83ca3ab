//! The projection's storage in PostgreSQL: per-dossier contributions and the day-grain
//! aggregates `stats_daily`, the apply step that keeps them exact, and the sums queries read.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use eventlog::EventLog;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgTransaction};
use stats::{Contribution, Dimension, GroupKey, Metric, MetricKind, Query, Totals};

/// Why applying a dossier failed. Nothing was written (the caller's transaction is to be
/// rolled back); applying again later is safe.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event or contribution does not decode: a bug or a corrupt row.
    #[error("undecodable data: {0}")]
    Corrupt(String),
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
/// ([`stats::diff`]) to `stats_daily`, storing the new contribution and version. Because it
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
        "SELECT contribution, version FROM projection_contributions \
         WHERE dossier_id = $1 FOR UPDATE",
    )
    .bind(dossier_id)
    .fetch_one(&mut **tx)
    .await?;
    let stored_json: Option<serde_json::Value> = row.try_get("contribution")?;
    let stored_version: i32 = row.try_get("version")?;

    // Read after taking the lock: whatever another instance applied is committed by now, and
    // this read sees at least the events it saw. Read in the same transaction (on the same
    // connection), so that an apply never holds a connection while waiting for another: many
    // concurrent applies cannot exhaust the pool.
    let events = load_events(tx, dossier_id).await?;
    let log_version = events.last().map_or(0, |(version, _)| *version);
    if stored_version >= log_version {
        return Ok(Applied::UpToDate {
            version: stored_version,
        });
    }

    let decoded: Vec<domain::Event> = events.into_iter().map(|(_, e)| e).collect();
    let new = stats::contribution(&decoded);
    let old: Option<Contribution> = stored_json
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| {
            ApplyError::Corrupt(format!("stored contribution of dossier {dossier_id}: {e}"))
        })?;
    let diff = stats::diff(old.as_ref(), new.as_ref());
    upsert_deltas(tx, &diff).await?;

    let new_json = new
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| ApplyError::Corrupt(format!("contribution of dossier {dossier_id}: {e}")))?;
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

/// Adds the deltas to `stats_daily` in one statement. The diff is sorted and its keys are
/// unique, so concurrent transactions lock cells in the same order.
async fn upsert_deltas(
    tx: &mut PgTransaction<'_>,
    diff: &[(stats::Slice, NaiveDate, Metric, i64)],
) -> Result<(), sqlx::Error> {
    if diff.is_empty() {
        return Ok(());
    }
    let mut days = Vec::with_capacity(diff.len());
    let mut levels = Vec::with_capacity(diff.len());
    let mut agencies = Vec::with_capacity(diff.len());
    let mut sectors = Vec::with_capacity(diff.len());
    let mut procedures = Vec::with_capacity(diff.len());
    let mut channels = Vec::with_capacity(diff.len());
    let mut applicant_types = Vec::with_capacity(diff.len());
    let mut metrics = Vec::with_capacity(diff.len());
    let mut values = Vec::with_capacity(diff.len());
    for (slice, day, metric, delta) in diff {
        days.push(*day);
        levels.push(slice.level.as_str().to_owned());
        agencies.push(slice.agency.as_str().to_owned());
        sectors.push(slice.sector.as_str().to_owned());
        procedures.push(slice.procedure.as_str().to_owned());
        channels.push(slice.channel.as_str().to_owned());
        applicant_types.push(slice.applicant_type.as_str().to_owned());
        metrics.push(metric.as_str().to_owned());
        values.push(*delta);
    }
    sqlx::query(
        "INSERT INTO stats_daily \
           (day, level, agency, sector, procedure, channel, applicant_type, metric, value) \
         SELECT * FROM UNNEST($1::date[], $2::text[], $3::text[], $4::text[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::bigint[]) \
         ON CONFLICT (level, agency, sector, procedure, channel, applicant_type, day, metric) \
         DO UPDATE SET value = stats_daily.value + EXCLUDED.value",
    )
    .bind(days)
    .bind(levels)
    .bind(agencies)
    .bind(sectors)
    .bind(procedures)
    .bind(channels)
    .bind(applicant_types)
    .bind(metrics)
    .bind(values)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// [`apply_dossier`] in a transaction of its own, committed.
pub async fn apply_and_commit(log: &EventLog, dossier_id: &str) -> Result<Applied, ApplyError> {
    let mut tx = log.pool().begin().await?;
    let applied = apply_dossier(&mut tx, dossier_id).await?;
    tx.commit().await?;
    Ok(applied)
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
pub async fn query(pool: &PgPool, query: &Query) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    // Only fixed column names enter the SQL text; every value is bound.
    let group_cols: Vec<&str> = query.group_by.iter().map(|d| d.as_str()).collect();
    let mut select = String::from("SELECT metric");
    for c in &group_cols {
        select.push_str(", ");
        select.push_str(c);
    }
    let mut sql = format!(
        "{select}, \
           COALESCE(SUM(value) FILTER (WHERE day >= $1 AND day < $2), 0)::bigint AS flow, \
           COALESCE(SUM(value) FILTER (WHERE day <= $1), 0)::bigint AS at_start, \
           COALESCE(SUM(value), 0)::bigint AS at_end \
         FROM stats_daily WHERE day <= $2"
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
        let flow: i64 = row.try_get("flow")?;
        let start: i64 = row.try_get("at_start")?;
        let end: i64 = row.try_get("at_end")?;
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
