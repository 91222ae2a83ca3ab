//! `audit export`: a filtered slice of the log as NDJSON, each event with its canonical bytes
//! and an inclusion proof against one signed checkpoint; and the offline verification of such
//! a file (`audit verify --export`), which needs no database, only the log's public key.
//!
//! # Lines
//!
//! 1. `{"type":"checkpoint","origin":…,"tree_size":…,"root_hash":"<hex>","key_name":…,
//!    "key_id":"<8 hex>","signed_at":"<RFC 3339>","note":"<the signed note>","filter":{…}}`
//! 2. per event, in position order: `{"type":"event","position":…,"event_id":…,
//!    "dossier_id":…,"event_type":…,"canonical":"<canonical_bytes as a JSON string>",
//!    "event_hash":"<hex>","proof":["<hex>",…]}` — `proof` leaf to root, for leaf index
//!    `position - 1` in the checkpoint's tree.
//! 3. `{"type":"end","events":<count>}`.
//!
//! Only the signed note and each line's `canonical` are trusted: everything else on a line is a
//! convenience that verification checks against them.

use std::io::{BufRead, Write};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use merkle::{Hash, VerifierKey};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::proofs::{self, ProveError};
use crate::store::{self, StoreError, StoredCheckpoint};

/// Which events to export; every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dossier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_position: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_position: Option<u64>,
    /// `recorded_at >= recorded_from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_from: Option<DateTime<Utc>>,
    /// `recorded_at < recorded_to`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_to: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Checkpoint {
        origin: String,
        tree_size: u64,
        root_hash: String,
        key_name: String,
        key_id: String,
        signed_at: String,
        note: String,
        filter: ExportFilter,
    },
    Event {
        position: u64,
        event_id: String,
        dossier_id: String,
        event_type: String,
        canonical: String,
        event_hash: String,
        proof: Vec<String>,
    },
    End {
        events: u64,
    },
}

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prove(#[from] ProveError),
    #[error("no checkpoint to prove against{}", .0.map(|s| format!(" of size {s}")).unwrap_or_default())]
    NoCheckpoint(Option<u64>),
    #[error(
        "position {0}: the stored event's hash differs from the checkpointed leaf; run `audit verify`"
    )]
    Tampered(u64),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

/// What was exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub tree_size: u64,
    pub events: u64,
}

/// How many events are proven with one read of nodes.
const PROOF_BATCH: usize = 500;

/// Writes the events matching `filter` (up to the checkpoint's size) with proofs against the
/// checkpoint of `tree_size` (the latest when `None`).
pub async fn export(
    pool: &PgPool,
    filter: &ExportFilter,
    tree_size: Option<u64>,
    out: &mut impl Write,
) -> Result<Exported, ExportError> {
    let mut conn = pool.acquire().await.map_err(StoreError::from)?;
    let checkpoint = match tree_size {
        Some(size) => store::checkpoint_at(&mut conn, size).await?,
        None => store::latest_checkpoint(&mut conn).await?,
    }
    .ok_or(ExportError::NoCheckpoint(tree_size))?;
    write_line(out, &header(&checkpoint, filter))?;

    let mut sql = format!(
        "SELECT {} FROM events WHERE position <= $1",
        store::EVENT_COLUMNS
    );
    let mut n = 1;
    let mut next = |column: &str, op: &str| {
        n += 1;
        format!(" AND {column} {op} ${n}")
    };
    if filter.dossier.is_some() {
        sql += &next("dossier_id", "=");
    }
    if filter.agency.is_some() {
        sql += &next("agency", "=");
    }
    if filter.event_type.is_some() {
        sql += &next("event_type", "=");
    }
    if filter.from_position.is_some() {
        sql += &next("position", ">=");
    }
    if filter.to_position.is_some() {
        sql += &next("position", "<=");
    }
    if filter.recorded_from.is_some() {
        sql += &next("recorded_at", ">=");
    }
    if filter.recorded_to.is_some() {
        sql += &next("recorded_at", "<");
    }
    sql += " ORDER BY position";
    // Only placeholders are spliced in; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store::db(checkpoint.tree_size)?);
    if let Some(v) = &filter.dossier {
        query = query.bind(v);
    }
    if let Some(v) = &filter.agency {
        query = query.bind(v);
    }
    if let Some(v) = &filter.event_type {
        query = query.bind(v);
    }
    if let Some(v) = filter.from_position {
        query = query.bind(store::db(v)?);
    }
    if let Some(v) = filter.to_position {
        query = query.bind(store::db(v)?);
    }
    if let Some(v) = filter.recorded_from {
        query = query.bind(v);
    }
    if let Some(v) = filter.recorded_to {
        query = query.bind(v);
    }

    let mut proof_conn = pool.acquire().await.map_err(StoreError::from)?;
    let mut rows = query.fetch(&mut *conn);
    let mut batch = Vec::with_capacity(PROOF_BATCH);
    let mut count = 0u64;
    while let Some(row) = rows.try_next().await.map_err(StoreError::from)? {
        let event = store::decode_event(&row).map_err(StoreError::Corrupt)?;
        batch.push(event);
        if batch.len() == PROOF_BATCH {
            count += write_batch(&mut proof_conn, &mut batch, checkpoint.tree_size, out).await?;
        }
    }
    count += write_batch(&mut proof_conn, &mut batch, checkpoint.tree_size, out).await?;
    write_line(out, &Line::End { events: count })?;
    out.flush()?;
    Ok(Exported {
        tree_size: checkpoint.tree_size,
        events: count,
    })
}

fn header(c: &StoredCheckpoint, filter: &ExportFilter) -> Line {
    Line::Checkpoint {
        origin: c.origin.clone(),
        tree_size: c.tree_size,
        root_hash: hex::encode(c.root),
        key_name: c.origin.clone(),
        key_id: c.key_id.clone(),
        signed_at: merkle::checkpoint::format_timestamp(&c.signed_at),
        note: c.note.clone(),
        filter: filter.clone(),
    }
}

async fn write_batch(
    conn: &mut sqlx::PgConnection,
    batch: &mut Vec<eventlog::StoredEvent>,
    tree_size: u64,
    out: &mut impl Write,
) -> Result<u64, ExportError> {
    let positions = batch
        .iter()
        .map(|e| e.place().map(|(p, _)| p.get()))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let proofs = proofs::inclusions(conn, &positions, tree_size).await?;
    for (event, proof) in batch.iter().zip(proofs) {
        let canonical = eventlog::canonical_bytes(event);
        // Export only what the checkpoint proves: an event altered since would carry a proof
        // that fails, and the exporter should say so rather than hand it to an auditor.
        if merkle::leaf_hash(&canonical) != proof.leaf_hash {
            return Err(ExportError::Tampered(proof.position));
        }
        let canonical = String::from_utf8(canonical).map_err(|_| {
            StoreError::Corrupt(format!(
                "position {}: canonical form is not UTF-8",
                proof.position
            ))
        })?;
        write_line(
            out,
            &Line::Event {
                position: proof.position,
                event_id: event.event_id.hyphenated().to_string(),
                dossier_id: event.dossier_id.clone(),
                event_type: event.event_type.clone(),
                canonical,
                event_hash: hex::encode(proof.leaf_hash),
                proof: proof.hashes.iter().map(hex::encode).collect(),
            },
        )?;
    }
    let n = batch.len() as u64;
    batch.clear();
    Ok(n)
}

fn write_line(out: &mut impl Write, line: &Line) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// The first line of an export file that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}{}: {problem}", .position.map(|p| format!(" (position {p})")).unwrap_or_default())]
pub struct ExportFinding {
    /// 1-based line number.
    pub line: usize,
    pub position: Option<u64>,
    pub problem: String,
}

/// What an export file proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    pub origin: String,
    pub tree_size: u64,
    pub root: Hash,
    pub signed_at: DateTime<Utc>,
    pub events: u64,
}

fn hash_hex(s: &str) -> Option<Hash> {
    hex::decode(s).ok()?.try_into().ok()
}

/// Verifies an export file offline: the checkpoint's signature with `key`, then every event's
/// hash from its canonical bytes and its inclusion proof, positions increasing, the end count.
pub fn verify_export(
    input: impl BufRead,
    key: &VerifierKey,
) -> Result<Result<ExportReport, ExportFinding>, std::io::Error> {
    let fail = |line: usize, position: Option<u64>, problem: String| {
        Ok(Err(ExportFinding {
            line,
            position,
            problem,
        }))
    };
    let mut checkpoint = None;
    let mut last_position = 0u64;
    let mut events = 0u64;
    let mut ended = false;
    let mut lines = 0;
    for (i, text) in input.lines().enumerate() {
        let number = i + 1;
        lines = number;
        let text = text?;
        if ended {
            return fail(number, None, "a line after the end line".into());
        }
        let line: Line = match serde_json::from_str(&text) {
            Ok(line) => line,
            Err(e) => return fail(number, None, format!("not an export line: {e}")),
        };
        match (line, &checkpoint) {
            (
                Line::Checkpoint {
                    origin,
                    tree_size,
                    root_hash,
                    note,
                    ..
                },
                None,
            ) => {
                let signed = match key.verify(&note) {
                    Ok(c) => c,
                    Err(e) => return fail(number, None, format!("checkpoint: {e}")),
                };
                if signed.origin != origin
                    || signed.size != tree_size
                    || hash_hex(&root_hash) != Some(signed.root)
                {
                    return fail(
                        number,
                        None,
                        "the header's origin, tree_size or root_hash differ from its signed note"
                            .into(),
                    );
                }
                checkpoint = Some(signed);
            }
            (_, None) => return fail(number, None, "the first line must be the checkpoint".into()),
            (Line::Checkpoint { .. }, Some(_)) => {
                return fail(number, None, "a second checkpoint line".into());
            }
            (
                Line::Event {
                    position,
                    event_id,
                    dossier_id,
                    event_type,
                    canonical,
                    event_hash,
                    proof,
                },
                Some(c),
            ) => {
                let at = Some(position);
                if position <= last_position {
                    return fail(number, at, "positions must increase".into());
                }
                last_position = position;
                let leaf = merkle::leaf_hash(canonical.as_bytes());
                if hash_hex(&event_hash) != Some(leaf) {
                    return fail(
                        number,
                        at,
                        "event_hash is not the hash of the canonical bytes".into(),
                    );
                }
                let content: serde_json::Value = match serde_json::from_str(&canonical) {
                    Ok(v) => v,
                    Err(e) => return fail(number, at, format!("canonical is not JSON: {e}")),
                };
                if content["position"].as_u64() != Some(position)
                    || content["event_id"].as_str() != Some(event_id.as_str())
                    || content["dossier_id"].as_str() != Some(dossier_id.as_str())
                    || content["event_type"].as_str() != Some(event_type.as_str())
                {
                    return fail(
                        number,
                        at,
                        "position, event_id, dossier_id or event_type differ from the canonical content"
                            .into(),
                    );
                }
                let Some(proof) = proof
                    .iter()
                    .map(|h| hash_hex(h))
                    .collect::<Option<Vec<_>>>()
                else {
                    return fail(number, at, "a proof hash is not 32 bytes of hex".into());
                };
                if position == 0 {
                    return fail(number, at, "positions start at 1".into());
                }
                if let Err(e) =
                    merkle::verify_inclusion(position - 1, c.size, &leaf, &proof, &c.root)
                {
                    return fail(number, at, format!("inclusion proof: {e}"));
                }
                events += 1;
            }
            (Line::End { events: stated }, Some(_)) => {
                if stated != events {
                    return fail(
                        number,
                        None,
                        format!("the end line counts {stated} events, the file has {events}"),
                    );
                }
                ended = true;
            }
        }
    }
    let Some(c) = checkpoint else {
        return fail(1, None, "empty file".into());
    };
    if !ended {
        return fail(
            lines + 1,
            None,
            "the end line is missing (the file is truncated)".into(),
        );
    }
    Ok(Ok(ExportReport {
        origin: c.origin,
        tree_size: c.size,
        root: c.root,
        signed_at: c.timestamp,
        events,
    }))
}
