//! How far ahead of a due time an apology is on time, and from when a running dossier is "due
//! soon" (the early warning). Pure: the deadline watcher stores these instants in its read model.
//!
//! The apology rule (Mẫu 04 of Circular 03/2025/TT-VPCP, "chậm nhất 01 ngày trước ngày hết
//! hạn"): an apology is on time when issued at least [`APOLOGY_NOTICE_DAYS`] day before the due
//! time in force, the day counted in the province's [`NoticeUnit`] (`[processing]
//! apology_notice`): one working day of working time ([`Calendar::subtract_working_time`]) or
//! 24 hours. Its last on-time moment is the **apology deadline**, and there is one rule:
//! `on_time ⇔ issued_at <= apology_deadline(calendar, unit, due_at)` ([`apology_on_time`], which
//! `decide` answers with). The watcher's warnings use the same deadline; the statistics count the
//! `on_time` the event recorded, so a later change of the unit never changes a past figure.

use calendar::{Calendar, StatutoryTime, WorkingDuration};
use chrono::{DateTime, TimeDelta, Utc};

use crate::event::NoticeUnit;

/// How many days of notice an on-time apology gives ("01 ngày"), counted in a [`NoticeUnit`].
pub const APOLOGY_NOTICE_DAYS: u32 = 1;

/// The last instant at which an apology for a dossier due at `due_at` is on time, the day of
/// notice counted in `unit`: the latest instant leaving one working day of working time before
/// `due_at`, or `due_at` minus 24 hours.
pub fn apology_deadline(
    calendar: &Calendar,
    unit: NoticeUnit,
    due_at: DateTime<Utc>,
) -> DateTime<Utc> {
    match unit {
        NoticeUnit::WorkingDay => calendar.subtract_working_time(
            due_at,
            calendar.to_duration(StatutoryTime::Days(APOLOGY_NOTICE_DAYS)),
        ),
        NoticeUnit::CalendarDay => due_at
            .checked_sub_signed(TimeDelta::days(i64::from(APOLOGY_NOTICE_DAYS)))
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
    }
}

/// Whether an apology issued at `issued_at` for a dossier due at `due_at` is on time: issued at
/// the latest at the [`apology_deadline`].
pub fn apology_on_time(
    calendar: &Calendar,
    unit: NoticeUnit,
    issued_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
) -> bool {
    issued_at <= apology_deadline(calendar, unit, due_at)
}

/// How long before its due time a running dossier is warned about
/// (`processing.warning_horizon_minutes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WarningHorizon {
    /// The apology notice, in the province's unit: warned from the apology deadline on.
    #[default]
    ApologyNotice,
    /// This much working time before the due time.
    Working(WorkingDuration),
}

impl WarningHorizon {
    /// The instant from which a running dossier due at `due_at` is due soon. With the default
    /// horizon it is the apology deadline itself (`unit` is the apology's notice unit): at that
    /// instant an apology is still on time; a moment later it is not. Otherwise the latest
    /// instant that still leaves the horizon's working time before the due time.
    pub fn warn_from(
        self,
        calendar: &Calendar,
        unit: NoticeUnit,
        due_at: DateTime<Utc>,
    ) -> DateTime<Utc> {
        match self {
            WarningHorizon::ApologyNotice => apology_deadline(calendar, unit, due_at),
            WarningHorizon::Working(d) => calendar.subtract_working_time(due_at, d),
        }
    }
}
