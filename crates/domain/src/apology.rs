//! How far ahead of a due time an apology is on time, and from when a running dossier is "due
//! soon" (the early warning). Pure: the deadline watcher stores these instants in its read model.
//!
//! The apology rule (`decide`, `IssueApology`): an apology is on time when issued at least
//! [`APOLOGY_NOTICE`] of working time before the due time in force. So its last on-time moment,
//! the **apology deadline**, is [`Calendar::subtract_working_time`] of that notice:
//! `on_time ⇔ issued_at <= apology_deadline(due_at)` (the tests check this against `decide`).

use calendar::{Calendar, StatutoryTime, WorkingDuration};
use chrono::{DateTime, Utc};

/// The notice an on-time apology gives: one working day before the due time (Decree 61/2018,
/// art. 19; the on-time flag of `ApologyIssued`).
pub const APOLOGY_NOTICE: StatutoryTime = StatutoryTime::Days(1);

/// The last instant at which an apology for a dossier due at `due_at` is on time.
pub fn apology_deadline(calendar: &Calendar, due_at: DateTime<Utc>) -> DateTime<Utc> {
    calendar.subtract_working_time(due_at, calendar.to_duration(APOLOGY_NOTICE))
}

/// How long before its due time a running dossier is warned about: working time before the due
/// time (`processing.warning_horizon_minutes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarningHorizon {
    /// The apology notice (one working day): warned from the apology deadline on.
    #[default]
    ApologyNotice,
    /// This much working time before the due time.
    Working(WorkingDuration),
}

impl WarningHorizon {
    /// The horizon as working time under `calendar`.
    pub fn duration(self, calendar: &Calendar) -> WorkingDuration {
        match self {
            WarningHorizon::ApologyNotice => calendar.to_duration(APOLOGY_NOTICE),
            WarningHorizon::Working(d) => d,
        }
    }

    /// The instant from which a running dossier due at `due_at` is due soon: the latest instant
    /// that still leaves the horizon's working time before the due time. With the default
    /// horizon it is the apology deadline itself: at that instant an apology is still on time
    /// and one working day remains to resolve the dossier on time; a moment later neither holds
    /// for the apology.
    pub fn warn_from(self, calendar: &Calendar, due_at: DateTime<Utc>) -> DateTime<Utc> {
        calendar.subtract_working_time(due_at, self.duration(calendar))
    }
}
