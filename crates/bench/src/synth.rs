//! Synthetic dossiers for the projection benchmarks: a province's agencies, sectors and
//! procedures, and dossiers with realistic lives generated from their number alone, so any
//! dossier can be regenerated without storing it.
//!
//! The catalog: 1 province agency offering all 50 sectors, 20 districts offering the 30 most
//! used, 200 communes offering the 10 most used; 10 procedures per sector (500 in all). Volume:
//! 10 % of the dossiers at the province, 40 % at the districts, 50 % at the communes; sectors and
//! procedures are picked with weights `1 / rank` (a few dominate, as land and civil status do).
//!
//! A dossier is received on a day of the three years 2023–2025 (office hours, local time),
//! with a statutory time of 3–15 working days; 70 % have their components digitized, 40 % a fee
//! (paid online in 60 % of those); 3 % are withdrawn, 1 % stopped, 2 % never closed; the others
//! are resolved early (60 %), on time (25 %) or late (15 %), half of them with a digitized
//! result. Anything that would happen after 2026-01-01 00:00 local has not happened yet: those
//! dossiers are pending at the end of the history.

use calendar::{StatutoryTime, Timeliness};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use domain::{
    AgencyCode, ApplicantType, Channel, ComponentCode, DossierEvent, Event, FeeKind, Level,
    OnlineServiceLevel, Outcome, PaymentChannel, ProcedureCode, Profile, SectorCode, Text,
    TransactionId,
};

/// Days of history: 2023-01-01 up to (excluding) 2026-01-01.
pub const HISTORY_DAYS: i64 = 1096;

pub fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2023, 1, 1).expect("a valid date")
}

/// The end of the history (2026-01-01 00:00 local): nothing has happened after it.
pub fn end_of_history() -> DateTime<Utc> {
    at(first_day() + Duration::days(HISTORY_DAYS), 0)
}

/// `minutes` after the start of the local day `day`.
fn at(day: NaiveDate, minutes: i64) -> DateTime<Utc> {
    stats::start_of_day(day).expect("Vietnam has no DST gap") + Duration::minutes(minutes)
}

/// The dossiers' generator: the same dossier number always gives the same dossier.
pub use testkit::Rng;

/// An index picked with the weights `1 / (i + 1)` among `n`.
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let total: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
    let mut u = rng.unit() * total;
    for k in 0..n {
        u -= 1.0 / (k + 1) as f64;
        if u < 0.0 {
            return k;
        }
    }
    n - 1
}

#[derive(Debug, Clone)]
pub struct Agency {
    pub code: AgencyCode,
    pub level: Level,
    /// How many of the most used sectors it offers.
    pub sectors: usize,
}

#[derive(Debug, Clone)]
pub struct Procedure {
    pub code: ProcedureCode,
    pub sector: usize,
    pub online_level: OnlineServiceLevel,
    pub statutory_days: u32,
}

/// The province's agencies, sectors and procedures.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub agencies: Vec<Agency>,
    pub sectors: Vec<SectorCode>,
    pub procedures: Vec<Procedure>,
}

pub const SECTORS: usize = 50;
pub const PROCEDURES_PER_SECTOR: usize = 10;
pub const DISTRICTS: usize = 20;
pub const COMMUNES_PER_DISTRICT: usize = 10;

impl Catalog {
    pub fn new() -> Catalog {
        let code = |s: String| AgencyCode::parse(s).expect("valid agency code");
        let mut agencies = vec![Agency {
            code: code("000.00.01.H40".to_owned()),
            level: Level::Province,
            sectors: SECTORS,
        }];
        for d in 0..DISTRICTS {
            agencies.push(Agency {
                code: code(format!("000.00.{:02}.H40", d + 10)),
                level: Level::District,
                sectors: 30,
            });
        }
        for d in 0..DISTRICTS {
            for c in 0..COMMUNES_PER_DISTRICT {
                agencies.push(Agency {
                    code: code(format!("000.{:02}.{:02}.H40", c + 10, d + 10)),
                    level: Level::Commune,
                    sectors: 10,
                });
            }
        }
        let sectors = (0..SECTORS)
            .map(|s| SectorCode::parse(format!("sector-{:02}", s + 1)).expect("valid sector"))
            .collect();
        let mut procedures = Vec::new();
        for s in 0..SECTORS {
            for p in 0..PROCEDURES_PER_SECTOR {
                let i = s * PROCEDURES_PER_SECTOR + p;
                procedures.push(Procedure {
                    code: ProcedureCode::parse(format!("{}.{:03}", s + 1, p + 1))
                        .expect("valid procedure"),
                    sector: s,
                    online_level: match i % 10 {
                        0..=2 => OnlineServiceLevel::FullOnline,
                        3..=5 => OnlineServiceLevel::PartialOnline,
                        _ => OnlineServiceLevel::NotOnline,
                    },
                    statutory_days: [3, 5, 7, 10, 15][i % 5],
                });
            }
        }
        Catalog {
            agencies,
            sectors,
            procedures,
        }
    }

    /// 10 % province, 40 % districts (2 % each), 50 % communes (0.25 % each).
    fn pick_agency(&self, rng: &mut Rng) -> usize {
        let u = rng.below(10_000);
        match u {
            0..1_000 => 0,
            1_000..5_000 => 1 + ((u - 1_000) / 200) as usize,
            _ => 1 + DISTRICTS + ((u - 5_000) / 25) as usize,
        }
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}

/// What the per-dossier baseline table stores of a dossier: computed here from the generated
/// times, independently of `stats`, so that agreement between the two is a real check.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    pub received_day: NaiveDate,
    pub due_day: NaiveDate,
    /// Resolution, withdrawal or stop, if it happened before the end of the history.
    pub closed_day: Option<NaiveDate>,
    pub resolved: Option<Timeliness>,
    pub ended: bool,
}

/// One generated dossier.
#[derive(Debug, Clone)]
pub struct Dossier {
    pub id: String,
    pub agency: usize,
    pub procedure: usize,
    pub channel: Channel,
    pub applicant_type: ApplicantType,
    /// In version order.
    pub events: Vec<Event>,
    pub facts: Facts,
}

/// Dossier number `n`, received on a day of the history.
pub fn dossier(catalog: &Catalog, n: u64) -> Dossier {
    let mut rng = Rng::new(n);
    let day = first_day() + Duration::days(rng.below(HISTORY_DAYS as u64) as i64);
    let received_at = at(day, 8 * 60 + rng.below(9 * 60) as i64);
    dossier_received_at(catalog, n, &mut rng, received_at, end_of_history())
}

/// Dossier number `n` received at `received_at`, with its later events up to (excluding) `end`.
pub fn dossier_received_at(
    catalog: &Catalog,
    n: u64,
    rng: &mut Rng,
    received_at: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Dossier {
    let agency = catalog.pick_agency(rng);
    let a = &catalog.agencies[agency];
    let sector = zipf(rng, a.sectors);
    let procedure = sector * PROCEDURES_PER_SECTOR + zipf(rng, PROCEDURES_PER_SECTOR);
    let p = &catalog.procedures[procedure];
    let channel = match rng.below(100) {
        0..55 => Channel::Direct,
        55..95 => Channel::Online,
        _ => Channel::Postal,
    };
    let applicant_type = match rng.below(100) {
        0..80 => ApplicantType::Citizen,
        80..95 => ApplicantType::Business,
        _ => ApplicantType::Organisation,
    };
    let received_day = calendar::local_date(received_at);
    // Working days to calendar days, roughly; the due time is stored, never recomputed.
    let calendar_days = i64::from(p.statutory_days) * 7 / 5;
    let due_day = received_day + Duration::days(calendar_days);
    let due_at = at(due_day, 17 * 60);
    let components = vec![component("don-de-nghi"), component("ban-sao")];
    let fee = rng.below(100) < 40;
    let mut events = vec![Event {
        occurred_at: received_at,
        body: DossierEvent::Received {
            procedure: None,
            profile: Profile {
                procedure: p.code.clone(),
                online_level: p.online_level,
                sector: catalog.sectors[p.sector].clone(),
                agency: a.code.clone(),
                level: a.level,
                channel,
                applicant_type,
            },
            statutory_time: StatutoryTime::Days(p.statutory_days),
            fee_required: fee,
            components: components.clone(),
            due_at,
            applicant: None,
            return_method: None,
        },
    }];
    let push = |events: &mut Vec<Event>, t: DateTime<Utc>, body| {
        if t < end {
            events.push(Event {
                occurred_at: t,
                body,
            });
            true
        } else {
            false
        }
    };
    if rng.below(100) < 70 {
        let reused = rng.below(10) == 0;
        let (digitized, reused) = if reused {
            (vec![components[0].clone()], vec![components[1].clone()])
        } else {
            (components.clone(), Vec::new())
        };
        push(
            &mut events,
            received_at + Duration::minutes(10),
            DossierEvent::ComponentsDigitized { digitized, reused },
        );
    }
    if fee {
        let amount_vnd = 50_000 * (1 + rng.below(10) as i64);
        let online = rng.below(100) < 60;
        if push(
            &mut events,
            received_at + Duration::minutes(30),
            DossierEvent::FeeAssessed {
                amount_vnd,
                kind: FeeKind::Fee,
            },
        ) {
            push(
                &mut events,
                received_at + Duration::minutes(60),
                DossierEvent::Paid {
                    amount_vnd,
                    channel: if online {
                        PaymentChannel::NationalPlatform
                    } else {
                        PaymentChannel::Counter
                    },
                    transaction_id: TransactionId::parse(format!("TX-{n}"))
                        .expect("valid transaction id"),
                },
            );
        }
    }

    let mut facts = Facts {
        received_day,
        due_day,
        closed_day: None,
        resolved: None,
        ended: false,
    };
    // The closing, if any, at least two hours after reception (after the fee events).
    let not_before = |t: DateTime<Utc>| t.max(received_at + Duration::hours(2));
    let u = rng.below(100);
    let reason = || Text::parse("theo đề nghị").expect("valid text");
    let ending = |rng: &mut Rng| {
        not_before(at(
            received_day + Duration::days(1 + rng.below(calendar_days as u64) as i64),
            10 * 60,
        ))
    };
    match u {
        0..3 => {
            let t = ending(rng);
            if push(&mut events, t, DossierEvent::Withdrawn { reason: reason() }) {
                facts.closed_day = Some(calendar::local_date(t));
                facts.ended = true;
            }
        }
        3..4 => {
            let t = ending(rng);
            if push(
                &mut events,
                t,
                DossierEvent::Stopped {
                    cause: None,
                    reason: reason(),
                },
            ) {
                facts.closed_day = Some(calendar::local_date(t));
                facts.ended = true;
            }
        }
        4..6 => {}
        _ => {
            let r = rng.below(100);
            let t = not_before(match r {
                0..60 => at(
                    due_day - Duration::days(1 + rng.below(calendar_days as u64) as i64),
                    10 * 60,
                ),
                60..85 => at(due_day, 8 * 60 + rng.below(8 * 60) as i64),
                _ => at(due_day + Duration::days(1 + rng.below(10) as i64), 10 * 60),
            });
            let timeliness = calendar::classify(t, due_at);
            if push(
                &mut events,
                t,
                DossierEvent::Resolved {
                    outcome: Outcome::Approved,
                    deciding_agency: a.code.clone(),
                    due_at,
                    timeliness,
                },
            ) {
                facts.closed_day = Some(calendar::local_date(t));
                facts.resolved = Some(timeliness);
                if rng.below(2) == 0 {
                    push(
                        &mut events,
                        t + Duration::minutes(30),
                        DossierEvent::ResultDigitized {
                            document_ref: Text::parse(format!("KQ/{n}")).expect("valid text"),
                            sha256: format!("{:064x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15),
                        },
                    );
                }
            }
        }
    }
    Dossier {
        id: format!("S-{n:010}"),
        agency,
        procedure,
        channel,
        applicant_type,
        events,
        facts,
    }
}

fn component(code: &str) -> ComponentCode {
    ComponentCode::parse(code).expect("valid component code")
}

/// The stored name of a timeliness, as the baseline table keeps it.
pub fn timeliness_str(t: Timeliness) -> &'static str {
    match t {
        Timeliness::Early => "early",
        Timeliness::OnTime => "on_time",
        Timeliness::Late => "late",
    }
}

/// The log's form of a dossier: one `DossierAppend` of all its events, as a new dossier.
pub fn to_append(catalog: &Catalog, d: &Dossier) -> eventlog::DossierAppend {
    eventlog::DossierAppend {
        dossier_id: d.id.clone(),
        expected_version: eventlog::ExpectedVersion::NoStream,
        routing: routing(catalog, d),
        events: d.events.iter().map(new_event).collect(),
    }
}

/// The log's routing columns of `d` (its receiving agency's).
pub fn routing(catalog: &Catalog, d: &Dossier) -> eventlog::Routing {
    let a = &catalog.agencies[d.agency];
    let sector = &catalog.sectors[catalog.procedures[d.procedure].sector];
    eventlog::Routing {
        level: a.level.as_str().to_owned(),
        agency: a.code.as_str().to_owned(),
        sector: sector.as_str().to_owned(),
    }
}

/// An event of the log for `e`, with a fresh id and a fingerprint derived from it.
pub fn new_event(e: &Event) -> eventlog::NewEvent {
    let (event_type, payload) = e.body.into_parts();
    let event_id = uuid::Uuid::new_v4();
    let mut fingerprint = [0u8; 32];
    fingerprint[..16].copy_from_slice(event_id.as_bytes());
    fingerprint[16..].copy_from_slice(event_id.as_bytes());
    eventlog::NewEvent {
        event_id,
        event_type: event_type.to_owned(),
        occurred_at: e.occurred_at,
        payload,
        fingerprint,
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn dossiers_are_deterministic_and_their_facts_agree_with_stats() {
        let catalog = Catalog::new();
        assert_eq!(
            catalog.agencies.len(),
            1 + DISTRICTS * (1 + COMMUNES_PER_DISTRICT)
        );
        let mut closed = [0usize; 3];
        for n in 0..5_000 {
            let d = dossier(&catalog, n);
            let again = dossier(&catalog, n);
            assert_eq!(d.events, again.events);
            let c = stats::contribution(&d.events).expect("a received dossier contributes");
            assert_eq!(c.get(d.facts.received_day, stats::Metric::Received), 1);
            match (d.facts.closed_day, d.facts.resolved) {
                (Some(day), Some(_)) => {
                    assert_eq!(c.get(day, stats::Metric::Resolved), 1);
                    closed[0] += 1;
                }
                (Some(day), None) => {
                    assert!(d.facts.ended);
                    assert_eq!(c.get(day, stats::Metric::Ended), 1);
                    closed[1] += 1;
                }
                (None, _) => closed[2] += 1,
            }
            let times: Vec<_> = d.events.iter().map(|e| e.occurred_at).collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{n}: {times:?}");
            assert!(times.iter().all(|t| *t < end_of_history()));
        }
        // Mostly resolved; some ended; some still pending.
        assert!(
            closed[0] > 4_000 && closed[1] > 100 && closed[2] > 50,
            "{closed:?}"
        );
    }
}
