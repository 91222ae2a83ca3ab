//! `eventlog::MAX_EVENT_BYTES` holds for every event the write path can produce: the largest
//! request the bounds of `domain::limits` let through, for every event type, is parsed by the
//! real conversions (`svc::convert`), decided by the real rules (`domain::decide`), turned into
//! the log's events (`writepath::new_events`) and measured as canonical JSON at the longest
//! position, version and `recorded_at` there can be.

use std::collections::BTreeMap;

use api::v1 as pb;
use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::limits::{
    AGENCY_CODE_MAX_CHARS, COMPONENT_CODE_MAX_CHARS, DOSSIER_ID_MAX_CHARS, MAX_AMOUNT_VND,
    MAX_COMPONENTS, MAX_STATUTORY_DAYS, PROCEDURE_CODE_MAX_CHARS, SECTOR_CODE_MAX_CHARS,
    TEXT_MAX_CHARS, TRANSACTION_ID_MAX_CHARS,
};
use domain::{
    Action, Command, Dossier, DossierEvent, Event, EventId, EventType, Rules, SupplementPolicy,
};
use eventlog::{MAX_EVENT_BYTES, StoredEvent};
use svc::convert;
use writepath::{new_events, routing_of};

/// The worst free text: every character takes 4 bytes of UTF-8 (and of canonical JSON).
fn worst_text() -> String {
    "\u{1F600}".repeat(TEXT_MAX_CHARS)
}

/// A code of `n` characters, distinct per `i`.
fn code(i: usize, n: usize, pad: char) -> String {
    format!("{i}{}", pad.to_string().repeat(n - i.to_string().len()))
}

fn pb_profile(agency: &str) -> pb::Profile {
    pb::Profile {
        procedure_code: code(1, PROCEDURE_CODE_MAX_CHARS, '/'),
        online_level: pb::OnlineServiceLevel::PartialOnline as i32,
        sector_code: code(2, SECTOR_CODE_MAX_CHARS, '-'),
        agency_code: agency.to_owned(),
        level: pb::Level::Province as i32,
        channel: pb::Channel::Online as i32,
        applicant_type: pb::ApplicantType::Organisation as i32,
    }
}

struct Run {
    rules_calendar: calendar::Calendar,
    dossier_id: String,
    state: Dossier,
    /// The largest canonical size seen per event type.
    sizes: BTreeMap<EventType, usize>,
}

impl Run {
    fn new(calendar: &calendar::Calendar, n: usize) -> Run {
        Run {
            rules_calendar: calendar.clone(),
            dossier_id: code(n, DOSSIER_ID_MAX_CHARS, '_'),
            state: Dossier::default(),
            sizes: BTreeMap::new(),
        }
    }

    /// Decides `action` at `at`, measures the events and applies them.
    fn step(&mut self, at: DateTime<Utc>, action: Action) {
        let rules = Rules {
            calendar: &self.rules_calendar,
            supplement_policy: SupplementPolicy::Extend,
            apology_notice: domain::NoticeUnit::WorkingDay,
        };
        let command = Command {
            occurred_at: at,
            action,
        };
        let decision = domain::decide(&self.state, &command, rules)
            .unwrap_or_else(|r| panic!("{command:?} refused: {r}"));
        // One event per command, but a resolution that withdraws a late mark.
        assert!(
            matches!(
                decision,
                domain::Decision::Event(_) | domain::Decision::ResolvedWithdrawingLate(_)
            ),
            "{command:?}: {decision:?}"
        );
        let decided = decision.into_events();
        let routing = routing_of(&self.state, &decided).expect("a profile");
        let id = EventId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        for (new, body) in new_events(id, &command, &decided, [0xff; 32])
            .into_iter()
            .zip(&decided)
        {
            let stored = StoredEvent {
                position: i64::MAX,
                event_id: new.event_id,
                dossier_id: self.dossier_id.clone(),
                version: i32::MAX,
                event_type: new.event_type.clone(),
                occurred_at: new.occurred_at,
                recorded_at: Utc
                    .with_ymd_and_hms(9999, 12, 31, 23, 59, 59)
                    .unwrap()
                    .checked_add_signed(Duration::microseconds(999_999))
                    .unwrap(),
                routing: routing.clone(),
                payload: new.payload.clone(),
                fingerprint: new.fingerprint,
                event_hash: [0; 32],
                chain_hash: [0; 32],
            };
            let size = eventlog::canonical_bytes(&stored).len();
            let entry = self.sizes.entry(body.event_type()).or_default();
            *entry = (*entry).max(size);
            self.state.evolve(&Event {
                occurred_at: new.occurred_at,
                body: body.clone(),
            });
        }
    }
}

#[test]
fn largest_events_fit() {
    let calendar = calendar::Calendar::vietnam_default();
    let t0 = Utc.with_ymd_and_hms(2024, 3, 4, 2, 0, 0).unwrap();
    let agency = code(3, AGENCY_CODE_MAX_CHARS, '.');
    let other_agency = code(4, AGENCY_CODE_MAX_CHARS, '.');
    let codes: Vec<String> = (0..MAX_COMPONENTS)
        .map(|i| code(i, COMPONENT_CODE_MAX_CHARS, '.'))
        .collect();
    let receive = |agency: &str| Action::Receive {
        profile: convert::profile("profile", Some(&pb_profile(agency))).unwrap(),
        statutory_time: convert::statutory_time(
            "statutory_time",
            Some(&pb::StatutoryTime {
                unit: Some(pb::statutory_time::Unit::WorkingDays(MAX_STATUTORY_DAYS)),
            }),
        )
        .unwrap(),
        fee_required: true,
        components: convert::components("components", &codes).unwrap(),
        due_at: None,
        // The largest rules a catalogue entry can give (every optional field set).
        procedure: Some(domain::ProcedureRules {
            catalogue_version: u64::from(u32::MAX),
            supplement_policy: domain::SupplementPolicy::Extend,
            max_supplement_requests: Some(catalogue::MAX_SUPPLEMENT_REQUESTS),
            close_after_working_days: Some(catalogue::MAX_CLOSE_AFTER_DAYS),
            same_day_cutoff: chrono::NaiveTime::from_hms_opt(15, 0, 0),
            obligation_pauses_clock: true,
        }),
        applicant: None,
        return_method: None,
    };
    let text = || convert::text("reason", &worst_text()).unwrap();
    let mut sizes = BTreeMap::new();

    // One dossier through every step that does not end it.
    let mut run = Run::new(&calendar, 1);
    run.step(t0, receive(&agency));
    let half = MAX_COMPONENTS / 2;
    run.step(
        t0 + Duration::hours(1),
        Action::RecordDigitized {
            digitized: convert::components("digitized", &codes[..half]).unwrap(),
            reused: convert::components("reused", &codes[half..]).unwrap(),
        },
    );
    run.step(
        t0 + Duration::hours(2),
        Action::Transfer {
            to_agency: convert::agency("to_agency", &other_agency).unwrap(),
            mode: domain::TransferMode::Electronic,
        },
    );
    run.step(
        t0 + Duration::hours(3),
        Action::RequestSupplement { reason: text() },
    );
    run.step(t0 + Duration::hours(4), Action::ReceiveSupplement);
    run.step(
        t0 + Duration::hours(5),
        Action::RequestFinancialObligation { reason: text() },
    );
    run.step(t0 + Duration::hours(6), Action::FulfilFinancialObligation);
    let due = run.state.due_at.expect("due");
    run.step(due + Duration::days(1), Action::MarkLate);
    run.step(
        due + Duration::days(2),
        Action::IssueApology {
            reason: text(),
            new_appointment: due + Duration::days(30),
            signer: Some(text()),
            delivery: Some(domain::ApologyDelivery::PortalAccount),
        },
    );
    run.step(
        due + Duration::days(3),
        Action::AssessFee {
            amount_vnd: convert::amount_vnd("amount_vnd", MAX_AMOUNT_VND).unwrap(),
            kind: domain::FeeKind::Charge,
        },
    );
    run.step(
        due + Duration::days(4),
        Action::RecordPayment {
            amount_vnd: convert::amount_vnd("amount_vnd", MAX_AMOUNT_VND).unwrap(),
            channel: domain::PaymentChannel::ProvincialGateway,
            // `"` and `\` take 2 bytes each in JSON.
            transaction_id: convert::transaction_id(
                "transaction_id",
                &"\"\\".repeat(TRANSACTION_ID_MAX_CHARS / 2),
            )
            .unwrap(),
        },
    );
    run.step(
        due + Duration::days(5),
        Action::Resolve {
            outcome: domain::Outcome::Approved,
            deciding_agency: convert::agency("deciding_agency", &other_agency).unwrap(),
        },
    );
    run.step(
        due + Duration::days(6),
        Action::AttachResult {
            document_ref: convert::text("document_ref", &worst_text()).unwrap(),
            sha256: "f".repeat(64),
        },
    );
    run.step(
        due + Duration::days(7),
        Action::ReturnResult {
            method: domain::ReturnMethod::Online,
        },
    );
    run.step(
        due + Duration::days(8),
        Action::Rate {
            rating: domain::Rating::VerySatisfied,
        },
    );
    sizes.append(&mut run.sizes);

    // The events that end a dossier, each on a dossier of its own.
    let mut run = Run::new(&calendar, 2);
    run.step(
        t0,
        Action::RefuseAtIntake {
            profile: convert::profile("profile", Some(&pb_profile(&agency))).unwrap(),
            reason: text(),
        },
    );
    sizes.append(&mut run.sizes);
    for (n, end) in [
        (3, Action::Withdraw { reason: text() }),
        (4, Action::Stop { reason: text() }),
    ] {
        let mut run = Run::new(&calendar, n);
        run.step(t0, receive(&agency));
        run.step(t0 + Duration::hours(1), end);
        for (k, v) in run.sizes {
            let e = sizes.entry(k).or_default();
            *e = (*e).max(v);
        }
    }

    // The automatic closing: a `stopped` with its cause.
    let mut run = Run::new(&calendar, 5);
    run.step(t0, receive(&agency));
    run.step(
        t0 + Duration::hours(1),
        Action::RequestSupplement { reason: text() },
    );
    let closes_at = run.state.supplement_closes_at.expect("closes");
    run.step(closes_at + Duration::days(1), Action::CloseUnsupplemented);
    for (k, v) in run.sizes {
        let e = sizes.entry(k).or_default();
        *e = (*e).max(v);
    }

    // A late mark withdrawn by a resolution dated before the due time (an offline counter).
    let mut run = Run::new(&calendar, 5);
    run.step(t0, receive(&agency));
    let due = run.state.due_at.expect("due");
    run.step(due + Duration::days(1), Action::MarkLate);
    run.step(
        due - Duration::hours(1),
        Action::Resolve {
            outcome: domain::Outcome::Refused,
            deciding_agency: convert::agency("deciding_agency", &other_agency).unwrap(),
        },
    );
    for (k, v) in run.sizes {
        let e = sizes.entry(k).or_default();
        *e = (*e).max(v);
    }

    // Every event type was measured (a new type needs a case above).
    let measured: Vec<EventType> = sizes.keys().copied().collect();
    let mut expected = EventType::ALL.to_vec();
    expected.sort_unstable();
    assert_eq!(measured, expected);
    for (event_type, size) in &sizes {
        println!("{event_type:>22}: {size:>6} bytes");
        assert!(
            *size <= MAX_EVENT_BYTES,
            "the largest {event_type} event takes {size} bytes, more than {MAX_EVENT_BYTES}"
        );
    }
    // The largest is apology_issued (reason and signer, 2,000 four-byte characters each) or
    // received (200 codes); keep a wide margin so that
    // the canonical form can grow a field or two without revisiting every bound.
    let largest = sizes.values().max().copied().unwrap_or_default();
    assert!(largest <= MAX_EVENT_BYTES / 2, "{largest}");

    // One past a bound is refused where it is parsed.
    let too_many: Vec<String> = (0..=MAX_COMPONENTS)
        .map(|i| code(i, COMPONENT_CODE_MAX_CHARS, '.'))
        .collect();
    assert!(convert::components("components", &too_many).is_err());
    assert!(convert::text("reason", &format!("{}x", worst_text())).is_err());
}

/// Exhaustive over `DossierEvent`: a new event type fails to compile here until it is added
/// to `every_type` and measured above.
#[allow(dead_code)]
fn every_variant_is_measured(event: &DossierEvent) {
    match event {
        DossierEvent::Received { .. }
        | DossierEvent::ComponentsDigitized { .. }
        | DossierEvent::RefusedAtIntake { .. }
        | DossierEvent::Transferred { .. }
        | DossierEvent::SupplementRequested { .. }
        | DossierEvent::SupplementReceived { .. }
        | DossierEvent::Late { .. }
        | DossierEvent::ApologyIssued { .. }
        | DossierEvent::FeeAssessed { .. }
        | DossierEvent::Paid { .. }
        | DossierEvent::Resolved { .. }
        | DossierEvent::Withdrawn { .. }
        | DossierEvent::Stopped { .. }
        | DossierEvent::ResultDigitized { .. }
        | DossierEvent::ResultReturned { .. }
        | DossierEvent::SatisfactionRated { .. }
        | DossierEvent::FinancialObligationRequested { .. }
        | DossierEvent::FinancialObligationFulfilled { .. }
        | DossierEvent::LateWithdrawn { .. } => {}
    }
}
