//! The audit tables in PostgreSQL (`merkle_nodes`, `checkpoints`; migrations 40001+) and raw
//! reads of the `events` table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use eventlog::{Routing, StoredEvent};
use merkle::{Hash, NodeId, SignedCheckpoint};
use sqlx::postgres::{PgPool, PgRow};
use sqlx::{PgConnection, Row};

/// Why a read or write of the audit tables failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached or refused the statement; retry later.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A row does not decode (wrong length, bad text): a bug or tampering.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A size or position out of the database's range was passed in: a bug of the caller,
    /// which must check what it is given (requests: [`eventlog::Position`]).
    #[error("out of range: {0}")]
    OutOfRange(#[from] eventlog::PositionError),
}

/// A tree size or position as bound to a BIGINT, refused rather than wrapped if too large.
pub(crate) fn db(value: u64) -> Result<eventlog::Position, StoreError> {
    Ok(eventlog::Position::new(value)?)
}

/// A tree size or position read from a BIGINT, refused if negative.
fn from_db(what: &str, value: i64) -> Result<u64, StoreError> {
    eventlog::Position::try_from(value)
        .map(eventlog::Position::get)
        .map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Applies the audit migrations (versions 40001 and up); the log's (10001…) and other crates'
/// versions in the same `_sqlx_migrations` table are ignored. The log's migrations must have
/// run first (the triggers reuse its function).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Every column of `events`, for decoding with [`decode_event`].
pub(crate) const EVENT_COLUMNS: &str = "position, event_id, dossier_id, version, event_type, \
     occurred_at, recorded_at, level, agency, sector, payload, fingerprint, event_hash, chain_hash";

/// A row of `events` (selected with [`EVENT_COLUMNS`]) as the log's type, read here rather
/// than through `eventlog` because the audit must not trust the log's own reading.
pub(crate) fn decode_event(row: &PgRow) -> Result<StoredEvent, String> {
    fn col<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
        row: &'r PgRow,
        name: &str,
    ) -> Result<T, String> {
        row.try_get(name).map_err(|e| format!("column {name}: {e}"))
    }
    fn hash(row: &PgRow, name: &str) -> Result<[u8; 32], String> {
        let bytes: Vec<u8> = col(row, name)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| format!("{name} has {} bytes, not 32", bytes.len()))
    }
    Ok(StoredEvent {
        position: col(row, "position")?,
        event_id: col(row, "event_id")?,
        dossier_id: col(row, "dossier_id")?,
        version: col(row, "version")?,
        event_type: col(row, "event_type")?,
        occurred_at: col(row, "occurred_at")?,
        recorded_at: col(row, "recorded_at")?,
        routing: Routing {
            level: col(row, "level")?,
            agency: col(row, "agency")?,
            sector: col(row, "sector")?,
        },
        payload: col(row, "payload")?,
        fingerprint: hash(row, "fingerprint")?,
        event_hash: hash(row, "event_hash")?,
        chain_hash: hash(row, "chain_hash")?,
    })
}

/// How many leaves the stored tree has: positions `1..=tree_size` are in `merkle_nodes`.
pub async fn tree_size(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let next: i64 =
        sqlx::query_scalar("SELECT coalesce(max(idx) + 1, 0) FROM merkle_nodes WHERE level = 0")
            .fetch_one(conn)
            .await?;
    from_db("merkle tree size", next)
}

/// The hashes of `ids` that are stored (missing ones are absent from the map).
pub async fn load_nodes(
    conn: &mut PgConnection,
    ids: &[NodeId],
) -> Result<HashMap<NodeId, Hash>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let levels: Vec<i16> = ids.iter().map(|id| i16::from(id.level)).collect();
    let indexes: Vec<i64> = ids.iter().map(|id| id.index as i64).collect();
    let rows = sqlx::query(
        "SELECT n.level, n.idx, n.hash FROM merkle_nodes n \
         JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx) \
           ON n.level = w.level AND n.idx = w.idx",
    )
    .persistent(false)
    .bind(&levels)
    .bind(&indexes)
    .fetch_all(conn)
    .await?;
    let mut out = HashMap::with_capacity(rows.len());
    for row in rows {
        let level: i16 = row.try_get("level")?;
        let index: i64 = row.try_get("idx")?;
        let hash: Vec<u8> = row.try_get("hash")?;
        let hash: Hash = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("merkle node ({level}, {index})")))?;
        out.insert(NodeId::new(level as u8, index as u64), hash);
    }
    Ok(out)
}

/// Stores new nodes (each exactly once; a second writer of the same node is a bug the primary
/// key refuses).
pub async fn insert_nodes(
    conn: &mut PgConnection,
    nodes: &[(NodeId, Hash)],
) -> Result<(), StoreError> {
    if nodes.is_empty() {
        return Ok(());
    }
    let levels: Vec<i16> = nodes.iter().map(|(id, _)| i16::from(id.level)).collect();
    let indexes: Vec<i64> = nodes.iter().map(|(id, _)| id.index as i64).collect();
    let hashes: Vec<Vec<u8>> = nodes.iter().map(|(_, h)| h.to_vec()).collect();
    sqlx::query(
        "INSERT INTO merkle_nodes (level, idx, hash) \
         SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[])",
    )
    .bind(&levels)
    .bind(&indexes)
    .bind(&hashes)
    .execute(conn)
    .await?;
    Ok(())
}

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub tree_size: u64,
    pub root: Hash,
    pub origin: String,
    pub key_id: String,
    pub signed_at: DateTime<Utc>,
    /// The signed note, exactly as signed.
    pub note: String,
}

const CHECKPOINT_COLUMNS: &str = "tree_size, root_hash, origin, key_id, signed_at, note";

fn decode_checkpoint(row: &PgRow) -> Result<StoredCheckpoint, StoreError> {
    let size: i64 = row.try_get("tree_size")?;
    let root: Vec<u8> = row.try_get("root_hash")?;
    Ok(StoredCheckpoint {
        tree_size: from_db("checkpoint tree_size", size)?,
        root: root
            .try_into()
            .map_err(|_| StoreError::Corrupt(format!("checkpoint {size}: root_hash")))?,
        origin: row.try_get("origin")?,
        key_id: row.try_get("key_id")?,
        signed_at: row.try_get("signed_at")?,
        note: row.try_get("note")?,
    })
}

/// The checkpoint of the largest tree, if any.
pub async fn latest_checkpoint(
    conn: &mut PgConnection,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
    )))
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

/// The checkpoint of exactly `size` leaves, if one was made.
pub async fn checkpoint_at(
    conn: &mut PgConnection,
    size: u64,
) -> Result<Option<StoredCheckpoint>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size = $1"
    )))
    .bind(db(size)?)
    .fetch_optional(conn)
    .await?;
    row.as_ref().map(decode_checkpoint).transpose()
}

/// Up to `limit` checkpoints of more than `after` leaves, smallest first.
pub async fn checkpoints_after(
    conn: &mut PgConnection,
    after: u64,
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {CHECKPOINT_COLUMNS} FROM checkpoints WHERE tree_size > $1 \
         ORDER BY tree_size LIMIT $2"
    )))
    .bind(db(after)?)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.iter().map(decode_checkpoint).collect()
}

pub async fn insert_checkpoint(
    conn: &mut PgConnection,
    signed: &SignedCheckpoint,
    key_id: u32,
) -> Result<(), StoreError> {
    let c = &signed.checkpoint;
    sqlx::query(
        "INSERT INTO checkpoints (tree_size, root_hash, origin, key_id, signed_at, note) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(db(c.size)?)
    .bind(c.root.to_vec())
    .bind(&c.origin)
    .bind(format!("{key_id:08x}"))
    .bind(c.timestamp)
    .bind(&signed.note)
    .execute(conn)
    .await?;
    Ok(())
}

/// The position of the event with this id, if stored.
pub async fn position_of(
    conn: &mut PgConnection,
    event_id: uuid::Uuid,
) -> Result<Option<u64>, StoreError> {
    let position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(conn)
            .await?;
    position.map(|p| from_db("event position", p)).transpose()
}
