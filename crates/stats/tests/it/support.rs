//! Fixtures: local times, profiles, and dossier lives driven through `domain::decide`.

use std::sync::LazyLock;

use calendar::{Calendar, StatutoryTime};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use domain::{
    Action, AgencyCode, ApplicantType, Channel, Command, ComponentCode, Dossier, Event, FeeKind,
    Level, OnlineServiceLevel, Outcome, PaymentChannel, ProcedureCode, Profile, Rating, Refusal,
    ReturnMethod, Rules, SectorCode, SupplementPolicy, Text, TransactionId, TransferMode, decide,
    event_time,
};
use stats::{Aggregates, Contribution, Metric, Totals, contribution};

pub static CALENDAR: LazyLock<Calendar> = LazyLock::new(Calendar::vietnam_default);

/// A local time in Vietnam (UTC+7).
pub fn vn(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    let local = NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|date| date.and_hms_opt(h, min, 0))
        .expect("valid date and time");
    chrono::FixedOffset::east_opt(7 * 3600)
        .expect("UTC+7")
        .from_local_datetime(&local)
        .single()
        .expect("no gap at a fixed offset")
        .with_timezone(&Utc)
}

pub fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

pub fn agency(code: &str) -> AgencyCode {
    AgencyCode::parse(code).expect("valid agency code")
}
pub fn sector(code: &str) -> SectorCode {
    SectorCode::parse(code).expect("valid sector code")
}
pub fn procedure(code: &str) -> ProcedureCode {
    ProcedureCode::parse(code).expect("valid procedure code")
}
pub fn comp(code: &str) -> ComponentCode {
    ComponentCode::parse(code).expect("valid component code")
}
pub fn text(s: &str) -> Text {
    Text::parse(s).expect("valid text")
}
pub fn txn(s: &str) -> TransactionId {
    TransactionId::parse(s).expect("valid transaction id")
}

pub const HOME: &str = "000.00.12.H40";
pub const OTHER: &str = "000.00.01.H40";

pub fn profile() -> Profile {
    Profile {
        procedure: procedure("1.001234"),
        online_level: OnlineServiceLevel::FullOnline,
        sector: sector("land"),
        agency: agency(HOME),
        level: Level::District,
        channel: Channel::Online,
        applicant_type: ApplicantType::Citizen,
    }
}

pub fn components() -> Vec<ComponentCode> {
    vec![comp("GT01"), comp("GT02"), comp("GT03")]
}

/// One dossier's life, each step decided by `domain::decide` against the state so far.
#[derive(Debug, Clone)]
pub struct Life {
    pub state: Dossier,
    pub events: Vec<Event>,
    pub policy: SupplementPolicy,
    /// The apology notice's unit `decide` judges with (default: working day).
    pub notice: domain::NoticeUnit,
}

impl Life {
    pub fn new(policy: SupplementPolicy) -> Life {
        Life {
            state: Dossier::default(),
            events: Vec::new(),
            policy,
            notice: domain::NoticeUnit::WorkingDay,
        }
    }

    /// Decides `action` at `at` and appends the resulting events.
    pub fn try_act(&mut self, at: DateTime<Utc>, action: Action) -> Result<(), Refusal> {
        let command = Command {
            occurred_at: at,
            action,
        };
        let rules = Rules {
            calendar: &CALENDAR,
            supplement_policy: self.policy,
            apology_notice: self.notice,
        };
        for body in decide(&self.state, &command, rules)?.into_events() {
            let event = Event {
                occurred_at: event_time(&command, &body),
                body,
            };
            self.state.evolve(&event);
            self.events.push(event);
        }
        Ok(())
    }

    /// Like [`Life::try_act`], for steps the test expects to be accepted.
    pub fn act(&mut self, at: DateTime<Utc>, action: Action) -> &mut Life {
        if let Err(refusal) = self.try_act(at, action.clone()) {
            panic!("{action:?} at {at} refused: {refusal:?}");
        }
        self
    }

    pub fn contribution(&self) -> Contribution {
        contribution(&self.events).expect("a dossier with a profile contributes")
    }

    /// The due time in force now.
    pub fn due(&self) -> DateTime<Utc> {
        self.state.due_at.expect("received")
    }
}

/// A dossier received at `at` with [`profile`], three working days, optionally a fee, or with
/// the given appointment (imported history).
pub fn received(at: DateTime<Utc>, fee: bool, due_at: Option<DateTime<Utc>>) -> Life {
    received_as(at, profile(), fee, due_at)
}

pub fn received_as(
    at: DateTime<Utc>,
    profile: Profile,
    fee: bool,
    due_at: Option<DateTime<Utc>>,
) -> Life {
    let mut life = Life::new(SupplementPolicy::Restart);
    life.act(
        at,
        Action::Receive {
            procedure: None,
            profile,
            statutory_time: StatutoryTime::Days(3),
            fee_required: fee,
            components: components(),
            due_at,
            applicant: None,
            return_method: None,
        },
    );
    life
}

pub fn resolve() -> Action {
    Action::Resolve {
        outcome: Outcome::Approved,
        deciding_agency: agency(HOME),
    }
}
pub fn request_supplement() -> Action {
    Action::RequestSupplement {
        reason: text("missing land-use certificate"),
    }
}
pub fn apology(new_appointment: DateTime<Utc>) -> Action {
    Action::IssueApology {
        reason: text("survey delayed"),
        new_appointment,
        signer: None,
        delivery: None,
    }
}
pub fn assess(amount_vnd: i64) -> Action {
    Action::AssessFee {
        amount_vnd,
        kind: FeeKind::Fee,
    }
}
pub fn pay(amount_vnd: i64, channel: PaymentChannel, id: &str) -> Action {
    Action::RecordPayment {
        amount_vnd,
        channel,
        transaction_id: txn(id),
    }
}
pub fn transfer(mode: TransferMode) -> Action {
    Action::Transfer {
        to_agency: agency(OTHER),
        mode,
    }
}
pub fn return_result() -> Action {
    Action::ReturnResult {
        method: ReturnMethod::Counter,
    }
}
pub fn rate(rating: Rating) -> Action {
    Action::Rate { rating }
}

/// The totals of `[from, to)` over the given dossiers, all slices.
pub fn totals_of<'a>(
    lives: impl IntoIterator<Item = &'a Life>,
    from: NaiveDate,
    to: NaiveDate,
) -> Totals {
    let mut aggregates = Aggregates::new();
    for life in lives {
        if let Some(c) = contribution(&life.events) {
            aggregates.add_contribution(&c);
        }
    }
    aggregates.totals(from, to, |_| true)
}

/// The stock `metric` of one contribution at the start of `day`.
pub fn stock_at(c: &Contribution, metric: Metric, day: NaiveDate) -> i128 {
    c.deltas
        .iter()
        .filter(|((d, m), _)| *m == metric && *d <= day)
        .map(|(_, v)| *v)
        .sum()
}

/// The four stocks (pending, within time, overdue, 766 within time) at the start of `day`.
pub fn stocks_at(c: &Contribution, day: NaiveDate) -> [i128; 4] {
    [
        stock_at(c, Metric::Pending, day),
        stock_at(c, Metric::PendingWithinTime, day),
        stock_at(c, Metric::PendingOverdue, day),
        stock_at(c, Metric::Pending766WithinTime, day),
    ]
}

/// The flow deltas of one contribution: (date, metric, delta), flows only.
pub fn flows(c: &Contribution) -> Vec<(NaiveDate, Metric, i128)> {
    c.deltas
        .iter()
        .filter(|((_, m), _)| m.kind() == stats::MetricKind::Flow)
        .map(|((d, m), v)| (*d, *m, *v))
        .collect()
}
