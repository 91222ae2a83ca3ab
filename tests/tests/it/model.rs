//! The model test through the real services: random dossier lives (every event type,
//! supplements, holidays, early, on time and late, apologies, payments online and at the
//! counter, withdrawals, stops, refusals at the counter; about half the dossiers with a sealed
//! applicant, some erased between the waves) are sent as gRPC calls to intake,
//! processing, payment and results, interleaved across dossiers so that business times arrive
//! out of order; the deadline watcher marks the late ones; the relay publishes and the
//! projection consumes. Then every indicator (in total and per group, with S5 and S14) and
//! every cell of every report form must equal `oracle`'s plain recomputation from the raw
//! events in the log — and the figures "as recorded at" the instant between two waves of calls
//! must equal what the live service answered at that instant, late events notwithstanding.
//! Every tenth life is an offline counter's, resolved before its due time but sent after the
//! watcher marked it late: each dossier's status and timeline must show the mark withdrawn
//! exactly when the oracle says so, and the figures stay the oracle's (business time).
//!
//! Some procedures are in the catalogue the test publishes first (two versions of one, by
//! effective date): their dossiers are received by procedure code alone or with the full
//! agreeing profile, and follow their procedure's supplement limit, policy and automatic
//! closing (the watcher closes unanswered requests) and its financial-obligation pause. Every
//! dossier's due times, pauses and closings are recomputed minute by minute by
//! `oracle::rule_violations`.
//!
//! Four agencies receive (a province agency, two districts, a commune). An administrator
//! publishes, through `AgencyStructureService`, a reform dated inside the periods checked: the
//! second district merged into the first, the commune renamed then dissolved into the province,
//! the first district becoming a commune and the district level abolished. Every figure and
//! form is checked in the structure of its time, mid-reform and "today" against the oracle's own
//! mapping (`oracle::counted_under`): the totals are the same in all three, and today's Biểu mẫu
//! 3 has no district row. The 766 scorecard is checked per agency and per procedure, its average
//! processing time against `oracle::processing_minutes`.
//!
//! The seed is printed; `MODEL_SEED=<n>` replays a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api::v1 as pb;
use api::v1::applicant_service_client::ApplicantServiceClient;
use chrono::{DateTime, NaiveDate, Utc};
use domain::{DossierEvent, Event, Profile};
use eventlog::EventLog;
use stats::{Indicators, Rate, Targets};
use testkit::{Rng, TestDb, TestNats};
use tests::lifecycle::{
    Stack, assess_fee, attach_result, issue_apology, record_payment, record_rating, return_result,
};
use tests::processing::{
    COMMUNE_AGENCY, COUNTER_COMMUNE, ManualClock, RunningProcessing, fulfil_obligation,
    receive_supplement, request_obligation, request_supplement, stop_processing, transfer,
    withdraw,
};
use tests::projection::RunningProjection;
use tests::{
    ADMIN, AUDITOR, COUNTER_DISTRICT, COUNTER_DISTRICT_2, COUNTER_PROVINCE, DISTRICT_AGENCY,
    DISTRICT_AGENCY_2, ERASURE_ADMIN, PROVINCE_AGENCY, RunningRelay, authed, local, new_event_id,
    ts,
};
use tonic::Code;

const WAIT: Duration = Duration::from_secs(120);

/// One gRPC call of a dossier's life.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // a test plan of calls; the receive request grew with the applicant
enum Call {
    Receive(pb::ReceiveDossierRequest),
    Refuse(pb::RefuseAtCounterRequest),
    Digitize(pb::RecordDigitizedComponentsRequest),
    Transfer(pb::TransferRequest),
    RequestSupplement(pb::RequestSupplementRequest),
    ReceiveSupplement(pb::ReceiveSupplementRequest),
    RequestObligation(pb::RequestFinancialObligationRequest),
    FulfilObligation(pb::FulfilFinancialObligationRequest),
    Apology(pb::IssueApologyRequest),
    Fee(pb::AssessFeeRequest),
    Pay(pb::RecordPaymentRequest),
    Resolve(pb::ResolveRequest),
    Withdraw(pb::WithdrawRequest),
    Stop(pb::StopProcessingRequest),
    Attach(pb::AttachResultRequest),
    Return(pb::ReturnResultRequest),
    Rate(pb::RecordRatingRequest),
}

#[derive(Debug)]
struct Life {
    token: &'static str,
    calls: Vec<Call>,
    /// A counter that was offline: everything after the reception reaches the server in the
    /// second wave, after the deadline watcher marked the dossier late, though it was resolved
    /// before its due time.
    offline: bool,
}

const SECTORS: [&str; 3] = ["land", "tax", "justice"];

/// A procedure of the model's catalogue: code, sector, online level, statutory days, fee.
struct Catalogued {
    code: &'static str,
    sector: &'static str,
    online_level: pb::OnlineServiceLevel,
    days: u32,
    fee_required: bool,
}

/// 1.005000 pauses the clock for a financial obligation, allows one supplement request with
/// `restart` and closes after 3 working days; from 15 May 2024 two with `extend`, closing after
/// 5. 1.005001: two requests, `extend`, closes after 2, obligations do not pause. 1.005002: a
/// same-day procedure (cut-off 15:00), unlimited requests, never closes, obligations pause.
const CATALOGUED: [Catalogued; 3] = [
    Catalogued {
        code: "1.005000",
        sector: "land",
        online_level: pb::OnlineServiceLevel::PartialOnline,
        days: 4,
        fee_required: true,
    },
    Catalogued {
        code: "1.005001",
        sector: "tax",
        online_level: pb::OnlineServiceLevel::FullOnline,
        days: 2,
        fee_required: false,
    },
    Catalogued {
        code: "1.005002",
        sector: "justice",
        online_level: pb::OnlineServiceLevel::NotOnline,
        days: 1,
        fee_required: true,
    },
];

/// The definitions the model publishes before any dossier.
fn model_catalogue() -> Vec<pb::ProcedureDefinition> {
    let definition = |c: &Catalogued, from: DateTime<Utc>| pb::ProcedureDefinition {
        code: c.code.to_owned(),
        name: format!("Thủ tục {}", c.code),
        sector_code: c.sector.to_owned(),
        statutory_time: Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(c.days)),
        }),
        online_level: c.online_level as i32,
        fee_required: c.fee_required,
        supplement_policy: pb::SupplementPolicy::Extend as i32,
        max_supplement_requests: None,
        close_after_working_days: None,
        same_day_cutoff: String::new(),
        obligation_pauses_clock: true,
        effective_from: Some(ts(from)),
    };
    let from = local(2024, 1, 1, 0, 0);
    let land = pb::ProcedureDefinition {
        supplement_policy: pb::SupplementPolicy::Restart as i32,
        max_supplement_requests: Some(1),
        close_after_working_days: Some(3),
        ..definition(&CATALOGUED[0], from)
    };
    let land_from_may = pb::ProcedureDefinition {
        max_supplement_requests: Some(2),
        close_after_working_days: Some(5),
        ..definition(&CATALOGUED[0], local(2024, 5, 15, 0, 0))
    };
    let tax = pb::ProcedureDefinition {
        max_supplement_requests: Some(2),
        close_after_working_days: Some(2),
        obligation_pauses_clock: false,
        ..definition(&CATALOGUED[1], from)
    };
    let same_day = pb::ProcedureDefinition {
        same_day_cutoff: "15:00".to_owned(),
        ..definition(&CATALOGUED[2], from)
    };
    vec![land, land_from_may, tax, same_day]
}

/// The agency that takes the commune's code from its rename on (declared, receives nothing).
const RENAMED_COMMUNE: &str = "000.00.32.H40";

/// "Today": after every change of [`model_structure`] (two tiers, no district left).
const TODAY: NaiveDate = day(2025, 1, 1);

const fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    match NaiveDate::from_ymd_opt(y, m, d) {
        Some(d) => d,
        None => panic!("a valid date"),
    }
}

/// One fact of the model's agency structure.
enum Fact {
    Agency(&'static str, &'static str, domain::Level),
    Change(
        &'static str,
        NaiveDate,
        stats::ChangeKind,
        Option<&'static str>,
        Option<domain::Level>,
    ),
    Abolished(domain::Level, NaiveDate),
}

/// When the model's reform takes effect: drawn from the seed once, at the start of the test
/// (the only test of this binary that reads it).
#[derive(Debug, Clone, Copy)]
struct ReformDates {
    merge: NaiveDate,
    rename: NaiveDate,
    two_tier: NaiveDate,
    dissolution: NaiveDate,
}

static REFORM: std::sync::OnceLock<ReformDates> = std::sync::OnceLock::new();

/// Dates inside the periods checked, sometimes on a period's edge: the merge between 20 April
/// and 31 May 2024, the rename up to 20 days later, the two-tier reform between 10 June and
/// 15 July (after the rename), the dissolution up to 60 days after it.
fn draw_reform(rng: &mut Rng) -> ReformDates {
    let days = |n: u64| chrono::Days::new(n);
    let merge = day(2024, 4, 20) + days(rng.below(42));
    let rename = merge + days(1 + rng.below(20));
    let two_tier = (day(2024, 6, 10) + days(rng.below(36))).max(rename + days(1));
    let dissolution = two_tier + days(1 + rng.below(60));
    ReformDates {
        merge,
        rename,
        two_tier,
        dissolution,
    }
}

fn reform() -> ReformDates {
    *REFORM.get().expect("drawn at the start of the model test")
}

/// The reform the model's dossiers live through ([`ReformDates`]): the second district merged
/// into the first, the commune renamed, the district level abolished and the first district
/// becoming a commune (the two-tier reform in miniature), the renamed commune dissolved into
/// the province. Every receiving agency is touched; a dossier keeps the agency and level that
/// received it.
fn model_structure() -> Vec<Fact> {
    use domain::Level::{Commune, District, Province};
    use stats::ChangeKind::{Dissolved, Level, Merged, Renamed};
    let dates = reform();
    vec![
        Fact::Agency(
            PROVINCE_AGENCY,
            "Trung tâm Phục vụ hành chính công tỉnh",
            Province,
        ),
        Fact::Agency(DISTRICT_AGENCY, "UBND huyện Mẫu", District),
        Fact::Agency(DISTRICT_AGENCY_2, "UBND huyện Thứ Hai", District),
        Fact::Agency(COMMUNE_AGENCY, "UBND xã Mẫu", Commune),
        Fact::Agency(RENAMED_COMMUNE, "UBND phường Mẫu", Commune),
        Fact::Change(
            DISTRICT_AGENCY_2,
            dates.merge,
            Merged,
            Some(DISTRICT_AGENCY),
            None,
        ),
        Fact::Change(
            COMMUNE_AGENCY,
            dates.rename,
            Renamed,
            Some(RENAMED_COMMUNE),
            None,
        ),
        Fact::Change(DISTRICT_AGENCY, dates.two_tier, Level, None, Some(Commune)),
        Fact::Abolished(District, dates.two_tier),
        Fact::Change(
            RENAMED_COMMUNE,
            dates.dissolution,
            Dissolved,
            Some(PROVINCE_AGENCY),
            None,
        ),
    ]
}

/// The structure as the oracle reads it (its own mapping code).
fn model_reforms() -> Vec<oracle::Reform> {
    model_structure()
        .into_iter()
        .map(|f| match f {
            Fact::Agency(code, _, level) => oracle::Reform::Declared {
                agency: code.to_owned(),
                level,
            },
            Fact::Change(agency, from, _, Some(successor), _) => oracle::Reform::Successor {
                agency: agency.to_owned(),
                from,
                successor: successor.to_owned(),
            },
            Fact::Change(agency, from, _, None, level) => oracle::Reform::LevelChanged {
                agency: agency.to_owned(),
                from,
                level: level.expect("a change without successor changes the level"),
            },
            Fact::Abolished(level, from) => oracle::Reform::LevelAbolished { level, from },
        })
        .collect()
}

/// The structure as an administrator publishes it (`PublishAgencyStructure`).
fn model_structure_request() -> pb::PublishAgencyStructureRequest {
    let mut r = pb::PublishAgencyStructureRequest::default();
    let level = |l: domain::Level| svc::convert::pb_level(l) as i32;
    for f in model_structure() {
        match f {
            Fact::Agency(code, name, l) => r.agencies.push(pb::AgencyDeclaration {
                code: code.to_owned(),
                name: name.to_owned(),
                level: level(l),
            }),
            Fact::Change(agency, from, kind, successor, l) => r.changes.push(pb::AgencyChange {
                agency: agency.to_owned(),
                from: from.to_string(),
                kind: match kind {
                    stats::ChangeKind::Merged => pb::AgencyChangeKind::Merged,
                    stats::ChangeKind::Renamed => pb::AgencyChangeKind::Renamed,
                    stats::ChangeKind::Dissolved => pb::AgencyChangeKind::Dissolved,
                    stats::ChangeKind::Level => pb::AgencyChangeKind::Level,
                } as i32,
                successor: successor.unwrap_or_default().to_owned(),
                level: l.map_or(pb::Level::Unspecified as i32, level),
                source: "model test".to_owned(),
            }),
            Fact::Abolished(l, from) => r.levels_abolished.push(pb::LevelAbolition {
                level: level(l),
                from: from.to_string(),
                source: "model test".to_owned(),
            }),
        }
    }
    r
}

/// The applicant of about half the received dossiers, with an identity document fitting its
/// type and sometimes a representative: sealed in the event, it must change no figure.
fn applicant(rng: &mut Rng, n: usize, applicant_type: pb::ApplicantType) -> Option<pb::Applicant> {
    if !rng.chance(50) {
        return None;
    }
    let doc = |kind: pb::DocumentKind, number: String| {
        Some(pb::IdentityDocument {
            kind: kind as i32,
            number,
        })
    };
    let (owner_name, document) = match applicant_type {
        pb::ApplicantType::Business => (
            format!("Công ty TNHH Mẫu {n}"),
            doc(pb::DocumentKind::TaxCode, format!("03{n:08}")),
        ),
        pb::ApplicantType::Organisation => (
            format!("Hợp tác xã Mẫu {n}"),
            doc(pb::DocumentKind::Other, format!("HTX{n:04}")),
        ),
        _ => (
            format!("Trần Văn Mẫu {n}"),
            doc(pb::DocumentKind::Cccd, format!("0791{n:08}")),
        ),
    };
    Some(pb::Applicant {
        owner_name,
        document,
        phone: format!("0912{n:06}"),
        email: if rng.chance(50) {
            format!("mau{n}@example.vn")
        } else {
            String::new()
        },
        address: format!("{n} Đường Mẫu, Phường 1"),
        representative: rng.chance(30).then(|| pb::Representative {
            name: format!("Lê Thị Đại Diện {n}"),
            document: doc(pb::DocumentKind::Cmnd, format!("{n:09}")),
            phone: String::new(),
        }),
    })
}

/// A random life starting on a day of April–June 2024 (Hùng Kings' day 18 April, 30 April and
/// 1 May are holidays), at any minute, including the edges of the day.
fn life(rng: &mut Rng, n: usize) -> Life {
    let id = format!("HS-M-{n:04}");
    // Four receiving agencies, each changed by the model's structure.
    let (agency, token, level) = match rng.below(10) {
        0..=2 => (PROVINCE_AGENCY, COUNTER_PROVINCE, pb::Level::Province),
        3..=5 => (DISTRICT_AGENCY, COUNTER_DISTRICT, pb::Level::District),
        6 | 7 => (DISTRICT_AGENCY_2, COUNTER_DISTRICT_2, pb::Level::District),
        _ => (COMMUNE_AGENCY, COUNTER_COMMUNE, pb::Level::Commune),
    };
    let day =
        NaiveDate::from_ymd_opt(2024, 4, 1).unwrap() + chrono::Duration::days(rng.below(80) as i64);
    let minute = match rng.below(10) {
        0 => 0,
        1 => 23 * 60 + 59,
        _ => 7 * 60 + rng.below(10 * 60),
    } as u32;
    let mut t = local(2024, 1, 1, 0, 0)
        + (day - NaiveDate::from_ymd_opt(2024, 1, 1).unwrap())
        + chrono::Duration::minutes(i64::from(minute));
    let applicant_type = *rng.pick(&[
        pb::ApplicantType::Citizen,
        pb::ApplicantType::Business,
        pb::ApplicantType::Organisation,
    ]);
    // Lives 2, 6, 7 and 8 of each ten exercise the catalogue's rules for sure: an unanswered
    // supplement request, a financial obligation pausing the clock, the supplement limit, a
    // same-day procedure. Offline counters' lives (5) stay outside the catalogue.
    let forced = n % 10;
    let catalogued = match forced {
        2 => Some(&CATALOGUED[1]),
        5 => None,
        6 | 7 => Some(&CATALOGUED[0]),
        8 => Some(&CATALOGUED[2]),
        _ if rng.chance(40) => Some(rng.pick(&CATALOGUED)),
        _ => None,
    };
    let mut profile = pb::Profile {
        procedure_code: format!("1.00{}", 4000 + rng.below(3)),
        online_level: *rng.pick(&[
            pb::OnlineServiceLevel::FullOnline,
            pb::OnlineServiceLevel::PartialOnline,
            pb::OnlineServiceLevel::NotOnline,
        ]) as i32,
        sector_code: rng.pick(&SECTORS).to_string(),
        agency_code: agency.to_owned(),
        level: level as i32,
        channel: *rng.pick(&[
            pb::Channel::Online,
            pb::Channel::Direct,
            pb::Channel::Postal,
        ]) as i32,
        applicant_type: applicant_type as i32,
    };
    let mut statutory_time = Some(pb::StatutoryTime {
        unit: Some(if rng.chance(15) {
            pb::statutory_time::Unit::WorkingHours(4 + rng.below(12) as u32)
        } else {
            pb::statutory_time::Unit::WorkingDays(1 + rng.below(6) as u32)
        }),
    });
    let mut fee_required = rng.chance(50);
    if let Some(c) = catalogued {
        profile.procedure_code = c.code.to_owned();
        profile.online_level = c.online_level as i32;
        profile.sector_code = c.sector.to_owned();
        statutory_time = Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(c.days)),
        });
        fee_required = c.fee_required;
    }
    let mut calls = Vec::new();
    let at = |t: DateTime<Utc>| Some(ts(t));
    // Every tenth life is refused at the counter, a few others at random.
    if n % 10 == 9 || (!(2..=8).contains(&forced) && rng.chance(3)) {
        calls.push(Call::Refuse(pb::RefuseAtCounterRequest {
            event_id: new_event_id(),
            dossier_id: id,
            occurred_at: at(t),
            profile: Some(profile),
            reason: "Hồ sơ không đủ thành phần".to_owned(),
        }));
        return Life {
            token,
            calls,
            offline: false,
        };
    }
    let components: Vec<String> = (0..1 + rng.below(3)).map(|i| format!("tp-{i}")).collect();
    // A catalogued procedure is mostly received by its code alone (the catalogue fills the
    // rest; a stated `fee_required: true` must agree, so the catalogue's flag is sent).
    if catalogued.is_some() && rng.chance(70) {
        profile.online_level = pb::OnlineServiceLevel::Unspecified as i32;
        profile.sector_code = String::new();
        statutory_time = None;
    }
    calls.push(Call::Receive(pb::ReceiveDossierRequest {
        event_id: new_event_id(),
        dossier_id: id.clone(),
        occurred_at: at(t),
        profile: Some(profile),
        statutory_time,
        fee_required,
        components: components.clone(),
        applicant: applicant(rng, n, applicant_type),
        return_method: *rng.pick(&[
            pb::ReturnMethod::Unspecified,
            pb::ReturnMethod::Counter,
            pb::ReturnMethod::Post,
        ]) as i32,
    }));
    // The gap to the next step: minutes to a few days, sometimes across a weekend or holiday.
    let step = |rng: &mut Rng, t: &mut DateTime<Utc>| {
        *t += match rng.below(4) {
            0 => chrono::Duration::minutes(5 + rng.below(120) as i64),
            1 => chrono::Duration::hours(2 + rng.below(20) as i64),
            _ => chrono::Duration::hours(20 + rng.below(70) as i64),
        };
        *t
    };
    if rng.chance(70) {
        let (mut digitized, mut reused) = (Vec::new(), Vec::new());
        for c in &components {
            if rng.chance(85) {
                if rng.chance(75) {
                    digitized.push(c.clone());
                } else {
                    reused.push(c.clone());
                }
            }
        }
        if !digitized.is_empty() || !reused.is_empty() {
            calls.push(Call::Digitize(pb::RecordDigitizedComponentsRequest {
                event_id: new_event_id(),
                dossier_id: id.clone(),
                occurred_at: at(t + chrono::Duration::minutes(10)),
                digitized,
                reused,
                expected_version: None,
            }));
        }
    }
    // Every tenth life is an offline counter's: resolved within the hour after reception (the
    // shortest statutory time is four working hours), nothing else in between.
    let offline = n % 10 == 5;
    if !offline && (n % 10 == 0 || rng.chance(30)) {
        let mode = *rng.pick(&[pb::TransferMode::Electronic, pb::TransferMode::Paper]);
        let to = if agency == COMMUNE_AGENCY {
            PROVINCE_AGENCY
        } else {
            COMMUNE_AGENCY
        };
        calls.push(Call::Transfer(transfer(&id, step(rng, &mut t), to, mode)));
    }
    if !offline && catalogued.is_some() && (forced == 2 || forced == 7 || rng.chance(50)) {
        // Up to three requests: beyond the procedure's maximum they are refused; one left
        // unanswered closes the dossier by itself where the procedure says so.
        let requests = if forced == 7 { 3 } else { 1 + rng.below(3) };
        for _ in 0..requests {
            calls.push(Call::RequestSupplement(request_supplement(
                &id,
                step(rng, &mut t),
            )));
            if forced == 2 || (forced != 6 && forced != 7 && rng.chance(30)) {
                break;
            }
            calls.push(Call::ReceiveSupplement(receive_supplement(
                &id,
                step(rng, &mut t),
            )));
        }
    } else if !offline && rng.chance(35) {
        calls.push(Call::RequestSupplement(request_supplement(
            &id,
            step(rng, &mut t),
        )));
        if rng.chance(80) {
            calls.push(Call::ReceiveSupplement(receive_supplement(
                &id,
                step(rng, &mut t),
            )));
            if rng.chance(30) {
                calls.push(Call::RequestSupplement(request_supplement(
                    &id,
                    step(rng, &mut t),
                )));
                calls.push(Call::ReceiveSupplement(receive_supplement(
                    &id,
                    step(rng, &mut t),
                )));
            }
        }
    }
    if !offline && (forced == 6 || rng.chance(25)) {
        calls.push(Call::RequestObligation(request_obligation(
            &id,
            step(rng, &mut t),
        )));
        if forced == 6 || rng.chance(80) {
            let fulfilled = if forced == 6 {
                // Long enough to hold working time whatever the day, so that the forced life's
                // pause is never 0: no run of days off from April to June 2024 is longer than
                // five (27 April – 1 May). A random step may fall wholly on a night or a holiday.
                t += chrono::Duration::days(6);
                t
            } else {
                step(rng, &mut t)
            };
            calls.push(Call::FulfilObligation(fulfil_obligation(&id, fulfilled)));
        }
    }
    if !offline && fee_required && rng.chance(75) {
        let amount = 50_000 * (1 + rng.below(10) as i64);
        let kind = *rng.pick(&[pb::FeeKind::Fee, pb::FeeKind::Charge, pb::FeeKind::Tax]);
        calls.push(Call::Fee(assess_fee(&id, step(rng, &mut t), amount, kind)));
        if rng.chance(80) {
            let channel = *rng.pick(&[
                pb::PaymentChannel::NationalPlatform,
                pb::PaymentChannel::ProvincialGateway,
                pb::PaymentChannel::Counter,
            ]);
            let tx = format!("GD-{n:04}-{}", rng.below(1_000_000));
            calls.push(Call::Pay(record_payment(
                &id,
                step(rng, &mut t),
                amount,
                channel,
                &tx,
            )));
        }
    }
    if !offline && rng.chance(35) {
        let issued = step(rng, &mut t);
        calls.push(Call::Apology(issue_apology(
            &id,
            issued,
            issued + chrono::Duration::days(3),
        )));
    }
    // Every tenth life ends withdrawn, every tenth stopped, every tenth waits for the watcher
    // to close it; the others at random.
    let end = match n % 10 {
        3 => 75,
        4 => 83,
        2 => 99,
        5 => 0,
        _ => rng.below(100),
    };
    if end < 70 {
        let outcome = if rng.chance(85) {
            pb::Outcome::Approved
        } else {
            pb::Outcome::Refused
        };
        let resolved_at = if offline {
            t += chrono::Duration::minutes(5 + rng.below(60) as i64);
            t
        } else {
            step(rng, &mut t)
        };
        calls.push(Call::Resolve(pb::ResolveRequest {
            event_id: new_event_id(),
            dossier_id: id.clone(),
            occurred_at: at(resolved_at),
            expected_version: None,
            outcome: outcome as i32,
            deciding_agency: agency.to_owned(),
        }));
        if rng.chance(70) {
            calls.push(Call::Attach(attach_result(&id, step(rng, &mut t))));
        }
        if rng.chance(65) {
            let method = *rng.pick(&[
                pb::ReturnMethod::Counter,
                pb::ReturnMethod::Post,
                pb::ReturnMethod::Online,
            ]);
            calls.push(Call::Return(return_result(&id, step(rng, &mut t), method)));
            if rng.chance(60) {
                let rating = *rng.pick(&[
                    pb::Rating::VerySatisfied,
                    pb::Rating::Satisfied,
                    pb::Rating::Unsatisfied,
                ]);
                calls.push(Call::Rate(record_rating(&id, step(rng, &mut t), rating)));
            }
        }
    } else if end < 80 {
        calls.push(Call::Withdraw(withdraw(&id, step(rng, &mut t))));
    } else if end < 87 {
        calls.push(Call::Stop(stop_processing(&id, step(rng, &mut t))));
    }
    Life {
        token,
        calls,
        offline,
    }
}

struct Services {
    stack: Stack,
    processing: RunningProcessing,
    /// How often the rules refused a generated call, by reason.
    refusals: std::sync::Mutex<BTreeMap<String, usize>>,
}

impl Services {
    /// Erases the applicant of every other received dossier that has one (all are received
    /// in the first wave).
    async fn erase_every_other_applicant(&self, lives: &[Life]) -> usize {
        let mut applicants =
            ApplicantServiceClient::connect(format!("http://{}", self.stack.intake.addr))
                .await
                .unwrap();
        let with_applicant = lives.iter().filter_map(|l| match l.calls.first() {
            Some(Call::Receive(r)) if r.applicant.is_some() => Some(&r.dossier_id),
            _ => None,
        });
        let mut erased = 0;
        for dossier_id in with_applicant.step_by(2) {
            let request = pb::EraseApplicantRequest {
                dossier_id: dossier_id.clone(),
                reference: "model".into(),
            };
            applicants
                .erase_applicant(authed(ERASURE_ADMIN, request))
                .await
                .expect("erasure");
            erased += 1;
        }
        erased
    }

    /// Sends one call. A refusal by the dossier's rules (e.g. an apology for a dossier that is
    /// neither late nor foreseen late, a supplement after the deadline watcher's mark) is part
    /// of a random life: the log keeps only what was accepted, and the oracle reads the log.
    async fn send(&self, token: &str, call: Call) {
        let mut intake = self.stack.intake_client().await;
        let mut processing = self.processing.client().await;
        let mut payment = self.stack.payment_client().await;
        let mut results = self.stack.results_client().await;
        let answer = match call {
            Call::Receive(r) => intake.receive_dossier(authed(token, r)).await.map(drop),
            Call::Refuse(r) => intake.refuse_at_counter(authed(token, r)).await.map(drop),
            Call::Digitize(r) => intake
                .record_digitized_components(authed(token, r))
                .await
                .map(drop),
            Call::Transfer(r) => processing.transfer(authed(token, r)).await.map(drop),
            Call::RequestSupplement(r) => processing
                .request_supplement(authed(token, r))
                .await
                .map(drop),
            Call::ReceiveSupplement(r) => processing
                .receive_supplement(authed(token, r))
                .await
                .map(drop),
            Call::RequestObligation(r) => processing
                .request_financial_obligation(authed(token, r))
                .await
                .map(drop),
            Call::FulfilObligation(r) => processing
                .fulfil_financial_obligation(authed(token, r))
                .await
                .map(drop),
            Call::Apology(r) => results.issue_apology(authed(token, r)).await.map(drop),
            Call::Fee(r) => payment.assess_fee(authed(token, r)).await.map(drop),
            Call::Pay(r) => payment.record_payment(authed(token, r)).await.map(drop),
            Call::Resolve(r) => processing.resolve(authed(token, r)).await.map(drop),
            Call::Withdraw(r) => processing.withdraw(authed(token, r)).await.map(drop),
            Call::Stop(r) => processing.stop_processing(authed(token, r)).await.map(drop),
            Call::Attach(r) => results.attach_result(authed(token, r)).await.map(drop),
            Call::Return(r) => results.return_result(authed(token, r)).await.map(drop),
            Call::Rate(r) => results.record_rating(authed(token, r)).await.map(drop),
        };
        if let Err(status) = answer {
            assert_eq!(
                status.code(),
                Code::FailedPrecondition,
                "only the rules may refuse a generated call: {status:?}"
            );
            let reason = tests::lifecycle::error_reason(&status).unwrap_or_default();
            *self
                .refusals
                .lock()
                .expect("refusals")
                .entry(reason)
                .or_default() += 1;
        }
    }
}

/// Every dossier's events from the log, decoded, with the instants they were recorded.
async fn dossiers(log: &EventLog) -> Vec<Vec<(Event, DateTime<Utc>)>> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT dossier_id FROM events ORDER BY dossier_id")
            .fetch_all(log.pool())
            .await
            .expect("dossier ids");
    let all = log.load_dossiers(&ids).await.expect("load dossiers");
    all.values()
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let body =
                        DossierEvent::from_parts(&e.event_type, &e.payload).expect("decodes");
                    (
                        Event {
                            occurred_at: e.occurred_at,
                            body,
                        },
                        e.recorded_at,
                    )
                })
                .collect()
        })
        .collect()
}

/// The dossiers as recorded up to `at` (all when `None`).
fn recorded_by(all: &[Vec<(Event, DateTime<Utc>)>], at: Option<DateTime<Utc>>) -> Vec<Vec<Event>> {
    all.iter()
        .map(|d| {
            d.iter()
                .filter(|(_, recorded)| at.is_none_or(|at| *recorded <= at))
                .map(|(e, _)| e.clone())
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect()
}

fn profile_of(events: &[Event]) -> &Profile {
    match &events[0].body {
        DossierEvent::Received { profile, .. } | DossierEvent::RefusedAtIntake { profile, .. } => {
            profile
        }
        other => panic!("a life starts with its reception or refusal, not {other:?}"),
    }
}

fn value(p: &Profile, d: stats::Dimension) -> String {
    d.value(&stats::Slice::of(p)).to_owned()
}

fn rate_pb(r: Rate) -> Option<pb::Rate> {
    Some(pb::Rate {
        numerator: r.numerator,
        denominator: r.denominator,
        percent: (r.denominator != 0).then(|| r.numerator as f64 / r.denominator as f64 * 100.0),
    })
}

/// What `GetIndicators` must answer, from the oracle, field by field.
fn expected_indicators(i: &Indicators) -> pb::Indicators {
    let pending = |p: &stats::PendingFigures| {
        Some(pb::PendingFigures {
            total: p.total,
            within_time: p.within_time,
            overdue: p.overdue,
        })
    };
    pb::Indicators {
        received: i.received.total,
        received_online: i.received.online,
        received_direct: i.received.direct,
        received_postal: i.received.postal,
        carried_over: i.received.carried_over,
        resolved: i.resolved.total,
        resolved_early: i.resolved.early,
        resolved_on_time: i.resolved.on_time,
        resolved_late: i.resolved.late,
        on_time_rate: rate_pb(i.on_time_rate),
        pending: pending(&i.pending),
        pending_at_start: pending(&i.pending_at_start),
        ended: i.ended.total,
        withdrawn: i.ended.withdrawn,
        stopped: i.ended.stopped,
        refused_at_intake: i.refused_at_intake,
        apology_rate: rate_pb(i.apology_rate),
        timely_apology_rate: rate_pb(i.timely_apology_rate),
        components_digitized: rate_pb(i.components_digitized),
        results_digitized: rate_pb(i.results_digitized),
        data_reuse: rate_pb(i.data_reuse),
        online: rate_pb(i.online.all),
        online_full_online: rate_pb(i.online.full_online),
        online_partial_online: rate_pb(i.online.partial_online),
        full_online_of_all: rate_pb(i.online.full_online_of_all),
        online_payment: rate_pb(i.payment.rate),
        payment_transactions: i.payment.transactions,
        payment_amount_vnd: i64::try_from(i.payment.amount_vnd).expect("the model's amounts fit"),
        online_payment_transactions: i.payment.online_transactions,
        online_payment_amount_vnd: i64::try_from(i.payment.online_amount_vnd)
            .expect("the model's amounts fit"),
        satisfaction: rate_pb(i.satisfaction.rate),
        rated_very_satisfied: i.satisfaction.very_satisfied,
        rated_satisfied: i.satisfaction.satisfied,
        rated_unsatisfied: i.satisfaction.unsatisfied,
        electronic_transfer: rate_pb(i.electronic_transfer),
    }
}

/// S14 from the oracle's rates and the default targets, in the documented order.
fn expected_targets(i: &Indicators) -> Vec<(String, Option<bool>)> {
    let t = Targets::default();
    [
        ("on_time", i.on_time_rate, t.on_time),
        ("online", i.online.full_online_of_all, t.online),
        ("online_payment", i.payment.rate, t.online_payment),
        ("satisfaction", i.satisfaction.rate, t.satisfaction),
        ("apology", i.apology_rate, t.apology),
        ("timely_apology", i.timely_apology_rate, t.timely_apology),
        (
            "components_digitized",
            i.components_digitized,
            t.components_digitized,
        ),
        (
            "results_digitized",
            i.results_digitized,
            t.results_digitized,
        ),
    ]
    .into_iter()
    .map(|(id, r, target)| {
        let met = (r.denominator != 0)
            .then_some(r.numerator as f64 * 100.0 >= target * r.denominator as f64);
        (id.to_owned(), met)
    })
    .collect()
}

fn targets_of(checks: &[pb::TargetCheck]) -> Vec<(String, Option<bool>)> {
    checks.iter().map(|c| (c.id.clone(), c.met)).collect()
}

/// Whether the oracle's figures for a group are all zero (the service leaves such groups out).
fn is_empty(i: &Indicators) -> bool {
    expected_indicators(i)
        == expected_indicators(&stats::indicators(&stats::Totals::empty(
            NaiveDate::MIN,
            NaiveDate::MIN,
        )))
}

const GROUPINGS: [&[stats::Dimension]; 3] = [
    &[],
    &[stats::Dimension::Sector],
    &[stats::Dimension::Level, stats::Dimension::Agency],
];

fn periods() -> Vec<(NaiveDate, NaiveDate)> {
    let d = |m, d| NaiveDate::from_ymd_opt(2024, m, d).unwrap();
    vec![
        (d(4, 1), d(5, 1)),
        (d(4, 15), d(5, 15)),
        (d(4, 30), d(5, 2)),
        (d(5, 1), d(6, 1)),
        (d(6, 1), d(7, 1)),
        (d(4, 1), d(7, 1)),
        (NaiveDate::from_ymd_opt(2023, 12, 1).unwrap(), d(4, 10)),
        (d(6, 20), NaiveDate::from_ymd_opt(2025, 1, 1).unwrap()),
    ]
}

fn request(
    from: NaiveDate,
    to: NaiveDate,
    group_by: &[stats::Dimension],
    at: Option<DateTime<Utc>>,
    view: Option<NaiveDate>,
) -> pb::GetIndicatorsRequest {
    pb::GetIndicatorsRequest {
        from: from.to_string(),
        to: to.to_string(),
        group_by: group_by
            .iter()
            .map(|d| projection::service::dimension_pb(*d) as i32)
            .collect(),
        as_recorded_at: at.map(ts),
        structure_at: view.map(|d| d.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

fn report_request(
    form: pb::ReportForm,
    from: NaiveDate,
    to: NaiveDate,
    at: Option<DateTime<Utc>>,
    view: Option<NaiveDate>,
) -> pb::GetReportRequest {
    grouped_report_request(form, from, to, at, view, &[])
}

fn grouped_report_request(
    form: pb::ReportForm,
    from: NaiveDate,
    to: NaiveDate,
    at: Option<DateTime<Utc>>,
    view: Option<NaiveDate>,
    group_by: &[stats::Dimension],
) -> pb::GetReportRequest {
    pb::GetReportRequest {
        form: form as i32,
        from: from.to_string(),
        to: to.to_string(),
        as_recorded_at: at.map(ts),
        structure_at: view.map(|d| d.to_string()).unwrap_or_default(),
        group_by: group_by
            .iter()
            .map(|d| projection::service::dimension_pb(*d) as i32)
            .collect(),
        ..Default::default()
    }
}

fn count(n: i64) -> pb::Cell {
    pb::Cell {
        value: Some(pb::cell::Value::Count(n)),
    }
}

fn text(t: &str) -> pb::Cell {
    pb::Cell {
        value: Some(pb::cell::Value::Text(t.to_owned())),
    }
}

fn rate_cell(r: Rate) -> pb::Cell {
    pb::Cell {
        value: Some(pb::cell::Value::Rate(rate_pb(r).unwrap())),
    }
}

fn ii06a_counts(i: &Indicators) -> Vec<pb::Cell> {
    [
        i.received.total + i.received.carried_over,
        i.received.online,
        i.received.direct + i.received.postal,
        i.received.carried_over,
        i.resolved.total,
        i.resolved.early,
        i.resolved.on_time,
        i.resolved.late,
        i.pending.total,
        i.pending.within_time,
        i.pending.overdue,
        i.ended.total,
    ]
    .into_iter()
    .map(count)
    .collect()
}

/// The agency structure of every date asked: `None` (each dossier under the agency and level
/// that received it), the day of the rename (districts merged, the commune renamed that very
/// day), and "today" (two tiers: no district left).
fn views() -> [Option<NaiveDate>; 3] {
    [None, Some(reform().rename), Some(TODAY)]
}

/// The value of dimension `g` of a dossier received with `p`, in the structure of `view`.
fn key_of(p: &Profile, g: stats::Dimension, view: Option<NaiveDate>) -> String {
    match g {
        stats::Dimension::Level | stats::Dimension::Agency => {
            let (level, agency) =
                oracle::counted_under(&model_reforms(), p.level, p.agency.as_str(), view);
            if g == stats::Dimension::Level {
                level.as_str().to_owned()
            } else {
                agency
            }
        }
        _ => value(p, g),
    }
}

/// The oracle's figures of every group of `group_by` with a figure in `[from, to)`, in the
/// structure of `view`: indicators, 766 progress, and (count, minutes) of processing time.
fn oracle_groups(
    dossiers: &[Vec<Event>],
    from: NaiveDate,
    to: NaiveDate,
    group_by: &[stats::Dimension],
    view: Option<NaiveDate>,
) -> BTreeMap<Vec<String>, (Indicators, Rate, (i64, i64))> {
    let keys: BTreeSet<Vec<String>> = dossiers
        .iter()
        .map(|d| {
            group_by
                .iter()
                .map(|g| key_of(profile_of(d), *g, view))
                .collect()
        })
        .collect();
    let mut groups = BTreeMap::new();
    for key in keys {
        let keep = |p: &Profile| {
            group_by
                .iter()
                .zip(&key)
                .all(|(g, v)| key_of(p, *g, view) == *v)
        };
        let (i, progress) = oracle::indicators(dossiers, from, to, keep);
        if !is_empty(&i) {
            let time = oracle::processing_minutes(dossiers, from, to, keep);
            groups.insert(key, (i, progress, time));
        }
    }
    groups
}

/// The average processing time cell: how many were resolved, the mean in hours.
fn average_cell((count, minutes): (i64, i64)) -> pb::Cell {
    pb::Cell {
        value: Some(pb::cell::Value::Average(pb::Average {
            count,
            mean: (count > 0).then(|| minutes as f64 / 60.0 / count as f64),
            unit: "hours".to_owned(),
        })),
    }
}

/// One row of the 766 scorecard against the oracle: each sub-indicator the events give, its
/// rate and its points (the oracle's plain recomputation; a rate without dossiers is not
/// computed), transparency not computed, and the average processing time — count exact, mean
/// in hours equal to the oracle's whole minutes / 60 / count.
fn check_scorecard_row(
    report: &pb::Report,
    row: &[pb::Cell],
    i: &Indicators,
    progress_766: Rate,
    time: (i64, i64),
    context: &str,
) {
    let cell = |id: &str| {
        let at = report
            .columns
            .iter()
            .position(|c| c.id == id)
            .unwrap_or_else(|| panic!("no column {id}"));
        row[at].value.clone()
    };
    let rates = [
        ("tdgq_progress", progress_766),
        ("clgq_online_submission", i.online.all),
        ("tttt_paid_online", i.payment.rate),
        ("mdhl_satisfaction", i.satisfaction.rate),
        ("mdsh_results_digitized", i.results_digitized),
        ("mdsh_dossiers_digitized", i.components_digitized),
        ("mdsh_data_reuse", i.data_reuse),
    ];
    let points = oracle::points_766(i, progress_766);
    for ((id, rate), (same, expected)) in rates.into_iter().zip(points) {
        assert_eq!(id, same);
        let context = format!("766 {id} {context}");
        assert_eq!(
            cell(&format!("{id}_rate")),
            rate_cell(rate).value,
            "{context}"
        );
        match (cell(id), expected) {
            (Some(pb::cell::Value::Points(p)), Some(h)) => {
                assert_eq!(p.hundredths, h, "{context}")
            }
            (Some(pb::cell::Value::NotComputed(_)), None) => {}
            (got, expected) => panic!("{context}: {got:?}, expected {expected:?}"),
        }
    }
    assert!(
        matches!(cell("ckmb"), Some(pb::cell::Value::NotComputed(_))),
        "transparency needs outside data: {context}"
    );
    match cell("avg_processing_hours") {
        Some(pb::cell::Value::Average(a)) => {
            let (count, minutes) = time;
            assert_eq!((a.count, a.unit.as_str()), (count, "hours"), "{context}");
            match a.mean {
                // Exact up to the double's rounding: mean × 60 × count is the minutes.
                Some(mean) => assert!(
                    count > 0 && (mean * 60.0 * count as f64 - minutes as f64).abs() < 1e-6,
                    "average {mean} h of {count}, expected {minutes} min: {context}"
                ),
                None => assert_eq!(count, 0, "{context}"),
            }
            assert_eq!(cell("avg_processing_hours"), average_cell(time).value);
        }
        other => panic!("average processing time {other:?}: {context}"),
    }
}

/// What `check_all` saw, to compare across structures: the total of every period.
type AnsweredTotals = Vec<Option<pb::Indicators>>;

/// Checks every figure the service answers for `dossiers` (as recorded up to `at`, or live)
/// in every structure of [`views`], and that every structure answers the same totals.
async fn check_all(
    projection: &RunningProjection,
    dossiers: &[Vec<Event>],
    at: Option<DateTime<Utc>>,
) {
    let mut totals: Vec<AnsweredTotals> = Vec::new();
    // As recorded at an instant (a log scan per query): the structure of its time and today's.
    let views = views()
        .into_iter()
        .filter(|v| at.is_none() || v.is_none_or(|d| d == TODAY));
    for view in views {
        totals.push(check_in(projection, dossiers, at, view).await);
    }
    for t in &totals[1..] {
        assert_eq!(t, &totals[0], "the same totals in every structure");
    }
}

/// Checks every figure for `dossiers` in the structure of `view`.
async fn check_in(
    projection: &RunningProjection,
    dossiers: &[Vec<Event>],
    at: Option<DateTime<Utc>>,
    view: Option<NaiveDate>,
) -> AnsweredTotals {
    let mut client = projection.client().await;
    let mut totals = Vec::new();
    for (from, to) in periods() {
        let (all, progress_766) = oracle::indicators(dossiers, from, to, |_| true);
        assert_eq!(all.check(), vec![], "the oracle's figures add up");
        for group_by in GROUPINGS {
            let answer = client
                .get_indicators(authed(AUDITOR, request(from, to, group_by, at, view)))
                .await
                .expect("GetIndicators")
                .into_inner();
            let context = format!("[{from}, {to}) by {group_by:?} as of {at:?} in {view:?}");
            assert_eq!(answer.total, Some(expected_indicators(&all)), "{context}");
            if group_by.is_empty() {
                totals.push(answer.total);
            }
            assert_eq!(
                targets_of(&answer.targets),
                expected_targets(&all),
                "{context}"
            );
            // Every group the oracle sees with a figure, and no other.
            let expected_groups = if group_by.is_empty() {
                BTreeMap::new()
            } else {
                oracle_groups(dossiers, from, to, group_by, view)
            };
            let answered: BTreeMap<Vec<String>, &pb::IndicatorGroup> = answer
                .groups
                .iter()
                .map(|g| (g.key.iter().map(|k| k.value.clone()).collect(), g))
                .collect();
            assert_eq!(
                answered.keys().collect::<Vec<_>>(),
                expected_groups.keys().collect::<Vec<_>>(),
                "{context}"
            );
            for (key, (i, _, _)) in &expected_groups {
                let g = answered[key];
                assert_eq!(
                    g.indicators,
                    Some(expected_indicators(i)),
                    "{context} {key:?}"
                );
                assert_eq!(
                    targets_of(&g.targets),
                    expected_targets(i),
                    "{context} {key:?}"
                );
                assert_eq!(
                    g.late_share,
                    rate_pb(Rate::new(i.resolved.late, all.resolved.late)),
                    "S5 {context} {key:?}"
                );
            }
        }

        // II.06a by sector (its default) and by level and agency: a row per group with a
        // figure, then the total.
        for group_by in [
            &[][..],
            &[stats::Dimension::Level, stats::Dimension::Agency][..],
        ] {
            let asked = grouped_report_request(pb::ReportForm::Ii06a, from, to, at, view, group_by);
            let report = client
                .get_report(authed(AUDITOR, asked))
                .await
                .expect("II.06a")
                .into_inner();
            let dims = if group_by.is_empty() {
                &[stats::Dimension::Sector][..]
            } else {
                group_by
            };
            let mut rows = Vec::new();
            for (key, (i, _, _)) in oracle_groups(dossiers, from, to, dims, view) {
                let mut cells: Vec<pb::Cell> = key.iter().map(|k| text(k)).collect();
                cells.extend(ii06a_counts(&i));
                rows.push(cells);
            }
            let mut total: Vec<pb::Cell> = (0..dims.len())
                .map(|k| text(if k == 0 { "total" } else { "" }))
                .collect();
            total.extend(ii06a_counts(&all));
            rows.push(total);
            let cells: Vec<Vec<pb::Cell>> = report.rows.iter().map(|r| r.cells.clone()).collect();
            assert_eq!(
                cells, rows,
                "II.06a by {dims:?} [{from}, {to}) as of {at:?} in {view:?}"
            );
        }

        // Biểu mẫu 3 §3: the three levels, but a level abolished at the structure's date (or
        // the period's last day) without a figure has no row.
        let report = client
            .get_report(authed(
                AUDITOR,
                report_request(pb::ReportForm::BieuMau3Section3, from, to, at, view),
            ))
            .await
            .expect("Biểu mẫu 3")
            .into_inner();
        let as_of = view.unwrap_or(to.pred_opt().unwrap());
        let rows: Vec<Vec<pb::Cell>> = [
            ("3.1", domain::Level::Province),
            ("3.2", domain::Level::District),
            ("3.3", domain::Level::Commune),
        ]
        .into_iter()
        .filter_map(|(code, level)| {
            let (i, _) = oracle::indicators(dossiers, from, to, |p: &Profile| {
                key_of(p, stats::Dimension::Level, view) == level.as_str()
            });
            (!is_empty(&i) || oracle::level_exists(&model_reforms(), level, as_of)).then(|| {
                vec![
                    text(code),
                    text(level.as_str()),
                    count(i.resolved.total),
                    count(i.resolved.early),
                    count(i.resolved.on_time),
                    count(i.resolved.late),
                    rate_cell(i.on_time_rate),
                ]
            })
        })
        .collect();
        let cells: Vec<Vec<pb::Cell>> = report.rows.iter().map(|r| r.cells.clone()).collect();
        assert_eq!(
            cells, rows,
            "Biểu mẫu 3 [{from}, {to}) as of {at:?} in {view:?}"
        );
        if view == Some(TODAY) {
            // Two tiers: a province with only province and commune levels shows no empty
            // district row.
            assert!(
                cells
                    .iter()
                    .all(|r| r[1] != text(domain::Level::District.as_str())),
                "no district row today: {cells:?}"
            );
        }

        // Biểu mẫu 7 §6: full-online and partial-online procedures.
        let report = client
            .get_report(authed(
                AUDITOR,
                report_request(pb::ReportForm::BieuMau7Section6, from, to, at, view),
            ))
            .await
            .expect("Biểu mẫu 7")
            .into_inner();
        let row = |code: &str, level: &str, r: Rate| {
            vec![
                text(code),
                text(level),
                count(r.denominator),
                count(r.numerator),
                rate_cell(r),
            ]
        };
        let rows = vec![
            row("6.3", "full_online", all.online.full_online),
            row("6.4", "partial_online", all.online.partial_online),
        ];
        let cells: Vec<Vec<pb::Cell>> = report.rows.iter().map(|r| r.cells.clone()).collect();
        assert_eq!(cells, rows, "Biểu mẫu 7 [{from}, {to}) as of {at:?}");

        // The 766 index in points: the total, per agency (in the structure asked) and per
        // procedure (the average processing time per procedure; no structure changes it).
        let mut scorecards = vec![&[][..], &[stats::Dimension::Agency][..]];
        if view.is_none() {
            scorecards.push(&[stats::Dimension::Procedure][..]);
        }
        for group_by in scorecards {
            let asked =
                grouped_report_request(pb::ReportForm::Scorecard766, from, to, at, view, group_by);
            let report = client
                .get_report(authed(AUDITOR, asked))
                .await
                .expect("766")
                .into_inner();
            let context = format!("[{from}, {to}) by {group_by:?} as of {at:?} in {view:?}");
            let groups = if group_by.is_empty() {
                BTreeMap::new()
            } else {
                oracle_groups(dossiers, from, to, group_by, view)
            };
            assert_eq!(report.rows.len(), groups.len() + 1, "766 rows {context}");
            for ((key, (i, progress, time)), row) in groups.iter().zip(&report.rows) {
                let keys: Vec<pb::Cell> = key.iter().map(|k| text(k)).collect();
                assert_eq!(row.cells[..key.len()], keys[..], "766 {context}");
                check_scorecard_row(
                    &report,
                    &row.cells,
                    i,
                    *progress,
                    *time,
                    &format!("{context} {key:?}"),
                );
            }
            let total = oracle::processing_minutes(dossiers, from, to, |_| true);
            check_scorecard_row(
                &report,
                &report.rows.last().expect("the total row").cells,
                &all,
                progress_766,
                total,
                &format!("{context} total"),
            );
        }
    }
    totals
}

/// Each received dossier's status (projection `GetDossierStatus`) and due-time history (the
/// replay service's timeline) show lateness as the oracle reads it from the raw events: a late
/// mark contradicted by a resolution dated before the due time is withdrawn, once, right after
/// that resolution, and the resolution's timeliness is shown. Returns how many were withdrawn.
async fn check_lateness(projection: &RunningProjection, log: &EventLog) -> usize {
    let mut client = projection.client().await;
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT dossier_id FROM events ORDER BY dossier_id")
            .fetch_all(log.pool())
            .await
            .expect("dossier ids");
    let mut withdrawn = 0;
    for (dossier_id, stored) in log.load_dossiers(&ids).await.expect("load dossiers") {
        let events: Vec<Event> = stored
            .iter()
            .map(|e| Event {
                occurred_at: e.occurred_at,
                body: DossierEvent::from_parts(&e.event_type, &e.payload).expect("decodes"),
            })
            .collect();
        let DossierEvent::Received { .. } = &events[0].body else {
            continue;
        };
        let expected = oracle::lateness(&events);
        withdrawn += usize::from(expected.late_withdrawn);
        let status = client
            .get_dossier_status(authed(
                AUDITOR,
                pb::GetDossierStatusRequest {
                    dossier_id: dossier_id.clone(),
                },
            ))
            .await
            .expect("GetDossierStatus")
            .into_inner();
        let timeliness = expected
            .timeliness
            .map_or(pb::Timeliness::Unspecified, svc::convert::pb_timeliness);
        assert_eq!(
            (status.late_marked, status.late_withdrawn, status.timeliness),
            (
                expected.late_marked,
                expected.late_withdrawn,
                timeliness as i32
            ),
            "status of {dossier_id}"
        );
        let (history, state) = replay::timeline::history(&events);
        let kinds: Vec<_> = history.iter().map(|c| c.kind).collect();
        let withdrawals: Vec<usize> = kinds
            .iter()
            .enumerate()
            .filter(|(_, k)| **k == replay::timeline::ChangeKind::LateWithdrawn)
            .map(|(j, _)| j)
            .collect();
        assert_eq!(
            withdrawals.len(),
            usize::from(expected.late_withdrawn),
            "timeline of {dossier_id}: {kinds:?}"
        );
        if let Some(&j) = withdrawals.first() {
            assert_eq!(history[j].timeliness, expected.timeliness, "{dossier_id}");
            assert_eq!(
                kinds[j - 1],
                replay::timeline::ChangeKind::Resolved,
                "{dossier_id}: withdrawn right after the resolution"
            );
        }
        assert_eq!(
            (state.late_marked, state.late_withdrawn),
            (expected.late_marked, expected.late_withdrawn),
            "timeline state of {dossier_id}"
        );
    }
    withdrawn
}

/// Every answer of the service for the periods, groupings and forms `check_all` asks, live or
/// as recorded at `at` (the echoed instant cleared, so the two can be compared).
async fn every_answer(projection: &RunningProjection, at: Option<DateTime<Utc>>) -> Vec<String> {
    let mut client = projection.client().await;
    let mut answers = Vec::new();
    for view in [None, Some(TODAY)] {
        for (from, to) in periods() {
            for group_by in GROUPINGS {
                let mut answer = client
                    .get_indicators(authed(AUDITOR, request(from, to, group_by, at, view)))
                    .await
                    .expect("GetIndicators")
                    .into_inner();
                answer.as_recorded_at = None;
                answers.push(format!("{answer:?}"));
            }
            for form in [
                pb::ReportForm::Ii06a,
                pb::ReportForm::BieuMau3Section3,
                pb::ReportForm::BieuMau7Section6,
                pb::ReportForm::Scorecard766,
            ] {
                let mut report = client
                    .get_report(authed(AUDITOR, report_request(form, from, to, at, view)))
                    .await
                    .expect("GetReport")
                    .into_inner();
                report.as_recorded_at = None;
                answers.push(format!("{report:?}"));
            }
        }
    }
    answers
}

async fn db_now(log: &EventLog) -> DateTime<Utc> {
    sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(log.pool())
        .await
        .expect("database clock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_figure_through_the_real_services_equals_the_oracle_and_past_figures_are_reproduced()
{
    let seed = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64)
        });
    eprintln!("model test seed: MODEL_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dates = *REFORM.get_or_init(|| draw_reform(&mut rng));
    eprintln!("agency reform: {dates:?}");

    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let services = Services {
        stack: Stack::with_master_keys(log.clone()).await,
        processing: RunningProcessing::start(log.clone(), domain::SupplementPolicy::Restart).await,
        refusals: std::sync::Mutex::new(BTreeMap::new()),
    };
    services
        .stack
        .intake
        .catalogue_client()
        .await
        .publish_procedures(authed(
            ADMIN,
            pb::PublishProceduresRequest {
                procedures: model_catalogue(),
            },
        ))
        .await
        .expect("the model's catalogue is published");
    let watched_until = local(2024, 7, 1, 8, 0);
    let clock = ManualClock::new(watched_until);
    let watcher = tests::processing::watcher(&log, clock).await;
    let nats = TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let projection =
        RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "model").await;
    // The agency structure the dossiers live through (merges, a rename, a dissolution, a level
    // change and the district level abolished, inside the periods checked).
    projection
        .structure_client()
        .await
        .publish_agency_structure(authed(ADMIN, model_structure_request()))
        .await
        .expect("the model's structure is published");

    // Two waves: the first life of each dossier's calls, then the rest (late events of the
    // same months included), each wave interleaved across dossiers.
    let lives: Vec<Life> = (0..48).map(|n| life(&mut rng, n)).collect();
    let mut waves: [Vec<(usize, usize)>; 2] = [Vec::new(), Vec::new()];
    for (d, l) in lives.iter().enumerate() {
        let split = if l.offline {
            1
        } else {
            1 + rng.below(l.calls.len() as u64) as usize
        };
        for c in 0..l.calls.len() {
            waves[usize::from(c >= split)].push((d, c));
        }
    }
    let mut first_at = None;
    let mut answered_then = Vec::new();
    for (w, wave) in waves.iter().enumerate() {
        // Shuffle across dossiers, then restore each dossier's own order.
        let mut order: Vec<(u64, usize, usize)> =
            wave.iter().map(|&(d, c)| (rng.next_u64(), d, c)).collect();
        order.sort();
        let mut next: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(d, c) in wave {
            next.entry(d).or_default().push(c);
        }
        for (_, d, _) in order {
            let c = next.get_mut(&d).unwrap().remove(0);
            services
                .send(lives[d].token, lives[d].calls[c].clone())
                .await;
        }
        watcher
            .tick()
            .await
            .expect("the deadline watcher marks the late dossiers");
        relay.wait_published(log.head().await.unwrap(), WAIT).await;
        projection.wait_caught_up(WAIT).await;

        let all = dossiers(&log).await;
        let types: BTreeSet<domain::EventType> = all
            .iter()
            .flatten()
            .map(|(e, _)| e.body.event_type())
            .collect();
        eprintln!("wave {w}: {} dossiers, event types {types:?}", all.len());
        // Every due time, pause and closing follows the dossier's procedure, recomputed.
        let calendar = calendar::Calendar::vietnam_default();
        for d in &all {
            let events: Vec<Event> = d.iter().map(|(e, _)| e.clone()).collect();
            assert_eq!(
                oracle::rule_violations(
                    &events,
                    &calendar,
                    domain::SupplementPolicy::Restart,
                    watched_until
                ),
                Vec::<String>::new(),
                "{events:#?}; seed {seed}"
            );
        }
        check_all(&projection, &recorded_by(&all, None), None).await;
        let withdrawn = check_lateness(&projection, &log).await;
        eprintln!("wave {w}: {withdrawn} late marks withdrawn");
        if w == 0 {
            answered_then = every_answer(&projection, None).await;
            first_at = Some(db_now(&log).await);
            // What the live service answers at that instant.
            check_all(&projection, &recorded_by(&all, None), first_at).await;
            // Erasing applicants writes no event: the figures of that instant, compared
            // after the second wave, cannot move.
            assert!(services.erase_every_other_applicant(&lives).await > 0);
        } else {
            for t in domain::EventType::ALL {
                assert!(
                    types.contains(&t),
                    "the generated lives include {t}; seed {seed}"
                );
            }
            // The catalogue's rules were exercised: an automatic closing, a paused obligation,
            // a refused request beyond the maximum, both versions of 1.005000.
            let bodies = || all.iter().flatten().map(|(e, _)| &e.body);
            assert!(
                bodies().any(|b| matches!(b, DossierEvent::Stopped { cause: Some(_), .. })),
                "seed {seed}"
            );
            assert!(
                bodies().any(|b| matches!(b, DossierEvent::FinancialObligationFulfilled { paused, .. } if paused.minutes() > 0)),
                "seed {seed}"
            );
            let versions: BTreeSet<u64> = bodies()
                .filter_map(|b| match b {
                    DossierEvent::Received {
                        procedure: Some(p), ..
                    } => Some(p.catalogue_version),
                    _ => None,
                })
                .collect();
            assert_eq!(
                versions.len(),
                4,
                "every catalogue version used; seed {seed}"
            );
            let refusals = services.refusals.lock().expect("refusals").clone();
            eprintln!("refused by the rules: {refusals:?}");
            assert!(
                refusals.contains_key("supplement_limit_reached"),
                "seed {seed}"
            );
            // The figures as recorded at the end of the first wave ignore the second wave.
            let before = recorded_by(&all, first_at);
            assert!(before.iter().map(Vec::len).sum::<usize>() < all.iter().map(Vec::len).sum());
            check_all(&projection, &before, first_at).await;
            // … and are, answer for answer, what the live service answered then.
            let past = every_answer(&projection, first_at).await;
            assert_eq!(past.len(), answered_then.len());
            for (now, then) in past.iter().zip(&answered_then) {
                assert_eq!(now, then, "as recorded at the end of the first wave");
            }
            assert_ne!(
                every_answer(&projection, None).await,
                answered_then,
                "the second wave changed the live figures"
            );
        }
    }
    projection.stop().await;
    relay.stop().await;
}
