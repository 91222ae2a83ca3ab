//! The baselines: the rows the service wrote, written again by plain PostgreSQL inserts into
//! tables with the columns of `events` and nothing else (no trigger, no sequencer, no lookup).
//!
//! The rows are read back from `events`, outside the timing, so that the baselines write exactly
//! the same values (payload JSON included) as the service did.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{AssertSqlSafe, PgPool, Row};
use uuid::Uuid;

use eventlog::copy::{BinaryRows, FieldTooLarge};

use crate::Timing;

/// A: single-row inserts.
pub const LIVE_TABLE: &str = "raw_live";
/// B0: batched inserts, no constraint or index.
pub const BULK_TABLE: &str = "raw_bulk";
/// B1: batched inserts, with the primary key and unique indexes `events` has.
pub const BULK_INDEXED_TABLE: &str = "raw_bulk_indexed";
/// B1c's table: as [`BULK_INDEXED_TABLE`], loaded by `COPY`.
pub const BULK_COPY_TABLE: &str = "raw_bulk_copy";
/// B1b's table: as [`BULK_INDEXED_TABLE`], loaded by binary `COPY`.
pub const BULK_BINARY_TABLE: &str = "raw_bulk_binary";

const COLUMNS: &str = "\
    position    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    dossier_id  text        NOT NULL,
    version     integer     NOT NULL,
    event_type  text        NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    level       text        NOT NULL,
    agency      text        NOT NULL,
    sector      text        NOT NULL,
    payload     jsonb       NOT NULL,
    fingerprint bytea       NOT NULL,
    event_hash  bytea       NOT NULL,
    chain_hash  bytea       NOT NULL";

const NAMES: &str = "position, event_id, dossier_id, version, event_type, occurred_at, \
    recorded_at, level, agency, sector, payload, fingerprint, event_hash, chain_hash";

/// Creates the five baseline tables (logged: same durability as `events`).
pub async fn create_tables(pool: &PgPool) -> Result<()> {
    for (table, extra) in [
        (LIVE_TABLE, ""),
        (BULK_TABLE, ""),
        (
            BULK_INDEXED_TABLE,
            ",\n    PRIMARY KEY (position),\n    UNIQUE (event_id),\n    UNIQUE (dossier_id, version)",
        ),
        (
            BULK_COPY_TABLE,
            ",\n    PRIMARY KEY (position),\n    UNIQUE (event_id),\n    UNIQUE (dossier_id, version)",
        ),
        (
            BULK_BINARY_TABLE,
            ",\n    PRIMARY KEY (position),\n    UNIQUE (event_id),\n    UNIQUE (dossier_id, version)",
        ),
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {table} (\n{COLUMNS}{extra}\n)"
        )))
        .execute(pool)
        .await
        .with_context(|| format!("creating {table}"))?;
    }
    Ok(())
}

/// One row of `events`, as the service wrote it.
#[derive(Debug, Clone)]
pub struct RawRow {
    position: i64,
    event_id: Uuid,
    dossier_id: String,
    version: i32,
    event_type: String,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    level: String,
    agency: String,
    sector: String,
    payload: Value,
    fingerprint: Vec<u8>,
    event_hash: Vec<u8>,
    chain_hash: Vec<u8>,
}

fn decode(row: &sqlx::postgres::PgRow) -> Result<RawRow, sqlx::Error> {
    Ok(RawRow {
        position: row.try_get("position")?,
        event_id: row.try_get("event_id")?,
        dossier_id: row.try_get("dossier_id")?,
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        occurred_at: row.try_get("occurred_at")?,
        recorded_at: row.try_get("recorded_at")?,
        level: row.try_get("level")?,
        agency: row.try_get("agency")?,
        sector: row.try_get("sector")?,
        payload: row.try_get("payload")?,
        fingerprint: row.try_get("fingerprint")?,
        event_hash: row.try_get("event_hash")?,
        chain_hash: row.try_get("chain_hash")?,
    })
}

/// The events of the receives whose dossier ids start with `prefix` (scenario A's
/// [`crate::live::DOSSIER_PREFIX`], A1's [`crate::live::LONE_PREFIX`]).
pub async fn receive_rows(pool: &PgPool, prefix: &str) -> Result<Vec<RawRow>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {NAMES} FROM events WHERE dossier_id LIKE '{prefix}%' ORDER BY position"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
}

/// Every event with a position in `after+1 ..= until` (scenario E's), in position order.
pub async fn rows_between(pool: &PgPool, after: i64, until: i64) -> Result<Vec<RawRow>> {
    let count = usize::try_from(until - after).unwrap_or(0);
    rows_after(pool, after, until, count).await
}

/// The events with positions in `after+1 ..= until`, `limit` at a time.
async fn rows_after(pool: &PgPool, after: i64, until: i64, limit: usize) -> Result<Vec<RawRow>> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {NAMES} FROM events WHERE position > $1 AND position <= $2 \
         ORDER BY position LIMIT $3"
    )))
    .bind(after)
    .bind(until)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(decode).collect::<Result<_, _>>()?)
}

/// A0: every row with its own autocommit `INSERT … VALUES`, from `clients` tasks sharing the
/// pool (as intake's calls share its pool).
pub async fn single_rows(
    pool: &PgPool,
    table: &str,
    rows: Vec<RawRow>,
    clients: usize,
) -> Result<Timing> {
    let sql: &'static str = Box::leak(
        format!(
            "INSERT INTO {table} ({NAMES}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        )
        .into_boxed_str(),
    );
    let count = rows.len();
    let rows = Arc::new(rows);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (pool, rows, next) = (pool.clone(), rows.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(r) = rows.get(i) else {
                    return Ok::<_, sqlx::Error>(latencies);
                };
                let sent = Instant::now();
                sqlx::query(sql)
                    .bind(r.position)
                    .bind(r.event_id)
                    .bind(&r.dossier_id)
                    .bind(r.version)
                    .bind(&r.event_type)
                    .bind(r.occurred_at)
                    .bind(r.recorded_at)
                    .bind(&r.level)
                    .bind(&r.agency)
                    .bind(&r.sector)
                    .bind(&r.payload)
                    .bind(&r.fingerprint)
                    .bind(&r.event_hash)
                    .bind(&r.chain_hash)
                    .execute(&pool)
                    .await?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await?.context("single-row INSERT")?);
    }
    Ok(Timing::new(count as u64, start.elapsed(), latencies))
}

/// B0/B1: the events at positions `after+1 ..= until`, `batch` rows per autocommit
/// `INSERT … SELECT FROM UNNEST`, one statement at a time. Only the inserts are timed (the
/// reads of `events` that feed them are not).
pub async fn batched(
    pool: &PgPool,
    table: &str,
    after: i64,
    until: i64,
    batch: usize,
) -> Result<Timing> {
    let sql = format!(
        "INSERT INTO {table} ({NAMES}) \
         SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::text[], \
                              $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], \
                              $10::text[], $11::jsonb[], $12::bytea[], $13::bytea[], $14::bytea[])"
    );
    let mut conn = pool.acquire().await?;
    let mut inserting = Duration::ZERO;
    let mut count = 0u64;
    let mut cursor = after;
    while cursor < until {
        let rows = rows_after(pool, cursor, until, batch).await?;
        let Some(last) = rows.last() else { break };
        cursor = last.position;
        let t = Instant::now();
        sqlx::query(AssertSqlSafe(sql.clone()))
            .bind(rows.iter().map(|r| r.position).collect::<Vec<i64>>())
            .bind(rows.iter().map(|r| r.event_id).collect::<Vec<Uuid>>())
            .bind(
                rows.iter()
                    .map(|r| r.dossier_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.version).collect::<Vec<i32>>())
            .bind(
                rows.iter()
                    .map(|r| r.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.recorded_at).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.level.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.agency.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.sector.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| &r.payload).collect::<Vec<&Value>>())
            .bind(
                rows.iter()
                    .map(|r| &r.fingerprint[..])
                    .collect::<Vec<&[u8]>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| &r.event_hash[..])
                    .collect::<Vec<&[u8]>>(),
            )
            .bind(
                rows.iter()
                    .map(|r| &r.chain_hash[..])
                    .collect::<Vec<&[u8]>>(),
            )
            .execute(&mut *conn)
            .await
            .with_context(|| format!("INSERT INTO {table}"))?;
        inserting += t.elapsed();
        count += rows.len() as u64;
    }
    Ok(Timing::new(count, inserting, Vec::new()))
}

/// Average payload size (bytes of its JSON text) in `events` after position `after` and in
/// the bulk baseline, to show they wrote the same thing.
#[derive(Debug, Clone, Copy)]
pub struct PayloadSizes {
    pub events: f64,
    pub raw: f64,
}

pub async fn payload_sizes(pool: &PgPool, after: i64) -> Result<PayloadSizes> {
    let avg = |sql: String| async move {
        sqlx::query(AssertSqlSafe(sql))
            .bind(after)
            .fetch_one(pool)
            .await
            .and_then(|row| row.try_get::<f64, _>(0))
    };
    Ok(PayloadSizes {
        events: avg(
            "SELECT avg(octet_length(payload::text))::float8 FROM events WHERE position > $1"
                .to_owned(),
        )
        .await?,
        raw: avg(format!(
            "SELECT avg(octet_length(payload::text))::float8 FROM {BULK_TABLE} WHERE position > $1"
        ))
        .await?,
    })
}

/// The format of [`copied`]'s `COPY`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// B1c: the text format (tab-separated, escaped).
    Text,
    /// B1b: the binary format (`FORMAT binary`), encoded with the encoder the import itself
    /// uses ([`eventlog::copy::BinaryRows`]): no escaping, every value in its send form,
    /// `jsonb` as its version byte and the JSON text.
    Binary,
}

/// B1b / B1c: as [`batched`] into `table`, but each batch written by one `COPY … FROM STDIN`
/// in `format` instead of an `INSERT … SELECT FROM UNNEST`: what `COPY` would gain the
/// import's insert, on the same indexes. Only the `COPY`s are timed (encoding the rows
/// included).
pub async fn copied(
    pool: &PgPool,
    table: &str,
    after: i64,
    until: i64,
    batch: usize,
    format: CopyFormat,
) -> Result<Timing> {
    let statement = match format {
        CopyFormat::Text => format!("COPY {table} ({NAMES}) FROM STDIN"),
        CopyFormat::Binary => format!("COPY {table} ({NAMES}) FROM STDIN (FORMAT binary)"),
    };
    let mut conn = pool.acquire().await?;
    let mut copying = Duration::ZERO;
    let mut count = 0u64;
    let mut cursor = after;
    while cursor < until {
        let rows = rows_after(pool, cursor, until, batch).await?;
        let Some(last) = rows.last() else { break };
        cursor = last.position;
        let t = Instant::now();
        let data = match format {
            CopyFormat::Text => {
                let mut text = String::with_capacity(rows.len() * 512);
                for r in &rows {
                    copy_row(&mut text, r);
                }
                text.into_bytes()
            }
            CopyFormat::Binary => {
                let mut data = BinaryRows::with_capacity(rows.len() * 512);
                let mut json = Vec::with_capacity(512);
                for r in &rows {
                    json.clear();
                    serde_json::to_writer(&mut json, &r.payload)?;
                    binary_row(&mut data, r, &json)?;
                }
                data.finish()
            }
        };
        let mut copy = conn
            .copy_in_raw(&statement)
            .await
            .with_context(|| format!("COPY {table}"))?;
        copy.send(data)
            .await
            .with_context(|| format!("COPY {table}"))?;
        copy.finish()
            .await
            .with_context(|| format!("COPY {table}"))?;
        copying += t.elapsed();
        count += rows.len() as u64;
    }
    Ok(Timing::new(count, copying, Vec::new()))
}

/// One row in `COPY`'s text format: tab-separated, `\`, tab, newline and carriage return
/// escaped with a backslash; `bytea` as `\x` hex (its backslash escaped).
fn copy_row(out: &mut String, r: &RawRow) {
    use std::fmt::Write as _;
    fn text(out: &mut String, s: &str) {
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    fn bytes(out: &mut String, b: &[u8]) {
        out.push_str("\\\\x");
        for byte in b {
            let _ = write!(out, "{byte:02x}");
        }
    }
    let time = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    let _ = write!(out, "{}\t{}\t", r.position, r.event_id);
    text(out, &r.dossier_id);
    let _ = write!(out, "\t{}\t", r.version);
    text(out, &r.event_type);
    let _ = write!(
        out,
        "\t{}\t{}\t",
        time(&r.occurred_at),
        time(&r.recorded_at)
    );
    text(out, &r.level);
    out.push('\t');
    text(out, &r.agency);
    out.push('\t');
    text(out, &r.sector);
    out.push('\t');
    text(out, &r.payload.to_string());
    out.push('\t');
    bytes(out, &r.fingerprint);
    out.push('\t');
    bytes(out, &r.event_hash);
    out.push('\t');
    bytes(out, &r.chain_hash);
    out.push('\n');
}

/// One row of [`copied`] in the binary format, in the column order of `NAMES`.
fn binary_row(out: &mut BinaryRows, r: &RawRow, payload: &[u8]) -> Result<(), FieldTooLarge> {
    out.row(14);
    out.bigint(r.position);
    out.uuid(&r.event_id);
    out.text(&r.dossier_id)?;
    out.int(r.version);
    out.text(&r.event_type)?;
    out.timestamptz(&r.occurred_at);
    out.timestamptz(&r.recorded_at);
    out.text(&r.level)?;
    out.text(&r.agency)?;
    out.text(&r.sector)?;
    out.jsonb(payload)?;
    out.bytea(&r.fingerprint)?;
    out.bytea(&r.event_hash)?;
    out.bytea(&r.chain_hash)
}
