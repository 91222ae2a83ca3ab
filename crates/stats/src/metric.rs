//! What the statistics count ([`Metric`]) and what they group by ([`Slice`]).

use domain::{AgencyCode, ApplicantType, Channel, Level, ProcedureCode, Profile, SectorCode};
use serde::{Deserialize, Serialize};

/// The dimensions every figure can be filtered and grouped by: the dossier's [`Profile`], fixed
/// at reception (or at refusal at the counter) for its whole life. A transfer does not move a
/// dossier to another slice: figures belong to the agency whose counter received it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Slice {
    pub level: Level,
    pub agency: AgencyCode,
    pub sector: SectorCode,
    pub procedure: ProcedureCode,
    pub channel: Channel,
    pub applicant_type: ApplicantType,
}

impl Slice {
    /// The slice of a dossier with this profile.
    pub fn of(profile: &Profile) -> Slice {
        Slice {
            level: profile.level,
            agency: profile.agency.clone(),
            sector: profile.sector.clone(),
            procedure: profile.procedure.clone(),
            channel: profile.channel,
            applicant_type: profile.applicant_type,
        }
    }
}

/// How a metric adds up over time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Counted on one local date (the date of the event that decides it); a period's figure is
    /// the sum over its days `from <= d < to`.
    Flow,
    /// A number of dossiers in a state at an instant, stored as deltas on the day from whose
    /// start (00:00 local) the new value holds: the value at the start of day `D` is the sum of
    /// the deltas of all days `<= D`.
    Stock,
}

macro_rules! metrics {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $kind:ident;)+) => {
        /// Every counter the statistics keep, with a stable snake_case name (a column name in the
        /// projection's tables). The comment of each says on which local date it counts.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub enum Metric {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)+
        }

        impl Metric {
            /// Every metric, flows first, in a fixed order.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),+];

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self { $(Metric::$variant => $name),+ }
            }

            /// The metric with this name.
            pub fn parse(name: &str) -> Option<Metric> {
                match name { $($name => Some(Metric::$variant),)+ _ => None }
            }

            /// Flow (counted on a date) or stock (a state at the start of a day).
            pub fn kind(self) -> MetricKind {
                match self { $(Metric::$variant => MetricKind::$kind),+ }
            }
        }
    };
}

metrics! {
    /// Not accepted at the counter (status 3); date of the refusal. Counts nowhere else.
    RefusedAtIntake => "refused_at_intake", Flow;
    /// Accepted at the counter; date of reception.
    Received => "received", Flow;
    /// Received through the online channel; date of reception.
    ReceivedOnline => "received_online", Flow;
    /// Received at the counter; date of reception.
    ReceivedDirect => "received_direct", Flow;
    /// Received through the public postal service; date of reception.
    ReceivedPostal => "received_postal", Flow;
    /// Decided (approved or refused on decision); date of resolution.
    Resolved => "resolved", Flow;
    /// Resolved on a local date before the due date; date of resolution.
    ResolvedEarly => "resolved_early", Flow;
    /// Resolved on the due date, not after the due time; date of resolution.
    ResolvedOnTime => "resolved_on_time", Flow;
    /// Resolved after the due time; date of resolution.
    ResolvedLate => "resolved_late", Flow;
    /// Ended without a result (withdrawn or stopped); date of the end.
    Ended => "ended", Flow;
    /// Withdrawn at the applicant's request; date of withdrawal.
    Withdrawn => "withdrawn", Flow;
    /// Processing stopped by the agency; date of the stop.
    Stopped => "stopped", Flow;
    /// Resolved late, with the apology issued before the resolution (S6); date of resolution.
    ResolvedLateWithApology => "resolved_late_with_apology", Flow;
    /// Resolved late, with the apology issued on time: at least one day before the due time in
    /// force, in the unit the province had when it was issued, as `ApologyIssued.on_time`
    /// recorded it (never recomputed with today's `apology_notice`; added with the early
    /// warning, a projection built before it needs `projection rebuild`); date of resolution.
    ResolvedLateWithTimelyApology => "resolved_late_with_timely_apology", Flow;
    /// Received, every submitted component digitized (S7); date of reception.
    ReceivedAllDigitized => "received_all_digitized", Flow;
    /// Received, at least one component reused from a database (S9); date of reception.
    ReceivedReused => "received_reused", Flow;
    /// Received for a full-online procedure (S10); date of reception.
    ReceivedFullOnline => "received_full_online", Flow;
    /// Received online for a full-online procedure (S10, S14); date of reception.
    ReceivedFullOnlineOnline => "received_full_online_online", Flow;
    /// Received for a partial-online procedure (S10); date of reception.
    ReceivedPartialOnline => "received_partial_online", Flow;
    /// Received online for a partial-online procedure (S10); date of reception.
    ReceivedPartialOnlineOnline => "received_partial_online_online", Flow;
    /// Received, and moved between agencies electronically at least once (S13); date of
    /// reception.
    ReceivedElectronicTransfer => "received_electronic_transfer", Flow;
    /// Resolved, with a signed electronic result attached (S8); date of resolution.
    ResolvedResultDigitized => "resolved_result_digitized", Flow;
    /// Received, with a financial obligation assessed (S11 denominator); date of reception.
    ReceivedWithFee => "received_with_fee", Flow;
    /// Received with a fee assessed and paid online at least once (S11 numerator); date of
    /// reception, whenever the payment came.
    ReceivedWithFeePaidOnline => "received_with_fee_paid_online", Flow;
    /// Payment transactions (every channel); date of payment.
    Payments => "payments", Flow;
    /// Amount paid in VND (every channel); date of payment.
    PaymentAmountVnd => "payment_amount_vnd", Flow;
    /// Payment transactions through an online channel; date of payment.
    PaymentsOnline => "payments_online", Flow;
    /// Amount paid online in VND; date of payment.
    PaymentAmountOnlineVnd => "payment_amount_online_vnd", Flow;
    /// Ratings "very satisfied"; date of rating.
    RatedVerySatisfied => "rated_very_satisfied", Flow;
    /// Ratings "satisfied"; date of rating.
    RatedSatisfied => "rated_satisfied", Flow;
    /// Ratings "unsatisfied"; date of rating.
    RatedUnsatisfied => "rated_unsatisfied", Flow;
    /// Decision 766: resolved early or on time with fewer than two supplement requests; date of
    /// resolution.
    Resolved766InTime => "resolved_766_in_time", Flow;
    /// Minutes from reception to resolution (business times), summed over the dossiers
    /// resolved: the 766 average processing time; date of resolution.
    ResolvedProcessingMinutes => "resolved_processing_minutes", Flow;
    /// Received and neither resolved nor ended: a stock.
    Pending => "pending", Stock;
    /// Pending, with its due time in force at or after the instant, or paused for a supplement.
    PendingWithinTime => "pending_within_time", Stock;
    /// Pending, past its due time in force and not paused.
    PendingOverdue => "pending_overdue", Stock;
    /// Decision 766: pending within time with fewer than two supplement requests so far.
    Pending766WithinTime => "pending_766_within_time", Stock;
}

impl Metric {
    /// The flow metrics.
    pub fn flows() -> impl Iterator<Item = Metric> {
        Metric::ALL
            .iter()
            .copied()
            .filter(|m| m.kind() == MetricKind::Flow)
    }

    /// The stock metrics.
    pub fn stocks() -> impl Iterator<Item = Metric> {
        Metric::ALL
            .iter()
            .copied()
            .filter(|m| m.kind() == MetricKind::Stock)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
