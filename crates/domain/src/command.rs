//! What a client asks for. A command holds only what the client knows; everything the server
//! computes (due times, timeliness, whether an apology is on time) is decided in [`crate::decide()`].

use calendar::{Calendar, StatutoryTime};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{
    ApologyDelivery, FeeKind, NoticeUnit, Outcome, PaymentChannel, Profile, Rating, ReturnMethod,
    SealedApplicant, TransferMode,
};
use crate::ids::{AgencyCode, ComponentCode, Text, TransactionId};
use crate::procedure::ProcedureRules;

/// How the due time is recomputed when a requested supplement arrives; a province's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplementPolicy {
    /// The full statutory time counts again from the supplement's receipt.
    #[default]
    Restart,
    /// The due time moves later by the working time the dossier waited.
    Extend,
}

/// The province's rules a decision depends on: passed in, never read from the environment.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub calendar: &'a Calendar,
    pub supplement_policy: SupplementPolicy,
    /// The unit of the apology's "at least one day before the due time" (default working day).
    pub apology_notice: NoticeUnit,
}

/// A command with the business time at which the client says it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub occurred_at: DateTime<Utc>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Accept a dossier at the counter.
    Receive {
        profile: Profile,
        statutory_time: StatutoryTime,
        fee_required: bool,
        components: Vec<ComponentCode>,
        /// Only for imported history: the old system's appointment. Live intake leaves it
        /// `None` and the due time is computed from the statutory time.
        due_at: Option<DateTime<Utc>>,
        /// The procedure's rules from the catalogue in force at the reception time, when the
        /// procedure is in the catalogue; stored in the `received` event.
        procedure: Option<ProcedureRules>,
        /// The applicant, already encrypted at the edge (the domain never sees plaintext).
        applicant: Option<SealedApplicant>,
        /// How the applicant asked to get the result, if the counter recorded it.
        return_method: Option<ReturnMethod>,
    },
    RecordDigitized {
        digitized: Vec<ComponentCode>,
        reused: Vec<ComponentCode>,
    },
    RefuseAtIntake {
        profile: Profile,
        reason: Text,
    },
    Transfer {
        to_agency: AgencyCode,
        mode: TransferMode,
    },
    RequestSupplement {
        reason: Text,
    },
    ReceiveSupplement,
    /// The deadline watcher noticed that a supplement request went unanswered past the
    /// procedure's closing deadline. The event (`stopped`) is dated at the deadline itself.
    CloseUnsupplemented,
    /// The agency asks the applicant to fulfil a financial obligation (portal status 6).
    RequestFinancialObligation {
        reason: Text,
    },
    /// The applicant fulfilled it; a paused clock runs again.
    FulfilFinancialObligation,
    /// The deadline watcher noticed the due time passed. `occurred_at` of the command is when
    /// it noticed; the event's business time is the due time itself.
    MarkLate,
    /// The apology of Mẫu 04. `signer` and `delivery` are `None` when an older client did not
    /// send them; the event then records them as not stated.
    IssueApology {
        reason: Text,
        new_appointment: DateTime<Utc>,
        signer: Option<Text>,
        delivery: Option<ApologyDelivery>,
    },
    AssessFee {
        amount_vnd: i64,
        kind: FeeKind,
    },
    RecordPayment {
        amount_vnd: i64,
        channel: PaymentChannel,
        transaction_id: TransactionId,
    },
    Resolve {
        outcome: Outcome,
        deciding_agency: AgencyCode,
    },
    Withdraw {
        reason: Text,
    },
    Stop {
        reason: Text,
    },
    AttachResult {
        document_ref: Text,
        sha256: String,
    },
    ReturnResult {
        method: ReturnMethod,
    },
    Rate {
        rating: Rating,
    },
}
