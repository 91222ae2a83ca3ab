//! Why [`crate::decide()`] refused a command: one variant per rule, each with the data a counter
//! clerk needs to understand it, a stable machine code and the class of error for the services.

use std::fmt;

use calendar::Timeliness;
use chrono::{DateTime, FixedOffset, Utc};

use crate::dossier::Phase;
use crate::ids::{AgencyCode, ComponentCode, TransactionId};

/// How the service layer should report a refusal (maps one to one onto gRPC status codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The dossier does not exist (`NOT_FOUND`).
    NotFound,
    /// The dossier already exists (`ALREADY_EXISTS`).
    AlreadyExists,
    /// The command itself is malformed, whatever the dossier's state (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The command is well formed but the dossier's state does not allow it
    /// (`FAILED_PRECONDITION`).
    FailedPrecondition,
}

/// A time shown to a clerk: local time in Vietnam (UTC+7, no daylight saving).
struct Local(DateTime<Utc>);

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset");
        write!(
            f,
            "{} (UTC+7)",
            self.0.with_timezone(&offset).format("%Y-%m-%d %H:%M")
        )
    }
}

fn local(t: &DateTime<Utc>) -> Local {
    Local(*t)
}

fn timeliness_text(t: &Timeliness) -> &'static str {
    match t {
        Timeliness::Early => "early",
        Timeliness::OnTime => "on time",
        Timeliness::Late => "late",
    }
}

/// A command refused by [`crate::decide()`]. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    // --- existence -------------------------------------------------------------------------
    #[error("No dossier with this id has been received.")]
    UnknownDossier,
    #[error("A dossier with this id already exists.")]
    AlreadyExists,

    // --- the command's own content ---------------------------------------------------------
    #[error("A dossier must be received with at least one component.")]
    NoComponents,
    #[error("Component {component} is listed more than once.")]
    DuplicateComponent { component: ComponentCode },
    #[error(
        "The appointment {} is before the reception time {}.",
        local(.due_at),
        local(.received_at)
    )]
    DueBeforeReception {
        due_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
    },
    #[error("No digitized or reused component was given.")]
    NothingToRecord,
    #[error("Component {component} was not submitted with this dossier.")]
    UnknownComponent { component: ComponentCode },
    #[error("Component {component} cannot be both digitized and reused.")]
    DigitizedAndReused { component: ComponentCode },
    #[error(
        "The amount {amount_vnd} VND is not valid; it must be positive and at most {} VND.",
        crate::decide::MAX_AMOUNT_VND
    )]
    InvalidAmount { amount_vnd: i64 },
    #[error(
        "The result's digest must be a SHA-256 written as 64 lower-case hexadecimal characters."
    )]
    InvalidDigest,

    // --- the dossier's state ---------------------------------------------------------------
    #[error("The dossier has ended ({}); no further step can be recorded.", .phase.describe())]
    Ended { phase: Phase },
    #[error("This step cannot happen before the dossier was received at {}.", local(.received_at))]
    BeforeReception { received_at: DateTime<Utc> },
    #[error("This step cannot happen before {step} at {}.", local(.at))]
    BeforePreviousStep {
        step: &'static str,
        at: DateTime<Utc>,
    },
    #[error("Every component given is already recorded as digitized or reused.")]
    AlreadyDigitized,
    #[error("The dossier is already with agency {agency}.")]
    TransferToSameAgency { agency: AgencyCode },
    #[error("The dossier has already been resolved.")]
    AlreadyResolved,
    #[error("A supplement has already been requested and not yet received.")]
    SupplementAlreadyPending,
    #[error("No supplement has been requested for this dossier.")]
    NoSupplementPending,
    #[error("The dossier is waiting for a requested supplement; its clock is stopped.")]
    AwaitingSupplement,
    #[error("The dossier has already been marked late.")]
    AlreadyMarkedLate,
    #[error("The dossier is not late yet: it is due at {}.", local(.due_at))]
    NotYetDue { due_at: DateTime<Utc> },
    #[error(
        "An apology has already been issued for this dossier; a new appointment may be set only once."
    )]
    ApologyAlreadyIssued,
    #[error("No apology is needed: the dossier was resolved {}.", timeliness_text(.timeliness))]
    ApologyNotNeeded { timeliness: Timeliness },
    #[error(
        "The new appointment must be later than both the apology and the current due time {}.",
        local(.due_at)
    )]
    NewAppointmentTooEarly { due_at: DateTime<Utc> },
    #[error("This procedure has no fee, charge or tax to assess.")]
    NoFeeForProcedure,
    #[error("No fee has been assessed for this dossier, so there is nothing to pay.")]
    NoFeeAssessed,
    #[error(
        "Only {owed_vnd} VND is outstanding; a payment of {attempted_vnd} VND would overpay the dossier."
    )]
    Overpayment { owed_vnd: i64, attempted_vnd: i64 },
    #[error(
        "Transaction {transaction_id} was already recorded with a different amount or channel."
    )]
    TransactionIdReused { transaction_id: TransactionId },
    #[error("The dossier has not been resolved yet.")]
    NotResolved,
    #[error("A digitized result is already attached to this dossier.")]
    ResultAlreadyDigitized,
    #[error("The result has already been returned.")]
    AlreadyReturned,
    #[error("The result has not been returned yet, so it cannot be rated.")]
    NotReturned,
    #[error("The dossier has already been rated.")]
    AlreadyRated,
    #[error(
        "This procedure allows at most {max} supplement request(s) per dossier (catalogue version {catalogue_version}); that many were already made."
    )]
    SupplementLimitReached { max: u32, catalogue_version: u64 },
    #[error(
        "The supplement was due by {}; the dossier closes without it.",
        local(.closes_at)
    )]
    SupplementDeadlinePassed { closes_at: DateTime<Utc> },
    #[error("No pending supplement request of this dossier closes it by itself.")]
    NoClosingDeadline,
    #[error("The pending supplement request closes the dossier only after {}.", local(.closes_at))]
    NotYetClosing { closes_at: DateTime<Utc> },
    #[error("A financial obligation has already been requested and not yet fulfilled.")]
    ObligationAlreadyPending,
    #[error("No financial obligation has been requested for this dossier.")]
    NoObligationPending,
    #[error("The dossier is waiting for the applicant to fulfil a financial obligation.")]
    AwaitingObligation,
}

impl Refusal {
    /// A stable snake_case code for machines (gRPC error details, client translations).
    /// Never renamed once published.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::UnknownDossier => "unknown_dossier",
            Refusal::AlreadyExists => "already_exists",
            Refusal::NoComponents => "no_components",
            Refusal::DuplicateComponent { .. } => "duplicate_component",
            Refusal::DueBeforeReception { .. } => "due_before_reception",
            Refusal::NothingToRecord => "nothing_to_record",
            Refusal::UnknownComponent { .. } => "unknown_component",
            Refusal::DigitizedAndReused { .. } => "digitized_and_reused",
            Refusal::InvalidAmount { .. } => "invalid_amount",
            Refusal::InvalidDigest => "invalid_digest",
            Refusal::Ended { .. } => "ended",
            Refusal::BeforeReception { .. } => "before_reception",
            Refusal::BeforePreviousStep { .. } => "before_previous_step",
            Refusal::AlreadyDigitized => "already_digitized",
            Refusal::TransferToSameAgency { .. } => "transfer_to_same_agency",
            Refusal::AlreadyResolved => "already_resolved",
            Refusal::SupplementAlreadyPending => "supplement_already_pending",
            Refusal::NoSupplementPending => "no_supplement_pending",
            Refusal::AwaitingSupplement => "awaiting_supplement",
            Refusal::AlreadyMarkedLate => "already_marked_late",
            Refusal::NotYetDue { .. } => "not_yet_due",
            Refusal::ApologyAlreadyIssued => "apology_already_issued",
            Refusal::ApologyNotNeeded { .. } => "apology_not_needed",
            Refusal::NewAppointmentTooEarly { .. } => "new_appointment_too_early",
            Refusal::NoFeeForProcedure => "no_fee_for_procedure",
            Refusal::NoFeeAssessed => "no_fee_assessed",
            Refusal::Overpayment { .. } => "overpayment",
            Refusal::TransactionIdReused { .. } => "transaction_id_reused",
            Refusal::NotResolved => "not_resolved",
            Refusal::ResultAlreadyDigitized => "result_already_digitized",
            Refusal::AlreadyReturned => "already_returned",
            Refusal::NotReturned => "not_returned",
            Refusal::AlreadyRated => "already_rated",
            Refusal::SupplementLimitReached { .. } => "supplement_limit_reached",
            Refusal::SupplementDeadlinePassed { .. } => "supplement_deadline_passed",
            Refusal::NoClosingDeadline => "no_closing_deadline",
            Refusal::NotYetClosing { .. } => "not_yet_closing",
            Refusal::ObligationAlreadyPending => "financial_obligation_already_pending",
            Refusal::NoObligationPending => "no_financial_obligation_pending",
            Refusal::AwaitingObligation => "awaiting_financial_obligation",
        }
    }

    /// How the service layer reports this refusal.
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::UnknownDossier => RefusalKind::NotFound,
            Refusal::AlreadyExists => RefusalKind::AlreadyExists,
            Refusal::NoComponents
            | Refusal::DuplicateComponent { .. }
            | Refusal::DueBeforeReception { .. }
            | Refusal::NothingToRecord
            | Refusal::UnknownComponent { .. }
            | Refusal::DigitizedAndReused { .. }
            | Refusal::InvalidAmount { .. }
            | Refusal::InvalidDigest => RefusalKind::InvalidArgument,
            Refusal::Ended { .. }
            | Refusal::BeforeReception { .. }
            | Refusal::BeforePreviousStep { .. }
            | Refusal::AlreadyDigitized
            | Refusal::TransferToSameAgency { .. }
            | Refusal::AlreadyResolved
            | Refusal::SupplementAlreadyPending
            | Refusal::NoSupplementPending
            | Refusal::AwaitingSupplement
            | Refusal::AlreadyMarkedLate
            | Refusal::NotYetDue { .. }
            | Refusal::ApologyAlreadyIssued
            | Refusal::ApologyNotNeeded { .. }
            | Refusal::NewAppointmentTooEarly { .. }
            | Refusal::NoFeeForProcedure
            | Refusal::NoFeeAssessed
            | Refusal::Overpayment { .. }
            | Refusal::TransactionIdReused { .. }
            | Refusal::NotResolved
            | Refusal::ResultAlreadyDigitized
            | Refusal::AlreadyReturned
            | Refusal::NotReturned
            | Refusal::AlreadyRated
            | Refusal::SupplementLimitReached { .. }
            | Refusal::SupplementDeadlinePassed { .. }
            | Refusal::NoClosingDeadline
            | Refusal::NotYetClosing { .. }
            | Refusal::ObligationAlreadyPending
            | Refusal::NoObligationPending
            | Refusal::AwaitingObligation => RefusalKind::FailedPrecondition,
        }
    }
}
