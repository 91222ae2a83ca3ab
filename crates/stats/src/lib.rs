//! The statistics of dossiers, as pure functions: what one dossier contributes to the counters,
//! how counters add up over a period, the indicators S1–S14 of `shared/DOMAIN.md` and the
//! report forms built on them.
//!
//! - [`contribution`] folds one dossier's events into its [`Contribution`]: its [`Slice`] and,
//!   per local date (Asia/Ho_Chi_Minh) and [`Metric`], the amount it adds. Flow metrics count on
//!   the date of the event that decides them; stock metrics (pending, within time, overdue) are
//!   stored as changes on the day from whose start (00:00 local) the new value holds.
//! - [`diff`] is what to add to the aggregates when a dossier's contribution changes. The
//!   projection recomputes the contribution from all of a dossier's events on each event and
//!   applies the diff, so late, out-of-order and redelivered events leave the figures exact.
//! - [`Totals`] are the sums for a period `[from, to)` and a set of slices; [`indicators`]
//!   turns them into S1–S13, [`Indicators::check`] verifies the identities, [`targets`] is S14.
//! - [`reports`] holds forms II.06a, Biểu mẫu 3 §3 and Biểu mẫu 7 §6; [`scorecard`] the 766
//!   index in points (versioned configuration by effective date).
//! - [`AgencyStructure`]: agencies dissolved, renamed, merged or changing level from a date;
//!   [`InStructure`] answers a query in the structure of a chosen date by relabelling slices.
//!
//! Every delta and every sum of deltas is an `i128`, added with plain (exact) arithmetic, never
//! saturating. Why it cannot overflow: a delta comes from one event (a payment's amount, at
//! most `i64::MAX`; a count or a stock change, `±1`), and a sum adds at most two deltas per
//! event of the log (a [`diff`] subtracts the old contribution), whose positions are `i64`. So
//! every sum is below `2 × 2^63 × 2^63 = 2^127`: within `i128` whatever the number of dossiers.
//! Counts are handed out as `i64` ([`Totals::flow_count`]); amounts keep the full width
//! ([`PaymentFigures`]).
//!
//! No I/O: everything here is a function of its arguments.

mod contribution;
mod indicators;
mod metric;
mod query;
pub mod reports;
pub mod scorecard;
mod structure;
mod totals;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};

pub use crate::contribution::{Contribution, contribution, diff};
pub use crate::indicators::{
    EndedFigures, Indicators, OnlineFigures, PaymentFigures, PendingFigures, Rate, ReceivedFigures,
    ResolvedFigures, SatisfactionFigures, TargetCheck, Targets, Violation, indicators, late_shares,
    targets,
};
pub use crate::metric::{Metric, MetricKind, Slice};
pub use crate::query::{Dimension, GroupKey, Query, SliceFilter};
pub use crate::structure::{
    AgencyChange, AgencyDecl, AgencyStructure, ChangeKind, DATE_YEARS, InStructure, LevelAbolition,
    MAX_ENTRIES_PER_PUBLICATION, MAX_NAME_CHARS, MAX_SOURCE_CHARS, StructureEntry, StructureError,
    StructureFile, tidy,
};
pub use crate::totals::{Aggregates, Totals};

/// The instant a local date starts: `date` 00:00 in Asia/Ho_Chi_Minh (UTC+7), i.e. the
/// instant "at the end of a period `[from, date)`". `None` only at the edge of chrono's range.
pub fn start_of_day(date: NaiveDate) -> Option<DateTime<Utc>> {
    date.and_time(NaiveTime::MIN)
        .and_local_timezone(calendar::vn_offset())
        .single()
        .map(|t| t.with_timezone(&Utc))
}
