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
use crate::procedure::ProcedureRules;

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
wire_enum!(
    /// How the apology (Mẫu 04 of Circular 03/2025/TT-VPCP) reached the applicant.
    ApologyDelivery { PortalAccount => "portal_account", Sms => "sms", Email => "email", Paper => "paper" }
);
/// The unit of "at the latest 01 day before the due date" that makes an apology on time. The
/// text says "01 ngày", not "working day"; a province's choice ([`crate::Rules`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum NoticeUnit {
    /// At least one working day (the day length in working time, 8 hours by default) of
    /// working time between the apology and the due time. The default.
    #[default]
    WorkingDay,
    /// At least 24 hours between the apology and the due time.
    CalendarDay,
}

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

/// The applicant's personal data as the log holds it: ciphertext only. The data key is the
/// dossier's own (crate `personal`, table `personal_keys`), so canonical bytes, `event_hash`,
/// the chain and every Merkle proof cover this ciphertext and stay valid when the key is
/// destroyed (erasure). The domain never looks inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedApplicant {
    /// The sealing scheme's name (`personal::SCHEME`), so a later scheme can coexist.
    pub alg: String,
    /// The AEAD nonce, lower-case hex.
    pub nonce: String,
    /// The AEAD ciphertext with its tag, lower-case hex; at most
    /// [`limits::APPLICANT_SEALED_MAX_HEX`](crate::limits::APPLICANT_SEALED_MAX_HEX) digits.
    pub ciphertext: String,
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
        /// The procedure's rules from the catalogue version in force at reception; absent for
        /// a procedure not in the catalogue (and in events written before the catalogue).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        procedure: Option<ProcedureRules>,
        /// The applicant's personal data, encrypted (crate `personal`); absent for dossiers
        /// received without it. Omitted from the JSON when absent, so events written before
        /// it existed keep their canonical bytes and hashes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        applicant: Option<SealedApplicant>,
        /// How the applicant asked to get the result, when the counter recorded it (told to a
        /// citizen looking the dossier up). Omitted when absent, as `applicant`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        return_method: Option<ReturnMethod>,
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
        /// When the dossier closes by itself if the supplement has not arrived (the procedure's
        /// `close_after_working_days` counted from the request); absent when it never does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        closes_at: Option<DateTime<Utc>>,
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
    /// The apology with a new appointment (Mẫu 04, Circular 03/2025/TT-VPCP). The fields
    /// after `on_time` came with Mẫu 04: events recorded before have none of them (`None`).
    ApologyIssued {
        reason: Text,
        /// What the applicant is told; never moves the due time timeliness is judged against.
        new_appointment: DateTime<Utc>,
        /// Issued at least one day (in `notice` units) before `original_due_at`.
        on_time: bool,
        /// The due time in force when issued, the one the resolution is judged against.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        original_due_at: Option<DateTime<Utc>>,
        /// Who signed it; `None` when the client did not say (clients older than Mẫu 04).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signer: Option<Text>,
        /// How it was delivered; `None` when the client did not say.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delivery: Option<ApologyDelivery>,
        /// The unit `on_time` was judged in (the province's rule at the time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notice: Option<NoticeUnit>,
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
        /// Set when the system stopped it by a procedure's rule rather than a clerk.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<StopCause>,
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
    /// The late mark is withdrawn: a resolution dated before the due time (sent afterwards by a
    /// counter that was offline) contradicts it. Written by the resolve path in the same append
    /// as that `resolved`, right after it, with the resolution's business time; never on its own.
    /// Statistics ignore it (they judge the resolution by business time already).
    LateWithdrawn {
        /// The due time the mark said had passed.
        due_at: DateTime<Utc>,
        /// The resolution's timeliness (early or on time).
        timeliness: Timeliness,
    },
    /// The agency asks the applicant to fulfil a financial obligation (portal status 6).
    FinancialObligationRequested {
        reason: Text,
        /// The procedure says the time waiting for it does not count: the clock stops.
        pauses_clock: bool,
    },
    /// The obligation was fulfilled. `due_at` is the due time now in force (moved later by the
    /// working time paused when the clock stopped), `paused` that working time (zero otherwise).
    FinancialObligationFulfilled {
        due_at: DateTime<Utc>,
        paused: WorkingDuration,
    },
}

/// Why the system itself stopped a dossier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StopCause {
    /// The supplement requested at `requested_at` had not arrived by `closes_at` (the
    /// procedure's automatic closing); the `stopped` event is dated `closes_at`.
    SupplementNotReceived {
        requested_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
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

/// The kind of a [`DossierEvent`]: the one vocabulary of event type names. Its
/// [`as_str`](EventType::as_str) form is stable and is what the log's `event_type` column, the
/// last NATS subject token, the `Dossier-Event-Type` header, replay filters and the proto's
/// `Event.body` field names all use; adding a kind here is the only place to name it (the
/// compiler and the `svc` proto test point at every list that must follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EventType {
    Received,
    ComponentsDigitized,
    RefusedAtIntake,
    Transferred,
    SupplementRequested,
    SupplementReceived,
    Late,
    ApologyIssued,
    FeeAssessed,
    Paid,
    Resolved,
    Withdrawn,
    Stopped,
    ResultDigitized,
    ResultReturned,
    SatisfactionRated,
    LateWithdrawn,
    FinancialObligationRequested,
    FinancialObligationFulfilled,
}

impl EventType {
    /// Every kind, in the order of the proto's `Event.body` oneof.
    pub const ALL: [EventType; 19] = [
        EventType::Received,
        EventType::ComponentsDigitized,
        EventType::RefusedAtIntake,
        EventType::Transferred,
        EventType::SupplementRequested,
        EventType::SupplementReceived,
        EventType::Late,
        EventType::ApologyIssued,
        EventType::FeeAssessed,
        EventType::Paid,
        EventType::Resolved,
        EventType::Withdrawn,
        EventType::Stopped,
        EventType::ResultDigitized,
        EventType::ResultReturned,
        EventType::SatisfactionRated,
        EventType::LateWithdrawn,
        EventType::FinancialObligationRequested,
        EventType::FinancialObligationFulfilled,
    ];

    /// The stable snake_case name (`received`, `refused_at_intake`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Received => "received",
            EventType::ComponentsDigitized => "components_digitized",
            EventType::RefusedAtIntake => "refused_at_intake",
            EventType::Transferred => "transferred",
            EventType::SupplementRequested => "supplement_requested",
            EventType::SupplementReceived => "supplement_received",
            EventType::Late => "late",
            EventType::ApologyIssued => "apology_issued",
            EventType::FeeAssessed => "fee_assessed",
            EventType::Paid => "paid",
            EventType::Resolved => "resolved",
            EventType::Withdrawn => "withdrawn",
            EventType::Stopped => "stopped",
            EventType::ResultDigitized => "result_digitized",
            EventType::ResultReturned => "result_returned",
            EventType::SatisfactionRated => "satisfaction_rated",
            EventType::LateWithdrawn => "late_withdrawn",
            EventType::FinancialObligationRequested => "financial_obligation_requested",
            EventType::FinancialObligationFulfilled => "financial_obligation_fulfilled",
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`EventType::ALL`]'s (names are case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event type {0:?}")]
pub struct UnknownEventType(pub String);

impl std::str::FromStr for EventType {
    type Err = UnknownEventType;

    fn from_str(name: &str) -> Result<EventType, UnknownEventType> {
        EventType::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| UnknownEventType(name.to_owned()))
    }
}

impl DossierEvent {
    /// The event's kind; its [`EventType::as_str`] is the type name stored in the log.
    pub fn event_type(&self) -> EventType {
        match self {
            DossierEvent::Received { .. } => EventType::Received,
            DossierEvent::ComponentsDigitized { .. } => EventType::ComponentsDigitized,
            DossierEvent::RefusedAtIntake { .. } => EventType::RefusedAtIntake,
            DossierEvent::Transferred { .. } => EventType::Transferred,
            DossierEvent::SupplementRequested { .. } => EventType::SupplementRequested,
            DossierEvent::SupplementReceived { .. } => EventType::SupplementReceived,
            DossierEvent::Late { .. } => EventType::Late,
            DossierEvent::ApologyIssued { .. } => EventType::ApologyIssued,
            DossierEvent::FeeAssessed { .. } => EventType::FeeAssessed,
            DossierEvent::Paid { .. } => EventType::Paid,
            DossierEvent::Resolved { .. } => EventType::Resolved,
            DossierEvent::Withdrawn { .. } => EventType::Withdrawn,
            DossierEvent::Stopped { .. } => EventType::Stopped,
            DossierEvent::ResultDigitized { .. } => EventType::ResultDigitized,
            DossierEvent::ResultReturned { .. } => EventType::ResultReturned,
            DossierEvent::SatisfactionRated { .. } => EventType::SatisfactionRated,
            DossierEvent::LateWithdrawn { .. } => EventType::LateWithdrawn,
            DossierEvent::FinancialObligationRequested { .. } => {
                EventType::FinancialObligationRequested
            }
            DossierEvent::FinancialObligationFulfilled { .. } => {
                EventType::FinancialObligationFulfilled
            }
        }
    }

    /// Splits into the log's `(event_type, payload)`; the payload has no `type` key.
    pub fn into_parts(&self) -> (&'static str, serde_json::Value) {
        let mut value = serde_json::to_value(self).expect("domain events always serialise");
        if let Some(map) = value.as_object_mut() {
            map.remove("type");
        }
        (self.event_type().as_str(), value)
    }

    /// Rebuilds an event from the log's `(event_type, payload)`.
    ///
    /// The payload is read in place: the tag and the payload's entries (a `type` of its own
    /// replaced by `event_type`) go to the derived deserializer as one map, so decoding copies
    /// neither the payload nor its strings into a new `Value` first.
    pub fn from_parts(event_type: &str, payload: &serde_json::Value) -> Result<Self, DecodeError> {
        let failed = |source| DecodeError {
            event_type: event_type.to_owned(),
            source,
        };
        let Some(map) = payload.as_object() else {
            // Not an object: no event's payload; the derived deserializer says why.
            return serde_json::from_value(payload.clone()).map_err(failed);
        };
        let tag = serde_json::Value::String(event_type.to_owned());
        let entries = std::iter::once(("type", &tag)).chain(
            map.iter()
                .filter(|(key, _)| key.as_str() != "type")
                .map(|(key, value)| (key.as_str(), value)),
        );
        DossierEvent::deserialize(
            serde::de::value::MapDeserializer::<_, serde_json::Error>::new(entries),
        )
        .map_err(failed)
    }

    /// [`from_parts`](Self::from_parts) for a payload still in its JSON text (as the log's
    /// `payload::text` gives it): the same answer for every input, without building a
    /// `serde_json::Value` first.
    ///
    /// The text is decoded as the object with the tag in front (`{"type":"<event_type>", …the
    /// payload's entries}`), its strings borrowed from the text: about 0.6 × the time of parsing
    /// into a `Value` and decoding that (a rebuild's decoding, measured). Whatever this refuses (a payload with a `type`
    /// key of its own or a duplicate key, which the tagged object would read differently, not
    /// an object, not JSON, an unknown type) goes to `from_parts`, which decides and explains,
    /// so the two never disagree.
    pub fn from_parts_text(event_type: &str, payload: &str) -> Result<Self, DecodeError> {
        if let Some(event) = Self::tagged_text(event_type, payload) {
            return Ok(event);
        }
        let value: serde_json::Value =
            serde_json::from_str(payload).map_err(|source| DecodeError {
                event_type: event_type.to_owned(),
                source,
            })?;
        Self::from_parts(event_type, &value)
    }

    /// The fast path of [`from_parts_text`](Self::from_parts_text): `None` for anything it does
    /// not decode exactly as `from_parts` would.
    fn tagged_text(event_type: &str, payload: &str) -> Option<Self> {
        // A known name only: it is then plain JSON-safe ASCII.
        let kind = event_type.parse::<EventType>().ok()?;
        let entries = payload.trim_start().strip_prefix('{')?;
        let mut text = String::with_capacity(payload.len() + 40);
        text.push_str("{\"type\":\"");
        text.push_str(kind.as_str());
        text.push('"');
        if !entries.trim_start().starts_with('}') {
            text.push(',');
        }
        text.push_str(entries);
        // serde refuses a second `type` (a duplicate tag) and a struct's duplicate field, so a
        // payload `from_parts` reads with its own `type` replaced or a later key winning never
        // decodes here.
        serde_json::from_str(&text).ok()
    }
}

/// An event with the business time it happened at, as the fold needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub occurred_at: DateTime<Utc>,
    pub body: DossierEvent,
}

impl Event {
    /// The one decoder from a stored row of the log (its `event_type`, `occurred_at` and
    /// `payload` columns) to a domain event. Every reader of the log decodes through it —
    /// `writepath::decode` for an `eventlog::StoredEvent`, this directly for readers with rows of
    /// their own — and names the row in its own error.
    pub fn from_row(
        event_type: &str,
        occurred_at: DateTime<Utc>,
        payload: &serde_json::Value,
    ) -> Result<Event, DecodeError> {
        Ok(Event {
            occurred_at,
            body: DossierEvent::from_parts(event_type, payload)?,
        })
    }

    /// [`from_row`](Self::from_row) for a row read with its payload as JSON text
    /// ([`DossierEvent::from_parts_text`]): the same answer, cheaper.
    pub fn from_row_text(
        event_type: &str,
        occurred_at: DateTime<Utc>,
        payload: &str,
    ) -> Result<Event, DecodeError> {
        Ok(Event {
            occurred_at,
            body: DossierEvent::from_parts_text(event_type, payload)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_type_names_round_trip_and_are_distinct() {
        let mut names: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
    }

    #[test]
    fn unknown_event_type_names_are_refused() {
        for bad in [
            "",
            "Received",
            "received ",
            "refused-at-intake",
            "no_such_event",
        ] {
            assert_eq!(
                bad.parse::<EventType>(),
                Err(UnknownEventType(bad.to_owned()))
            );
        }
    }
}
