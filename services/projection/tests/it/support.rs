//! Shared helpers: a migrated database, a small deterministic random generator, random slices
//! and contributions, and the normal form answers are compared in.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use domain::{AgencyCode, ApplicantType, Channel, Level, ProcedureCode, SectorCode};
use eventlog::EventLog;
use stats::{Contribution, GroupKey, Metric, Slice, Totals};
use testkit::TestDb;

/// A fresh database with the log's and the projection's migrations applied.
pub async fn migrated_db() -> (TestDb, EventLog) {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.expect("log migrations");
    projection::store::migrate(&db.pool)
        .await
        .expect("projection migrations");
    (db, log)
}

pub use testkit::Rng;

/// A day in `[from, to)`.
pub fn random_day(rng: &mut Rng, from: NaiveDate, to: NaiveDate) -> NaiveDate {
    let n = (to - from).num_days() as u64;
    from + chrono::Days::new(rng.below(n))
}

pub const AGENCIES: [&str; 3] = ["000.00.12.H40", "000.00.31.H40", "H40.22"];
pub const SECTORS: [&str; 3] = ["land", "civil", "business"];
pub const PROCEDURES: [&str; 3] = ["1.001", "1.002", "2.010"];

pub fn random_slice(rng: &mut Rng) -> Slice {
    Slice {
        level: *rng.pick(Level::ALL),
        agency: AgencyCode::parse(*rng.pick(&AGENCIES)).unwrap(),
        sector: SectorCode::parse(*rng.pick(&SECTORS)).unwrap(),
        procedure: ProcedureCode::parse(*rng.pick(&PROCEDURES)).unwrap(),
        channel: *rng.pick(Channel::ALL),
        applicant_type: *rng.pick(ApplicantType::ALL),
    }
}

/// A contribution with a few flow deltas and stock deltas (a stock that rises on one day and
/// falls on a later one, as a pending dossier does) within `[from, to)`.
pub fn random_contribution(rng: &mut Rng, from: NaiveDate, to: NaiveDate) -> Contribution {
    let slice = random_slice(rng);
    let mut deltas = BTreeMap::new();
    let flows: Vec<Metric> = Metric::flows().collect();
    let stocks: Vec<Metric> = Metric::stocks().collect();
    for _ in 0..1 + rng.below(4) {
        let metric = *rng.pick(&flows);
        let v = if metric == Metric::PaymentAmountVnd {
            1000 * (1 + i128::from(rng.below(500)))
        } else {
            1
        };
        *deltas
            .entry((random_day(rng, from, to), metric))
            .or_insert(0) += v;
    }
    for _ in 0..rng.below(3) {
        let metric = *rng.pick(&stocks);
        let start = random_day(rng, from, to);
        *deltas.entry((start, metric)).or_insert(0) += 1;
        if rng.chance(70) {
            let end = start + chrono::Days::new(1 + rng.below(90));
            *deltas.entry((end, metric)).or_insert(0) -= 1;
        }
    }
    deltas.retain(|_, v| *v != 0);
    Contribution { slice, deltas }
}

/// Answers without what cannot be told apart: zero figures, and groups whose figures are all
/// zero (the store leaves them out, [`stats::Aggregates::query`] keeps a group that has cells
/// outside the period). The one group of an ungrouped query is kept.
pub fn normal(answer: BTreeMap<GroupKey, Totals>) -> BTreeMap<GroupKey, Totals> {
    answer
        .into_iter()
        .filter_map(|(key, mut t)| {
            t.flows.retain(|_, v| *v != 0);
            t.at_start.retain(|_, v| *v != 0);
            t.at_end.retain(|_, v| *v != 0);
            let empty = t.flows.is_empty() && t.at_start.is_empty() && t.at_end.is_empty();
            (!empty || key.is_empty()).then_some((key, t))
        })
        .collect()
}

/// Appends to the log: a reception on `received` (local noon) of a dossier of a profile
/// chosen by `kind`, and when `resolved` is given, its resolution on that day. Returns the
/// dossier's version.
pub async fn append_dossier(
    log: &EventLog,
    dossier_id: &str,
    kind: usize,
    received: NaiveDate,
    resolved: Option<NaiveDate>,
) -> u32 {
    let mut events = vec![received_event(kind, received)];
    if let Some(day) = resolved {
        events.push(resolved_event(kind, received, day));
    }
    let n = events.len() as u32;
    log.append(vec![eventlog::DossierAppend {
        dossier_id: dossier_id.to_owned(),
        expected_version: eventlog::ExpectedVersion::NoStream,
        routing: routing(kind),
        events,
    }])
    .await
    .expect("append");
    n
}

/// Appends the resolution on `day` to a dossier appended with [`append_dossier`] without one.
pub async fn append_resolution(
    log: &EventLog,
    dossier_id: &str,
    kind: usize,
    received: NaiveDate,
    day: NaiveDate,
) {
    log.append(vec![eventlog::DossierAppend {
        dossier_id: dossier_id.to_owned(),
        expected_version: eventlog::ExpectedVersion::Exact(1),
        routing: routing(kind),
        events: vec![resolved_event(kind, received, day)],
    }])
    .await
    .expect("append resolution");
}

fn profile(kind: usize) -> domain::Profile {
    domain::Profile {
        procedure: ProcedureCode::parse(PROCEDURES[kind % 3]).unwrap(),
        online_level: domain::OnlineServiceLevel::FullOnline,
        sector: SectorCode::parse(SECTORS[(kind / 3) % 3]).unwrap(),
        agency: AgencyCode::parse(AGENCIES[(kind / 9) % 3]).unwrap(),
        level: Level::ALL[kind % Level::ALL.len()],
        channel: Channel::ALL[(kind / 2) % Channel::ALL.len()],
        applicant_type: ApplicantType::ALL[(kind / 5) % ApplicantType::ALL.len()],
    }
}

fn routing(kind: usize) -> eventlog::Routing {
    let p = profile(kind);
    eventlog::Routing {
        level: p.level.as_str().to_owned(),
        agency: p.agency.as_str().to_owned(),
        sector: p.sector.as_str().to_owned(),
    }
}

/// 12:00 local (UTC+7) on `day`.
fn noon(day: NaiveDate) -> chrono::DateTime<chrono::Utc> {
    day.and_hms_opt(5, 0, 0).unwrap().and_utc()
}

fn new_event(body: domain::DossierEvent, at: chrono::DateTime<chrono::Utc>) -> eventlog::NewEvent {
    let (event_type, payload) = body.into_parts();
    let event_id = uuid::Uuid::new_v4();
    let mut fingerprint = [0u8; 32];
    fingerprint[..16].copy_from_slice(event_id.as_bytes());
    eventlog::NewEvent {
        event_id,
        event_type: event_type.to_owned(),
        occurred_at: at,
        payload,
        fingerprint,
    }
}

fn due(received: NaiveDate) -> chrono::DateTime<chrono::Utc> {
    noon(received + chrono::Days::new(10))
}

fn received_event(kind: usize, day: NaiveDate) -> eventlog::NewEvent {
    new_event(
        domain::DossierEvent::Received {
            procedure: None,
            profile: profile(kind),
            statutory_time: calendar::StatutoryTime::Days(8),
            fee_required: false,
            components: vec![domain::ComponentCode::parse("don").unwrap()],
            due_at: due(day),
            applicant: None,
            return_method: None,
        },
        noon(day),
    )
}

fn resolved_event(kind: usize, received: NaiveDate, day: NaiveDate) -> eventlog::NewEvent {
    let timeliness = if noon(day) <= due(received) {
        calendar::Timeliness::Early
    } else {
        calendar::Timeliness::Late
    };
    new_event(
        domain::DossierEvent::Resolved {
            outcome: domain::Outcome::Approved,
            deciding_agency: profile(kind).agency,
            due_at: due(received),
            timeliness,
        },
        noon(day),
    )
}

/// Every query the tests compare before and after: province-wide and grouped, over a few
/// periods, so that every rollup is read.
pub fn sample_queries() -> Vec<stats::Query> {
    use stats::Dimension;
    let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
    let mut out = Vec::new();
    for (from, to) in [
        (d(2024, 1, 1), d(2025, 1, 1)),
        (d(2024, 2, 10), d(2024, 11, 3)),
        (d(2023, 12, 20), d(2024, 1, 15)),
    ] {
        for group_by in [
            vec![],
            vec![Dimension::Level],
            vec![Dimension::Agency],
            vec![Dimension::Sector, Dimension::Agency],
            vec![Dimension::Procedure, Dimension::Channel],
        ] {
            out.push(stats::Query {
                from,
                to,
                filter: stats::SliceFilter::default(),
                group_by,
            });
        }
    }
    out
}

/// The answers to [`sample_queries`].
pub async fn answers(pool: &sqlx::PgPool) -> Vec<BTreeMap<GroupKey, Totals>> {
    let mut out = Vec::new();
    for q in sample_queries() {
        out.push(projection::store::query(pool, &q).await.expect("query"));
    }
    out
}

/// Appends to the log, as an import would and bypassing every request bound: a reception on
/// `day` of a dossier of profile `kind`, a fee, and `payments` payments of `amount_vnd` each
/// on that day (every other one online). Returns the dossier's version.
pub async fn append_paid_dossier(
    log: &EventLog,
    dossier_id: &str,
    kind: usize,
    day: NaiveDate,
    payments: usize,
    amount_vnd: i64,
) -> u32 {
    let mut events = vec![
        received_event(kind, day),
        new_event(
            domain::DossierEvent::FeeAssessed {
                amount_vnd,
                kind: domain::FeeKind::ALL[0],
            },
            noon(day),
        ),
    ];
    for p in 0..payments {
        events.push(new_event(
            domain::DossierEvent::Paid {
                amount_vnd,
                channel: domain::PaymentChannel::ALL[p % domain::PaymentChannel::ALL.len()],
                transaction_id: domain::TransactionId::parse(format!("TX-{dossier_id}-{p}"))
                    .unwrap(),
            },
            noon(day),
        ));
    }
    let n = events.len() as u32;
    log.append(vec![eventlog::DossierAppend {
        dossier_id: dossier_id.to_owned(),
        expected_version: eventlog::ExpectedVersion::NoStream,
        routing: routing(kind),
        events,
    }])
    .await
    .expect("append");
    n
}
