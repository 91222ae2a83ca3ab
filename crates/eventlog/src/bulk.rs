//! Checked appends: the bulk import's path, for events the caller has already looked up.
//!
//! [`EventLog::append`](crate::EventLog::append) looks up the call's event ids (idempotency)
//! and its dossiers' versions before it takes the sequencer. A bulk import has done both itself
//! (it must, to decide its events against the dossiers' states), so doing them again inside the
//! append costs a second lookup of thousands of ids per batch. A checked append skips them:
//!
//! 1. [`CheckedAppend::new`] (no database, no lock: the caller runs it while the previous batch
//!    is being written): the same validation as `append`, the stored rows with versions counted
//!    from each dossier's expected version, the canonical bytes but for position and
//!    `recorded_at`, the size check, and each row's binary `COPY` fields but the four the
//!    sequencer gives (position, `recorded_at`, event hash, chain hash).
//! 2. [`EventLog::append_checked`](crate::EventLog::append_checked): `BEGIN`, then the
//!    sequencing section — [`SEQUENCE`] (the `log_head` row lock, the positions and
//!    `recorded_at`), the event hashes (computed in parallel for a large batch) and the chain,
//!    one `COPY events … FROM STDIN (FORMAT binary)` of the whole batch ([`COPY_EVENTS`]: the
//!    prepared fields with the four filled in), [`ADVANCE_HEAD`] (the head's chain hash and the
//!    wake-up) — and `COMMIT`.
//!
//! `COPY` rather than `append`'s `INSERT … SELECT FROM UNNEST(…)`: the binary format sends each
//! value in its send form (no escaping, no text to parse, no arrays to build and unnest), so the
//! server's share of the section is the index maintenance and little else (BENCHMARKS.md,
//! "Binary COPY for the import"). `COPY` checks every constraint and fires the same triggers as
//! `INSERT`; its unique violations name the same constraints.
//!
//! Nothing is weaker than `append`: positions stay gapless and in commit order (the same
//! sequencing section, in one transaction), and the unique constraints on `event_id` and
//! `(dossier_id, version)` still settle every race. When another writer stored one of the ids or
//! one of the versions first (the caller's lookup is stale), the `COPY` fails, nothing is
//! written and the answer is [`CheckedAppendError::Raced`]: the caller checks its batch again
//! against the log, where it now finds the other writer's events.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;
use sqlx::{PgConnection, Row};

use crate::append::{
    HASH_THREADS, PARALLEL_HASH_MIN, Race, SEQUENCE, event_hashes, prepare, race_of,
};
use crate::copy::BinaryRows;
use crate::hash::{Canonical, chain_hash, format_timestamp};
use crate::limits::MAX_EVENT_BYTES;
use crate::{AppendError, DossierAppend, ExpectedVersion, StoredEvent};

/// The sequencing section's insert: the prepared fields of each row first, the four the
/// sequencer gives last (see [`CheckedAppend`]).
pub const COPY_EVENTS: &str = "\
COPY events (event_id, dossier_id, version, event_type, occurred_at, level, agency, sector,
             payload, fingerprint, position, recorded_at, event_hash, chain_hash)
FROM STDIN (FORMAT binary)";

/// Fields per row of [`COPY_EVENTS`].
const COPY_FIELDS: i16 = 14;
/// What the four sequencer-given fields of a row take: 2 bytes of field count, then a bigint,
/// a timestamptz and two 32-byte hashes, each with its 4-byte length.
const COPY_TAIL_BYTES: usize = 2 + (4 + 8) + (4 + 8) + 2 * (4 + 32);

/// The sequencing section's last statement, after the `COPY`: the head's new chain hash and the
/// followers' wake-up (`pg_notify`, delivered at commit), in one round trip.
pub const ADVANCE_HEAD: &str = "\
WITH head AS (
    UPDATE log_head SET chain_hash = $1 RETURNING 1
)
SELECT pg_notify('eventlog', $2)";

/// Events ready for [`EventLog::append_checked`](crate::EventLog::append_checked): validated,
/// their rows built and their canonical bytes and `COPY` fields prepared, everything but what
/// the sequencer gives.
#[derive(Debug, Clone)]
pub struct CheckedAppend {
    rows: Vec<StoredEvent>,
    canonical: Vec<Canonical>,
    /// Each row's first ten [`COPY_EVENTS`] fields, one row after another.
    fields: Vec<u8>,
    /// Where each row's fields end in `fields`.
    ends: Vec<usize>,
}

/// Why a checked append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum CheckedAppendError {
    /// Another writer stored one of the event ids (`event id`) or one of the dossier versions
    /// (`dossier version`) first: the caller's lookup is out of date. Check the batch again
    /// against the log.
    #[error("another writer stored an {0} of this append first")]
    Raced(&'static str),
    /// As [`AppendError::Unavailable`]: nothing was written, but when the failure hit the
    /// COMMIT the outcome is unknown; checking the batch again tells.
    #[error("event log unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
}

impl CheckedAppend {
    /// Builds the rows of `batch` — each dossier's events numbered from its expected version
    /// (`NoStream`: 1), stored with the routing given — and checks them as `append` does
    /// ([`AppendError::InvalidEvent`], [`AppendError::EventTooLarge`]). No database: the caller
    /// vouches that no event id is stored yet and that each expected version is current; the
    /// unique constraints catch it when that is no longer true at insert time.
    pub fn new(batch: Vec<DossierAppend>) -> Result<CheckedAppend, AppendError> {
        let prepared = prepare(batch)?;
        let count = prepared.event_ids.len();
        let mut rows = Vec::with_capacity(count);
        for append in prepared.appends {
            let base = match append.expected_version {
                ExpectedVersion::NoStream => 0,
                ExpectedVersion::Exact(v) => i64::from(v),
            };
            if base + append.events.len() as i64 > i64::from(i32::MAX) {
                return Err(AppendError::InvalidEvent {
                    event_id: append.events[0].event_id,
                    reason: "the dossier's version would overflow".into(),
                });
            }
            for (i, event) in append.events.into_iter().enumerate() {
                rows.push(StoredEvent {
                    position: 0,
                    event_id: event.event_id,
                    dossier_id: append.dossier_id.clone(),
                    // In range: checked above.
                    version: (base + 1 + i as i64) as i32,
                    event_type: event.event_type,
                    occurred_at: event.occurred_at,
                    recorded_at: DateTime::<Utc>::UNIX_EPOCH,
                    routing: append.routing.clone(),
                    payload: event.payload,
                    fingerprint: event.fingerprint,
                    event_hash: [0; 32],
                    chain_hash: [0; 32],
                });
            }
        }
        // Each row's canonical bytes and COPY fields depend on that row alone: a large batch is
        // encoded on several threads (as its event hashes are), each chunk into a fragment of
        // its own, and the fragments are joined in order.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(HASH_THREADS);
        let encoded: Vec<Encoded> = if count < PARALLEL_HASH_MIN || threads < 2 {
            vec![encode(&rows)?]
        } else {
            let chunk = count.div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = rows
                    .chunks(chunk)
                    .map(|part| scope.spawn(move || encode(part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| match h.join() {
                        Ok(encoded) => encoded,
                        // Encoding cannot panic short of a bug; re-raise it where it belongs.
                        Err(panic) => std::panic::resume_unwind(panic),
                    })
                    .collect::<Result<Vec<Encoded>, AppendError>>()
            })?
        };
        let mut canonical = Vec::with_capacity(count);
        let mut fields = Vec::with_capacity(encoded.iter().map(|e| e.fields.len()).sum());
        let mut ends = Vec::with_capacity(count);
        for part in encoded {
            let offset = fields.len();
            canonical.extend(part.canonical);
            ends.extend(part.ends.into_iter().map(|end| offset + end));
            fields.extend_from_slice(&part.fields);
        }
        Ok(CheckedAppend {
            rows,
            canonical,
            fields,
            ends,
        })
    }

    /// How many events it appends.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// Consecutive rows, prepared: their canonical forms and their COPY fields.
struct Encoded {
    canonical: Vec<Canonical>,
    fields: Vec<u8>,
    /// Where each row's fields end in `fields`.
    ends: Vec<usize>,
}

/// Prepares `rows` ([`Encoded`]), checking each against [`MAX_EVENT_BYTES`].
fn encode(rows: &[StoredEvent]) -> Result<Encoded, AppendError> {
    let canonical: Vec<Canonical> = rows.iter().map(Canonical::of).collect();
    let mut fields =
        BinaryRows::fragment_with_capacity(canonical.iter().map(Canonical::max_len).sum());
    let mut ends = Vec::with_capacity(rows.len());
    for (row, canonical) in rows.iter().zip(&canonical) {
        let bytes = canonical.max_len();
        if bytes > MAX_EVENT_BYTES {
            return Err(AppendError::EventTooLarge {
                event_id: row.event_id,
                bytes,
                max: MAX_EVENT_BYTES,
            });
        }
        // Every field is part of the canonical bytes, which are within MAX_EVENT_BYTES: far
        // below what a COPY field holds.
        copy_fields(&mut fields, row, canonical).map_err(|e| AppendError::EventTooLarge {
            event_id: row.event_id,
            bytes: e.bytes,
            max: MAX_EVENT_BYTES,
        })?;
        ends.push(fields.as_bytes().len());
    }
    Ok(Encoded {
        canonical,
        fields: fields.into_fragment(),
        ends,
    })
}

/// The first ten fields of a row of [`COPY_EVENTS`], in its column order. The payload is sent as
/// its canonical JSON (the same value, keys sorted): `jsonb` keeps no key order.
fn copy_fields(
    out: &mut BinaryRows,
    row: &StoredEvent,
    canonical: &Canonical,
) -> Result<(), crate::copy::FieldTooLarge> {
    out.uuid(&row.event_id);
    out.text(&row.dossier_id)?;
    out.int(row.version);
    out.text(&row.event_type)?;
    out.timestamptz(&row.occurred_at);
    out.text(&row.routing.level)?;
    out.text(&row.routing.agency)?;
    out.text(&row.routing.sector)?;
    out.jsonb(canonical.payload())?;
    out.fixed(&row.fingerprint);
    Ok(())
}

/// See [`EventLog::append_checked`](crate::EventLog::append_checked).
pub(crate) async fn append_checked(
    pool: &PgPool,
    checked: CheckedAppend,
) -> Result<Vec<StoredEvent>, CheckedAppendError> {
    let CheckedAppend {
        mut rows,
        canonical,
        fields,
        ends,
    } = checked;
    if rows.is_empty() {
        return Ok(rows);
    }
    let mut tx = pool
        .begin()
        .await
        .map_err(CheckedAppendError::Unavailable)?;
    match sequence_and_copy(&mut tx, &mut rows, &canonical, &fields, &ends).await {
        Ok(()) => {
            tx.commit().await.map_err(CheckedAppendError::Unavailable)?;
            Ok(rows)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(error)
        }
    }
}

/// The sequencing section of a checked append but for the COMMIT: takes the head row, fills
/// in positions, `recorded_at` and hashes, copies the rows, advances the head's chain hash and
/// queues the wake-up.
async fn sequence_and_copy(
    conn: &mut PgConnection,
    rows: &mut [StoredEvent],
    canonical: &[Canonical],
    fields: &[u8],
    ends: &[usize],
) -> Result<(), CheckedAppendError> {
    let unavailable = CheckedAppendError::Unavailable;
    let count = rows.len();
    let head = sqlx::query(SEQUENCE)
        .bind(count as i64)
        .fetch_one(&mut *conn)
        .await
        .map_err(unavailable)?;
    let head_position: i64 = head.try_get("position").map_err(unavailable)?;
    let previous: Vec<u8> = head.try_get("chain_hash").map_err(unavailable)?;
    let recorded_at: DateTime<Utc> = head.try_get("recorded_at").map_err(unavailable)?;
    let mut chain = <[u8; 32]>::try_from(previous.as_slice()).map_err(|_| {
        unavailable(sqlx::Error::Decode(
            "log_head.chain_hash is not 32 bytes".into(),
        ))
    })?;

    let recorded_text = format_timestamp(&recorded_at);
    let first = head_position - count as i64 + 1;
    let event_hashes = event_hashes(canonical, first, &recorded_text);
    let mut data = BinaryRows::with_capacity(fields.len() + count * COPY_TAIL_BYTES);
    let mut start = 0;
    for (((stored, &end), hash), position) in rows
        .iter_mut()
        .zip(ends)
        .zip(event_hashes)
        .zip(first..=head_position)
    {
        chain = chain_hash(&chain, &hash);
        stored.position = position;
        stored.recorded_at = recorded_at;
        stored.event_hash = hash;
        stored.chain_hash = chain;
        data.row(COPY_FIELDS);
        data.fragment(&fields[start..end]);
        data.bigint(position);
        data.timestamptz(&recorded_at);
        data.fixed(&hash);
        data.fixed(&chain);
        start = end;
    }

    let mut copy = conn.copy_in_raw(COPY_EVENTS).await.map_err(unavailable)?;
    copy.send(data.finish()).await.map_err(unavailable)?;
    if let Err(error) = copy.finish().await {
        return Err(match race_of(&error) {
            Some(Race::EventId) => CheckedAppendError::Raced("event id"),
            Some(Race::DossierVersion) => CheckedAppendError::Raced("dossier version"),
            None => CheckedAppendError::Unavailable(error),
        });
    }
    sqlx::query(ADVANCE_HEAD)
        .bind(&chain[..])
        .bind(head_position.to_string())
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    Ok(())
}
