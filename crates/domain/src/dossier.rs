//! The dossier's state, folded from its events. [`Dossier::evolve`] holds no rule: it trusts the
//! log, because every event in it was accepted by [`crate::decide()`] when it was written (or was
//! imported from a system that had its own rules). Projections fold the same way.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};

use calendar::{StatutoryTime, Timeliness};
use chrono::{DateTime, Utc};

use crate::event::{
    ApologyDelivery, DossierEvent, Event, Outcome, PaymentChannel, Profile, Rating, ReturnMethod,
    TransferMode,
};
use crate::ids::{AgencyCode, ComponentCode, Text, TransactionId};
use crate::procedure::ProcedureRules;

/// Where a dossier is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// No event yet: the id is unknown.
    #[default]
    NotReceived,
    /// Not accepted at the counter (status 3). Ended.
    RefusedAtIntake,
    /// Received and not yet decided (possibly paused for a supplement).
    Open,
    /// Decided (approved or refused on decision); results may still be attached, returned, rated.
    Resolved,
    /// Withdrawn at the applicant's request. Ended without a result.
    Withdrawn,
    /// Processing stopped by the agency. Ended without a result.
    Stopped,
}

impl Phase {
    /// Refused at intake, withdrawn or stopped: nothing more can happen to the dossier.
    pub fn is_ended(self) -> bool {
        matches!(
            self,
            Phase::RefusedAtIntake | Phase::Withdrawn | Phase::Stopped
        )
    }

    /// The snake_case name, for logs and error details.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::NotReceived => "not_received",
            Phase::RefusedAtIntake => "refused_at_intake",
            Phase::Open => "open",
            Phase::Resolved => "resolved",
            Phase::Withdrawn => "withdrawn",
            Phase::Stopped => "stopped",
        }
    }

    /// A few words for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::NotReceived => "not received",
            Phase::RefusedAtIntake => "refused at intake",
            Phase::Open => "in processing",
            Phase::Resolved => "resolved",
            Phase::Withdrawn => "withdrawn by the applicant",
            Phase::Stopped => "processing stopped",
        }
    }
}

/// The apology with a new appointment (at most one per dossier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apology {
    pub issued_at: DateTime<Utc>,
    pub new_appointment: DateTime<Utc>,
    /// Issued at least one day (in the province's unit) before the due time in force.
    pub on_time: bool,
    /// The due time in force when issued (`None` for apologies recorded before Mẫu 04).
    pub original_due_at: Option<DateTime<Utc>>,
    pub signer: Option<Text>,
    pub delivery: Option<ApologyDelivery>,
}

/// The decision, judged against the due time in force at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub at: DateTime<Utc>,
    pub outcome: Outcome,
    pub deciding_agency: AgencyCode,
    pub due_at: DateTime<Utc>,
    pub timeliness: Timeliness,
}

/// One recorded payment, keyed by its transaction id in [`Dossier::transactions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentRecord {
    pub amount_vnd: i64,
    pub channel: PaymentChannel,
}

/// The state of one dossier: everything [`crate::decide()`] and the projections need to know about
/// its past. `Dossier::default()` is a dossier that was never received.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dossier {
    /// Number of events applied, i.e. the version of the last one (versions are 1-based): the
    /// expected version for the next append, 0 meaning "no event yet".
    pub version: u32,
    pub phase: Phase,
    /// Set by `received` or `refused_at_intake`.
    pub profile: Option<Profile>,
    pub received_at: Option<DateTime<Utc>>,
    pub statutory_time: Option<StatutoryTime>,
    pub fee_required: bool,
    /// Components submitted at reception, in the order given.
    pub components: Vec<ComponentCode>,
    pub digitized: BTreeSet<ComponentCode>,
    pub reused: BTreeSet<ComponentCode>,
    /// The due time in force: set at reception, moved only by a received supplement.
    pub due_at: Option<DateTime<Utc>>,
    /// The agency holding the dossier now: the receiving agency, then each transfer's target.
    pub current_agency: Option<AgencyCode>,
    /// Number of transfers, and whether any of them was electronic (S13).
    pub transfers: u32,
    pub transferred_electronically: bool,
    /// When the pending supplement was requested; `Some` while the clock is stopped.
    pub paused_since: Option<DateTime<Utc>>,
    /// How many supplements were requested (the 766 scorecard counts more than one as overdue).
    pub supplement_requests: u32,
    /// When the pending supplement request closes the dossier by itself, if its procedure says so.
    pub supplement_closes_at: Option<DateTime<Utc>>,
    /// The procedure's rules as the catalogue had them at reception (`None`: not catalogued).
    pub procedure: Option<ProcedureRules>,
    /// When the pending financial obligation was requested; `Some` while it is pending.
    pub obligation_since: Option<DateTime<Utc>>,
    /// Whether the pending financial obligation stops the clock.
    pub obligation_pauses_clock: bool,
    /// Whether any event other than reception and digitization happened (portal status 4).
    pub processing_started: bool,
    /// The deadline watcher's `late` stands: set by `late`, cleared by `late_withdrawn`.
    pub late_marked: bool,
    /// A late mark was withdrawn because the resolution, dated before the due time, arrived
    /// after it (a counter that was offline).
    pub late_withdrawn: bool,
    pub apology: Option<Apology>,
    /// Sum of the assessed fees, charges and taxes.
    pub fees_owed_vnd: i64,
    /// Sum of the payments.
    pub paid_vnd: i64,
    /// At least one payment through an online channel (S11).
    pub paid_online: bool,
    pub transactions: BTreeMap<TransactionId, PaymentRecord>,
    pub resolution: Option<Resolution>,
    pub result_digitized: bool,
    pub returned_at: Option<DateTime<Utc>>,
    pub return_method: Option<ReturnMethod>,
    /// How the applicant asked to get the result at reception, if recorded.
    pub requested_return: Option<ReturnMethod>,
    pub rating: Option<Rating>,
    /// When the dossier was refused at intake, withdrawn or stopped.
    pub ended_at: Option<DateTime<Utc>>,
}

impl Dossier {
    /// Folds a dossier's events, oldest first.
    pub fn from_events<E: Borrow<Event>>(events: impl IntoIterator<Item = E>) -> Self {
        let mut dossier = Dossier::default();
        for event in events {
            dossier.evolve(event.borrow());
        }
        dossier
    }

    /// Applies one event. Checks nothing: the log is the truth.
    pub fn evolve(&mut self, event: &Event) {
        let at = event.occurred_at;
        self.version = self.version.saturating_add(1);
        match &event.body {
            DossierEvent::Received {
                profile,
                statutory_time,
                fee_required,
                components,
                due_at,
                procedure,
                applicant: _,
                return_method,
            } => {
                self.phase = Phase::Open;
                self.procedure = procedure.clone();
                self.requested_return = *return_method;
                self.current_agency = Some(profile.agency.clone());
                self.profile = Some(profile.clone());
                self.received_at = Some(at);
                self.statutory_time = Some(*statutory_time);
                self.fee_required = *fee_required;
                self.components = components.clone();
                self.due_at = Some(*due_at);
            }
            DossierEvent::ComponentsDigitized { digitized, reused } => {
                self.digitized.extend(digitized.iter().cloned());
                self.reused.extend(reused.iter().cloned());
            }
            DossierEvent::RefusedAtIntake { profile, .. } => {
                self.phase = Phase::RefusedAtIntake;
                self.current_agency = Some(profile.agency.clone());
                self.profile = Some(profile.clone());
                self.ended_at = Some(at);
            }
            DossierEvent::Transferred {
                to_agency, mode, ..
            } => {
                self.processing_started = true;
                self.current_agency = Some(to_agency.clone());
                self.transfers += 1;
                self.transferred_electronically |= *mode == TransferMode::Electronic;
            }
            DossierEvent::SupplementRequested { closes_at, .. } => {
                self.processing_started = true;
                self.paused_since = Some(at);
                self.supplement_closes_at = *closes_at;
                self.supplement_requests += 1;
            }
            DossierEvent::SupplementReceived { due_at, .. } => {
                self.processing_started = true;
                self.paused_since = None;
                self.supplement_closes_at = None;
                self.due_at = Some(*due_at);
            }
            DossierEvent::FinancialObligationRequested { pauses_clock, .. } => {
                self.processing_started = true;
                self.obligation_since = Some(at);
                self.obligation_pauses_clock = *pauses_clock;
            }
            DossierEvent::FinancialObligationFulfilled { due_at, .. } => {
                self.processing_started = true;
                self.obligation_since = None;
                self.obligation_pauses_clock = false;
                self.due_at = Some(*due_at);
            }
            DossierEvent::Late { .. } => {
                self.processing_started = true;
                self.late_marked = true;
            }
            DossierEvent::ApologyIssued {
                new_appointment,
                on_time,
                original_due_at,
                signer,
                delivery,
                ..
            } => {
                self.processing_started = true;
                self.apology = Some(Apology {
                    issued_at: at,
                    new_appointment: *new_appointment,
                    on_time: *on_time,
                    original_due_at: *original_due_at,
                    signer: signer.clone(),
                    delivery: *delivery,
                });
            }
            DossierEvent::FeeAssessed { amount_vnd, .. } => {
                self.processing_started = true;
                self.fees_owed_vnd = self.fees_owed_vnd.saturating_add(*amount_vnd);
            }
            DossierEvent::Paid {
                amount_vnd,
                channel,
                transaction_id,
            } => {
                self.processing_started = true;
                self.paid_vnd = self.paid_vnd.saturating_add(*amount_vnd);
                self.paid_online |= channel.is_online();
                self.transactions.insert(
                    transaction_id.clone(),
                    PaymentRecord {
                        amount_vnd: *amount_vnd,
                        channel: *channel,
                    },
                );
            }
            DossierEvent::Resolved {
                outcome,
                deciding_agency,
                due_at,
                timeliness,
            } => {
                self.processing_started = true;
                self.phase = Phase::Resolved;
                self.paused_since = None;
                self.resolution = Some(Resolution {
                    at,
                    outcome: *outcome,
                    deciding_agency: deciding_agency.clone(),
                    due_at: *due_at,
                    timeliness: *timeliness,
                });
            }
            DossierEvent::Withdrawn { .. } => {
                self.processing_started = true;
                self.phase = Phase::Withdrawn;
                self.ended_at = Some(at);
            }
            DossierEvent::Stopped { .. } => {
                self.processing_started = true;
                self.phase = Phase::Stopped;
                self.ended_at = Some(at);
            }
            DossierEvent::ResultDigitized { .. } => {
                self.result_digitized = true;
            }
            DossierEvent::ResultReturned { method } => {
                self.returned_at = Some(at);
                self.return_method = Some(*method);
            }
            DossierEvent::SatisfactionRated { rating } => {
                self.rating = Some(*rating);
            }
            DossierEvent::LateWithdrawn { .. } => {
                self.late_marked = false;
                self.late_withdrawn = true;
            }
        }
    }

    /// Whether any event has been applied (received, or refused at intake).
    pub fn exists(&self) -> bool {
        self.phase != Phase::NotReceived
    }

    /// Whether the clock is stopped, waiting for a requested supplement.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// Whether a requested financial obligation is not yet fulfilled (portal status 6).
    pub fn obligation_pending(&self) -> bool {
        self.obligation_since.is_some()
    }

    /// Whether the clock is stopped for any reason: a pending supplement, or a pending
    /// financial obligation of a procedure whose obligation time does not count.
    pub fn clock_stopped(&self) -> bool {
        self.is_paused() || (self.obligation_pending() && self.obligation_pauses_clock)
    }

    /// Assessed but not yet paid, in VND (never negative).
    pub fn outstanding_vnd(&self) -> i64 {
        self.fees_owed_vnd.saturating_sub(self.paid_vnd).max(0)
    }

    /// The national portal's status code (DVCQG `TrangThaiHoSo`), or `None` for a dossier never
    /// received. Where several apply, the first row wins:
    ///
    /// | state | code |
    /// |---|---|
    /// | refused at intake | 3 not accepted |
    /// | withdrawn | 7 withdrawal requested — the portal has no "withdrawn" code; our `withdrawn` event is the applicant's request, granted on the spot, so 7 is kept as the final status |
    /// | stopped | 8 processing stopped |
    /// | resolved, result returned | 10 result returned |
    /// | resolved | 9 resolved (even with a fee still outstanding) |
    /// | open, paused for a supplement | 5 supplement requested |
    /// | open, a financial obligation requested and not fulfilled | 6 financial obligation requested |
    /// | open, a fee assessed and not fully paid | 6 financial obligation requested |
    /// | open, anything recorded after reception except digitization | 4 processing |
    /// | open, only reception (and digitization) | 2 received |
    ///
    /// Code 1 (registered online, not yet received) is never produced: a dossier starts here at
    /// reception.
    pub fn portal_status(&self) -> Option<u8> {
        let code = match self.phase {
            Phase::NotReceived => return None,
            Phase::RefusedAtIntake => 3,
            Phase::Withdrawn => 7,
            Phase::Stopped => 8,
            Phase::Resolved if self.returned_at.is_some() => 10,
            Phase::Resolved => 9,
            Phase::Open if self.is_paused() => 5,
            Phase::Open if self.obligation_pending() || self.outstanding_vnd() > 0 => 6,
            Phase::Open if self.processing_started => 4,
            Phase::Open => 2,
        };
        Some(code)
    }
}
