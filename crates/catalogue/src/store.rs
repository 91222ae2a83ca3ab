//! The catalogue in PostgreSQL: `procedure_versions` (migration 70001), append-only.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::ProcedureCode;
use sqlx::PgPool;

use crate::Procedure;
use crate::cache::{Cache, Lookup, Versions, in_force_of};

/// One stored version: its number, definition, and who published it when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcedureVersion {
    pub version: u64,
    pub procedure: Procedure,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

/// Why a catalogue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached or failed: retry (publishing is idempotent).
    #[error("catalogue store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// A stored definition does not decode: an operator must look.
    #[error("stored catalogue version {version} does not decode: {reason}")]
    Corrupt { version: i64, reason: String },
    #[error("catalogue migrations refused: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The catalogue's table, through a pool shared with the service; with
/// [`cached`](Catalogue::cached), answered from memory kept current by notifications
/// ([`crate::cache`]). Clones share the cache.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pool: PgPool,
    cache: Option<Arc<Cache>>,
}

type Row = (i64, serde_json::Value, String, DateTime<Utc>);
/// A [`Row`] after the `effective_from` column it was stored under.
type RowFrom = (DateTime<Utc>, i64, serde_json::Value, String, DateTime<Utc>);

fn decode(
    (version, definition, recorded_by, recorded_at): Row,
) -> Result<ProcedureVersion, StoreError> {
    let procedure: Procedure =
        serde_json::from_value(definition).map_err(|e| StoreError::Corrupt {
            version,
            reason: e.to_string(),
        })?;
    Ok(ProcedureVersion {
        version: u64::try_from(version).map_err(|_| StoreError::Corrupt {
            version,
            reason: "negative version".into(),
        })?,
        procedure,
        recorded_by,
        recorded_at,
    })
}

impl Catalogue {
    /// Every lookup reads the table.
    pub fn new(pool: PgPool) -> Catalogue {
        Catalogue { pool, cache: None }
    }

    /// [`in_force`](Self::in_force) answered from memory while the cache's listener listens
    /// (see [`crate::cache`] for how it stays current). Starts the listener's task on a
    /// connection of its own: call inside a tokio runtime.
    pub fn cached(pool: PgPool) -> Catalogue {
        Catalogue {
            cache: Some(Arc::new(Cache::start(&pool))),
            pool,
        }
    }

    /// Whether lookups are answered from memory now (a cached handle whose listener listens).
    pub fn answers_from_memory(&self) -> bool {
        self.cache.as_ref().is_some_and(|cache| cache.listening())
    }

    /// Applies the catalogue's migrations (70001 and up); other crates' versions in the same
    /// `_sqlx_migrations` are ignored.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// The version of `code` in force at `at`: the latest `effective_from` not after `at`, and
    /// of several published for that instant, the last published (a correction).
    pub async fn in_force(
        &self,
        code: &ProcedureCode,
        at: DateTime<Utc>,
    ) -> Result<Option<ProcedureVersion>, StoreError> {
        let Some(cache) = &self.cache else {
            return self.read_in_force(code, at).await;
        };
        let generation = match cache.lookup(code.as_str(), at) {
            Lookup::Hit(found) => return Ok(found),
            Lookup::Miss { generation } => generation,
        };
        let versions = self.versions_of(code).await?;
        let found = in_force_of(&versions, at);
        cache.store(code.as_str(), generation, versions);
        Ok(found)
    }

    /// Every stored version of `code`, with the `effective_from` column of each.
    async fn versions_of(&self, code: &ProcedureCode) -> Result<Versions, StoreError> {
        let rows: Vec<RowFrom> = sqlx::query_as(
            "SELECT effective_from, version, definition, recorded_by, recorded_at \
                 FROM procedure_versions WHERE code = $1 ORDER BY version",
        )
        .bind(code.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(from, version, definition, by, at)| {
                decode((version, definition, by, at)).map(|v| (from, v))
            })
            .collect()
    }

    /// [`in_force`](Self::in_force) asked of the table.
    async fn read_in_force(
        &self,
        code: &ProcedureCode,
        at: DateTime<Utc>,
    ) -> Result<Option<ProcedureVersion>, StoreError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT version, definition, recorded_by, recorded_at FROM procedure_versions \
             WHERE code = $1 AND effective_from <= $2 \
             ORDER BY effective_from DESC, version DESC LIMIT 1",
        )
        .bind(code.as_str())
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        row.map(decode).transpose()
    }

    /// The version numbered `version` (a `received` event names the one it used), if stored.
    pub async fn version(&self, version: u64) -> Result<Option<ProcedureVersion>, StoreError> {
        let Ok(number) = i64::try_from(version) else {
            return Ok(None);
        };
        let row: Option<Row> = sqlx::query_as(
            "SELECT version, definition, recorded_by, recorded_at FROM procedure_versions \
             WHERE version = $1",
        )
        .bind(number)
        .fetch_optional(&self.pool)
        .await?;
        row.map(decode).transpose()
    }

    /// Every version, in publication order (for operators and tests).
    pub async fn history(&self) -> Result<Vec<ProcedureVersion>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT version, definition, recorded_by, recorded_at FROM procedure_versions ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(decode).collect()
    }

    /// Publishes validated definitions in one transaction, recording `recorded_by`. A
    /// definition equal to the last version stored for its code and `effective_from` is not
    /// stored again: its number is answered. Returns each definition's version and how many
    /// were new. Concurrent publications serialize on a transaction-level advisory lock.
    pub async fn publish(
        &self,
        procedures: &[Procedure],
        recorded_by: &str,
    ) -> Result<(Vec<u64>, u32), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(70001)")
            .execute(&mut *tx)
            .await?;
        let mut versions = Vec::with_capacity(procedures.len());
        let mut published = 0u32;
        for procedure in procedures {
            let definition =
                serde_json::to_value(procedure).expect("a procedure always serialises");
            let same: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM procedure_versions \
                 WHERE code = $1 AND effective_from = $2 \
                 ORDER BY version DESC LIMIT 1",
            )
            .bind(procedure.code.as_str())
            .bind(procedure.effective_from)
            .fetch_optional(&mut *tx)
            .await?;
            let stored_same = match same {
                Some(version) => {
                    let stored: serde_json::Value = sqlx::query_scalar(
                        "SELECT definition FROM procedure_versions WHERE version = $1",
                    )
                    .bind(version)
                    .fetch_one(&mut *tx)
                    .await?;
                    (stored == definition).then_some(version)
                }
                None => None,
            };
            let version = match stored_same {
                Some(version) => version,
                None => {
                    published += 1;
                    sqlx::query_scalar(
                        "INSERT INTO procedure_versions (code, effective_from, definition, recorded_by) \
                         VALUES ($1, $2, $3, $4) RETURNING version",
                    )
                    .bind(procedure.code.as_str())
                    .bind(procedure.effective_from)
                    .bind(&definition)
                    .bind(recorded_by)
                    .fetch_one(&mut *tx)
                    .await?
                }
            };
            versions.push(u64::try_from(version).unwrap_or_default());
        }
        tx.commit().await?;
        if let Some(cache) = &self.cache {
            // Before answering, so that the publisher's next lookup sees what it published
            // (other processes learn it from the table's notification).
            cache.invalidate();
        }
        Ok((versions, published))
    }
}
