//! The fixed world the targets run in: the server's clock, the rules, the caller, and plausible
//! dossiers the commands are decided against (built through `decide` itself).

use std::sync::LazyLock;

use calendar::{Calendar, StatutoryTime};
use chrono::{DateTime, TimeZone, Utc};
use domain::{
    Action, AgencyCode, ApplicantType, Channel, Command, ComponentCode, Dossier, FeeKind, Level,
    OnlineServiceLevel, Outcome, PaymentChannel, ProcedureCode, ProcedureRules, Profile, Rules,
    SectorCode, SupplementPolicy, Text, TransactionId,
};
use svc::{Principal, Role};

/// The agency of the caller and of the dossiers in [`states`].
pub const AGENCY: &str = "000.00.12.H40";
/// Another agency (transfers).
pub const OTHER_AGENCY: &str = "000.00.01.H40";
/// The dossier of [`states`].
pub const DOSSIER: &str = "H40.22-240304-0001";

/// The server's clock: business times may not lie after it (plus the allowed skew).
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 3, 0, 0)
        .single()
        .expect("valid instant")
}

/// A local (UTC+7) wall-clock time.
pub fn local(y: i32, m: u32, d: u32, hh: u32, mm: u32) -> DateTime<Utc> {
    calendar::vn_offset()
        .with_ymd_and_hms(y, m, d, hh, mm, 0)
        .single()
        .expect("valid local time")
        .with_timezone(&Utc)
}

static CALENDAR: LazyLock<Calendar> = LazyLock::new(Calendar::vietnam_default);

/// The rules of both supplement policies.
pub fn rules() -> [Rules<'static>; 2] {
    [SupplementPolicy::Restart, SupplementPolicy::Extend].map(|supplement_policy| Rules {
        calendar: &CALENDAR,
        supplement_policy,
        apology_notice: domain::NoticeUnit::WorkingDay,
    })
}

/// A counter of [`AGENCY`] (the caller of every write target).
pub fn counter() -> Principal {
    Principal {
        name: "fuzz".to_owned(),
        agency: Some(agency(AGENCY)),
        level: Some(Level::District),
        role: Role::Counter,
        scopes: Vec::new(),
    }
}

fn agency(code: &str) -> AgencyCode {
    AgencyCode::parse(code).expect("valid agency code")
}

pub fn profile() -> Profile {
    Profile {
        procedure: ProcedureCode::parse("1.004227").expect("valid procedure"),
        online_level: OnlineServiceLevel::FullOnline,
        sector: SectorCode::parse("land").expect("valid sector"),
        agency: agency(AGENCY),
        level: Level::District,
        channel: Channel::Online,
        applicant_type: ApplicantType::Citizen,
    }
}

/// A catalogue version of `code`: the fixture profile's sector and level, 10 working days.
pub fn catalogued(code: &ProcedureCode) -> catalogue::ProcedureVersion {
    catalogue::ProcedureVersion {
        version: 7,
        procedure: catalogue::Procedure {
            code: code.clone(),
            name: Text::parse("Đăng ký đất đai").expect("valid text"),
            sector: profile().sector,
            statutory_time: StatutoryTime::Days(10),
            online_level: OnlineServiceLevel::FullOnline,
            fee_required: true,
            supplement_policy: SupplementPolicy::Restart,
            max_supplement_requests: Some(2),
            close_after_working_days: Some(5),
            same_day_cutoff: None,
            obligation_pauses_clock: true,
            effective_from: local(2024, 1, 1, 0, 0),
        },
        recorded_by: "fuzz".to_owned(),
        recorded_at: local(2024, 1, 1, 0, 0),
    }
}

/// Plausible dossiers a command may meet: none yet, just received (with a fee), waiting for a
/// supplement, transferred, fee assessed, resolved after payment, result attached, returned;
/// received under a catalogued procedure's rules, then waiting for a supplement that closes
/// the dossier by itself, or for a financial obligation that stops the clock.
pub fn states() -> &'static [Dossier] {
    static STATES: LazyLock<Vec<Dossier>> = LazyLock::new(build_states);
    &STATES
}

fn build_states() -> Vec<Dossier> {
    let received = vec![(
        local(2024, 3, 4, 9, 0),
        Action::Receive {
            profile: profile(),
            statutory_time: StatutoryTime::Days(10),
            fee_required: true,
            components: ["don-de-nghi", "cccd"]
                .map(|c| ComponentCode::parse(c).expect("valid component"))
                .to_vec(),
            due_at: None,
            procedure: None,
            applicant: None,
            return_method: None,
        },
    )];
    // The same procedure from the catalogue: one supplement request at most, closed 3 working
    // days after an unanswered one, a financial obligation stops the clock.
    let catalogued = vec![(
        local(2024, 3, 4, 9, 0),
        Action::Receive {
            profile: profile(),
            statutory_time: StatutoryTime::Days(10),
            fee_required: true,
            components: vec![ComponentCode::parse("don-de-nghi").expect("valid component")],
            due_at: None,
            procedure: Some(ProcedureRules {
                catalogue_version: 1,
                supplement_policy: SupplementPolicy::Extend,
                max_supplement_requests: Some(1),
                close_after_working_days: Some(3),
                same_day_cutoff: None,
                obligation_pauses_clock: true,
            }),
            applicant: None,
            return_method: None,
        },
    )];
    let mut closing = catalogued.clone();
    closing.push((
        local(2024, 3, 5, 10, 0),
        Action::RequestSupplement {
            reason: Text::parse("thiếu bản vẽ").expect("valid text"),
        },
    ));
    let mut obligation = catalogued.clone();
    obligation.push((
        local(2024, 3, 5, 10, 0),
        Action::RequestFinancialObligation {
            reason: Text::parse("nộp tiền sử dụng đất").expect("valid text"),
        },
    ));
    let mut supplement = received.clone();
    supplement.push((
        local(2024, 3, 5, 10, 0),
        Action::RequestSupplement {
            reason: Text::parse("thiếu bản vẽ").expect("valid text"),
        },
    ));
    let mut transferred = received.clone();
    transferred.push((
        local(2024, 3, 5, 10, 0),
        Action::Transfer {
            to_agency: agency(OTHER_AGENCY),
            mode: domain::TransferMode::Electronic,
        },
    ));
    let mut assessed = received.clone();
    assessed.push((
        local(2024, 3, 5, 10, 0),
        Action::AssessFee {
            amount_vnd: 150_000,
            kind: FeeKind::Fee,
        },
    ));
    let mut resolved = assessed.clone();
    resolved.extend([
        (
            local(2024, 3, 5, 11, 0),
            Action::RecordPayment {
                amount_vnd: 150_000,
                channel: PaymentChannel::NationalPlatform,
                transaction_id: TransactionId::parse("TXN-0001").expect("valid transaction id"),
            },
        ),
        (
            local(2024, 3, 8, 15, 0),
            Action::Resolve {
                outcome: Outcome::Approved,
                deciding_agency: agency(AGENCY),
            },
        ),
    ]);
    let mut attached = resolved.clone();
    attached.push((
        local(2024, 3, 8, 16, 0),
        Action::AttachResult {
            document_ref: Text::parse("GCN-0001").expect("valid text"),
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        },
    ));
    let mut returned = attached.clone();
    returned.push((
        local(2024, 3, 11, 9, 0),
        Action::ReturnResult {
            method: domain::ReturnMethod::Counter,
        },
    ));
    [
        vec![],
        received,
        supplement,
        transferred,
        assessed,
        resolved,
        attached,
        returned,
        catalogued,
        closing,
        obligation,
    ]
    .into_iter()
    .map(|commands| {
        let mut dossier = Dossier::default();
        for (occurred_at, action) in commands {
            let command = Command {
                occurred_at,
                action,
            };
            let events = domain::decide(&dossier, &command, rules()[0])
                .unwrap_or_else(|r| panic!("fixture command refused: {r}"));
            for body in events.into_events() {
                dossier.evolve(&domain::Event {
                    occurred_at: domain::event_time(&command, &body),
                    body,
                });
            }
        }
        dossier
    })
    .collect()
}
