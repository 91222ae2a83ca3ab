//! Model test: random dossier lives through `domain::decide`; the figures from summed
//! contributions equal a naive recomputation written here from the raw events, following
//! DOMAIN.md's wording; and applying diffs event by event, in any order and with duplicates,
//! ends in the aggregates of the final contributions.

use std::collections::BTreeMap;

use calendar::StatutoryTime;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use domain::{
    Action, ApplicantType, Channel, Event, Level, OnlineServiceLevel, Outcome, PaymentChannel,
    Profile, Rating, ReturnMethod, SupplementPolicy, TransferMode,
};
use proptest::prelude::*;
use stats::reports::on_time_progress;
use stats::{Aggregates, Contribution, Slice, contribution, diff, indicators};

use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Generation

/// When a step happens, relative to the previous accepted one.
#[derive(Debug, Clone)]
enum When {
    After(i64),
    /// Back-dated (an offline counter syncing late).
    Back(i64),
    Days(i64),
    NextMidnight,
    LastMinuteOfDay,
    AtDue,
    JustAfterDue,
}

#[derive(Debug, Clone)]
struct Step {
    what: u8,
    when: When,
    param: u8,
}

#[derive(Debug, Clone)]
struct Plan {
    refuse: bool,
    profile: [u8; 7],
    statutory: StatutoryTime,
    fee_required: bool,
    components: usize,
    /// 0: computed due time; 1: imported, exactly at a local midnight; 2: imported, minutes.
    due_kind: u8,
    due_param: u8,
    start_day: i64,
    /// Minute of the local day; 0 and 1439 are frequent.
    start_minute: i64,
    steps: Vec<Step>,
}

fn when() -> impl Strategy<Value = When> {
    prop_oneof![
        6 => (0i64..600).prop_map(When::After),
        3 => (600i64..4000).prop_map(When::After),
        2 => (1i64..3000).prop_map(When::Back),
        2 => (1i64..20).prop_map(When::Days),
        1 => Just(When::NextMidnight),
        1 => Just(When::LastMinuteOfDay),
        1 => Just(When::AtDue),
        1 => Just(When::JustAfterDue),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    // Endings (8 resolve, 9 withdraw, 10 stop) are rarer, so that lives get deep.
    let what = prop_oneof![
        12 => 0u8..8,
        2 => Just(8u8),
        1 => 9u8..11,
        5 => 11u8..14,
    ];
    (what, when(), any::<u8>()).prop_map(|(what, when, param)| Step { what, when, param })
}

fn plan() -> impl Strategy<Value = Plan> {
    let statutory = prop_oneof![
        (1u32..6).prop_map(StatutoryTime::Days),
        (1u32..17).prop_map(StatutoryTime::Hours),
    ];
    let start_minute = prop_oneof![2 => Just(0i64), 2 => Just(1439i64), 6 => 0i64..1440];
    (
        (0u8..12).prop_map(|r| r == 0),
        any::<[u8; 7]>(),
        statutory,
        any::<bool>(),
        1usize..4,
        (
            prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
            any::<u8>(),
        ),
        (0i64..30, start_minute),
        prop::collection::vec(step(), 0..14),
    )
        .prop_map(
            |(
                refuse,
                profile,
                statutory,
                fee_required,
                components,
                (due_kind, due_param),
                (start_day, start_minute),
                steps,
            )| Plan {
                refuse,
                profile,
                statutory,
                fee_required,
                components,
                due_kind,
                due_param,
                start_day,
                start_minute,
                steps,
            },
        )
}

fn pick<T: Copy>(options: &[T], n: u8) -> T {
    options[usize::from(n) % options.len()]
}

const AGENCIES: [&str; 3] = ["000.00.12.H40", "000.00.01.H40", "000.30.11.H40"];
const SECTORS: [&str; 3] = ["land", "justice", "business"];

fn make_profile(p: [u8; 7]) -> Profile {
    Profile {
        procedure: procedure(pick(&["1.001", "1.002", "2.010"], p[0])),
        online_level: pick(
            &[
                OnlineServiceLevel::FullOnline,
                OnlineServiceLevel::PartialOnline,
                OnlineServiceLevel::NotOnline,
            ],
            p[1],
        ),
        sector: sector(pick(&SECTORS, p[2])),
        agency: agency(pick(&AGENCIES, p[3])),
        level: pick(&[Level::Province, Level::District, Level::Commune], p[4]),
        channel: pick(&[Channel::Online, Channel::Direct, Channel::Postal], p[5]),
        applicant_type: pick(
            &[
                ApplicantType::Citizen,
                ApplicantType::Business,
                ApplicantType::Organisation,
            ],
            p[6],
        ),
    }
}

/// The first day of the generated window: Monday 21 April 2025 (30 April and 1 May are
/// holidays inside it).
fn base() -> NaiveDate {
    date(2025, 4, 21)
}

fn midnight_after(t: DateTime<Utc>) -> DateTime<Utc> {
    let local_day = (t + Duration::hours(7)).date_naive();
    let next = local_day.succ_opt().expect("in range");
    next.and_hms_opt(0, 0, 0).expect("midnight").and_utc() - Duration::hours(7)
}

/// Runs a plan through decide; refused steps are skipped.
fn live(plan: &Plan, policy: SupplementPolicy, serial: usize) -> Life {
    let mut life = Life::new(policy);
    // Half the dossiers judged with apologies in calendar days: a province that changed its
    // `apology_notice`; the figures go by each apology's recorded answer.
    if serial % 2 == 1 {
        life.notice = domain::NoticeUnit::CalendarDay;
    }
    let start_local = base().and_hms_opt(0, 0, 0).expect("midnight").and_utc()
        + Duration::days(plan.start_day)
        + Duration::minutes(plan.start_minute);
    let start = start_local - Duration::hours(7);
    let profile = make_profile(plan.profile);
    if plan.refuse {
        life.act(
            start,
            Action::RefuseAtIntake {
                profile,
                reason: text("incomplete"),
            },
        );
        return life;
    }
    let codes: Vec<_> = ["C1", "C2", "C3"][..plan.components]
        .iter()
        .map(|c| comp(c))
        .collect();
    let due_at = match plan.due_kind {
        0 => None,
        1 => Some(midnight_after(start) + Duration::days(i64::from(plan.due_param % 6))),
        _ => Some(start + Duration::minutes(30 * i64::from(plan.due_param))),
    };
    life.act(
        start,
        Action::Receive {
            procedure: None,
            profile,
            statutory_time: plan.statutory,
            fee_required: plan.fee_required,
            components: codes.clone(),
            due_at,
            applicant: None,
            return_method: None,
        },
    );
    let mut cursor = start;
    for (n, step) in plan.steps.iter().enumerate() {
        let due = life.state.due_at.unwrap_or(start);
        let mut at = match step.when {
            When::After(m) => cursor + Duration::minutes(m),
            When::Back(m) => cursor - Duration::minutes(m),
            When::Days(d) => cursor + Duration::days(d),
            When::NextMidnight => midnight_after(cursor),
            When::LastMinuteOfDay => midnight_after(cursor) - Duration::minutes(1),
            When::AtDue => due,
            When::JustAfterDue => due + Duration::minutes(1),
        };
        let p = step.param;
        let subset = |bits: u8| -> Vec<_> {
            codes
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, c)| c.clone())
                .collect()
        };
        let action = match step.what {
            0 => Action::RecordDigitized {
                digitized: subset(p & 7),
                reused: subset((p >> 3) & 7 & !(p & 7)),
            },
            1 => Action::Transfer {
                to_agency: agency(pick(&AGENCIES, p)),
                mode: if p % 2 == 0 {
                    TransferMode::Electronic
                } else {
                    TransferMode::Paper
                },
            },
            2 => request_supplement(),
            3 => Action::ReceiveSupplement,
            4 => {
                at = at.max(due + Duration::minutes(1));
                Action::MarkLate
            }
            5 => apology(at.max(due) + Duration::days(2)),
            6 => assess(1_000 * (1 + i64::from(p))),
            7 => {
                let outstanding = life.state.outstanding_vnd();
                let amount = if outstanding > 0 {
                    outstanding.min(700 * (1 + i64::from(p)))
                } else {
                    1_000
                };
                pay(
                    amount,
                    pick(
                        &[
                            PaymentChannel::NationalPlatform,
                            PaymentChannel::ProvincialGateway,
                            PaymentChannel::Counter,
                        ],
                        p,
                    ),
                    &format!("T{serial}-{n}"),
                )
            }
            8 => Action::Resolve {
                outcome: if p % 4 == 0 {
                    Outcome::Refused
                } else {
                    Outcome::Approved
                },
                deciding_agency: agency(pick(&AGENCIES, p)),
            },
            9 => Action::Withdraw {
                reason: text("applicant request"),
            },
            10 => Action::Stop {
                reason: text("stopped"),
            },
            11 => Action::AttachResult {
                document_ref: text("QD-1"),
                sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            },
            12 => Action::ReturnResult {
                method: pick(
                    &[
                        ReturnMethod::Counter,
                        ReturnMethod::Post,
                        ReturnMethod::Online,
                    ],
                    p,
                ),
            },
            _ => rate(pick(
                &[
                    Rating::VerySatisfied,
                    Rating::Satisfied,
                    Rating::Unsatisfied,
                ],
                p,
            )),
        };
        if life.try_act(at, action).is_ok() {
            cursor = at;
        }
    }
    life
}

/// Which slices a figure covers.
#[derive(Debug, Clone)]
struct Filter {
    level: Option<Level>,
    channel: Option<Channel>,
    sector: Option<&'static str>,
    agency: Option<&'static str>,
    applicant_type: Option<ApplicantType>,
}

fn filter() -> impl Strategy<Value = Filter> {
    (
        prop::option::weighted(0.3, any::<u8>()),
        prop::option::weighted(0.3, any::<u8>()),
        prop::option::weighted(0.3, any::<u8>()),
        prop::option::weighted(0.2, any::<u8>()),
        prop::option::weighted(0.2, any::<u8>()),
    )
        .prop_map(|(l, c, s, a, t)| Filter {
            level: l.map(|n| pick(&[Level::Province, Level::District, Level::Commune], n)),
            channel: c.map(|n| pick(&[Channel::Online, Channel::Direct, Channel::Postal], n)),
            sector: s.map(|n| pick(&SECTORS, n)),
            agency: a.map(|n| pick(&AGENCIES, n)),
            applicant_type: t.map(|n| {
                pick(
                    &[
                        ApplicantType::Citizen,
                        ApplicantType::Business,
                        ApplicantType::Organisation,
                    ],
                    n,
                )
            }),
        })
}

impl Filter {
    fn keeps_slice(&self, s: &Slice) -> bool {
        self.level.is_none_or(|l| s.level == l)
            && self.channel.is_none_or(|c| s.channel == c)
            && self.sector.is_none_or(|x| s.sector.as_str() == x)
            && self.agency.is_none_or(|x| s.agency.as_str() == x)
            && self.applicant_type.is_none_or(|t| s.applicant_type == t)
    }

    fn keeps_profile(&self, p: &Profile) -> bool {
        self.level.is_none_or(|l| p.level == l)
            && self.channel.is_none_or(|c| p.channel == c)
            && self.sector.is_none_or(|x| p.sector.as_str() == x)
            && self.agency.is_none_or(|x| p.agency.as_str() == x)
            && self.applicant_type.is_none_or(|t| p.applicant_type == t)
    }
}

/// A period `[from, to)` around the generated window.
fn period() -> impl Strategy<Value = (i64, i64)> {
    (-3i64..45, 0i64..35)
}

// ---------------------------------------------------------------------------------------------
// The properties

fn population(plans: &[Plan], extend: bool) -> Vec<Life> {
    let policy = if extend {
        SupplementPolicy::Extend
    } else {
        SupplementPolicy::Restart
    };
    plans
        .iter()
        .enumerate()
        .map(|(i, p)| live(p, policy, i))
        .collect()
}

/// A small deterministic generator for shuffling (splitmix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The shipped 766 scoring.
fn scoring() -> stats::scorecard::ScoringConfig {
    toml::from_str(include_str!("../../../../deploy/config/scorecard-766.toml"))
        .expect("the shipped scoring parses")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    #[test]
    fn figures_from_contributions_equal_the_naive_recomputation(
        plans in prop::collection::vec(plan(), 1..25),
        extend in any::<bool>(),
        queries in prop::collection::vec((period(), filter()), 1..6),
    ) {
        let lives = population(&plans, extend);
        let mut aggregates = Aggregates::new();
        for life in &lives {
            if let Some(c) = contribution(&life.events) {
                aggregates.add_contribution(&c);
            }
        }
        let dossiers: Vec<Vec<Event>> = lives.iter().map(|l| l.events.clone()).collect();
        for ((offset, length), filter) in queries {
            let from = base() + Duration::days(offset);
            let to = from + Duration::days(length);
            let totals = aggregates.totals(from, to, |s| filter.keeps_slice(s));
            let derived = indicators(&totals);
            let (expected, expected_766) =
                oracle::indicators(&dossiers, from, to, |p| filter.keeps_profile(p));
            prop_assert_eq!(derived, expected, "[{}, {}) {:?}", from, to, filter);
            prop_assert_eq!(on_time_progress(&totals), expected_766);
            // The 766 points of every sub-indicator the events give.
            let card = stats::scorecard::scorecard(&scoring(), &totals).expect("in force");
            let points: Vec<(&str, Option<i64>)> = card
                .subs
                .iter()
                .filter_map(|(s, score)| match score {
                    stats::scorecard::SubScore::Points { points, .. } => Some((s.id.as_str(), Some(*points))),
                    stats::scorecard::SubScore::NoDossiers { .. } => Some((s.id.as_str(), None)),
                    stats::scorecard::SubScore::NotComputed { .. } => None,
                })
                .collect();
            prop_assert_eq!(points, oracle::points_766(&expected, expected_766));
            prop_assert_eq!(derived.check(), vec![]);
            prop_assert_eq!(expected.check(), vec![]);
        }
    }

    #[test]
    fn diffs_applied_event_by_event_in_any_order_end_in_the_final_figures(
        plans in prop::collection::vec(plan(), 1..15),
        extend in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let lives = population(&plans, extend);
        let mut expected = Aggregates::new();
        for life in &lives {
            if let Some(c) = contribution(&life.events) {
                expected.add_contribution(&c);
            }
        }

        // Every (dossier, version), some twice (redelivery), in a random order.
        let mut mix = Mix(seed);
        let mut arrivals: Vec<(usize, usize)> = Vec::new();
        for (d, life) in lives.iter().enumerate() {
            for v in 0..life.events.len() {
                arrivals.push((d, v));
                if mix.below(4) == 0 {
                    arrivals.push((d, v));
                }
            }
        }
        for i in (1..arrivals.len()).rev() {
            let j = mix.below(i + 1);
            arrivals.swap(i, j);
        }

        // The projection: per dossier the events known so far (by version) and the
        // contribution last applied.
        let mut known: Vec<BTreeMap<usize, Event>> = vec![BTreeMap::new(); lives.len()];
        let mut applied: Vec<Option<Contribution>> = vec![None; lives.len()];
        let mut aggregates = Aggregates::new();
        for (d, v) in arrivals {
            let redelivery = known[d].contains_key(&v);
            known[d].insert(v, lives[d].events[v].clone());
            let events: Vec<Event> = known[d].values().cloned().collect();
            let new = contribution(&events);
            let change = diff(applied[d].as_ref(), new.as_ref());
            if redelivery {
                prop_assert_eq!(&change, &vec![]);
            }
            aggregates.apply(&change);
            applied[d] = new;
        }
        prop_assert_eq!(&aggregates, &expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The stocks stored as deltas on change days equal, at every day start of the window, the
    /// value computed at that instant from the raw events: emitting only the changes loses
    /// nothing.
    #[test]
    fn stock_deltas_match_a_day_by_day_evaluation(
        plans in prop::collection::vec(plan(), 1..10),
        extend in any::<bool>(),
    ) {
        for life in population(&plans, extend) {
            let c = contribution(&life.events).expect("every generated life has a profile");
            let mut day = base() - Duration::days(2);
            while day < base() + Duration::days(120) {
                prop_assert_eq!(
                    crate::support::stocks_at(&c, day),
                    oracle::naive_stocks(&life.events, oracle::start_of(day)).map(i128::from),
                    "{} {:?}",
                    day,
                    life.events
                );
                day = day.succ_opt().expect("in range");
            }
        }
    }
}
