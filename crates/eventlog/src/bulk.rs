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
//!    `recorded_at`, and the size check.
//! 2. [`EventLog::append_checked`](crate::EventLog::append_checked): `BEGIN`, the sequencing
//!    section of `append` (the `log_head` row lock, event hashes computed in parallel for a
//!    large batch, the chain, one `INSERT … SELECT FROM UNNEST`, the wake-up) and `COMMIT`.
//!
//! Nothing is weaker than `append`: positions stay gapless and in commit order (the same
//! sequencing section), and the unique constraints on `event_id` and `(dossier_id, version)`
//! still settle every race. When another writer stored one of the ids or one of the versions
//! first (the caller's lookup is stale), the insert fails, nothing is written and the answer is
//! [`CheckedAppendError::Raced`]: the caller checks its batch again against the log, where it
//! now finds the other writer's events.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgPool;

use crate::append::{AttemptError, Race, prepare, sequence_and_insert};
use crate::hash::Canonical;
use crate::limits::MAX_EVENT_BYTES;
use crate::{AppendError, DossierAppend, ExpectedVersion, StoredEvent};

/// Events ready for [`EventLog::append_checked`](crate::EventLog::append_checked): validated,
/// their rows built and their canonical bytes prepared, everything but what the sequencer gives.
#[derive(Debug, Clone)]
pub struct CheckedAppend {
    rows: Vec<StoredEvent>,
    canonical: Vec<Canonical>,
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
        let canonical: Vec<Canonical> = rows.iter().map(Canonical::of).collect();
        for (row, canonical) in rows.iter().zip(&canonical) {
            let bytes = canonical.max_len();
            if bytes > MAX_EVENT_BYTES {
                return Err(AppendError::EventTooLarge {
                    event_id: row.event_id,
                    bytes,
                    max: MAX_EVENT_BYTES,
                });
            }
        }
        Ok(CheckedAppend { rows, canonical })
    }

    /// How many events it appends.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// See [`EventLog::append_checked`](crate::EventLog::append_checked).
pub(crate) async fn append_checked(
    pool: &PgPool,
    checked: CheckedAppend,
) -> Result<Vec<StoredEvent>, CheckedAppendError> {
    let CheckedAppend {
        mut rows,
        canonical,
    } = checked;
    if rows.is_empty() {
        return Ok(rows);
    }
    let mut tx = pool
        .begin()
        .await
        .map_err(CheckedAppendError::Unavailable)?;
    match sequence_and_insert(&mut tx, &mut rows, &canonical).await {
        Ok(()) => {
            tx.commit().await.map_err(CheckedAppendError::Unavailable)?;
            Ok(rows)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(match error {
                AttemptError::Raced(Race::EventId, _) => CheckedAppendError::Raced("event id"),
                AttemptError::Raced(Race::DossierVersion, _) => {
                    CheckedAppendError::Raced("dossier version")
                }
                AttemptError::Failed(AppendError::Unavailable(e)) => {
                    CheckedAppendError::Unavailable(e)
                }
                // The sequencing section fails only with the database.
                AttemptError::Failed(other) => CheckedAppendError::Unavailable(
                    sqlx::Error::Protocol(format!("unexpected append failure: {other}")),
                ),
            })
        }
    }
}
