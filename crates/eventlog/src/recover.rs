//! Recovery: putting back into the log events it once held and lost (a database restored from
//! a backup older than the NATS stream), with their original positions, times and hashes.
//!
//! This is not a write path for new events: [`EventLog::append_recovered`] takes events that
//! are already complete ([`StoredEvent`], every field set) and checks that they continue the
//! log exactly — the next positions, each `event_hash` recomputed from the canonical bytes, the
//! chain recomputed from the log's head, dossier versions continuing each dossier with its
//! routing, `recorded_at` never decreasing — before inserting them in one transaction that holds
//! the sequencer (the `log_head` row), like an append. The table's constraints and triggers
//! apply as to any insert. The only caller is the relay's `recover-log` command, which reads the
//! events from the stream ([`parse_canonical`]).

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use sqlx::Row;
use uuid::Uuid;

use crate::hash::{chain_hash, event_hash};
use crate::{EventLog, ReadError, Routing, StoredEvent, canonical_bytes};

/// Where the log ends: its head position, the chain hash at that position (32 zero bytes for
/// an empty log) and the `recorded_at` given to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHead {
    pub position: i64,
    pub chain_hash: [u8; 32],
    pub recorded_at: DateTime<Utc>,
}

/// Why [`EventLog::append_recovered`] wrote nothing. Every error means nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// The log's head is not the one the caller read before (an append or another recovery
    /// ran meanwhile). Read the head again and decide again; never retry blindly.
    #[error("the log moved: expected its head at position {expected}, found {actual}")]
    HeadMoved { expected: i64, actual: i64 },
    /// An event does not continue the log exactly (the reason says how: position, hash, chain,
    /// version, routing, time). Do not retry: the events are not the log's lost ones.
    #[error("event at position {position} does not continue the log: {reason}")]
    Refused { position: i64, reason: String },
    /// The database refused an insert (a unique event id or dossier version already used by
    /// another event, a check constraint). Do not retry: the events are not the log's lost ones.
    #[error("the database refused the recovered events: {0}")]
    Constraint(#[source] sqlx::Error),
    /// The database could not be reached or failed the statement. Nothing was written (unless
    /// the COMMIT itself failed: read the head again). Retry after a backoff.
    #[error("event log unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
}

/// The body of a canonical event, as [`canonical_bytes`] writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanonicalBody {
    agency: String,
    dossier_id: String,
    event_id: Uuid,
    event_type: String,
    level: String,
    occurred_at: DateTime<Utc>,
    payload: serde_json::Value,
    position: i64,
    recorded_at: DateTime<Utc>,
    sector: String,
    version: i32,
}

/// The event whose canonical bytes are `bytes`, with the given fingerprint (which the canonical
/// form does not carry), its `event_hash` computed from `bytes` and its `chain_hash` from
/// `previous_chain`. Refused (with the reason) unless `bytes` are exactly the canonical bytes
/// of the event they describe: any other spelling (whitespace, key order, escapes, timestamp
/// precision) would hash differently from what the log hashed.
pub fn parse_canonical(
    bytes: &[u8],
    fingerprint: [u8; 32],
    previous_chain: &[u8; 32],
) -> Result<StoredEvent, String> {
    let body: CanonicalBody =
        serde_json::from_slice(bytes).map_err(|e| format!("not a canonical event: {e}"))?;
    let hash = event_hash(bytes);
    let event = StoredEvent {
        position: body.position,
        event_id: body.event_id,
        dossier_id: body.dossier_id,
        version: body.version,
        event_type: body.event_type,
        occurred_at: body.occurred_at,
        recorded_at: body.recorded_at,
        routing: Routing {
            level: body.level,
            agency: body.agency,
            sector: body.sector,
        },
        payload: body.payload,
        fingerprint,
        event_hash: hash,
        chain_hash: chain_hash(previous_chain, &hash),
    };
    if canonical_bytes(&event) != bytes {
        return Err("the body is not in canonical form".to_owned());
    }
    Ok(event)
}

const HEAD_FOR_UPDATE: &str = "SELECT position, chain_hash, recorded_at FROM log_head FOR UPDATE";

const INSERT_RECOVERED: &str = "\
INSERT INTO events (position, event_id, dossier_id, version, event_type, occurred_at,
                    recorded_at, level, agency, sector, payload, fingerprint, event_hash,
                    chain_hash)
SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::text[], $4::int[], $5::text[],
                     $6::timestamptz[], $7::timestamptz[], $8::text[], $9::text[], $10::text[],
                     $11::jsonb[], $12::bytea[], $13::bytea[], $14::bytea[])";

const MOVE_HEAD: &str = "\
WITH head AS (
    UPDATE log_head SET position = $1, chain_hash = $2, recorded_at = greatest(recorded_at, $3)
    RETURNING 1
)
SELECT pg_notify('eventlog', $1::text)";

impl EventLog {
    /// The log's head: position, chain hash and `recorded_at` of the last event.
    pub async fn head_state(&self) -> Result<LogHead, ReadError> {
        let row = sqlx::query("SELECT position, chain_hash, recorded_at FROM log_head")
            .fetch_one(self.pool())
            .await
            .map_err(ReadError::Unavailable)?;
        // Read as in `decode_event`: the position first, so that a corrupt head names it.
        let position: i64 = row.try_get("position").map_err(ReadError::Unavailable)?;
        decode_head(&row).map_err(|reason| ReadError::Corrupt { position, reason })
    }

    /// Appends `events`, complete with their positions, times and hashes, as the continuation
    /// of the log whose head the caller read as `expected`; returns the new head.
    ///
    /// In one transaction holding the sequencer: the head must still be `expected`
    /// ([`RecoverError::HeadMoved`]); the events must be at `expected.position + 1, + 2, …`,
    /// each `event_hash` the hash of its canonical bytes, each `chain_hash` the chain from the
    /// head's, `recorded_at` not before the head's nor the previous event's, timestamps in
    /// microseconds, each dossier's versions continuing from its stored events (the first
    /// version 1 for a new dossier) with the routing of its stored events
    /// ([`RecoverError::Refused`] naming the position). Then the rows are inserted (the table's
    /// constraints apply: an event id already stored is refused), the head moves to the last
    /// event, and listeners are notified. An empty `events` writes nothing.
    pub async fn append_recovered(
        &self,
        expected: &LogHead,
        events: &[StoredEvent],
    ) -> Result<LogHead, RecoverError> {
        let Some(last) = events.last() else {
            return Ok(*expected);
        };
        let mut tx = self
            .pool()
            .begin()
            .await
            .map_err(RecoverError::Unavailable)?;
        let row = sqlx::query(HEAD_FOR_UPDATE)
            .fetch_one(&mut *tx)
            .await
            .map_err(RecoverError::Unavailable)?;
        let head = decode_head(&row).map_err(|reason| RecoverError::Refused {
            position: expected.position,
            reason: format!("log_head is corrupt: {reason}"),
        })?;
        if head != *expected {
            return Err(RecoverError::HeadMoved {
                expected: expected.position,
                actual: head.position,
            });
        }
        let ids: Vec<&str> = events.iter().map(|e| e.dossier_id.as_str()).collect();
        let rows = sqlx::query(LAST_VERSIONS)
            .persistent(false)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(RecoverError::Unavailable)?;
        let mut dossiers: HashMap<String, (i32, Routing)> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let get = |name: &str| row.try_get::<String, _>(name);
            let decoded = (|| {
                Ok::<_, sqlx::Error>((
                    get("dossier_id")?,
                    row.try_get::<i32, _>("version")?,
                    Routing {
                        level: get("level")?,
                        agency: get("agency")?,
                        sector: get("sector")?,
                    },
                ))
            })();
            let (id, version, routing) = decoded.map_err(RecoverError::Unavailable)?;
            dossiers.insert(id, (version, routing));
        }
        check_continuation(&head, &mut dossiers, events)?;

        sqlx::query(INSERT_RECOVERED)
            .bind(events.iter().map(|e| e.position).collect::<Vec<i64>>())
            .bind(events.iter().map(|e| e.event_id).collect::<Vec<Uuid>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.dossier_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.version).collect::<Vec<i32>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.routing.level.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.routing.agency.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                events
                    .iter()
                    .map(|e| e.routing.sector.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| &e.payload).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| &e.fingerprint[..])
                    .collect::<Vec<_>>(),
            )
            .bind(events.iter().map(|e| &e.event_hash[..]).collect::<Vec<_>>())
            .bind(events.iter().map(|e| &e.chain_hash[..]).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if e.as_database_error().is_some() {
                    RecoverError::Constraint(e)
                } else {
                    RecoverError::Unavailable(e)
                }
            })?;
        sqlx::query(MOVE_HEAD)
            .bind(last.position)
            .bind(&last.chain_hash[..])
            .bind(last.recorded_at)
            .execute(&mut *tx)
            .await
            .map_err(RecoverError::Unavailable)?;
        tx.commit().await.map_err(RecoverError::Unavailable)?;
        Ok(LogHead {
            position: last.position,
            chain_hash: last.chain_hash,
            recorded_at: head.recorded_at.max(last.recorded_at),
        })
    }
}

/// The last event of each dossier (as in `append`).
const LAST_VERSIONS: &str = "\
SELECT d.dossier_id, e.version, e.level, e.agency, e.sector
FROM UNNEST($1::text[]) AS d(dossier_id)
CROSS JOIN LATERAL (
    SELECT version, level, agency, sector FROM events
    WHERE events.dossier_id = d.dossier_id
    ORDER BY version DESC LIMIT 1
) AS e";

fn decode_head(row: &sqlx::postgres::PgRow) -> Result<LogHead, String> {
    let position: i64 = row.try_get("position").map_err(|e| e.to_string())?;
    crate::Position::try_from(position).map_err(|e| format!("log head: {e}"))?;
    let chain: Vec<u8> = row.try_get("chain_hash").map_err(|e| e.to_string())?;
    let recorded_at: DateTime<Utc> = row.try_get("recorded_at").map_err(|e| e.to_string())?;
    let chain_hash = <[u8; 32]>::try_from(chain.as_slice())
        .map_err(|_| format!("chain_hash has {} bytes, not 32", chain.len()))?;
    Ok(LogHead {
        position,
        chain_hash,
        recorded_at,
    })
}

/// Every rule of [`EventLog::append_recovered`] but the head and the table's constraints.
fn check_continuation(
    head: &LogHead,
    dossiers: &mut HashMap<String, (i32, Routing)>,
    events: &[StoredEvent],
) -> Result<(), RecoverError> {
    let mut position = head.position;
    let mut chain = head.chain_hash;
    let mut recorded_at = head.recorded_at;
    for e in events {
        position += 1;
        let refuse = |reason: String| RecoverError::Refused {
            position: e.position,
            reason,
        };
        if e.position != position {
            return Err(refuse(format!("expected position {position}")));
        }
        if e.recorded_at < recorded_at {
            return Err(refuse(format!(
                "recorded_at {} is before the previous event's {recorded_at}",
                e.recorded_at
            )));
        }
        if e.recorded_at.trunc_subsecs(6) != e.recorded_at
            || e.occurred_at.trunc_subsecs(6) != e.occurred_at
        {
            return Err(refuse("a timestamp has more than microseconds".to_owned()));
        }
        if event_hash(&canonical_bytes(e)) != e.event_hash {
            return Err(refuse(
                "event_hash is not the hash of the event's canonical bytes".to_owned(),
            ));
        }
        chain = chain_hash(&chain, &e.event_hash);
        if chain != e.chain_hash {
            return Err(refuse(
                "chain_hash does not continue the log's chain".to_owned(),
            ));
        }
        match dossiers.get_mut(&e.dossier_id) {
            Some((version, routing)) => {
                if e.version != *version + 1 {
                    return Err(refuse(format!(
                        "dossier {} is at version {version}, the event has version {}",
                        e.dossier_id, e.version
                    )));
                }
                if *routing != e.routing {
                    return Err(refuse(format!(
                        "dossier {}'s events are routed {routing:?}, the event {:?}",
                        e.dossier_id, e.routing
                    )));
                }
                *version = e.version;
            }
            None => {
                if e.version != 1 {
                    return Err(refuse(format!(
                        "dossier {} has no event, the event has version {}",
                        e.dossier_id, e.version
                    )));
                }
                dossiers.insert(e.dossier_id.clone(), (1, e.routing.clone()));
            }
        }
        recorded_at = e.recorded_at;
    }
    Ok(())
}
