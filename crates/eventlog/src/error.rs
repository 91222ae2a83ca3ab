//! The errors of the event log, one enum per operation. Every variant says how a caller reacts.

use uuid::Uuid;

use crate::ExpectedVersion;

/// Why [`EventLog::connect`](crate::EventLog::connect) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL or the options are wrong. Do not retry: fix the configuration.
    #[error("invalid database configuration: {0}")]
    Invalid(#[source] sqlx::Error),
    /// The database could not be reached or refused the connection. Retry with backoff
    /// (at start-up the database may simply not be up yet).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
}

/// Why [`EventLog::migrate`](crate::EventLog::migrate) failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database could not be reached while migrating. Nothing half-applied stays behind
    /// (each migration runs in its own transaction). Retry with backoff.
    #[error("database unavailable while migrating: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The migrations cannot be applied: an applied migration of this crate differs from the
    /// embedded one (edited after release), a previous migration was left dirty, or the SQL
    /// failed. Do not retry: stop the service and have an operator look at the database.
    #[error("event log migrations refused: {0}")]
    Refused(#[source] sqlx::migrate::MigrateError),
}

/// Why [`EventLog::append`](crate::EventLog::append) (or `append_in`) wrote nothing.
///
/// Every error means that nothing of the call was written: an append is one transaction.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A dossier's current version is not the one the caller expected: another writer appended
    /// first, `NoStream` was given for an existing dossier, or `Exact` for a missing one
    /// (`actual` is 0 when the dossier has no events). Reload the dossier, decide again on the
    /// fresh state, and append with the new expected version. Never retry blindly.
    #[error("dossier {dossier_id}: expected version {expected:?}, but it is at version {actual}")]
    Conflict {
        dossier_id: String,
        expected: ExpectedVersion,
        actual: u32,
    },
    /// This event id is already stored for another request (another fingerprint or another
    /// dossier), or only part of a dossier's events of this call are stored. The client reused
    /// an id: report it to the client (a 409/422), do not retry with the same ids.
    #[error("event id {event_id} is already used by another request")]
    EventIdReused { event_id: Uuid },
    /// The input breaks a rule of the log (see the reason); refused before touching the
    /// database. Do not retry: it is a client or caller bug (a 400). `event_id` is nil when the
    /// problem is not one event's (e.g. a dossier with no events).
    #[error("invalid event {event_id}: {reason}")]
    InvalidEvent { event_id: Uuid, reason: String },
    /// An event's canonical form ([`crate::canonical_bytes`]) would be larger than
    /// [`crate::MAX_EVENT_BYTES`] (`bytes` counts the longest position and `recorded_at` it
    /// could get), so it could never be published. Checked before the sequencer; nothing of the
    /// call was written. Do not retry: the request's bounds let through something too large —
    /// report a client error (`event_too_large`) and fix the bound.
    #[error(
        "event {event_id} would take {bytes} bytes of canonical JSON; an event may take at most {max}"
    )]
    EventTooLarge {
        event_id: Uuid,
        bytes: usize,
        max: usize,
    },
    /// The database could not be reached, failed the statement, or returned something this
    /// crate cannot decode. Nothing was written, except that when the failure hit the COMMIT
    /// itself the outcome is unknown. Either way, retry the same call with the same event ids
    /// after a backoff: an append that did commit is then answered from the log as a duplicate.
    #[error("event log unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The database could not be reached or failed the query. Retry with backoff; reads have no
    /// side effects.
    #[error("event log unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A stored row does not have the shape this crate writes (e.g. a hash that is not 32
    /// bytes): the table was altered behind the log's back. Do not retry; alert an operator.
    #[error("stored event at position {position} is corrupt: {reason}")]
    Corrupt { position: i64, reason: String },
}

impl From<ReadError> for AppendError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Unavailable(e) => AppendError::Unavailable(e),
            ReadError::Corrupt { position, reason } => AppendError::Unavailable(
                sqlx::Error::Decode(format!("event at position {position}: {reason}").into()),
            ),
        }
    }
}

/// Whether an error is about reaching the database rather than about what was asked of it.
pub(crate) fn is_connection_error(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}
