//! What can go wrong, and how to react.

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};

/// An error of the relay or of [`ensure_stream`](crate::ensure_stream).
///
/// [`Relay::run`](crate::Relay::run) handles the transient ones itself (see
/// [`RelayError::is_transient`]): it logs them, backs off and resyncs. It returns only the
/// permanent ones, which need a person.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The [`RelayConfig`](crate::RelayConfig) is invalid (the message says which field and
    /// why). Permanent: fix the configuration and restart.
    #[error("invalid relay configuration: {0}")]
    Config(String),

    /// JetStream refused to create or update the stream: the subjects overlap another stream,
    /// more replicas than the cluster has, a change the server does not allow (storage type,
    /// cancelling deny-delete)… Permanent when the server answered with an error (fix the
    /// configuration or the conflicting stream); transient when it timed out or JetStream was
    /// unavailable (retry later, as `run` does).
    #[error("cannot create or update stream {stream}: {source}")]
    StreamSetup {
        stream: String,
        #[source]
        source: CreateStreamError,
    },

    /// A JetStream request or publication failed: disconnected, timed out, no stream, or the
    /// server answered "wrong last sequence" because the stream is not where the relay thought
    /// (another relay published, or NATS lost data). Transient: back off, resync from the stream,
    /// go on. Never lose the place: the stream itself says where to resume.
    #[error("NATS: {context}: {message}")]
    Nats { context: String, message: String },

    /// Even the placeholder of an event too large for the server's `max_payload` does not fit
    /// (an event larger than `max_payload` is published as a placeholder, see the crate
    /// documentation; this needs a `max_payload` of a few hundred bytes, which
    /// [`RelayError::MaxPayloadTooSmall`] refuses first). Permanent: raise `max_payload`.
    #[error("event at position {position} does not fit in a NATS message: {message}")]
    TooLarge { position: i64, message: String },

    /// The NATS server's `max_payload` is smaller than the largest message the relay may have
    /// to publish: [`eventlog::MAX_EVENT_BYTES`] plus the largest headers. Permanent: raise
    /// `max_payload` in the NATS server's configuration (1 MiB, the default, is enough). Found
    /// at the first connection, [`Relay::run`](crate::Relay::run) returns it; found after a
    /// reconnection, it reports the relay stalled and checks again after each backoff.
    #[error(
        "the NATS server's max_payload is {max_payload} bytes; the relay needs at least {needed} \
         (eventlog::MAX_EVENT_BYTES = {} plus {} bytes of headers)",
        eventlog::MAX_EVENT_BYTES,
        needed - eventlog::MAX_EVENT_BYTES
    )]
    MaxPayloadTooSmall { max_payload: usize, needed: usize },

    /// The stream answered that an event was already stored (`Nats-Msg-Id` deduplication) while
    /// the relay expected to append it: the relay's view was stale. Transient: resync. If it
    /// persists, the stream lost messages whose ids are still in its deduplication window (a
    /// purge or delete, which the relay's stream denies); it clears when the window passes.
    #[error(
        "event at position {position} (id {event_id}) is already in the stream at sequence {sequence}"
    )]
    Duplicate {
        position: i64,
        event_id: String,
        sequence: u64,
    },

    /// Reading the event log failed. `Unavailable` (PostgreSQL down, query failed) is transient:
    /// back off and retry, as `run` does. `Corrupt` (a row the log did not write) is permanent:
    /// alert an operator.
    #[error("event log: {0}")]
    EventLog(#[from] eventlog::ReadError),

    /// The event log did not answer within the configuration's `db_timeout` (a silent
    /// database: a partition or a frozen host, where the connection looks healthy). Transient:
    /// back off and retry, as `run` does; the status shows `Retrying`, then `Stalled`.
    #[error("event log: no answer to {what} within {after:?}")]
    EventLogTimeout {
        what: &'static str,
        after: std::time::Duration,
    },

    /// A message in the relay's subjects lacks a valid `Dossier-Position` header: something else
    /// publishes into `{prefix}.>`, so the stream cannot say where the relay stands.
    /// Permanent: stop that publisher, or give the relay its own stream and prefix.
    #[error("message at stream sequence {sequence} was not published by the relay: {reason}")]
    ForeignMessage { sequence: u64, reason: String },

    /// The stream's last event is not the log's event at that position (or the log does not
    /// have that position): the stream was filled from another database, or the database was
    /// restored from a backup older than the stream. Publishing would skip or mix events, so
    /// the relay publishes nothing: [`Relay::run`](crate::Relay::run) does not return it but
    /// reports `Diverged` and checks again after each backoff. An operator chooses: put the
    /// events the stream holds beyond the log back into the log ([`crate::recover_log`],
    /// `relay-service recover-log`), or start the stream again from the log
    /// ([`crate::reset_stream`], `relay-service reset-stream`), or point the relay at the right
    /// stream.
    #[error(
        "stream and event log diverge at position {position}: stream has event {stream_event_id}, log has {}",
        log_event_id.as_deref().unwrap_or("nothing")
    )]
    Diverged {
        position: i64,
        stream_event_id: String,
        log_event_id: Option<String>,
    },
}

impl RelayError {
    /// Whether retrying after a backoff can succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            RelayError::Config(_)
            | RelayError::TooLarge { .. }
            | RelayError::ForeignMessage { .. }
            | RelayError::MaxPayloadTooSmall { .. }
            | RelayError::Diverged { .. } => false,
            RelayError::StreamSetup { source, .. } => match source.kind() {
                CreateStreamErrorKind::TimedOut
                | CreateStreamErrorKind::JetStreamUnavailable
                | CreateStreamErrorKind::Response
                | CreateStreamErrorKind::ResponseParse
                | CreateStreamErrorKind::NotFound => true,
                // 503: "JetStream system temporarily unavailable" (e.g. during an election).
                CreateStreamErrorKind::JetStream(error) => error.code() == 503,
                CreateStreamErrorKind::EmptyStreamName
                | CreateStreamErrorKind::InvalidStreamName
                | CreateStreamErrorKind::DomainAndExternalSet => false,
            },
            RelayError::Nats { .. }
            | RelayError::Duplicate { .. }
            | RelayError::EventLogTimeout { .. } => true,
            RelayError::EventLog(e) => matches!(e, eventlog::ReadError::Unavailable(_)),
        }
    }

    pub(crate) fn nats(context: impl Into<String>, error: impl std::fmt::Display) -> Self {
        RelayError::Nats {
            context: context.into(),
            message: error.to_string(),
        }
    }
}
