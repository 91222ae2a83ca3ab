//! The one write path of dossiers: load, authorize, idempotency check, decide, append, and on a
//! concurrent change, decide again. It knows no gRPC: its errors are typed ([`WriteError`]) and
//! the services map them to statuses (`svc::write`).
//!
//! ```text
//! load the dossier's events ─▶ fold ─▶ authorize ─▶ our event id among them? ──yes──▶ same request?
//!   ▲                                                     │ no                  yes: the original answer (duplicate)
//!   │                                                     ▼                     no:  event_id_reused
//!   │                    expected_version? ─▶ decide ─▶ append(expected = loaded version)
//!   │                                                     │
//!   └──── another writer got there first (conflict) ◀─────┘
//! ```
//! After a lost race the next round answers a concurrent retry of the same request as a
//! duplicate, a stale `expected_version` with a conflict, and otherwise decides again on the new
//! state. Authorization comes before the duplicate answer, so a copied request with another
//! agency's token learns nothing.
//!
//! Everything a command writes goes into one append, i.e. one transaction: nothing is ever
//! half-written. The append carries the dossier's head as loaded
//! ([`EventLog::append_after`]), so the log's group commit does not look the version and the
//! event ids up a second time; a write since the load fails the insert on a unique constraint,
//! and the log then looks up and answers as above.

mod import;

use std::sync::Arc;

use calendar::Calendar;
use chrono::{DateTime, Utc};
use domain::{
    AgencyCode, Command, Decision, Dossier, DossierEvent, DossierId, Event, EventId, NoticeUnit,
    Rules, SupplementPolicy,
};
use eventlog::{AppendError, DossierAppend, EventLog, NewEvent, ReadError, Routing, StoredEvent};
use uuid::Uuid;

pub use import::{
    DecidedImport, ImportError, ImportEvent, Imported, PreparedImport, Speculation, decide_import,
};

/// How many times a command is decided again after losing a race to another writer.
const MAX_ATTEMPTS: usize = 8;

/// What a service asks the write path to do.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub event_id: EventId,
    pub dossier_id: DossierId,
    pub command: Command,
    /// The version the client last saw, if it said.
    pub expected_version: Option<u32>,
    /// A digest of the client's request, equal for a retry (`svc::write::fingerprint` for gRPC).
    pub fingerprint: [u8; 32],
}

/// A stored event with its domain event: what the write path appended (the body it decided, no
/// decoding) or found stored (decoded once, here).
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub stored: StoredEvent,
    pub body: DossierEvent,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// The command's events, written now.
    Written(Vec<Recorded>),
    /// The same request was already applied: its events as stored then.
    Duplicate(Vec<Recorded>),
    /// The rules say the change is already there (`Decision::AlreadyDone`: a payment callback
    /// repeating a known transaction id); nothing was written. Carries the dossier's events.
    AlreadyApplied(Vec<Recorded>),
}

impl WriteOutcome {
    pub fn is_duplicate(&self) -> bool {
        !matches!(self, WriteOutcome::Written(_))
    }

    /// Whether the command wrote (now, or the first time) an event of this type.
    pub fn wrote(&self, event_type: domain::EventType) -> bool {
        match self {
            WriteOutcome::Written(events) | WriteOutcome::Duplicate(events) => {
                events.iter().any(|e| e.body.event_type() == event_type)
            }
            WriteOutcome::AlreadyApplied(_) => false,
        }
    }
}

/// Why the caller may not act on a dossier (the services answer PERMISSION_DENIED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Forbidden {
    /// The caller writes no dossier at all (its role); the text says why.
    #[error("{0}")]
    NoDossierWrites(String),
    /// The dossier was received by, and is held by, agencies other than the caller's.
    #[error(
        "token of {} may act only on dossiers its agency received or holds; this one was received by {received_by} and is held by {held_by}",
        caller.as_ref().map_or("(no agency)", |a| a.as_str())
    )]
    OtherAgency {
        caller: Option<AgencyCode>,
        received_by: AgencyCode,
        held_by: AgencyCode,
    },
}

/// Why a write did not happen. Every variant means nothing was written, except `Unavailable`
/// when the connection was lost during the COMMIT (then the outcome is unknown; a retry with the
/// same event id answers the original if it was written).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The dossier's rules refuse the command: show the reason to the user.
    #[error(transparent)]
    Refused(#[from] domain::Refusal),
    /// The caller may not act on this dossier.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// The event id was used for a different request: the client must pick a new id.
    #[error("event id {0} was already used for a different request")]
    EventIdReused(Uuid),
    /// The client's expected version is stale (or we lost too many races): reload and retry.
    #[error("dossier {dossier_id} is at version {actual}, not {expected}")]
    Conflict {
        dossier_id: String,
        expected: u32,
        actual: u32,
    },
    /// The event would be larger than the log stores (`eventlog::MAX_EVENT_BYTES`): the request
    /// is too large; it must be made smaller, retrying it is useless.
    #[error("{0}")]
    EventTooLarge(String),
    /// The event log cannot be reached: retry later with the same event id (which is safe even
    /// if the failure hit the COMMIT and the write did happen).
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// A stored event does not decode: a bug or a damaged log.
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    /// The log rejected what the domain produced: a bug.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<ReadError> for WriteError {
    fn from(e: ReadError) -> Self {
        WriteError::Unavailable(e.to_string())
    }
}

/// The id of the `index`-th event a command writes: the client's id for the first, and ids
/// derived from it (UUID v5) for any others, so retries produce the same ids.
pub fn derived_event_id(first: EventId, index: usize) -> Uuid {
    if index == 0 {
        first.as_uuid()
    } else {
        Uuid::new_v5(&first.as_uuid(), index.to_string().as_bytes())
    }
}

/// Rebuilds the dossier from its stored events.
pub fn fold(events: &[StoredEvent]) -> Result<Dossier, WriteError> {
    let mut dossier = Dossier::default();
    for stored in events {
        dossier.evolve(&decode(stored)?);
    }
    Ok(dossier)
}

/// Decodes stored events once, keeping them with their bodies.
fn recorded(events: Vec<StoredEvent>) -> Result<Vec<Recorded>, WriteError> {
    events
        .into_iter()
        .map(|stored| {
            let body = decode(&stored)?.body;
            Ok(Recorded { stored, body })
        })
        .collect()
}

/// The dossier folded from its decoded events.
fn fold_recorded(events: &[Recorded]) -> Dossier {
    let mut dossier = Dossier::default();
    for e in events {
        dossier.evolve(&Event {
            occurred_at: e.stored.occurred_at,
            body: e.body.clone(),
        });
    }
    dossier
}

/// A stored event whose payload is not the domain event its type names: a bug or a damaged log.
#[derive(Debug, thiserror::Error)]
#[error(
    "event at position {position} (version {version} of dossier {dossier_id}) does not decode: {source}"
)]
pub struct Undecodable {
    pub position: i64,
    pub dossier_id: String,
    pub version: i32,
    #[source]
    pub source: domain::DecodeError,
}

/// A stored event as a domain event: [`Event::from_row`] (the one decoder) over the stored
/// event's columns, naming the event when it does not decode.
pub fn decode(stored: &StoredEvent) -> Result<Event, Undecodable> {
    Event::from_row(&stored.event_type, stored.occurred_at, &stored.payload).map_err(|source| {
        Undecodable {
            position: stored.position,
            dossier_id: stored.dossier_id.clone(),
            version: stored.version,
            source,
        }
    })
}

/// [`decode`] over a dossier's (or any) stored events, in order.
pub fn decode_all(stored: &[StoredEvent]) -> Result<Vec<Event>, Undecodable> {
    stored.iter().map(decode).collect()
}

/// The routing of a dossier's events: from its profile, or from the first event being written.
pub fn routing_of(dossier: &Dossier, new_events: &[DossierEvent]) -> Option<Routing> {
    let profile = dossier.profile.as_ref().or_else(|| {
        new_events.iter().find_map(|e| match e {
            DossierEvent::Received { profile, .. }
            | DossierEvent::RefusedAtIntake { profile, .. } => Some(profile),
            _ => None,
        })
    })?;
    Some(Routing {
        level: profile.level.as_str().to_owned(),
        agency: profile.agency.as_str().to_owned(),
        sector: profile.sector.as_str().to_owned(),
    })
}

/// Builds the log's events for what `decide` produced.
pub fn new_events(
    first_id: EventId,
    command: &Command,
    events: &[DossierEvent],
    fingerprint: [u8; 32],
) -> Vec<NewEvent> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let (event_type, payload) = event.into_parts();
            NewEvent {
                event_id: derived_event_id(first_id, i),
                event_type: event_type.to_owned(),
                occurred_at: domain::event_time(command, event),
                payload,
                fingerprint,
            }
        })
        .collect()
}

/// The longest one command may take in the write path, waiting for a pooled connection
/// included. A database that went silent (a partition, a frozen host: no reset, so the
/// connection looks healthy) would otherwise keep the caller waiting until TCP gives up, a
/// quarter of an hour or more; past this bound the caller gets UNAVAILABLE and retries with the
/// same event id (`tests/tests/it/faults.rs`). A healthy write takes milliseconds.
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The shared write path of the services.
#[derive(Debug, Clone)]
pub struct WritePath {
    log: EventLog,
    calendar: Arc<Calendar>,
    supplement_policy: SupplementPolicy,
    apology_notice: NoticeUnit,
}

impl WritePath {
    pub fn new(
        log: EventLog,
        calendar: Arc<Calendar>,
        supplement_policy: SupplementPolicy,
    ) -> Self {
        WritePath {
            log,
            calendar,
            supplement_policy,
            apology_notice: NoticeUnit::default(),
        }
    }

    /// The unit of the apology's "at least one day before the due time" (default: working day).
    pub fn with_apology_notice(mut self, unit: NoticeUnit) -> Self {
        self.apology_notice = unit;
        self
    }

    pub fn log(&self) -> &EventLog {
        &self.log
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    pub fn rules(&self) -> Rules<'_> {
        Rules {
            calendar: &self.calendar,
            supplement_policy: self.supplement_policy,
            apology_notice: self.apology_notice,
        }
    }

    /// Applies one command. `authorize` sees the dossier as loaded (not received yet: version 0)
    /// and may refuse ([`Forbidden`]). Bounded by [`WRITE_TIMEOUT`]: past it the answer
    /// is `Unavailable` (the outcome is then unknown if the append's group had started — it may
    /// still commit; a retry with the same event id tells).
    pub async fn execute(
        &self,
        request: &WriteRequest,
        authorize: impl Fn(&Dossier) -> Result<(), Forbidden>,
    ) -> Result<WriteOutcome, WriteError> {
        tokio::time::timeout(WRITE_TIMEOUT, self.execute_unbounded(request, authorize))
            .await
            .unwrap_or_else(|_| {
                Err(WriteError::Unavailable(format!(
                    "no answer from the event log within {WRITE_TIMEOUT:?}"
                )))
            })
    }

    async fn execute_unbounded(
        &self,
        request: &WriteRequest,
        authorize: impl Fn(&Dossier) -> Result<(), Forbidden>,
    ) -> Result<WriteOutcome, WriteError> {
        for _ in 0..MAX_ATTEMPTS {
            // The head goes back with the append: the log then need not look the dossier's
            // version and the event ids up again (the unique constraints catch any write
            // since this read, and the log answers as if it had looked).
            let (events, head) = self
                .log
                .load_dossier_for_append(request.dossier_id.as_str())
                .await?
                .into_parts();
            let stored = recorded(events)?;
            let dossier = fold_recorded(&stored);
            // Authorize first, retries included: a copy of another agency's request must not
            // get that agency's answer back.
            authorize(&dossier)?;
            // A retry of this very request (sent again, or racing its original) is answered with
            // the original; deciding on top of its own effect would refuse it.
            if stored
                .iter()
                .any(|e| e.stored.event_id == request.event_id.as_uuid())
                && let Some(original) = self.find_original(request).await?
            {
                return Ok(WriteOutcome::Duplicate(original));
            }
            if let Some(expected) = request.expected_version
                && expected != dossier.version
            {
                return Err(WriteError::Conflict {
                    dossier_id: request.dossier_id.to_string(),
                    expected,
                    actual: dossier.version,
                });
            }
            let events = match domain::decide(&dossier, &request.command, self.rules())? {
                Decision::AlreadyDone => return Ok(WriteOutcome::AlreadyApplied(stored)),
                decision => decision.into_events(),
            };
            let routing = routing_of(&dossier, &events).ok_or_else(|| {
                WriteError::Internal("events for a dossier with no profile".into())
            })?;
            let append = DossierAppend {
                dossier_id: request.dossier_id.to_string(),
                // The version folded above, i.e. the head's.
                expected_version: head.expected_version(),
                routing,
                events: new_events(
                    request.event_id,
                    &request.command,
                    &events,
                    request.fingerprint,
                ),
            };
            match self.log.append_after(&head, append).await {
                Ok(appended) if appended.duplicate.first() == Some(&true) => {
                    // Written by an identical request that raced this one: as stored.
                    return Ok(WriteOutcome::Duplicate(recorded(appended.events)?));
                }
                Ok(appended) => {
                    // Exactly the events decided, in order: no decoding of what was just written.
                    if appended.events.len() != events.len() {
                        return Err(WriteError::Internal(format!(
                            "the log stored {} events for the {} decided",
                            appended.events.len(),
                            events.len()
                        )));
                    }
                    return Ok(WriteOutcome::Written(
                        appended
                            .events
                            .into_iter()
                            .zip(events)
                            .map(|(stored, body)| Recorded { stored, body })
                            .collect(),
                    ));
                }
                Err(AppendError::Conflict { .. }) => {
                    // Another writer got there first, possibly a retry of this very request.
                    // The next round answers such a retry as a duplicate, a stale
                    // expected_version with the conflict, and otherwise decides again.
                    tracing::debug!(dossier = %request.dossier_id, "lost a race; deciding again");
                }
                Err(AppendError::EventIdReused { event_id }) => {
                    return Err(WriteError::EventIdReused(event_id));
                }
                Err(e @ AppendError::EventTooLarge { .. }) => {
                    return Err(WriteError::EventTooLarge(e.to_string()));
                }
                Err(AppendError::Unavailable(e)) => {
                    return Err(WriteError::Unavailable(e.to_string()));
                }
                Err(e) => return Err(WriteError::Internal(e.to_string())),
            }
        }
        let stored = self.log.load_dossier(request.dossier_id.as_str()).await?;
        Err(WriteError::Conflict {
            dossier_id: request.dossier_id.to_string(),
            expected: request.expected_version.unwrap_or_default(),
            actual: u32::try_from(stored.len()).unwrap_or(u32::MAX),
        })
    }

    /// The events an earlier identical request wrote, or `EventIdReused` if the id was used
    /// for another request.
    async fn find_original(
        &self,
        request: &WriteRequest,
    ) -> Result<Option<Vec<Recorded>>, WriteError> {
        let found = self.log.find_events(&[request.event_id.as_uuid()]).await?;
        let Some(first) = found.into_iter().next() else {
            return Ok(None);
        };
        if first.fingerprint != request.fingerprint
            || first.dossier_id != request.dossier_id.as_str()
        {
            return Err(WriteError::EventIdReused(first.event_id));
        }
        // Any further events of the same command carry ids derived from the first.
        let derived: Vec<Uuid> = (1..4)
            .map(|i| derived_event_id(request.event_id, i))
            .collect();
        let mut events = vec![first];
        events.extend(self.log.find_events(&derived).await?);
        events.sort_by_key(|e| e.position);
        Ok(Some(recorded(events)?))
    }
}

/// The current instant; a trait so that tests and the deadline watcher can control time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
