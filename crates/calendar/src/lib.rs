//! Working time for Vietnamese one-stop shops (bộ phận một cửa): when a dossier is due, how
//! much working time passed between two instants, and whether a dossier was resolved early,
//! on time or late.
//!
//! Statutory processing times are given in working days or working hours. Working time
//! accrues only during office hours (by default 07:00–11:30 and 13:30–17:00, Asia/Ho_Chi_Minh)
//! on working days: Monday to Friday, minus public holidays and compensatory days (Labour
//! Code 2019, art. 111–112), minus the days off the Government announces each year, plus the
//! Saturdays it swaps in. The lunar holidays (Tết, the Hùng Kings' day) come from the
//! Vietnamese lunar calendar, computed astronomically in [`lunar`]; the announcements are
//! shipped as data (`data/vn-announced.toml`); a province can change office hours and add or
//! remove days through [`CalendarConfig`].
//!
//! Vietnam is at a fixed UTC+7 with no daylight-saving time, so local time is a fixed offset
//! and no time-zone database is needed. All instants are [`chrono::DateTime<Utc>`]; dates are
//! local dates.
//!
//! The crate is pure computation: it does no I/O (configuration text is passed in by the
//! caller, the shipped announcements are embedded at build time). Its only globals are two
//! immutable values built on first use: the parsed announcements and the default calendar.
//!
//! ```
//! use calendar::{Calendar, StatutoryTime};
//! use chrono::{TimeZone, Utc};
//!
//! let cal = Calendar::vietnam_default();
//! // Received Monday 3 March 2025 at 08:00 local (01:00 UTC), statutory time 1 working day.
//! let received = Utc.with_ymd_and_hms(2025, 3, 3, 1, 0, 0).unwrap();
//! let due = cal.due_time(received, StatutoryTime::Days(1));
//! assert_eq!(due, Utc.with_ymd_and_hms(2025, 3, 4, 1, 0, 0).unwrap()); // Tuesday 08:00
//! ```

mod announced;
mod calendar;
mod dates;
mod duration;
mod error;
mod holidays;
mod hours;
pub mod lunar;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub use crate::calendar::{Calendar, CalendarConfig, MakeUpDay};
pub use crate::duration::{StatutoryTime, WorkingDuration};
pub use crate::error::CalendarError;
pub use crate::holidays::{Holiday, HolidayKind, PublicHoliday};
pub use crate::hours::OfficeHours;

/// The offset of Asia/Ho_Chi_Minh: UTC+07:00 all year (no daylight-saving time).
pub fn vn_offset() -> FixedOffset {
    FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset")
}

/// An instant in Vietnamese local time.
pub fn local(t: DateTime<Utc>) -> DateTime<FixedOffset> {
    t.with_timezone(&vn_offset())
}

/// The Vietnamese local date of an instant: business dates (periods, due dates) are local.
pub fn local_date(t: DateTime<Utc>) -> NaiveDate {
    local(t).date_naive()
}

/// How a resolved dossier compares with its due time (trước hạn / đúng hạn / quá hạn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Timeliness {
    /// Resolved on a local date before the due date.
    Early,
    /// Resolved on the due date, not after the due time.
    OnTime,
    /// Resolved after the due time.
    Late,
}

/// Classifies a resolution against the due time in force: late when after the due time,
/// early when on an earlier local date than the due date, on time otherwise (the due date,
/// at or before the due time).
pub fn classify(resolved_at: DateTime<Utc>, due_at: DateTime<Utc>) -> Timeliness {
    if resolved_at > due_at {
        Timeliness::Late
    } else if local_date(resolved_at) < local_date(due_at) {
        Timeliness::Early
    } else {
        Timeliness::OnTime
    }
}
