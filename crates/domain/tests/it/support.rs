//! Fixtures and the given / when / then harness.

use std::sync::LazyLock;

use calendar::{Calendar, StatutoryTime};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use domain::{
    Action, AgencyCode, ApplicantType, Channel, Command, ComponentCode, Decision, Dossier,
    DossierEvent, Event, FeeKind, Level, NoticeUnit, OnlineServiceLevel, Outcome, PaymentChannel,
    ProcedureCode, Profile, Rating, Refusal, ReturnMethod, Rules, SectorCode, SupplementPolicy,
    Text, TransactionId, TransferMode, decide, event_time,
};

pub static CALENDAR: LazyLock<Calendar> = LazyLock::new(Calendar::vietnam_default);

pub fn rules(policy: SupplementPolicy) -> Rules<'static> {
    Rules {
        calendar: &CALENDAR,
        supplement_policy: policy,
        apology_notice: NoticeUnit::WorkingDay,
    }
}

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

pub fn agency(code: &str) -> AgencyCode {
    AgencyCode::parse(code).expect("valid agency code")
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
pub const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

pub fn profile() -> Profile {
    Profile {
        procedure: ProcedureCode::parse("1.001234").expect("valid procedure"),
        online_level: OnlineServiceLevel::FullOnline,
        sector: SectorCode::parse("land").expect("valid sector"),
        agency: agency(HOME),
        level: Level::District,
        channel: Channel::Online,
        applicant_type: ApplicantType::Citizen,
    }
}

pub fn components() -> Vec<ComponentCode> {
    vec![comp("GT01"), comp("GT02"), comp("GT03")]
}

/// Reception of the standard dossier: Monday 4 March 2024 09:00, three working days.
pub fn received_at() -> DateTime<Utc> {
    vn(2024, 3, 4, 9, 0)
}
/// Its appointment, as the log holds it: Thursday 7 March 2024 09:00.
pub fn due() -> DateTime<Utc> {
    vn(2024, 3, 7, 9, 0)
}

pub fn ev(occurred_at: DateTime<Utc>, body: DossierEvent) -> Event {
    Event { occurred_at, body }
}
pub fn cmd(occurred_at: DateTime<Utc>, action: Action) -> Command {
    Command {
        occurred_at,
        action,
    }
}

pub fn received_event(fee_required: bool) -> DossierEvent {
    DossierEvent::Received {
        procedure: None,
        profile: profile(),
        statutory_time: StatutoryTime::Days(3),
        fee_required,
        components: components(),
        due_at: due(),
        applicant: None,
        return_method: None,
    }
}

/// The standard dossier, received with a fee.
pub fn received() -> Event {
    ev(received_at(), received_event(true))
}

pub fn resolved(at: DateTime<Utc>, timeliness: calendar::Timeliness) -> Event {
    ev(
        at,
        DossierEvent::Resolved {
            outcome: Outcome::Approved,
            deciding_agency: agency(HOME),
            due_at: due(),
            timeliness,
        },
    )
}

pub fn resolve() -> Action {
    Action::Resolve {
        outcome: Outcome::Approved,
        deciding_agency: agency(HOME),
    }
}

/// One well-formed action of every kind (the intake ones first).
pub fn sample_actions() -> Vec<Action> {
    vec![
        Action::Receive {
            procedure: None,
            profile: profile(),
            statutory_time: StatutoryTime::Days(3),
            fee_required: true,
            components: components(),
            due_at: None,
            applicant: None,
            return_method: None,
        },
        Action::RefuseAtIntake {
            profile: profile(),
            reason: text("incomplete"),
        },
        Action::RecordDigitized {
            digitized: vec![comp("GT01")],
            reused: vec![comp("GT02")],
        },
        Action::Transfer {
            to_agency: agency(OTHER),
            mode: TransferMode::Electronic,
        },
        Action::RequestSupplement {
            reason: text("missing land plot map"),
        },
        Action::ReceiveSupplement,
        Action::CloseUnsupplemented,
        Action::RequestFinancialObligation {
            reason: text("land use levy"),
        },
        Action::FulfilFinancialObligation,
        Action::MarkLate,
        Action::IssueApology {
            reason: text("site survey delayed"),
            new_appointment: vn(2024, 12, 31, 9, 0),
            signer: None,
            delivery: None,
        },
        Action::AssessFee {
            amount_vnd: 100_000,
            kind: FeeKind::Fee,
        },
        Action::RecordPayment {
            amount_vnd: 100_000,
            channel: PaymentChannel::NationalPlatform,
            transaction_id: txn("TX-1"),
        },
        resolve(),
        Action::Withdraw {
            reason: text("applicant request"),
        },
        Action::Stop {
            reason: text("court dispute"),
        },
        Action::AttachResult {
            document_ref: text("QD-123/2024"),
            sha256: SHA.to_owned(),
        },
        Action::ReturnResult {
            method: ReturnMethod::Counter,
        },
        Action::Rate {
            rating: Rating::Satisfied,
        },
    ]
}

pub fn is_intake(action: &Action) -> bool {
    matches!(
        action,
        Action::Receive { .. } | Action::RefuseAtIntake { .. }
    )
}

/// What a test expects from a command.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per test step, consumed at once
pub enum Expect {
    Decided(Decision),
    Refused(Refusal),
}
/// The decision with these events: none is "already done", one an event, two a resolution and
/// its `late_withdrawn` (the test fails on any other decision).
impl From<Vec<DossierEvent>> for Expect {
    fn from(mut events: Vec<DossierEvent>) -> Self {
        Expect::Decided(match events.len() {
            0 => Decision::AlreadyDone,
            1 => Decision::Event(events.remove(0)),
            2 => {
                let withdrawn = events.remove(1);
                Decision::ResolvedWithdrawingLate([events.remove(0), withdrawn])
            }
            n => panic!("no decision has {n} events"),
        })
    }
}
impl From<DossierEvent> for Expect {
    fn from(event: DossierEvent) -> Self {
        Expect::Decided(Decision::Event(event))
    }
}
impl From<Refusal> for Expect {
    fn from(refusal: Refusal) -> Self {
        Expect::Refused(refusal)
    }
}

/// "Already done": nothing to write.
pub fn nothing() -> Expect {
    Expect::Decided(Decision::AlreadyDone)
}

pub struct Given {
    events: Vec<Event>,
    policy: SupplementPolicy,
    notice: NoticeUnit,
}

pub fn given(events: impl IntoIterator<Item = Event>) -> Given {
    Given {
        events: events.into_iter().collect(),
        policy: SupplementPolicy::Restart,
        notice: NoticeUnit::WorkingDay,
    }
}

/// No event at all: a dossier id never seen.
pub fn nothing_yet() -> Given {
    given([])
}

impl Given {
    pub fn policy(mut self, policy: SupplementPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn notice(mut self, notice: NoticeUnit) -> Self {
        self.notice = notice;
        self
    }

    pub fn when(self, command: Command) -> When {
        let state = Dossier::from_events(&self.events);
        assert_eq!(state.version, self.events.len() as u32);
        let rules = Rules {
            apology_notice: self.notice,
            ..rules(self.policy)
        };
        let result = decide(&state, &command, rules);
        When {
            state,
            command,
            result,
        }
    }
}

pub struct When {
    pub state: Dossier,
    pub command: Command,
    pub result: Result<Decision, Refusal>,
}

impl When {
    /// Checks the outcome; returns the state after the new events (or unchanged after a refusal).
    #[track_caller]
    pub fn then(self, expected: impl Into<Expect>) -> Dossier {
        match (expected.into(), self.result) {
            (Expect::Decided(expected), Ok(actual)) => {
                assert_eq!(actual, expected, "decision for {:?}", self.command.action);
                let mut state = self.state;
                let before = state.version;
                for body in actual.into_events() {
                    let at = event_time(&self.command, &body);
                    state.evolve(&Event {
                        occurred_at: at,
                        body,
                    });
                }
                assert_eq!(state.version, before + expected.events().len() as u32);
                state
            }
            (Expect::Refused(expected), Err(actual)) => {
                assert_eq!(actual, expected, "refusal of {:?}", self.command.action);
                self.state
            }
            (Expect::Decided(expected), Err(actual)) => {
                panic!(
                    "expected {expected:?}, but {:?} was refused: {actual:?}",
                    self.command.action
                )
            }
            (Expect::Refused(expected), Ok(actual)) => {
                panic!(
                    "expected the refusal {expected:?}, but {:?} decided {actual:?}",
                    self.command.action
                )
            }
        }
    }

    /// The decided events, whatever they are (for values computed by the calendar).
    #[track_caller]
    pub fn accepted(self) -> (Vec<DossierEvent>, Dossier) {
        let events = self
            .result
            .clone()
            .unwrap_or_else(|r| panic!("refused: {r:?}"))
            .into_events();
        let state = self.then(events.clone());
        (events, state)
    }
}
