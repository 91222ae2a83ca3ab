//! The types of the event log's public interface. They know nothing of the dossier domain:
//! an event is a type name, a business time and a JSON payload, routed by level, agency, sector.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Position, ReadError, Version};

/// Where a dossier's events are routed and sliced: copied onto every event of the dossier from
/// its first event, so subjects and filters never need to look the dossier up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// `province` | `district` | `commune`.
    pub level: String,
    /// The agency whose counter received the dossier (stable for the dossier's life).
    pub agency: String,
    pub sector: String,
}

/// What the caller believes the dossier's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The dossier must have no events yet.
    NoStream,
    /// The dossier's last event must have exactly this version (1-based).
    Exact(u32),
}

/// One event to append. Everything the server sets (position, version, recorded time, hashes)
/// is absent here.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Chosen by the client; the idempotency key.
    pub event_id: Uuid,
    /// e.g. `received`, `supplement_requested`.
    pub event_type: String,
    /// Business time at the counter, truncated to microseconds by the caller or by the log.
    pub occurred_at: DateTime<Utc>,
    /// Integers, strings, booleans, arrays and objects only (no floats), so that the canonical
    /// form survives a round trip through `jsonb`.
    pub payload: serde_json::Value,
    /// SHA-256 of the client's request that produced this event. The same event id with another
    /// fingerprint is a different request reusing an id, and is refused.
    pub fingerprint: [u8; 32],
}

/// All the new events of one dossier in one append.
#[derive(Debug, Clone, PartialEq)]
pub struct DossierAppend {
    pub dossier_id: String,
    pub expected_version: ExpectedVersion,
    /// Used for a new dossier. For a dossier that already has events, the routing stored with
    /// its events wins (a dossier's routing never changes) and this one is ignored.
    pub routing: Routing,
    /// At least one. A dossier may appear only once in a call.
    pub events: Vec<NewEvent>,
}

/// Where a dossier stood when the log read it for a caller about to append to it: its id, its
/// version (0: no events) and, when it has events, their routing.
///
/// Only the log makes one ([`EventLog::load_dossier_for_append`](crate::EventLog::load_dossier_for_append)),
/// from the events it has just returned, so the version is one that exists. Handed back with
/// the append that was decided on it ([`EventLog::append_after`](crate::EventLog::append_after)),
/// it spares the log its own look-up of the dossier's version and of the call's event ids:
/// the unique constraints on `(dossier_id, version)` and `event_id` catch whatever was written
/// since the read (see the [`group`](crate::group) module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DossierHead {
    pub(crate) dossier_id: String,
    pub(crate) version: i32,
    /// The routing of its events; `None` when it has none.
    pub(crate) routing: Option<Routing>,
}

impl DossierHead {
    /// The head after `events`, which must be a whole dossier as read, in version order.
    pub(crate) fn after(dossier_id: &str, events: &[StoredEvent]) -> DossierHead {
        DossierHead {
            dossier_id: dossier_id.to_owned(),
            version: events.last().map_or(0, |e| e.version),
            routing: events.last().map(|e| e.routing.clone()),
        }
    }

    pub fn dossier_id(&self) -> &str {
        &self.dossier_id
    }

    /// The dossier's version when it was read (0: it had no events).
    pub fn version(&self) -> u32 {
        u32::try_from(self.version).unwrap_or(0)
    }

    /// The expected version of an append decided on this state.
    pub fn expected_version(&self) -> ExpectedVersion {
        match self.version() {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        }
    }
}

/// A dossier as read for an append: its events in version order and its [`DossierHead`].
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedDossier {
    pub events: Vec<StoredEvent>,
    head: DossierHead,
}

impl LoadedDossier {
    pub(crate) fn new(dossier_id: &str, events: Vec<StoredEvent>) -> LoadedDossier {
        LoadedDossier {
            head: DossierHead::after(dossier_id, &events),
            events,
        }
    }

    pub fn head(&self) -> &DossierHead {
        &self.head
    }

    pub fn into_parts(self) -> (Vec<StoredEvent>, DossierHead) {
        (self.events, self.head)
    }
}

/// An event as stored: immutable once committed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// Global position: 1, 2, 3… with no gaps, assigned in commit order.
    pub position: i64,
    pub event_id: Uuid,
    pub dossier_id: String,
    /// 1-based version within the dossier.
    pub version: i32,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// Set by the log when the position is assigned; never decreases along positions.
    pub recorded_at: DateTime<Utc>,
    pub routing: Routing,
    pub payload: serde_json::Value,
    pub fingerprint: [u8; 32],
    /// `SHA-256(0x00 || canonical_bytes)`, the RFC 6962 leaf hash of this event.
    pub event_hash: [u8; 32],
    /// `SHA-256(previous chain_hash || event_hash)`; the genesis predecessor is 32 zero bytes.
    pub chain_hash: [u8; 32],
}

impl StoredEvent {
    /// The event's position and version as their types, for the wire (proto fields, headers).
    /// An event read from the log always has them in range (decoding checks); a hand-built one
    /// out of range is [`ReadError::Corrupt`] rather than a wrong number.
    pub fn place(&self) -> Result<(Position, Version), ReadError> {
        let corrupt = |reason: String| ReadError::Corrupt {
            position: self.position,
            reason,
        };
        let position = Position::try_from(self.position)
            .and_then(|p| Position::of_event(p.get()))
            .map_err(|e| corrupt(e.to_string()))?;
        let version = Version::try_from(self.version).map_err(|e| corrupt(e.to_string()))?;
        Ok((position, version))
    }
}

/// The result of an append: the stored events in the order given, and whether this call wrote
/// them or found them already written by an earlier call with the same event ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub events: Vec<StoredEvent>,
    /// For each `DossierAppend` of the call, in order: true when every one of its events was
    /// already stored (a retry), false when they were written now.
    pub duplicate: Vec<bool>,
}
