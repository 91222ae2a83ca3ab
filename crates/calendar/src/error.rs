//! Errors from building a calendar.

use chrono::{NaiveDate, NaiveTime};

/// Why a calendar configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CalendarError {
    /// Office hours must have at least one period.
    #[error("office hours have no period")]
    NoOfficePeriod,
    /// A period must start before it ends, on whole minutes.
    #[error("office period {start}–{end} must start before it ends, on whole minutes")]
    InvalidPeriod {
        /// Its start.
        start: NaiveTime,
        /// Its end.
        end: NaiveTime,
    },
    /// Periods must be sorted and must not overlap.
    #[error(
        "office periods must be sorted and must not overlap ({0} starts inside the previous one)"
    )]
    OverlappingPeriods(NaiveTime),
    /// An office-hours time could not be read (expected `HH:MM`).
    #[error("invalid time {0:?} in office hours, expected HH:MM")]
    InvalidTime(String),
    /// The same date is listed both as a day off and as a working day.
    #[error("{0} is listed both in days_off and in working_days")]
    ConflictingOverride(NaiveDate),
    /// The configuration text is not valid.
    #[error("invalid calendar configuration: {0}")]
    InvalidConfig(String),
}
