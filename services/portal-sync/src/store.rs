//! The `portal_sync` table (migration 50001): per dossier, the version the stream announced and
//! what the portal acknowledged; the work queue of the sender (due rows, leases, backoff) and
//! the source of the reconciliation figures. Every time comes from the caller's clock.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{PgPool, Row};

/// Applies the service's migrations (50001+; other services' versions are ignored).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Records that the stream announced `version` of each dossier (one statement; each dossier
/// once, with its highest version). A dossier up to date becomes pending again.
pub async fn announce(
    pool: &PgPool,
    announced: &[(String, i32)],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let (ids, versions): (Vec<String>, Vec<i32>) = announced.iter().cloned().unzip();
    sqlx::query(
        "INSERT INTO portal_sync AS s (dossier_id, wanted_version, pending_since, next_attempt_at)
         SELECT id, v, $3, $3 FROM UNNEST($1::text[], $2::int[]) AS a(id, v)
         ON CONFLICT (dossier_id) DO UPDATE SET
             wanted_version = GREATEST(s.wanted_version, EXCLUDED.wanted_version),
             pending_since = CASE
                 WHEN EXCLUDED.wanted_version > LEAST(s.record_version, s.progress_version)
                 THEN COALESCE(s.pending_since, EXCLUDED.pending_since)
                 ELSE s.pending_since END",
    )
    .bind(ids)
    .bind(versions)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// A dossier taken by this instance for one turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub dossier_id: String,
    pub record_version: i32,
    pub progress_version: i32,
    pub attempts: i32,
}

/// Takes up to `limit` due dossiers (not up to date, not refused at their announced version,
/// past their backoff, not held by another instance), oldest due first, holding each until
/// `now + lease`.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    now: DateTime<Utc>,
    lease: chrono::Duration,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE portal_sync SET leased_until = $2
         WHERE dossier_id IN (
             SELECT dossier_id FROM portal_sync
             WHERE wanted_version > LEAST(record_version, progress_version)
               AND (refused_version IS NULL OR wanted_version > refused_version)
               AND next_attempt_at <= $1
               AND (leased_until IS NULL OR leased_until <= $1)
             ORDER BY next_attempt_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED)
         RETURNING dossier_id, record_version, progress_version, attempts",
    )
    .bind(now)
    .bind(now + lease)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Claimed {
            dossier_id: r.get(0),
            record_version: r.get(1),
            progress_version: r.get(2),
            attempts: r.get(3),
        })
        .collect())
}

/// Extends the lease of a dossier this instance works on.
pub async fn hold(
    pool: &PgPool,
    dossier_id: &str,
    until: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE portal_sync SET leased_until = $2 WHERE dossier_id = $1")
        .bind(dossier_id)
        .bind(until)
        .execute(pool)
        .await?;
    Ok(())
}

/// The portal acknowledged the dossier record at `version`.
pub async fn record_acked(
    pool: &PgPool,
    dossier_id: &str,
    version: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE portal_sync SET record_version = GREATEST(record_version, $2),
             attempts = 0, last_error = NULL
         WHERE dossier_id = $1",
    )
    .bind(dossier_id)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// The portal acknowledged the progress entries up to `version`.
pub async fn progress_acked(
    pool: &PgPool,
    dossier_id: &str,
    version: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE portal_sync SET progress_version = GREATEST(progress_version, $2),
             attempts = 0, last_error = NULL
         WHERE dossier_id = $1",
    )
    .bind(dossier_id)
    .bind(version)
    .execute(pool)
    .await?;
    Ok(())
}

/// The turn ended with the portal holding `version` (record and progress): releases the lease,
/// forgets a refusal of an earlier version, and counts the turn late when `late`. The dossier stays due if a later version was announced
/// meanwhile.
pub async fn turn_done(
    pool: &PgPool,
    dossier_id: &str,
    version: i32,
    late: bool,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE portal_sync SET
             first_synced_at = COALESCE(first_synced_at, $3),
             last_synced_at = $3,
             late_syncs = late_syncs + $4,
             pending_since = CASE WHEN wanted_version > $2 THEN pending_since ELSE NULL END,
             refused_at = CASE WHEN refused_version <= $2 THEN NULL ELSE refused_at END,
             refusal = CASE WHEN refused_version <= $2 THEN NULL ELSE refusal END,
             refused_version = CASE WHEN refused_version <= $2 THEN NULL ELSE refused_version END,
             leased_until = NULL
         WHERE dossier_id = $1",
    )
    .bind(dossier_id)
    .bind(version)
    .bind(now)
    .bind(i32::from(late))
    .execute(pool)
    .await?;
    Ok(())
}

/// The turn stopped before the portal held the whole dossier, for a reason worth trying again:
/// the next attempt is at `next`.
pub async fn failed(
    pool: &PgPool,
    dossier_id: &str,
    attempts: i32,
    next: DateTime<Utc>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE portal_sync SET attempts = $2, next_attempt_at = $3, last_error = $4,
             leased_until = NULL
         WHERE dossier_id = $1",
    )
    .bind(dossier_id)
    .bind(attempts)
    .bind(next)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// The turn ended without finishing, not for a failure (more progress than one turn sends):
/// the lease is released and the dossier is due again at once.
pub async fn release(pool: &PgPool, dossier_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE portal_sync SET leased_until = NULL WHERE dossier_id = $1")
        .bind(dossier_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The portal refused `version` for good (or it cannot be put in its shape): recorded, not sent
/// again; a later version of the dossier is.
pub async fn refused(
    pool: &PgPool,
    dossier_id: &str,
    version: i32,
    refusal: &str,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE portal_sync SET refused_version = GREATEST(COALESCE(refused_version, 0), $2),
             refused_at = $3, refusal = $4, attempts = 0, leased_until = NULL
         WHERE dossier_id = $1",
    )
    .bind(dossier_id)
    .bind(version)
    .bind(now)
    .bind(refusal)
    .execute(pool)
    .await?;
    Ok(())
}

/// The table's state, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Dossiers the portal does not hold at their announced version (refused ones included).
    pub pending: i64,
    /// Dossiers whose latest announced version the portal refused.
    pub refused: i64,
    /// Seconds since the oldest pending announcement (0 when none).
    pub oldest_pending_secs: i64,
}

pub async fn backlog(pool: &PgPool, now: DateTime<Utc>) -> Result<Backlog, sqlx::Error> {
    let row = sqlx::query(
        "SELECT
             count(*) FILTER (WHERE wanted_version > LEAST(record_version, progress_version)),
             count(*) FILTER (WHERE refused_version IS NOT NULL AND refused_version >= wanted_version),
             COALESCE(EXTRACT(EPOCH FROM ($1 - min(pending_since)))::bigint, 0)
         FROM portal_sync",
    )
    .bind(now)
    .fetch_one(pool)
    .await?;
    Ok(Backlog {
        pending: row.get(0),
        refused: row.get(1),
        oldest_pending_secs: row.get::<i64, _>(2).max(0),
    })
}

/// One dossier's synchronisation state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncRow {
    pub dossier_id: String,
    pub wanted_version: i32,
    pub record_version: i32,
    pub progress_version: i32,
    pub attempts: i32,
    pub late_syncs: i32,
    pub last_error: Option<String>,
    pub refused_version: Option<i32>,
    pub refusal: Option<String>,
}

/// The state of one dossier (`None`: never announced).
pub async fn sync_row(pool: &PgPool, dossier_id: &str) -> Result<Option<SyncRow>, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT dossier_id, wanted_version, record_version, progress_version, attempts,
                late_syncs, last_error, refused_version, refusal
         FROM portal_sync WHERE dossier_id = $1",
    )
    .bind(dossier_id)
    .fetch_optional(pool)
    .await?
    .map(|r| SyncRow {
        dossier_id: r.get(0),
        wanted_version: r.get(1),
        record_version: r.get(2),
        progress_version: r.get(3),
        attempts: r.get(4),
        late_syncs: r.get(5),
        last_error: r.get(6),
        refused_version: r.get(7),
        refusal: r.get(8),
    }))
}

/// The dossiers whose latest announced version the portal refused, oldest refusal first.
pub async fn refusals(pool: &PgPool, limit: i64) -> Result<Vec<SyncRow>, sqlx::Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT dossier_id FROM portal_sync
         WHERE refused_version IS NOT NULL AND refused_version >= wanted_version
         ORDER BY refused_at, dossier_id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(row) = sync_row(pool, &id).await? {
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Sends a refused dossier again (after the operator fixed the cause): clears the refusal.
/// Returns whether the dossier was refused.
pub async fn retry_refused(
    pool: &PgPool,
    dossier_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE portal_sync SET refused_version = NULL, refused_at = NULL, refusal = NULL,
             next_attempt_at = $2, attempts = 0
         WHERE dossier_id = $1 AND refused_version IS NOT NULL",
    )
    .bind(dossier_id)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The longest a reconciliation query may run (PostgreSQL `statement_timeout`).
pub const RECONCILIATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One line of the reconciliation: the dossiers received (or refused at the counter) by an
/// agency in the period, by business date (Asia/Ho_Chi_Minh).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reconciliation {
    pub agency: String,
    /// Dossiers that should be on the portal: every dossier received or refused at the counter.
    pub should: i64,
    /// Those the portal holds at their latest version (record and progress).
    pub synchronised: i64,
    /// Those the portal has acknowledged at least once.
    pub ever_synchronised: i64,
    /// Those whose latest announced version the portal refused.
    pub refused: i64,
    /// Those with at least one turn acknowledged late, or still not acknowledged more than
    /// `late_after` after the stream announced it.
    pub late: i64,
}

/// The reconciliation figures for `[from, to)` (local dates), per receiving agency, optionally
/// one agency only; `late_after` defines late (see [`Reconciliation::late`]).
pub async fn reconciliation(
    pool: &PgPool,
    from: NaiveDate,
    to: NaiveDate,
    agency: Option<&str>,
    late_after: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Vec<Reconciliation>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A scan of the period's first events: bounded, so a large period cannot hold a connection.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL statement_timeout = {}",
        RECONCILIATION_TIMEOUT.as_millis()
    )))
    .execute(&mut *tx)
    .await?;
    let rows = sqlx::query(
        "WITH first AS (
             SELECT e.dossier_id, e.agency,
                    (SELECT max(version) FROM events l WHERE l.dossier_id = e.dossier_id) AS head
             FROM events e
             WHERE e.version = 1
               AND e.event_type IN ('received', 'refused_at_intake')
               AND e.occurred_at >= ($1::date::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh')
               AND e.occurred_at <  ($2::date::timestamp AT TIME ZONE 'Asia/Ho_Chi_Minh')
               AND ($3::text IS NULL OR e.agency = $3))
         SELECT f.agency,
                count(*),
                count(*) FILTER (WHERE s.record_version >= f.head AND s.progress_version >= f.head),
                count(*) FILTER (WHERE s.first_synced_at IS NOT NULL),
                count(*) FILTER (WHERE s.refused_version >= s.wanted_version),
                count(*) FILTER (WHERE s.late_syncs > 0
                                    OR COALESCE(s.pending_since, $5) < $5 - $4::interval)
         FROM first f LEFT JOIN portal_sync s ON s.dossier_id = f.dossier_id
         GROUP BY f.agency ORDER BY f.agency",
    )
    .bind(from)
    .bind(to)
    .bind(agency)
    .bind(late_after)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| Reconciliation {
            agency: r.get(0),
            should: r.get(1),
            synchronised: r.get(2),
            ever_synchronised: r.get(3),
            refused: r.get(4),
            late: r.get(5),
        })
        .collect())
}
