//! The dossier's lifecycle events: what happened, as stored in the log and published on NATS.
//!
//! Serialised with serde as `{"type": "<event_type>", ...fields}`; the log stores the type in
//! its own column and the remaining fields as the payload ([`DossierEvent::into_parts`]).
//! Fields computed by the server at the time (due times, timeliness) are stored in the event,
//! so that replaying the log never depends on today's calendar or configuration.

use calendar::{StatutoryTime, Timeliness, WorkingDuration};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{AgencyCode, ComponentCode, ProcedureCode, SectorCode, Text, TransactionId};

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The snake_case name used in payloads, subjects and query slices.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }
    };
}

wire_enum!(
    /// Administrative level of an agency (cấp).
    Level { Province => "province", District => "district", Commune => "commune" }
);
wire_enum!(
    /// How the dossier arrived (kênh). National codes: online 2, direct 1, postal 3.
    Channel { Online => "online", Direct => "direct", Postal => "postal" }
);
wire_enum!(
    ApplicantType { Citizen => "citizen", Business => "business", Organisation => "organisation" }
);
wire_enum!(
    /// The procedure's online service level (DVC trực tuyến).
    OnlineServiceLevel { FullOnline => "full_online", PartialOnline => "partial_online", NotOnline => "not_online" }
);
wire_enum!(
    /// Transfer (liên thông) mode; electronic transfers count in S13.
    TransferMode { Electronic => "electronic", Paper => "paper" }
);
wire_enum!(
    /// Kind of financial obligation (nghĩa vụ tài chính).
    FeeKind { Fee => "fee", Charge => "charge", Tax => "tax" }
);
wire_enum!(
    /// Where a payment was made. National code 1 = national platform, 2 = provincial gateway.
    PaymentChannel { NationalPlatform => "national_platform", ProvincialGateway => "provincial_gateway", Counter => "counter" }
);
wire_enum!(
    /// The decision on the dossier. A refusal on decision is still a resolution.
    Outcome { Approved => "approved", Refused => "refused" }
);
wire_enum!(
    ReturnMethod { Counter => "counter", Post => "post", Online => "online" }
);
wire_enum!(
    Rating { VerySatisfied => "very_satisfied", Satisfied => "satisfied", Unsatisfied => "unsatisfied" }
);

impl PaymentChannel {
    /// "Paid online" (S11) means either online channel.
    pub fn is_online(self) -> bool {
        matches!(
            self,
            PaymentChannel::NationalPlatform | PaymentChannel::ProvincialGateway
        )
    }
}

impl Channel {
    /// The national portal's channel code.
    pub fn national_code(self) -> u8 {
        match self {
            Channel::Direct => 1,
            Channel::Online => 2,
            Channel::Postal => 3,
        }
    }
}

/// Who asked for what, where: the slice attributes every statistic groups by. Fixed at
/// reception (or at refusal at the counter) for the dossier's whole life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub procedure: ProcedureCode,
    pub online_level: OnlineServiceLevel,
    pub sector: SectorCode,
    /// The agency whose counter received the dossier.
    pub agency: AgencyCode,
    pub level: Level,
    pub channel: Channel,
    pub applicant_type: ApplicantType,
}

/// One lifecycle event's content. Common envelope fields (event id, dossier id, occurred_at,
/// version, position, recorded_at) live outside, in [`Event`] and in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DossierEvent {
    /// Accepted at the counter (status 2). Always the first event of a received dossier.
    Received {
        profile: Profile,
        statutory_time: StatutoryTime,
        fee_required: bool,
        /// Components submitted, in the order given; never empty.
        components: Vec<ComponentCode>,
        /// The appointment (ngày hẹn trả), computed from the statutory time in working time
        /// (or, for imported history, the old system's appointment).
        due_at: DateTime<Utc>,
    },
    /// Components scanned as valid electronic copies, or taken from a national database.
    ComponentsDigitized {
        digitized: Vec<ComponentCode>,
        reused: Vec<ComponentCode>,
    },
    /// Not accepted at the counter (status 3): the first and only event of such a dossier.
    RefusedAtIntake {
        profile: Profile,
        reason: Text,
    },
    Transferred {
        from_agency: AgencyCode,
        to_agency: AgencyCode,
        mode: TransferMode,
    },
    /// The clock stops.
    SupplementRequested {
        reason: Text,
    },
    /// The clock restarts; `due_at` is the due time now in force, `paused` the working time the
    /// dossier waited.
    SupplementReceived {
        due_at: DateTime<Utc>,
        paused: WorkingDuration,
    },
    /// The due time passed with no resolution. The event's `occurred_at` is the due time itself.
    Late {
        due_at: DateTime<Utc>,
    },
    ApologyIssued {
        reason: Text,
        new_appointment: DateTime<Utc>,
        /// Issued at least one working day before the due time in force.
        on_time: bool,
    },
    FeeAssessed {
        amount_vnd: i64,
        kind: FeeKind,
    },
    Paid {
        amount_vnd: i64,
        channel: PaymentChannel,
        transaction_id: TransactionId,
    },
    /// Decided (status 9): stops the clock; judged against the due time in force.
    Resolved {
        outcome: Outcome,
        deciding_agency: AgencyCode,
        due_at: DateTime<Utc>,
        timeliness: Timeliness,
    },
    /// Withdrawn at the applicant's request: ends the dossier without a result.
    Withdrawn {
        reason: Text,
    },
    /// Processing stopped by the agency: ends the dossier without a result.
    Stopped {
        reason: Text,
    },
    /// The signed electronic result attached to the dossier.
    ResultDigitized {
        document_ref: Text,
        /// Lower-case hex SHA-256 of the signed document.
        sha256: String,
    },
    /// Status 10.
    ResultReturned {
        method: ReturnMethod,
    },
    SatisfactionRated {
        rating: Rating,
    },
}

/// Why a stored event could not be read back as a [`DossierEvent`].
#[derive(Debug, thiserror::Error)]
#[error("stored event of type {event_type:?} does not decode: {source}")]
pub struct DecodeError {
    pub event_type: String,
    #[source]
    pub source: serde_json::Error,
}

impl DossierEvent {
    /// The snake_case type name, as stored in the log and used as the last subject token.
    pub fn event_type(&self) -> &'static str {
        match self {
            DossierEvent::Received { .. } => "received",
            DossierEvent::ComponentsDigitized { .. } => "components_digitized",
            DossierEvent::RefusedAtIntake { .. } => "refused_at_intake",
            DossierEvent::Transferred { .. } => "transferred",
            DossierEvent::SupplementRequested { .. } => "supplement_requested",
            DossierEvent::SupplementReceived { .. } => "supplement_received",
            DossierEvent::Late { .. } => "late",
            DossierEvent::ApologyIssued { .. } => "apology_issued",
            DossierEvent::FeeAssessed { .. } => "fee_assessed",
            DossierEvent::Paid { .. } => "paid",
            DossierEvent::Resolved { .. } => "resolved",
            DossierEvent::Withdrawn { .. } => "withdrawn",
            DossierEvent::Stopped { .. } => "stopped",
            DossierEvent::ResultDigitized { .. } => "result_digitized",
            DossierEvent::ResultReturned { .. } => "result_returned",
            DossierEvent::SatisfactionRated { .. } => "satisfaction_rated",
        }
    }

    /// Splits into the log's `(event_type, payload)`; the payload has no `type` key.
    pub fn into_parts(&self) -> (&'static str, serde_json::Value) {
        let mut value = serde_json::to_value(self).expect("domain events always serialise");
        if let Some(map) = value.as_object_mut() {
            map.remove("type");
        }
        (self.event_type(), value)
    }

    /// Rebuilds an event from the log's `(event_type, payload)`.
    pub fn from_parts(event_type: &str, payload: &serde_json::Value) -> Result<Self, DecodeError> {
        let mut value = payload.clone();
        if let Some(map) = value.as_object_mut() {
            map.insert(
                "type".to_owned(),
                serde_json::Value::String(event_type.to_owned()),
            );
        }
        serde_json::from_value(value).map_err(|source| DecodeError {
            event_type: event_type.to_owned(),
            source,
        })
    }
}

/// An event with the business time it happened at, as the fold needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub occurred_at: DateTime<Utc>,
    pub body: DossierEvent,
}
