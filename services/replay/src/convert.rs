//! Stored events → their replay form: the envelope, the typed `events.proto` message, and the
//! canonical bytes exactly as hashed. By hand, in one place (no prost derives on domain types).

use api::v1 as pb;
use api::v1::event::Body;
use calendar::StatutoryTime;
use domain::{
    ApplicantType, Channel, DossierEvent, FeeKind, OnlineServiceLevel, Outcome, PaymentChannel,
    Profile, Rating, ReturnMethod, TransferMode,
};
use eventlog::StoredEvent;
use svc::convert::{pb_level, pb_timeliness};
use svc::status::to_timestamp;

/// The replay form of a stored event. The typed `event` is absent if the payload does not
/// decode as a known event (logged); `canonical_json` always carries the content.
pub fn replayed_event(stored: &StoredEvent) -> pb::ReplayedEvent {
    let body = match DossierEvent::from_parts(&stored.event_type, &stored.payload) {
        Ok(event) => Some(body(&event)),
        Err(error) => {
            tracing::warn!(position = stored.position, %error, "replay: stored payload is not a known event");
            None
        }
    };
    replayed_event_with(stored, body)
}

/// The replay form of a stored event whose content is already decoded.
pub fn replayed_event_with(stored: &StoredEvent, body: Option<Body>) -> pb::ReplayedEvent {
    let position = u64::try_from(stored.position).unwrap_or_default();
    let version = u32::try_from(stored.version).unwrap_or_default();
    let occurred_at = Some(to_timestamp(stored.occurred_at));
    let recorded_at = Some(to_timestamp(stored.recorded_at));
    pb::ReplayedEvent {
        position,
        dossier_id: stored.dossier_id.clone(),
        version,
        event_id: stored.event_id.to_string(),
        event_type: stored.event_type.clone(),
        occurred_at,
        recorded_at,
        level: level(&stored.routing.level) as i32,
        agency_code: stored.routing.agency.clone(),
        sector_code: stored.routing.sector.clone(),
        event: body.map(|body| pb::Event {
            event_id: stored.event_id.to_string(),
            dossier_id: stored.dossier_id.clone(),
            occurred_at,
            recorded_at,
            position,
            version,
            body: Some(body),
        }),
        canonical_json: eventlog::canonical_bytes(stored),
        event_hash: stored.event_hash.to_vec(),
        chain_hash: stored.chain_hash.to_vec(),
    }
}

/// A stored level name as the API's enum (`LEVEL_UNSPECIFIED` if it is none of the three).
pub fn level(stored: &str) -> pb::Level {
    domain::Level::parse(stored).map_or(pb::Level::Unspecified, pb_level)
}

/// The typed content of a domain event.
pub fn body(event: &DossierEvent) -> Body {
    match event {
        DossierEvent::Received {
            profile: p,
            statutory_time,
            fee_required,
            components,
            due_at,
        } => Body::Received(pb::Received {
            profile: Some(profile(p)),
            statutory_time: Some(statutory(*statutory_time)),
            fee_required: *fee_required,
            components: components.iter().map(|c| c.as_str().to_owned()).collect(),
            due_at: Some(to_timestamp(*due_at)),
        }),
        DossierEvent::ComponentsDigitized { digitized, reused } => {
            Body::ComponentsDigitized(pb::ComponentsDigitized {
                digitized: digitized.iter().map(|c| c.as_str().to_owned()).collect(),
                reused: reused.iter().map(|c| c.as_str().to_owned()).collect(),
            })
        }
        DossierEvent::RefusedAtIntake { profile: p, reason } => {
            Body::RefusedAtIntake(pb::RefusedAtIntake {
                profile: Some(profile(p)),
                reason: reason.as_str().to_owned(),
            })
        }
        DossierEvent::Transferred {
            from_agency,
            to_agency,
            mode,
        } => Body::Transferred(pb::Transferred {
            from_agency: from_agency.as_str().to_owned(),
            to_agency: to_agency.as_str().to_owned(),
            mode: transfer_mode(*mode) as i32,
        }),
        DossierEvent::SupplementRequested { reason } => {
            Body::SupplementRequested(pb::SupplementRequested {
                reason: reason.as_str().to_owned(),
            })
        }
        DossierEvent::SupplementReceived { due_at, paused } => {
            Body::SupplementReceived(pb::SupplementReceived {
                due_at: Some(to_timestamp(*due_at)),
                paused_minutes: paused.minutes(),
            })
        }
        DossierEvent::Late { due_at } => Body::Late(pb::Late {
            due_at: Some(to_timestamp(*due_at)),
        }),
        DossierEvent::ApologyIssued {
            reason,
            new_appointment,
            on_time,
        } => Body::ApologyIssued(pb::ApologyIssued {
            reason: reason.as_str().to_owned(),
            new_appointment: Some(to_timestamp(*new_appointment)),
            on_time: *on_time,
        }),
        DossierEvent::FeeAssessed { amount_vnd, kind } => Body::FeeAssessed(pb::FeeAssessed {
            amount_vnd: *amount_vnd,
            kind: fee_kind(*kind) as i32,
        }),
        DossierEvent::Paid {
            amount_vnd,
            channel,
            transaction_id,
        } => Body::Paid(pb::Paid {
            amount_vnd: *amount_vnd,
            channel: payment_channel(*channel) as i32,
            transaction_id: transaction_id.as_str().to_owned(),
        }),
        DossierEvent::Resolved {
            outcome: o,
            deciding_agency,
            due_at,
            timeliness,
        } => Body::Resolved(pb::Resolved {
            outcome: outcome(*o) as i32,
            deciding_agency: deciding_agency.as_str().to_owned(),
            due_at: Some(to_timestamp(*due_at)),
            timeliness: pb_timeliness(*timeliness) as i32,
        }),
        DossierEvent::Withdrawn { reason } => Body::Withdrawn(pb::Withdrawn {
            reason: reason.as_str().to_owned(),
        }),
        DossierEvent::Stopped { reason } => Body::Stopped(pb::Stopped {
            reason: reason.as_str().to_owned(),
        }),
        DossierEvent::ResultDigitized {
            document_ref,
            sha256,
        } => Body::ResultDigitized(pb::ResultDigitized {
            document_ref: document_ref.as_str().to_owned(),
            sha256: sha256.clone(),
        }),
        DossierEvent::ResultReturned { method } => Body::ResultReturned(pb::ResultReturned {
            method: return_method(*method) as i32,
        }),
        DossierEvent::SatisfactionRated { rating: r } => {
            Body::SatisfactionRated(pb::SatisfactionRated {
                rating: rating(*r) as i32,
            })
        }
    }
}

pub fn profile(p: &Profile) -> pb::Profile {
    pb::Profile {
        procedure_code: p.procedure.as_str().to_owned(),
        online_level: online_level(p.online_level) as i32,
        sector_code: p.sector.as_str().to_owned(),
        agency_code: p.agency.as_str().to_owned(),
        level: pb_level(p.level) as i32,
        channel: channel(p.channel) as i32,
        applicant_type: applicant_type(p.applicant_type) as i32,
    }
}

fn statutory(t: StatutoryTime) -> pb::StatutoryTime {
    use pb::statutory_time::Unit;
    pb::StatutoryTime {
        unit: Some(match t {
            StatutoryTime::Days(d) => Unit::WorkingDays(d),
            StatutoryTime::Hours(h) => Unit::WorkingHours(h),
        }),
    }
}

fn online_level(v: OnlineServiceLevel) -> pb::OnlineServiceLevel {
    match v {
        OnlineServiceLevel::FullOnline => pb::OnlineServiceLevel::FullOnline,
        OnlineServiceLevel::PartialOnline => pb::OnlineServiceLevel::PartialOnline,
        OnlineServiceLevel::NotOnline => pb::OnlineServiceLevel::NotOnline,
    }
}

fn channel(v: Channel) -> pb::Channel {
    match v {
        Channel::Direct => pb::Channel::Direct,
        Channel::Online => pb::Channel::Online,
        Channel::Postal => pb::Channel::Postal,
    }
}

fn applicant_type(v: ApplicantType) -> pb::ApplicantType {
    match v {
        ApplicantType::Citizen => pb::ApplicantType::Citizen,
        ApplicantType::Business => pb::ApplicantType::Business,
        ApplicantType::Organisation => pb::ApplicantType::Organisation,
    }
}

fn transfer_mode(v: TransferMode) -> pb::TransferMode {
    match v {
        TransferMode::Electronic => pb::TransferMode::Electronic,
        TransferMode::Paper => pb::TransferMode::Paper,
    }
}

fn fee_kind(v: FeeKind) -> pb::FeeKind {
    match v {
        FeeKind::Fee => pb::FeeKind::Fee,
        FeeKind::Charge => pb::FeeKind::Charge,
        FeeKind::Tax => pb::FeeKind::Tax,
    }
}

fn payment_channel(v: PaymentChannel) -> pb::PaymentChannel {
    match v {
        PaymentChannel::NationalPlatform => pb::PaymentChannel::NationalPlatform,
        PaymentChannel::ProvincialGateway => pb::PaymentChannel::ProvincialGateway,
        PaymentChannel::Counter => pb::PaymentChannel::Counter,
    }
}

pub fn outcome(v: Outcome) -> pb::Outcome {
    match v {
        Outcome::Approved => pb::Outcome::Approved,
        Outcome::Refused => pb::Outcome::Refused,
    }
}

fn return_method(v: ReturnMethod) -> pb::ReturnMethod {
    match v {
        ReturnMethod::Counter => pb::ReturnMethod::Counter,
        ReturnMethod::Post => pb::ReturnMethod::Post,
        ReturnMethod::Online => pb::ReturnMethod::Online,
    }
}

fn rating(v: Rating) -> pb::Rating {
    match v {
        Rating::VerySatisfied => pb::Rating::VerySatisfied,
        Rating::Satisfied => pb::Rating::Satisfied,
        Rating::Unsatisfied => pb::Rating::Unsatisfied,
    }
}
