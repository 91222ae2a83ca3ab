//! The relay: publishes the event log to NATS JetStream, in log order, each event exactly once
//! in the stream.
//!
//! # The log is the outbox
//!
//! PostgreSQL is the source of truth. The event log assigns every event a gapless global
//! position 1, 2, 3… in commit order, in the same transaction that stores it. The event rows are
//! therefore their own transactional outbox: there is no separate "to publish" table and no
//! "published" flag. The relay follows the log by position and publishes to JetStream.
//!
//! # The stream is the cursor
//!
//! The relay keeps no cursor of its own. What the stream durably holds is the truth: every
//! message carries its log position in a `Dossier-Position` header, so the stream's last message
//! says how far publication got. A local cursor could be ahead of the stream (NATS lost
//! acknowledged data in a crash, or came back empty) or behind it (another relay instance
//! published); reading the stream is right in both cases.
//!
//! # Protocol
//!
//! **Resync.** Check that the server's `max_payload` holds [`eventlog::MAX_EVENT_BYTES`] plus
//! the largest headers ([`max_headers_len`]; [`RelayError::MaxPayloadTooSmall`] otherwise).
//! [`ensure_stream`] (creating the stream if NATS lost it). Read the stream's state:
//! its last sequence `S`. If the stream has no message, the cursor `c` is 0. Otherwise fetch
//! the message at `S`; `c` is its `Dossier-Position`, and the log's event at position `c` must
//! have the message's `Nats-Msg-Id` as event id (else [`RelayError::Diverged`]: the stream
//! belongs to another database, or the database went back in time). The relay then publishes
//! nothing, reports `Diverged` in its [`RelayStatus`] and resyncs again after each backoff (or
//! when the log changes), until the log agrees ([`recover_log`]) or the stream was reset
//! ([`reset_stream`]).
//!
//! **Publish.** `log.read_after(c, max_batch)` returns the events at positions `c+1 … c+n`.
//! The `i`-th of them (from 1) is published with `Nats-Expected-Last-Sequence: S+i-1` and
//! `Nats-Msg-Id: <event id>`. The whole batch is sent first, then the acks are awaited in order
//! (pipelining: one round trip per batch, not per event). Each ack must be a new message at
//! sequence `S+i`. If they all are, `c += n`, `S += n`, and the relay reads the next batch.
//! An event whose message would exceed the server's `max_payload` is published, in its place,
//! as a placeholder ([`placeholder_headers`], [`placeholder_body`]): the order and the
//! invariant below hold for placeholders as for events, and one event never stops publication.
//!
//! **Fail.** If a send or an ack fails, times out, or the server answers "wrong last
//! sequence" (another relay appended, or NATS lost data and its last sequence went back) or
//! "duplicate", the relay stops the batch, backs off (exponential with jitter, up to
//! `max_backoff`) and resyncs. Events the stream stored are then skipped; the others are
//! published again, in order.
//!
//! **Idle.** When the log has nothing after `c`, the relay waits for the log's change
//! notification (`LISTEN`), or `poll_interval` at most, and reads again. If meanwhile the NATS
//! client reconnected, the relay resyncs first: the server may have come back without its data,
//! and the stream is then refilled at once rather than at the next event.
//!
//! **NATS down.** Every request and every publication is bounded by `publish_timeout`, and
//! nothing is sent while the client is disconnected (the client would queue it and send it
//! late). So the relay fails fast, backs off, and resyncs when NATS is back; it never holds a
//! position of its own that could be lost or be wrong.
//!
//! # Why exactly once, in order
//!
//! Invariant: the stream's messages, in sequence order, carry the log positions `1, 2, …, k`,
//! each once. It holds for an empty stream; NATS losing data only cuts a suffix, which keeps it.
//!
//! - The server stores a message only if the stream's last sequence is the one the message
//!   expects, atomically with the append. Under the invariant, a stream written only by relays
//!   maps sequence to position by a constant offset fixed when the stream was created (0 when
//!   the relay created it), so "the stream ends at `S+i-1`" means "the stream holds exactly
//!   positions `1 … c+i-1`". Appending position `c+i` then keeps the invariant, whoever
//!   appended the earlier ones. In any other state the message is refused and nothing changes.
//! - Hence no duplicate (position `c+i` is only ever stored right after `c+i-1`, once), no gap
//!   (a message after a refused one expects a sequence that is not there, so it is refused
//!   too), and no reordering.
//! - Liveness: the cursor only moves over acknowledged messages, and after any failure it is
//!   read back from the stream, so every event is eventually published once NATS is reachable.
//! - `Nats-Msg-Id` (the event id) within `duplicate_window` is a second, independent guard: the
//!   server drops a message whose id it already stored. The relay treats that answer as a stale
//!   view and resyncs.
//! - Per-dossier order follows: a dossier's events are appended in version order, so their
//!   positions, hence their stream sequences, increase with the version.
//!
//! A consumer can verify each message: the payload is exactly
//! [`eventlog::canonical_bytes`] of the event, the bytes whose hash is the event's `event_hash`.
//!
//! # Several relays
//!
//! Any number of relay instances may run at once on the same log and stream, with the same
//! [`RelayConfig`]. The expected-last-sequence rule lets exactly one win each append; the others
//! get "wrong last sequence" (or "duplicate"), back off and resync, which skips what the winner
//! stored. No leader election is needed; running two gives fail-over without coordination, at
//! the cost of some wasted publications.
//!
//! # Observing
//!
//! [`Relay::status`] is a watch of a [`RelayStatus`]: the log's head, the published position,
//! the state ([`RelayState`]: `Running`, `Retrying`, `Stalled` once failures last
//! [`RelayConfig::stall_after`] without progress, `Diverged`), the placeholders published and
//! the failures; health checks and metrics read it. [`Relay::progress`] and [`Relay::failures`]
//! are watches of the published position and of the failure count alone; [`stream_position`]
//! reads the stream's position without a relay (lag = `log.head() - position`). Logs: `info` at
//! each resync with the position and sequence, `warn` at each failure with the error and the
//! delay before the next attempt and at each placeholder with its position, `error` when the
//! relay stalls or diverges, `debug` per batch; never one line per event above `debug`.
//!
//! # Messages
//!
//! - subject: [`subject_for`]: `{prefix}.{level}.{agency}.{sector}.{event_type}`, e.g.
//!   `dossier.district.000_00_12_H40.land.resolved`;
//! - payload: [`eventlog::canonical_bytes`] (JSON);
//! - headers: `Nats-Msg-Id` (event id), `Nats-Expected-Last-Sequence`, `Nats-Expected-Stream`,
//!   `Dossier-Position`, `Dossier-Id`, `Dossier-Version`, `Dossier-Event-Type`,
//!   `Dossier-Event-Hash`, `Dossier-Chain-Hash`, `Dossier-Fingerprint` (hex; what
//!   [`recover_log`] verifies and restores), `Content-Type: application/json`;
//! - a placeholder has the same subject and headers plus `Dossier-Body-Omitted: too-large`, and
//!   the body [`placeholder_body`].
//!
//! # NATS server version
//!
//! Works with nats-server 2.9 or later (Debian ships 2.9.10); tested against 2.9.10.
//! `Nats-Msg-Id` deduplication, `Nats-Expected-Last-Sequence` and `Nats-Expected-Stream` are
//! older than 2.9 (2.2); `allow_direct` (direct get) needs 2.9. On 2.9.10 an expected last
//! sequence of 0 is enforced (publishing into a non-empty stream with it is refused), which the
//! first publication into an empty stream relies on, and deduplication is checked before the
//! expected sequence (a relay that lost a race is told "duplicate"). Nothing of 2.10+ is used:
//! no stream metadata, subject transforms, compression, first sequence or per-message TTL.

mod config;
mod error;
mod recover;
mod relay;
mod status;
mod stream;
mod subject;

pub use config::{MAX_BATCH_LIMIT, RelayConfig};
pub use error::RelayError;
pub use recover::{Recovered, RecoveryError, StreamReset, recover_log, reset_stream};
pub use relay::{Relay, StreamPosition, stream_position};
pub use status::{RelayState, RelayStatus};
pub use stream::{ensure_stream, stream_config};
pub use subject::{
    BODY_OMITTED_TOO_LARGE, HEADER_BODY_OMITTED, HEADER_CHAIN_HASH, HEADER_DOSSIER_ID,
    HEADER_EVENT_HASH, HEADER_EVENT_TYPE, HEADER_FINGERPRINT, HEADER_MSG_ID, HEADER_POSITION,
    HEADER_VERSION, agency_from_token, headers_for, headers_wire_len, max_headers_len,
    placeholder_body, placeholder_headers, subject_for, subject_token,
};
