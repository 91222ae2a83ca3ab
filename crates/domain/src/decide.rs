//! Every rule of the dossier's lifecycle, as one pure function of the state and a command.
//!
//! Checks run in this order, so the same bad command always gets the same answer:
//! 1. existence: `UnknownDossier` for anything but `Receive`/`RefuseAtIntake` on a dossier never
//!    received; `AlreadyExists` for those two on one that was;
//! 2. a payment callback repeating a known transaction id with the same amount and channel is
//!    answered [`Decision::AlreadyDone`] — even once the dossier has ended, so a payment
//!    platform retrying its callback is never told it failed;
//! 3. the command's own content (amounts, digests, component lists) — `InvalidArgument` refusals;
//! 4. `Ended` once the dossier was refused at intake, withdrawn or stopped;
//! 5. `BeforeReception` when the command's `occurred_at` is before the reception;
//! 6. the rules of the action against the state.

use std::collections::BTreeSet;

use calendar::{StatutoryTime, Timeliness, WorkingDuration, classify};
use chrono::{DateTime, Utc};

use crate::apology::apology_on_time;
use crate::command::{Action, Command, Rules, SupplementPolicy};
use crate::dossier::{Dossier, Phase};
use crate::event::{DossierEvent, StopCause};
use crate::ids::{ComponentCode, Text};
use crate::procedure::same_day_due;
use crate::refusal::Refusal;

pub use crate::limits::MAX_AMOUNT_VND;

/// What [`decide`] says a command means for a dossier that accepts it.
#[derive(Debug, Clone, PartialEq)]
// Returned by `decide` and consumed at once, never stored in bulk: the two-event variant's size
// costs nothing, and boxing it would allocate on every resolution of a dossier marked late.
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    /// Append this event: what every accepted command comes to, but for the two cases below.
    Event(DossierEvent),
    /// A resolution dated before the due time of a dossier the watcher marked late, and the
    /// `late_withdrawn` that retracts the mark: appended together (in this order), so the mark is
    /// withdrawn exactly once and never without the resolution that contradicts it.
    ResolvedWithdrawingLate([DossierEvent; 2]),
    /// The command was already carried out (a payment callback repeated with the same
    /// transaction id, amount and channel): nothing is to be written.
    AlreadyDone,
}

impl Decision {
    /// The events to append, in order: none, one, or the resolution and its `late_withdrawn`.
    pub fn events(&self) -> &[DossierEvent] {
        match self {
            Decision::Event(event) => std::slice::from_ref(event),
            Decision::ResolvedWithdrawingLate(events) => events,
            Decision::AlreadyDone => &[],
        }
    }

    /// The events to append, owned (see [`events`](Self::events)).
    pub fn into_events(self) -> Vec<DossierEvent> {
        match self {
            Decision::Event(event) => vec![event],
            Decision::ResolvedWithdrawingLate(events) => events.into(),
            Decision::AlreadyDone => Vec::new(),
        }
    }
}

/// Decides what a command means for a dossier: the events to append ([`Decision`]), or why not.
/// Each event's business time is [`event_time`], not always the command's `occurred_at`.
pub fn decide(state: &Dossier, command: &Command, rules: Rules<'_>) -> Result<Decision, Refusal> {
    let at = command.occurred_at;

    match (&command.action, state.exists()) {
        (Action::Receive { .. } | Action::RefuseAtIntake { .. }, true) => {
            return Err(Refusal::AlreadyExists);
        }
        (Action::Receive { .. } | Action::RefuseAtIntake { .. }, false) => {}
        (_, false) => return Err(Refusal::UnknownDossier),
        (_, true) => {}
    }

    if is_repeated_payment(state, &command.action) {
        return Ok(Decision::AlreadyDone);
    }

    check_arguments(&command.action)?;

    if state.phase.is_ended() {
        return Err(Refusal::Ended { phase: state.phase });
    }
    if let Some(received_at) = state.received_at.filter(|received_at| at < *received_at) {
        return Err(Refusal::BeforeReception { received_at });
    }

    let event = match &command.action {
        Action::Receive {
            profile,
            statutory_time,
            fee_required,
            components,
            due_at,
            procedure,
            applicant,
            return_method,
        } => {
            let due_at = match due_at {
                Some(given) if *given < at => {
                    return Err(Refusal::DueBeforeReception {
                        due_at: *given,
                        received_at: at,
                    });
                }
                Some(given) => *given,
                None => match procedure.as_ref().and_then(|p| p.same_day_cutoff) {
                    Some(cutoff) => same_day_due(rules.calendar, at, cutoff),
                    None => rules.calendar.due_time(at, *statutory_time),
                },
            };
            DossierEvent::Received {
                profile: profile.clone(),
                statutory_time: *statutory_time,
                fee_required: *fee_required,
                components: components.clone(),
                due_at,
                procedure: procedure.clone(),
                applicant: applicant.clone(),
                return_method: *return_method,
            }
        }
        Action::RefuseAtIntake { profile, reason } => DossierEvent::RefusedAtIntake {
            profile: profile.clone(),
            reason: reason.clone(),
        },
        Action::RecordDigitized { digitized, reused } => {
            record_digitized(state, digitized, reused)?
        }
        Action::Transfer { to_agency, mode } => {
            require_unresolved(state)?;
            let from_agency = current_agency(state);
            if *to_agency == from_agency {
                return Err(Refusal::TransferToSameAgency {
                    agency: from_agency,
                });
            }
            DossierEvent::Transferred {
                from_agency,
                to_agency: to_agency.clone(),
                mode: *mode,
            }
        }
        Action::RequestSupplement { reason } => {
            require_unresolved(state)?;
            if state.is_paused() {
                return Err(Refusal::SupplementAlreadyPending);
            }
            if state.obligation_pending() {
                return Err(Refusal::AwaitingObligation);
            }
            if let Some(procedure) = &state.procedure
                && !procedure.allows_supplement_request(state.supplement_requests)
            {
                return Err(Refusal::SupplementLimitReached {
                    max: procedure.max_supplement_requests.unwrap_or_default(),
                    catalogue_version: procedure.catalogue_version,
                });
            }
            DossierEvent::SupplementRequested {
                reason: reason.clone(),
                closes_at: state
                    .procedure
                    .as_ref()
                    .and_then(|p| p.closes_at(rules.calendar, at)),
            }
        }
        Action::ReceiveSupplement => {
            require_unresolved(state)?;
            let Some(requested_at) = state.paused_since else {
                return Err(Refusal::NoSupplementPending);
            };
            if at < requested_at {
                return Err(Refusal::BeforePreviousStep {
                    step: "the supplement request",
                    at: requested_at,
                });
            }
            if let Some(closes_at) = state.supplement_closes_at.filter(|c| at > *c) {
                return Err(Refusal::SupplementDeadlinePassed { closes_at });
            }
            let paused = rules.calendar.working_time_between(requested_at, at);
            let policy = state
                .procedure
                .as_ref()
                .map_or(rules.supplement_policy, |p| p.supplement_policy);
            let due_at = match policy {
                SupplementPolicy::Restart => rules.calendar.due_time(at, statutory_time(state)),
                SupplementPolicy::Extend => rules.calendar.add_working_time(due_at(state), paused),
            };
            DossierEvent::SupplementReceived { due_at, paused }
        }
        Action::CloseUnsupplemented => {
            require_unresolved(state)?;
            let (Some(requested_at), Some(closes_at)) =
                (state.paused_since, state.supplement_closes_at)
            else {
                return Err(Refusal::NoClosingDeadline);
            };
            if at <= closes_at {
                return Err(Refusal::NotYetClosing { closes_at });
            }
            DossierEvent::Stopped {
                reason: unsupplemented_reason(state),
                cause: Some(StopCause::SupplementNotReceived {
                    requested_at,
                    closes_at,
                }),
            }
        }
        Action::RequestFinancialObligation { reason } => {
            require_unresolved(state)?;
            if state.obligation_pending() {
                return Err(Refusal::ObligationAlreadyPending);
            }
            if state.is_paused() {
                return Err(Refusal::AwaitingSupplement);
            }
            DossierEvent::FinancialObligationRequested {
                reason: reason.clone(),
                pauses_clock: state
                    .procedure
                    .as_ref()
                    .is_some_and(|p| p.obligation_pauses_clock),
            }
        }
        Action::FulfilFinancialObligation => {
            require_unresolved(state)?;
            let Some(requested_at) = state.obligation_since else {
                return Err(Refusal::NoObligationPending);
            };
            if at < requested_at {
                return Err(Refusal::BeforePreviousStep {
                    step: "the financial obligation request",
                    at: requested_at,
                });
            }
            let (due_at, paused) = if state.obligation_pauses_clock {
                let paused = rules.calendar.working_time_between(requested_at, at);
                (
                    rules.calendar.add_working_time(due_at(state), paused),
                    paused,
                )
            } else {
                (due_at(state), WorkingDuration::ZERO)
            };
            DossierEvent::FinancialObligationFulfilled { due_at, paused }
        }
        Action::MarkLate => {
            require_unresolved(state)?;
            if state.is_paused() {
                return Err(Refusal::AwaitingSupplement);
            }
            if state.clock_stopped() {
                return Err(Refusal::AwaitingObligation);
            }
            if state.late_marked {
                return Err(Refusal::AlreadyMarkedLate);
            }
            let due_at = due_at(state);
            if at <= due_at {
                return Err(Refusal::NotYetDue { due_at });
            }
            DossierEvent::Late { due_at }
        }
        Action::IssueApology {
            reason,
            new_appointment,
            signer,
            delivery,
        } => {
            if state.apology.is_some() {
                return Err(Refusal::ApologyAlreadyIssued);
            }
            if let Some(timeliness) = state
                .resolution
                .as_ref()
                .map(|r| r.timeliness)
                .filter(|t| *t != Timeliness::Late)
            {
                return Err(Refusal::ApologyNotNeeded { timeliness });
            }
            let due_at = due_at(state);
            if *new_appointment <= at || *new_appointment <= due_at {
                return Err(Refusal::NewAppointmentTooEarly { due_at });
            }
            DossierEvent::ApologyIssued {
                reason: reason.clone(),
                new_appointment: *new_appointment,
                on_time: apology_on_time(rules.calendar, rules.apology_notice, at, due_at),
                original_due_at: Some(due_at),
                signer: signer.clone(),
                delivery: *delivery,
                notice: Some(rules.apology_notice),
            }
        }
        Action::AssessFee { amount_vnd, kind } => {
            if !state.fee_required {
                return Err(Refusal::NoFeeForProcedure);
            }
            if state.fees_owed_vnd.checked_add(*amount_vnd).is_none() {
                return Err(Refusal::InvalidAmount {
                    amount_vnd: *amount_vnd,
                });
            }
            DossierEvent::FeeAssessed {
                amount_vnd: *amount_vnd,
                kind: *kind,
            }
        }
        Action::RecordPayment {
            amount_vnd,
            channel,
            transaction_id,
        } => {
            if state.transactions.contains_key(transaction_id) {
                return Err(Refusal::TransactionIdReused {
                    transaction_id: transaction_id.clone(),
                });
            }
            if state.fees_owed_vnd == 0 {
                return Err(Refusal::NoFeeAssessed);
            }
            let owed_vnd = state.outstanding_vnd();
            if *amount_vnd > owed_vnd {
                return Err(Refusal::Overpayment {
                    owed_vnd,
                    attempted_vnd: *amount_vnd,
                });
            }
            DossierEvent::Paid {
                amount_vnd: *amount_vnd,
                channel: *channel,
                transaction_id: transaction_id.clone(),
            }
        }
        Action::Resolve {
            outcome,
            deciding_agency,
        } => {
            require_unresolved(state)?;
            if state.is_paused() {
                return Err(Refusal::AwaitingSupplement);
            }
            if state.obligation_pending() {
                return Err(Refusal::AwaitingObligation);
            }
            let due_at = due_at(state);
            let timeliness = classify(at, due_at);
            let resolved = DossierEvent::Resolved {
                outcome: *outcome,
                deciding_agency: deciding_agency.clone(),
                due_at,
                timeliness,
            };
            // A counter that was offline sends a resolution dated before the due time after the
            // watcher marked the dossier late: the mark is withdrawn in the same append, so
            // exactly once and never without the resolution that contradicts it.
            if state.late_marked && timeliness != Timeliness::Late {
                return Ok(Decision::ResolvedWithdrawingLate([
                    resolved,
                    DossierEvent::LateWithdrawn { due_at, timeliness },
                ]));
            }
            resolved
        }
        Action::Withdraw { reason } => {
            require_unresolved(state)?;
            DossierEvent::Withdrawn {
                reason: reason.clone(),
            }
        }
        Action::Stop { reason } => {
            require_unresolved(state)?;
            DossierEvent::Stopped {
                reason: reason.clone(),
                cause: None,
            }
        }
        Action::AttachResult {
            document_ref,
            sha256,
        } => {
            require_resolved(state, at)?;
            if state.result_digitized {
                return Err(Refusal::ResultAlreadyDigitized);
            }
            DossierEvent::ResultDigitized {
                document_ref: document_ref.clone(),
                sha256: sha256.clone(),
            }
        }
        Action::ReturnResult { method } => {
            require_resolved(state, at)?;
            if state.returned_at.is_some() {
                return Err(Refusal::AlreadyReturned);
            }
            DossierEvent::ResultReturned { method: *method }
        }
        Action::Rate { rating } => {
            let Some(returned_at) = state.returned_at else {
                return Err(Refusal::NotReturned);
            };
            if state.rating.is_some() {
                return Err(Refusal::AlreadyRated);
            }
            if at < returned_at {
                return Err(Refusal::BeforePreviousStep {
                    step: "the return of the result",
                    at: returned_at,
                });
            }
            DossierEvent::SatisfactionRated { rating: *rating }
        }
    };
    Ok(Decision::Event(event))
}

/// The business time (`occurred_at`) to store with an event [`decide`] produced for `command`:
/// the due time itself for `late` and the closing deadline for an automatic `stopped` (the deadline
/// watcher notices them afterwards; statistics must not depend on when), the command's
/// `occurred_at` for every other event.
pub fn event_time(command: &Command, event: &DossierEvent) -> DateTime<Utc> {
    match event {
        DossierEvent::Late { due_at } => *due_at,
        DossierEvent::Stopped {
            cause: Some(StopCause::SupplementNotReceived { closes_at, .. }),
            ..
        } => *closes_at,
        _ => command.occurred_at,
    }
}

/// A payment callback repeating a transaction already recorded with the same amount and channel.
fn is_repeated_payment(state: &Dossier, action: &Action) -> bool {
    let Action::RecordPayment {
        amount_vnd,
        channel,
        transaction_id,
    } = action
    else {
        return false;
    };
    state
        .transactions
        .get(transaction_id)
        .is_some_and(|known| known.amount_vnd == *amount_vnd && known.channel == *channel)
}

/// Rules on the command's content alone, whatever the dossier's state.
fn check_arguments(action: &Action) -> Result<(), Refusal> {
    match action {
        Action::Receive { components, .. } => {
            if components.is_empty() {
                return Err(Refusal::NoComponents);
            }
            no_duplicates(components)?;
        }
        Action::RecordDigitized { digitized, reused } => {
            if digitized.is_empty() && reused.is_empty() {
                return Err(Refusal::NothingToRecord);
            }
            no_duplicates(digitized)?;
            no_duplicates(reused)?;
            if let Some(both) = digitized.iter().find(|c| reused.contains(c)) {
                return Err(Refusal::DigitizedAndReused {
                    component: both.clone(),
                });
            }
        }
        Action::AssessFee { amount_vnd, .. } | Action::RecordPayment { amount_vnd, .. }
            if *amount_vnd <= 0 || *amount_vnd > MAX_AMOUNT_VND =>
        {
            return Err(Refusal::InvalidAmount {
                amount_vnd: *amount_vnd,
            });
        }
        Action::AttachResult { sha256, .. } => {
            let valid = sha256.len() == 64
                && sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !valid {
                return Err(Refusal::InvalidDigest);
            }
        }
        _ => {}
    }
    Ok(())
}

fn no_duplicates(codes: &[ComponentCode]) -> Result<(), Refusal> {
    let mut seen = BTreeSet::new();
    for code in codes {
        if !seen.insert(code) {
            return Err(Refusal::DuplicateComponent {
                component: code.clone(),
            });
        }
    }
    Ok(())
}

/// Digitization is recorded at intake, so only while open. Codes already recorded the same way
/// are dropped from the event; if nothing new remains the command is refused `AlreadyDigitized`.
/// A component already recorded one way cannot be recorded the other way.
fn record_digitized(
    state: &Dossier,
    digitized: &[ComponentCode],
    reused: &[ComponentCode],
) -> Result<DossierEvent, Refusal> {
    require_unresolved(state)?;
    for code in digitized.iter().chain(reused) {
        if !state.components.contains(code) {
            return Err(Refusal::UnknownComponent {
                component: code.clone(),
            });
        }
    }
    let conflict = digitized
        .iter()
        .find(|c| state.reused.contains(*c))
        .or_else(|| reused.iter().find(|c| state.digitized.contains(*c)));
    if let Some(code) = conflict {
        return Err(Refusal::DigitizedAndReused {
            component: code.clone(),
        });
    }
    let new_digitized: Vec<_> = digitized
        .iter()
        .filter(|c| !state.digitized.contains(*c))
        .cloned()
        .collect();
    let new_reused: Vec<_> = reused
        .iter()
        .filter(|c| !state.reused.contains(*c))
        .cloned()
        .collect();
    if new_digitized.is_empty() && new_reused.is_empty() {
        return Err(Refusal::AlreadyDigitized);
    }
    Ok(DossierEvent::ComponentsDigitized {
        digitized: new_digitized,
        reused: new_reused,
    })
}

/// Processing steps: only while open (ended dossiers were refused earlier).
fn require_unresolved(state: &Dossier) -> Result<(), Refusal> {
    match state.phase {
        Phase::Resolved => Err(Refusal::AlreadyResolved),
        _ => Ok(()),
    }
}

/// Result steps: only after the resolution, and not dated before it.
fn require_resolved(state: &Dossier, at: DateTime<Utc>) -> Result<(), Refusal> {
    let Some(resolution) = &state.resolution else {
        return Err(Refusal::NotResolved);
    };
    if at < resolution.at {
        return Err(Refusal::BeforePreviousStep {
            step: "the resolution",
            at: resolution.at,
        });
    }
    Ok(())
}

// A received dossier always has these; a log written by another system might not, and the fold
// trusts the log, so fall back rather than panic.

fn due_at(state: &Dossier) -> DateTime<Utc> {
    state
        .due_at
        .or(state.received_at)
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The reason written on an automatic closing (the cause carries the dates).
fn unsupplemented_reason(state: &Dossier) -> Text {
    let days = state
        .procedure
        .as_ref()
        .and_then(|p| p.close_after_working_days)
        .unwrap_or_default();
    Text::parse(format!(
        "closed automatically: the requested supplement was not received within {days} working day(s)"
    ))
    .expect("a fixed, short, non-blank text")
}

fn statutory_time(state: &Dossier) -> StatutoryTime {
    state.statutory_time.unwrap_or(StatutoryTime::Days(0))
}

fn current_agency(state: &Dossier) -> crate::ids::AgencyCode {
    state
        .current_agency
        .clone()
        .or_else(|| state.profile.as_ref().map(|p| p.agency.clone()))
        .expect("a received dossier always has an agency")
}
