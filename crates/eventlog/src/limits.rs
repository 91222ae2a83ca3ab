//! Size limits every stored event obeys, so that every event can be published.

/// The largest canonical JSON ([`crate::canonical_bytes`]) of any event the write path
/// accepts. The request bounds (documented in `proto/dossier/v1/*.proto`) are chosen so that
/// no accepted request can produce a larger event, and the append refuses one that would be
/// larger all the same. The relay checks at start that a message of this size plus its headers
/// fits in the NATS server's `max_payload` (1 MiB by default).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
