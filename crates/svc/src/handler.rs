//! The glue every RPC that acts on an existing dossier repeats: authenticate a counter, parse
//! the fields every write request carries, run the command through the write path authorized
//! for the agency that received or holds the dossier, and answer with the stored event.
//!
//! A handler then reads: [`Desk::envelope`] (authenticate, parse the common fields) → parse its
//! own fields into an [`Action`] → [`Desk::execute`] → [`first_event`] → answer.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::{Action, Command, DossierId, EventId};
use eventlog::StoredEvent;
use tonic::{Request, Response, Status};
use writepath::{Clock, Recorded, WriteOutcome, WritePath, WriteRequest};

use crate::status::{business_time, internal};
use crate::{Principal, Tokens, convert};

/// The fields every write request on an existing dossier carries, as sent.
/// [`common_fields!`](crate::common_fields) borrows them from a request message.
#[derive(Debug, Clone, Copy)]
pub struct CommonFields<'a> {
    pub event_id: &'a str,
    pub dossier_id: &'a str,
    pub occurred_at: Option<&'a api::Timestamp>,
    pub expected_version: Option<u32>,
}

impl CommonFields<'_> {
    /// The event id, dossier id and business time, each malformed field named (pure: what
    /// [`Desk::envelope`] checks after authentication; the fuzz targets call it directly).
    pub fn parse(&self, now: DateTime<Utc>) -> Result<(EventId, DossierId, DateTime<Utc>), Status> {
        Ok((
            convert::event_id("event_id", self.event_id)?,
            convert::dossier_id("dossier_id", self.dossier_id)?,
            business_time("occurred_at", self.occurred_at, now)?,
        ))
    }
}

/// Borrows `event_id`, `dossier_id`, `occurred_at` and `expected_version` from a request
/// message as [`CommonFields`].
#[macro_export]
macro_rules! common_fields {
    ($request:expr) => {
        $crate::handler::CommonFields {
            event_id: &$request.event_id,
            dossier_id: &$request.dossier_id,
            occurred_at: $request.occurred_at.as_ref(),
            expected_version: $request.expected_version,
        }
    };
}

/// The caller and the common fields, authenticated and parsed.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub principal: Principal,
    pub event_id: EventId,
    pub dossier_id: DossierId,
    pub occurred_at: DateTime<Utc>,
    pub expected_version: Option<u32>,
}

/// What a service's RPCs share: the write path, the tokens, the clock. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Desk {
    write: WritePath,
    tokens: Arc<Tokens>,
    clock: Arc<dyn Clock>,
}

impl Desk {
    pub fn new(write: WritePath, tokens: Arc<Tokens>, clock: Arc<dyn Clock>) -> Self {
        Desk {
            write,
            tokens,
            clock,
        }
    }

    /// Authenticates the caller (only counters write) and parses the common fields.
    pub fn envelope<T>(
        &self,
        request: &Request<T>,
        fields: CommonFields<'_>,
    ) -> Result<Envelope, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        principal.require_counter()?;
        let (event_id, dossier_id, occurred_at) = fields.parse(self.clock.now())?;
        Ok(Envelope {
            principal,
            event_id,
            dossier_id,
            occurred_at,
            expected_version: fields.expected_version,
        })
    }

    /// Runs `action` through the write path, allowed for a counter of the agency that received
    /// the dossier or of the one holding it now. `fingerprint` is
    /// [`crate::write::fingerprint`] of the request.
    pub async fn execute(
        &self,
        envelope: Envelope,
        action: Action,
        fingerprint: [u8; 32],
    ) -> Result<WriteOutcome, Status> {
        let write = WriteRequest {
            event_id: envelope.event_id,
            dossier_id: envelope.dossier_id,
            command: Command {
                occurred_at: envelope.occurred_at,
                action,
            },
            expected_version: envelope.expected_version,
            fingerprint,
        };
        let principal = envelope.principal;
        self.write
            .execute(&write, |dossier| principal.may_write_on(dossier))
            .await
            .map_err(crate::write::status)
    }
}

/// The first event of an outcome (stored, with its body) and whether it repeats an earlier
/// call. For commands the rules never answer "already done" (all but a repeated payment),
/// `AlreadyApplied` is a bug here.
pub fn first_event(outcome: WriteOutcome) -> Result<(Recorded, bool), Status> {
    let duplicate = outcome.is_duplicate();
    let events = match outcome {
        WriteOutcome::Written(e) | WriteOutcome::Duplicate(e) => e,
        WriteOutcome::AlreadyApplied(_) => {
            return Err(internal("a command decided to write nothing"));
        }
    };
    let first = events
        .into_iter()
        .next()
        .ok_or_else(|| internal("write path returned no event"))?;
    Ok((first, duplicate))
}

/// The common answer: the stored event.
pub fn write_response(
    (event, duplicate): (Recorded, bool),
) -> Result<Response<api::v1::WriteResponse>, Status> {
    Ok(Response::new(api::v1::WriteResponse {
        event: Some(crate::recorded_event(&event.stored, duplicate)?),
    }))
}

/// An answer's event is not of the type its method writes. The fingerprint of an event id
/// includes the method, so a repeated id always finds the method's own event: a bug.
pub fn unexpected(event: &StoredEvent) -> Status {
    internal(format!(
        "event {} is a {} event, not the one this method writes",
        event.event_id, event.event_type
    ))
}
