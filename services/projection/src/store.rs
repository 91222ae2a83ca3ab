//! The projection's storage in PostgreSQL: per-dossier contributions and the day-grain
//! aggregates `stats_daily`, the apply step that keeps them exact, and the sums queries read.

use chrono::NaiveDate;
use eventlog::EventLog;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgTransaction};
use stats::{Contribution, Metric, MetricKind, Totals};

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

/// Which slices a query sums; `None` does not filter. Values as stored (`district`, `online`,
/// agency codes as written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub level: Option<String>,
    pub agency: Option<String>,
    pub sector: Option<String>,
    pub procedure: Option<String>,
    pub channel: Option<String>,
    pub applicant_type: Option<String>,
}

/// The figures of `[from, to)` over the slices `filter` keeps, summed from `stats_daily`:
/// flows over `from <= day < to`, stocks over `day <= from` (at the start) and `day <= to`
/// (at the end).
pub async fn totals(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
    filter: &Filter,
) -> Result<Totals, ApplyError> {
    let rows = sqlx::query(
        "SELECT metric, \
           COALESCE(SUM(value) FILTER (WHERE day >= $1 AND day < $2), 0)::bigint AS flow, \
           COALESCE(SUM(value) FILTER (WHERE day <= $1), 0)::bigint AS at_start, \
           COALESCE(SUM(value), 0)::bigint AS at_end \
         FROM stats_daily \
         WHERE day <= $2 \
           AND ($3::text IS NULL OR level = $3) \
           AND ($4::text IS NULL OR agency = $4) \
           AND ($5::text IS NULL OR sector = $5) \
           AND ($6::text IS NULL OR procedure = $6) \
           AND ($7::text IS NULL OR channel = $7) \
           AND ($8::text IS NULL OR applicant_type = $8) \
         GROUP BY metric",
    )
    .bind(from)
    .bind(to)
    .bind(filter.level.as_deref())
    .bind(filter.agency.as_deref())
    .bind(filter.sector.as_deref())
    .bind(filter.procedure.as_deref())
    .bind(filter.channel.as_deref())
    .bind(filter.applicant_type.as_deref())
    .fetch_all(pool)
    .await?;
    let mut totals = Totals::empty(from, to);
    for row in rows {
        let name: String = row.try_get("metric")?;
        let metric = Metric::parse(&name)
            .ok_or_else(|| ApplyError::Corrupt(format!("unknown metric {name} in stats_daily")))?;
        match metric.kind() {
            MetricKind::Flow => {
                let v: i64 = row.try_get("flow")?;
                if v != 0 {
                    totals.flows.insert(metric, v);
                }
            }
            MetricKind::Stock => {
                let start: i64 = row.try_get("at_start")?;
                let end: i64 = row.try_get("at_end")?;
                if start != 0 {
                    totals.at_start.insert(metric, start);
                }
                if end != 0 {
                    totals.at_end.insert(metric, end);
                }
            }
        }
    }
    Ok(totals)
}
