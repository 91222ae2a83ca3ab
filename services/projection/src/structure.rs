//! The agency structure in PostgreSQL (`agency_structure_entries`, migration 71001): entries
//! appended by an administrator (`AgencyStructureService.PublishAgencyStructure`, or the CLI
//! `projection agencies publish FILE --by NAME`: both through [`publish`]) or from the
//! configured file at start, each with who added it and when; never updated or deleted.
//! Statistics read the whole structure on each query that needs it (asked in the structure of
//! a date, or a form leaving out abolished levels): a few hundred rows, one indexed scan.

use std::path::Path;

use sqlx::{PgPool, Row};
use stats::{AgencyStructure, StructureEntry, StructureError, StructureFile};

/// Why the structure could not be read or published.
#[derive(Debug, thiserror::Error)]
pub enum StructureStoreError {
    /// The file cannot be read or parsed: fix it.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// The entries (with those recorded) are not a structure: fix the file; nothing was added.
    #[error("the structure is refused, nothing was added: {0}")]
    Invalid(#[from] StructureError),
    /// A recorded entry does not decode (corrupt row).
    #[error("agency_structure_entries row {seq} does not decode: {message}")]
    Corrupt { seq: i64, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Reads and parses a structure file.
pub fn read_file(path: &Path) -> Result<StructureFile, StructureStoreError> {
    let err = |message: String| StructureStoreError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    toml::from_str(&text).map_err(|e| err(e.to_string()))
}

/// Every recorded entry, in the order recorded.
pub async fn entries(pool: &PgPool) -> Result<Vec<StructureEntry>, StructureStoreError> {
    entries_on(pool).await
}

/// [`entries`] on any executor (`publish` reads them inside its locked transaction).
async fn entries_on<'e>(
    executor: impl sqlx::PgExecutor<'e>,
) -> Result<Vec<StructureEntry>, StructureStoreError> {
    let rows = sqlx::query("SELECT seq, entry FROM agency_structure_entries ORDER BY seq")
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| {
            let seq: i64 = row.try_get("seq")?;
            let entry: serde_json::Value = row.try_get("entry")?;
            serde_json::from_value(entry).map_err(|e| StructureStoreError::Corrupt {
                seq,
                message: e.to_string(),
            })
        })
        .collect()
}

/// The recorded structure.
pub async fn load(pool: &PgPool) -> Result<AgencyStructure, StructureStoreError> {
    Ok(AgencyStructure::new(&entries(pool).await?)?)
}

/// What a publication added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Entries new to the table.
    pub added: usize,
    /// Entries already recorded identically (skipped).
    pub unchanged: usize,
}

/// Appends the entries of `file` not yet recorded, as `recorded_by`, in one transaction: all
/// or nothing. Refused (nothing added) when an entry contradicts a recorded one or when the
/// result is not a valid structure. Concurrent publications serialize on a table lock.
pub async fn publish(
    pool: &PgPool,
    file: &StructureFile,
    recorded_by: &str,
) -> Result<Published, StructureStoreError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE agency_structure_entries IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let mut all = entries_on(&mut *tx).await?;
    let recorded = all.len();
    let new: Vec<StructureEntry> = file
        .entries()
        .into_iter()
        .filter(|e| !all[..recorded].contains(e))
        .collect();
    let unchanged = file.entries().len() - new.len();
    all.extend(new.iter().cloned());
    // Contradictions with recorded entries, cycles, undeclared successors: refused here.
    AgencyStructure::new(&all)?;
    let mut added = 0;
    for e in &new {
        let json = serde_json::to_value(e).map_err(|e| StructureStoreError::Corrupt {
            seq: 0,
            message: e.to_string(),
        })?;
        // An identical repeat within the file is one entry.
        let inserted = sqlx::query(
            "INSERT INTO agency_structure_entries (key, entry, recorded_by) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(e.key())
        .bind(json)
        .bind(recorded_by)
        .execute(&mut *tx)
        .await?;
        added += inserted.rows_affected() as usize;
    }
    tx.commit().await?;
    Ok(Published { added, unchanged })
}

/// A recorded entry: its sequence, the entry, who recorded it, when.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub seq: i64,
    pub entry: StructureEntry,
    pub recorded_by: String,
    pub recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Every recorded entry, decoded, in the order recorded.
pub async fn recorded_entries(pool: &PgPool) -> Result<Vec<Recorded>, StructureStoreError> {
    let rows = sqlx::query(
        "SELECT seq, entry, recorded_by, recorded_at FROM agency_structure_entries ORDER BY seq",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let seq: i64 = row.try_get("seq")?;
            let entry: serde_json::Value = row.try_get("entry")?;
            Ok(Recorded {
                seq,
                entry: serde_json::from_value(entry).map_err(|e| StructureStoreError::Corrupt {
                    seq,
                    message: e.to_string(),
                })?,
                recorded_by: row.try_get("recorded_by")?,
                recorded_at: row.try_get("recorded_at")?,
            })
        })
        .collect()
}

/// Every recorded row: sequence, entry (JSON), who recorded it, when.
pub async fn recorded(
    pool: &PgPool,
) -> Result<Vec<(i64, String, String, chrono::DateTime<chrono::Utc>)>, StructureStoreError> {
    let rows = sqlx::query(
        "SELECT seq, entry::text AS entry, recorded_by, recorded_at \
         FROM agency_structure_entries ORDER BY seq",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("seq")?,
                r.try_get("entry")?,
                r.try_get("recorded_by")?,
                r.try_get("recorded_at")?,
            ))
        })
        .collect()
}
