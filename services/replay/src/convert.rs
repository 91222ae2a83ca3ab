//! Stored events → their replay form: the envelope, the typed `events.proto` message, and the
//! canonical bytes exactly as hashed. By hand, in one place (no prost derives on domain types).

use api::v1 as pb;
use api::v1::event::Body;
use domain::{DossierEvent, FeeKind, Outcome, PaymentChannel, Rating, TransferMode};
use eventlog::{ReadError, StoredEvent};
use svc::convert::{
    pb_apology_delivery, pb_level, pb_notice_unit, pb_procedure_rules, pb_profile,
    pb_return_method, pb_statutory_time, pb_timeliness,
};
use svc::status::to_timestamp;

/// The replay form of a stored event. The typed `event` is absent if the payload does not
/// decode as a known event (logged); `canonical_json` always carries the content. Corrupt only
/// if the position or version is out of range (never for an event read from the log).
pub fn replayed_event(stored: &StoredEvent) -> Result<pb::ReplayedEvent, ReadError> {
    let body = match writepath::decode(stored) {
        Ok(event) => Some(body(&event.body)),
        Err(error) => {
            tracing::warn!(position = stored.position, %error, "replay: stored payload is not a known event");
            None
        }
    };
    replayed_event_with(stored, body)
}

/// The replay form of a stored event whose content is already decoded.
pub fn replayed_event_with(
    stored: &StoredEvent,
    body: Option<Body>,
) -> Result<pb::ReplayedEvent, ReadError> {
    let (position, version) = stored.place()?;
    let (position, version) = (position.get(), version.get());
    let occurred_at = Some(to_timestamp(stored.occurred_at));
    let recorded_at = Some(to_timestamp(stored.recorded_at));
    Ok(pb::ReplayedEvent {
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
    })
}

/// Marks the sealed applicants of `erased` dossiers as erased (their data key is destroyed).
pub fn mark_erased(event: &mut pb::ReplayedEvent, erased: &std::collections::HashSet<String>) {
    if !erased.contains(&event.dossier_id) {
        return;
    }
    if let Some(pb::Event {
        body: Some(Body::Received(received)),
        ..
    }) = &mut event.event
        && received.applicant_data == pb::ApplicantData::Sealed as i32
    {
        received.applicant_data = pb::ApplicantData::Erased as i32;
    }
}

/// The dossiers of `events` whose `received` event holds an applicant: those to ask
/// `personal::erased_among` about.
pub fn sealed_dossiers<'a>(events: impl IntoIterator<Item = &'a pb::ReplayedEvent>) -> Vec<String> {
    events
        .into_iter()
        .filter(|e| {
            matches!(&e.event, Some(pb::Event { body: Some(Body::Received(r)), .. })
                if r.applicant_data == pb::ApplicantData::Sealed as i32)
        })
        .map(|e| e.dossier_id.clone())
        .collect()
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
            procedure,
            applicant,
            return_method,
        } => Body::Received(pb::Received {
            profile: Some(pb_profile(p)),
            statutory_time: Some(pb_statutory_time(*statutory_time)),
            fee_required: *fee_required,
            components: components.iter().map(|c| c.as_str().to_owned()).collect(),
            due_at: Some(to_timestamp(*due_at)),
            procedure: procedure.as_ref().map(pb_procedure_rules),
            // Never the plaintext: sealed here; `mark_erased` says erased where the key is gone.
            applicant: None,
            applicant_data: if applicant.is_some() {
                pb::ApplicantData::Sealed
            } else {
                pb::ApplicantData::Unspecified
            } as i32,
            return_method: return_method.map_or(pb::ReturnMethod::Unspecified, pb_return_method)
                as i32,
        }),
        DossierEvent::ComponentsDigitized { digitized, reused } => {
            Body::ComponentsDigitized(pb::ComponentsDigitized {
                digitized: digitized.iter().map(|c| c.as_str().to_owned()).collect(),
                reused: reused.iter().map(|c| c.as_str().to_owned()).collect(),
            })
        }
        DossierEvent::RefusedAtIntake { profile: p, reason } => {
            Body::RefusedAtIntake(pb::RefusedAtIntake {
                profile: Some(pb_profile(p)),
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
        DossierEvent::SupplementRequested { reason, closes_at } => {
            Body::SupplementRequested(pb::SupplementRequested {
                reason: reason.as_str().to_owned(),
                closes_at: closes_at.map(to_timestamp),
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
            original_due_at,
            signer,
            delivery,
            notice,
        } => Body::ApologyIssued(pb::ApologyIssued {
            reason: reason.as_str().to_owned(),
            new_appointment: Some(to_timestamp(*new_appointment)),
            on_time: *on_time,
            original_due_at: original_due_at.map(to_timestamp),
            signer: signer
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            delivery: delivery.map_or(pb::ApologyDelivery::Unspecified, pb_apology_delivery) as i32,
            notice_unit: notice.map_or(pb::NoticeUnit::Unspecified, pb_notice_unit) as i32,
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
        DossierEvent::Stopped { reason, cause } => Body::Stopped(pb::Stopped {
            reason: reason.as_str().to_owned(),
            supplement_not_received: cause.as_ref().map(|cause| match cause {
                domain::StopCause::SupplementNotReceived {
                    requested_at,
                    closes_at,
                } => pb::SupplementNotReceived {
                    requested_at: Some(to_timestamp(*requested_at)),
                    closes_at: Some(to_timestamp(*closes_at)),
                },
            }),
        }),
        DossierEvent::ResultDigitized {
            document_ref,
            sha256,
        } => Body::ResultDigitized(pb::ResultDigitized {
            document_ref: document_ref.as_str().to_owned(),
            sha256: sha256.clone(),
        }),
        DossierEvent::ResultReturned { method } => Body::ResultReturned(pb::ResultReturned {
            method: pb_return_method(*method) as i32,
        }),
        DossierEvent::SatisfactionRated { rating: r } => {
            Body::SatisfactionRated(pb::SatisfactionRated {
                rating: rating(*r) as i32,
            })
        }
        DossierEvent::LateWithdrawn { due_at, timeliness } => {
            Body::LateWithdrawn(pb::LateWithdrawn {
                due_at: Some(to_timestamp(*due_at)),
                timeliness: pb_timeliness(*timeliness) as i32,
            })
        }
        DossierEvent::FinancialObligationRequested {
            reason,
            pauses_clock,
        } => Body::FinancialObligationRequested(pb::FinancialObligationRequested {
            reason: reason.as_str().to_owned(),
            pauses_clock: *pauses_clock,
        }),
        DossierEvent::FinancialObligationFulfilled { due_at, paused } => {
            Body::FinancialObligationFulfilled(pb::FinancialObligationFulfilled {
                due_at: Some(to_timestamp(*due_at)),
                paused_minutes: paused.minutes(),
            })
        }
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

fn rating(v: Rating) -> pb::Rating {
    match v {
        Rating::VerySatisfied => pb::Rating::VerySatisfied,
        Rating::Satisfied => pb::Rating::Satisfied,
        Rating::Unsatisfied => pb::Rating::Unsatisfied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calendar::{Timeliness, WorkingDuration};
    use chrono::{DateTime, Utc};
    use domain::{
        AgencyCode, ApplicantType, Channel, ComponentCode, EventType, OnlineServiceLevel,
        ProcedureCode, Profile, SectorCode, Text, TransactionId,
    };

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_714_000_000 + seconds, 0).unwrap()
    }

    fn agency(code: &str) -> AgencyCode {
        AgencyCode::parse(code).unwrap()
    }

    fn text(s: &str) -> Text {
        Text::parse(s).unwrap()
    }

    fn domain_profile() -> Profile {
        Profile {
            procedure: ProcedureCode::parse("1.004227").unwrap(),
            online_level: OnlineServiceLevel::PartialOnline,
            sector: SectorCode::parse("land").unwrap(),
            agency: agency("000.00.12.H40"),
            level: domain::Level::Commune,
            channel: Channel::Postal,
            applicant_type: ApplicantType::Business,
        }
    }

    /// One event of every kind the domain has.
    fn samples() -> Vec<DossierEvent> {
        vec![
            DossierEvent::Received {
                procedure: None,
                profile: domain_profile(),
                statutory_time: calendar::StatutoryTime::Hours(12),
                fee_required: true,
                components: vec![ComponentCode::parse("a").unwrap()],
                due_at: t(3600),
                applicant: None,
                return_method: None,
            },
            DossierEvent::ComponentsDigitized {
                digitized: vec![ComponentCode::parse("a").unwrap()],
                reused: vec![ComponentCode::parse("b").unwrap()],
            },
            DossierEvent::RefusedAtIntake {
                profile: domain_profile(),
                reason: text("thiếu"),
            },
            DossierEvent::Transferred {
                from_agency: agency("000.00.12.H40"),
                to_agency: agency("000.00.01.H40"),
                mode: TransferMode::Paper,
            },
            DossierEvent::SupplementRequested {
                closes_at: None,
                reason: text("bổ sung"),
            },
            DossierEvent::SupplementReceived {
                due_at: t(7200),
                paused: WorkingDuration::from_minutes(95),
            },
            DossierEvent::Late { due_at: t(7200) },
            DossierEvent::ApologyIssued {
                reason: text("xin lỗi"),
                new_appointment: t(9000),
                on_time: true,
                original_due_at: Some(t(7200)),
                signer: Some(text("Giám đốc")),
                delivery: Some(domain::ApologyDelivery::Email),
                notice: Some(domain::NoticeUnit::CalendarDay),
            },
            DossierEvent::FeeAssessed {
                amount_vnd: 150_000,
                kind: FeeKind::Tax,
            },
            DossierEvent::Paid {
                amount_vnd: 150_000,
                channel: PaymentChannel::ProvincialGateway,
                transaction_id: TransactionId::parse("GW-1").unwrap(),
            },
            DossierEvent::Resolved {
                outcome: Outcome::Refused,
                deciding_agency: agency("000.00.01.H40"),
                due_at: t(7200),
                timeliness: Timeliness::Early,
            },
            DossierEvent::Withdrawn {
                reason: text("rút"),
            },
            DossierEvent::Stopped {
                cause: None,
                reason: text("dừng"),
            },
            DossierEvent::ResultDigitized {
                document_ref: text("kq/1.pdf"),
                sha256: "ab".repeat(32),
            },
            DossierEvent::ResultReturned {
                method: domain::ReturnMethod::Post,
            },
            DossierEvent::SatisfactionRated {
                rating: Rating::Unsatisfied,
            },
            DossierEvent::FinancialObligationRequested {
                reason: text("land use levy"),
                pauses_clock: true,
            },
            DossierEvent::FinancialObligationFulfilled {
                due_at: t(7200),
                paused: calendar::WorkingDuration::from_hours(8),
            },
            DossierEvent::LateWithdrawn {
                due_at: t(7200),
                timeliness: Timeliness::OnTime,
            },
        ]
    }

    #[test]
    fn every_domain_event_has_its_own_typed_body() {
        let samples = samples();
        let mut kinds: Vec<EventType> = samples.iter().map(|e| e.event_type()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds, EventType::ALL, "one sample per kind");
        for event in &samples {
            assert_eq!(svc::convert::body_type(&body(event)), event.event_type());
        }
    }

    #[test]
    fn apology_of_mau_04_and_late_withdrawn_carry_their_fields() {
        let samples = samples();
        let apology = samples
            .iter()
            .find(|e| e.event_type() == EventType::ApologyIssued)
            .unwrap();
        let Body::ApologyIssued(a) = body(apology) else {
            panic!()
        };
        assert_eq!(a.original_due_at, Some(to_timestamp(t(7200))));
        assert_eq!(a.signer, "Giám đốc");
        assert_eq!(a.delivery, pb::ApologyDelivery::Email as i32);
        assert_eq!(a.notice_unit, pb::NoticeUnit::CalendarDay as i32);
        let Body::LateWithdrawn(w) = body(samples.last().unwrap()) else {
            panic!()
        };
        assert_eq!(w.due_at, Some(to_timestamp(t(7200))));
        assert_eq!(w.timeliness, pb::Timeliness::OnTime as i32);
    }

    #[test]
    fn values_are_carried_over() {
        let samples = samples();
        let Body::Received(r) = body(&samples[0]) else {
            panic!()
        };
        let p = r.profile.unwrap();
        assert_eq!(
            (p.online_level, p.level, p.channel, p.applicant_type),
            (
                pb::OnlineServiceLevel::PartialOnline as i32,
                pb::Level::Commune as i32,
                pb::Channel::Postal as i32,
                pb::ApplicantType::Business as i32
            )
        );
        assert_eq!(
            r.statutory_time.unwrap().unit,
            Some(pb::statutory_time::Unit::WorkingHours(12))
        );
        assert!(r.fee_required);
        assert_eq!(r.due_at, Some(to_timestamp(t(3600))));
        let Body::SupplementReceived(s) = body(&samples[5]) else {
            panic!()
        };
        assert_eq!(s.paused_minutes, 95);
        let Body::Paid(p) = body(&samples[9]) else {
            panic!()
        };
        assert_eq!(
            (p.amount_vnd, p.channel, p.transaction_id.as_str()),
            (
                150_000,
                pb::PaymentChannel::ProvincialGateway as i32,
                "GW-1"
            )
        );
        let Body::Resolved(r) = body(&samples[10]) else {
            panic!()
        };
        assert_eq!(
            (r.outcome, r.timeliness, r.deciding_agency.as_str()),
            (
                pb::Outcome::Refused as i32,
                pb::Timeliness::Early as i32,
                "000.00.01.H40"
            )
        );
        let Body::Transferred(tr) = body(&samples[3]) else {
            panic!()
        };
        assert_eq!(tr.mode, pb::TransferMode::Paper as i32);
        assert_eq!(level("commune"), pb::Level::Commune);
        assert_eq!(level("county"), pb::Level::Unspecified);
    }
}
