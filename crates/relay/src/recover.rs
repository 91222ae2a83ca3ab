//! The two ways out of a divergence between the stream and the log (the operator commands
//! `relay-service recover-log` and `relay-service reset-stream`).
//!
//! When PostgreSQL is restored from a backup older than the stream, the stream holds events
//! the log lost, and the relay stops publishing ([`RelayError::Diverged`]). Those events were
//! acknowledged to their writers: [`recover_log`] puts them back into the log, verified, with
//! their original positions, times and hashes. When the operator decides that the stream is
//! the wrong one instead (it belongs to another database, or what it holds beyond the log must
//! be given up), [`reset_stream`] deletes it and creates it empty; the relay then republishes
//! the whole log into it.

use async_nats::jetstream::{self, message::StreamMessage, stream::Stream};
use eventlog::{EventLog, LogHead, Position, StoredEvent};

use crate::subject::{
    HEADER_BODY_OMITTED, HEADER_CHAIN_HASH, HEADER_EVENT_HASH, HEADER_FINGERPRINT, HEADER_MSG_ID,
    HEADER_POSITION,
};
use crate::{RelayConfig, RelayError, ensure_stream, stream::stream_missing};

/// Events read from the stream and verified per database transaction.
const RECOVERY_BATCH: usize = 500;

/// What [`recover_log`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The log's head before.
    pub log_head_before: i64,
    /// The position of the stream's last message (0 when the stream is empty or missing).
    pub stream_position: i64,
    /// How many events were verified (and, unless a dry run, appended): the positions
    /// `log_head_before + 1 ..= log_head_before + verified`.
    pub verified: i64,
    /// Whether they were appended (false for a dry run, or when there was nothing to do).
    pub appended: bool,
}

/// What [`reset_stream`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamReset {
    /// The deleted stream's message count (0 when it did not exist).
    pub deleted_messages: u64,
    /// The position of the deleted stream's last message (0 when it had none).
    pub deleted_position: i64,
    /// The log's head: the relay republishes positions 1 to this (and what follows).
    pub log_head: i64,
}

/// Why [`recover_log`] or [`reset_stream`] did nothing (or, for `recover_log` with
/// [`RecoveryError::Log`], stopped after some whole batches were appended: run it again).
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// A message of the stream cannot be put back into the log; nothing was appended (every
    /// message is verified before the first append). The reason says why: its body was altered
    /// (not the canonical bytes its `Dossier-Event-Hash` names), its hashes do not continue the
    /// log's chain (the stream belongs to another database, or the log holds other events at
    /// these positions), a header is missing (published by a relay older than the hash
    /// headers), or it is a placeholder whose body was never published (too large for NATS:
    /// that event is lost to the stream, and only a database backup can give it back).
    #[error("stream message for position {position} cannot be recovered: {reason}")]
    Refused { position: i64, reason: String },
    /// The stream or the log could not be read (NATS or PostgreSQL unavailable). Nothing more
    /// was appended; run the command again.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// Appending to the log failed: the log moved meanwhile (a writer appended: stop the
    /// writing services during the recovery), the database refused, or it is unavailable.
    /// Whole batches before it stay appended (each verified); run the command again.
    #[error("appending the recovered events: {0}")]
    Log(#[from] eventlog::RecoverError),
    /// `reset_stream` was not confirmed with the stream's name.
    #[error("refusing to delete stream {stream}: confirm with its name")]
    NotConfirmed { stream: String },
}

/// Puts back into the log the events the stream holds beyond the log's head, in order, after
/// verifying every one of them; with `dry_run`, only verifies.
///
/// For each position `p` from the log's head + 1 to the stream's last position, the message at
/// the stream sequence of `p` must carry `Dossier-Position: p`, its body must be the canonical
/// bytes ([`eventlog::canonical_bytes`]) of an event at position `p` with the id of its
/// `Nats-Msg-Id`, hashing to its `Dossier-Event-Hash`, and its `Dossier-Chain-Hash` must be the
/// chain from the log's head chain hash through the events before it. So only what the log
/// itself once hashed and chained gets in, and a stream from another database is refused at
/// its first message beyond the log. Every message is verified before the first append; then
/// the events are appended in batches of 500 through [`EventLog::append_recovered`] (one
/// transaction each, which checks everything again and refuses if the log moved).
///
/// Idempotent: run again, it finds the log's head where it stopped (nothing to do once the log
/// reaches the stream's end). A relay running meanwhile (reporting `Diverged`) resumes by itself
/// once the log holds the stream's last event.
pub async fn recover_log(
    log: &EventLog,
    js: &jetstream::Context,
    cfg: &RelayConfig,
    dry_run: bool,
) -> Result<Recovered, RecoveryError> {
    let head = log.head_state().await.map_err(RelayError::from)?;
    let Some(view) = StreamView::open(js, cfg).await? else {
        return Ok(Recovered {
            log_head_before: head.position,
            stream_position: 0,
            verified: 0,
            appended: false,
        });
    };
    let mut outcome = Recovered {
        log_head_before: head.position,
        stream_position: view.last_position,
        verified: 0,
        appended: false,
    };
    if view.last_position <= head.position {
        // Nothing beyond the log; but the log must hold the stream's last event, or there is
        // nothing recover-log can do (the stream belongs to another log: reset-stream).
        view.check_log_holds(log, view.last_position).await?;
        return Ok(outcome);
    }
    view.check_log_holds(log, head.position).await?;

    // Pass 1: verify everything, append nothing.
    let mut verified = head;
    while verified.position < view.last_position {
        let batch = view.verified_batch(&verified).await?;
        if let Some(last) = batch.last() {
            verified.position = last.position;
            verified.chain_hash = last.chain_hash;
        }
    }
    outcome.verified = view.last_position - head.position;
    if dry_run {
        return Ok(outcome);
    }
    // Pass 2: read again (verified again) and append, batch by batch.
    let mut at = head;
    while at.position < view.last_position {
        let batch = view.verified_batch(&at).await?;
        at = log.append_recovered(&at, &batch).await?;
        tracing::info!(
            stream = %cfg.stream,
            up_to = at.position,
            count = batch.len(),
            "recovered events from the stream into the log"
        );
    }
    outcome.appended = true;
    Ok(outcome)
}

/// Deletes the stream and creates it again, empty, with the relay's settings; the relay
/// (running, or when it starts) then publishes the whole log into it from position 1.
/// `confirm` must be the stream's name.
///
/// What the deleted stream held is gone, including any event beyond the log's head that no
/// backup holds: run [`recover_log`] first unless the stream is the wrong one. The stream's
/// consumers are deleted with it (see the README for what to run after).
pub async fn reset_stream(
    log: &EventLog,
    js: &jetstream::Context,
    cfg: &RelayConfig,
    confirm: &str,
) -> Result<StreamReset, RecoveryError> {
    cfg.validate()?;
    if confirm != cfg.stream {
        return Err(RecoveryError::NotConfirmed {
            stream: cfg.stream.clone(),
        });
    }
    let log_head = log.head().await.map_err(RelayError::from)?;
    let (deleted_messages, deleted_position) = match StreamView::open(js, cfg).await? {
        Some(view) => (view.messages, view.last_position),
        None => (0, 0),
    };
    match js.delete_stream(&cfg.stream).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(RelayError::nats("delete the stream", e).into()),
    }
    ensure_stream(js, cfg).await?;
    tracing::warn!(
        stream = %cfg.stream,
        deleted_messages,
        deleted_position,
        log_head,
        "stream deleted and created again, empty; the relay republishes the log into it"
    );
    Ok(StreamReset {
        deleted_messages,
        deleted_position,
        log_head,
    })
}

fn is_not_found(e: &async_nats::jetstream::context::DeleteStreamError) -> bool {
    use async_nats::jetstream::ErrorCode;
    use async_nats::jetstream::context::DeleteStreamErrorKind;
    matches!(e.kind(), DeleteStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// The stream as recovery reads it: sequence = position + `offset` (the relay's invariant).
struct StreamView {
    stream: Stream,
    messages: u64,
    first_sequence: u64,
    last_position: i64,
    /// `sequence - position`, the same for every message of a stream written only by relays.
    offset: i128,
}

impl StreamView {
    /// `None` when the stream is missing or empty.
    async fn open(
        js: &jetstream::Context,
        cfg: &RelayConfig,
    ) -> Result<Option<StreamView>, RelayError> {
        let mut stream = match js.get_stream(&cfg.stream).await {
            Ok(stream) => stream,
            Err(e) if stream_missing(&e.kind()) => return Ok(None),
            Err(e) => return Err(RelayError::nats("stream info", e)),
        };
        let state = stream
            .info()
            .await
            .map_err(|e| RelayError::nats("stream info", e))?
            .state
            .clone();
        if state.messages == 0 {
            return Ok(None);
        }
        let last = stream
            .get_raw_message(state.last_sequence)
            .await
            .map_err(|e| RelayError::nats("read the stream's last message", e))?;
        let last_position = position_of(&last).map_err(|reason| RelayError::ForeignMessage {
            sequence: last.sequence,
            reason,
        })?;
        Ok(Some(StreamView {
            stream,
            messages: state.messages,
            first_sequence: state.first_sequence,
            last_position,
            offset: i128::from(last.sequence) - i128::from(last_position),
        }))
    }

    /// The message holding `position`, which must say so.
    async fn message_at(&self, position: i64) -> Result<StreamMessage, RecoveryError> {
        let refused = |reason: String| RecoveryError::Refused { position, reason };
        let sequence = u64::try_from(i128::from(position) + self.offset)
            .ok()
            .filter(|s| *s >= self.first_sequence)
            .ok_or_else(|| refused("the stream no longer holds it".to_owned()))?;
        let message = self
            .stream
            .get_raw_message(sequence)
            .await
            .map_err(|e| RelayError::nats(format!("read stream sequence {sequence}"), e))?;
        match position_of(&message) {
            Ok(p) if p == position => Ok(message),
            Ok(p) => Err(refused(format!(
                "stream sequence {sequence} holds position {p}: the stream's sequences do not \
                 follow the log's positions"
            ))),
            Err(reason) => Err(refused(format!("stream sequence {sequence}: {reason}"))),
        }
    }

    /// The stream must hold, at `position` (the log's head, or the stream's end when the log
    /// is longer), the log's event at that position, when the stream still holds that
    /// position: otherwise the log has other events than the stream up to there.
    async fn check_log_holds(&self, log: &EventLog, position: i64) -> Result<(), RecoveryError> {
        if position == 0 || i128::from(position) + self.offset < i128::from(self.first_sequence) {
            // Nothing to compare; the chain hash of the first message beyond is checked anyway.
            return Ok(());
        }
        let message = self.message_at(position).await?;
        let logged = log
            .read_after(position - 1, 1)
            .await
            .map_err(RelayError::from)?;
        let same = logged.first().is_some_and(|e| {
            e.position == position
                && header(&message, HEADER_MSG_ID) == Some(e.event_id.to_string().as_str())
                && header(&message, HEADER_CHAIN_HASH).is_none_or(|h| h == hex(&e.chain_hash))
        });
        if same {
            Ok(())
        } else {
            Err(RecoveryError::Refused {
                position,
                reason: "the stream holds another event than the log at this position: the \
                         stream does not continue this log (if it is the wrong stream, \
                         reset-stream)"
                    .to_owned(),
            })
        }
    }

    /// Up to [`RECOVERY_BATCH`] events after `at`, each verified to continue the chain.
    async fn verified_batch(&self, at: &LogHead) -> Result<Vec<StoredEvent>, RecoveryError> {
        let end = self.last_position.min(at.position + RECOVERY_BATCH as i64);
        let mut chain = at.chain_hash;
        let mut batch = Vec::with_capacity((end - at.position).max(0) as usize);
        for position in at.position + 1..=end {
            let message = self.message_at(position).await?;
            let event = verify(&message, position, &chain)?;
            chain = event.chain_hash;
            batch.push(event);
        }
        Ok(batch)
    }
}

/// The event a message carries, verified against its headers and the chain before it.
fn verify(
    message: &StreamMessage,
    position: i64,
    previous_chain: &[u8; 32],
) -> Result<StoredEvent, RecoveryError> {
    let refused = |reason: String| RecoveryError::Refused { position, reason };
    if let Some(value) = header(message, HEADER_BODY_OMITTED) {
        return Err(refused(format!(
            "it is a placeholder ({HEADER_BODY_OMITTED}: {value}): the event was too large for \
             NATS and never published; only a database backup holding it can give it back"
        )));
    }
    let hash_header = |name: &str| -> Result<[u8; 32], RecoveryError> {
        let value = header(message, name).ok_or_else(|| {
            refused(format!(
                "no {name} header (published by an older relay): it cannot be verified"
            ))
        })?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(value, &mut out)
            .map_err(|_| refused(format!("{name} is not 64 hex digits")))?;
        Ok(out)
    };
    let event_hash = hash_header(HEADER_EVENT_HASH)?;
    let chain_hash = hash_header(HEADER_CHAIN_HASH)?;
    let fingerprint = hash_header(HEADER_FINGERPRINT)?;
    let event = eventlog::parse_canonical(&message.payload, fingerprint, previous_chain)
        .map_err(|reason| refused(format!("body: {reason}")))?;
    if event.event_hash != event_hash {
        return Err(refused(format!(
            "the body's hash is not its {HEADER_EVENT_HASH}: the body was altered"
        )));
    }
    if event.chain_hash != chain_hash {
        return Err(refused(format!(
            "its {HEADER_CHAIN_HASH} does not continue the log's chain: the stream does not \
             continue this log"
        )));
    }
    if event.position != position {
        return Err(refused(format!(
            "the body says position {}",
            event.position
        )));
    }
    if header(message, HEADER_MSG_ID) != Some(event.event_id.to_string().as_str()) {
        return Err(refused(format!(
            "the body's event id is not its {HEADER_MSG_ID}"
        )));
    }
    Ok(event)
}

fn header<'a>(message: &'a StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get_last(name).map(|v| v.as_str())
}

fn position_of(message: &StreamMessage) -> Result<i64, String> {
    header(message, HEADER_POSITION)
        .ok_or_else(|| format!("no {HEADER_POSITION} header"))?
        .parse::<Position>()
        .and_then(|p| Position::of_event(p.get()))
        .map(Position::as_i64)
        .map_err(|e| format!("{HEADER_POSITION}: {e}"))
}

fn hex(bytes: &[u8; 32]) -> String {
    hex::encode(bytes)
}
