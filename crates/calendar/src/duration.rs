//! Amounts of working time, and statutory processing times.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// An amount of working time, in whole minutes.
///
/// Minutes, not seconds: statutory times are whole hours or days and office hours are given
/// to the minute, so minutes are exact. Arithmetic saturates instead of overflowing or going
/// negative (a paused interval longer than what remains just leaves nothing).
/// Serialized as the bare number of minutes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct WorkingDuration {
    minutes: u32,
}

impl WorkingDuration {
    /// No working time.
    pub const ZERO: WorkingDuration = WorkingDuration { minutes: 0 };

    /// `minutes` of working time.
    pub const fn from_minutes(minutes: u32) -> Self {
        WorkingDuration { minutes }
    }

    /// `hours` of working time (saturating).
    pub const fn from_hours(hours: u32) -> Self {
        WorkingDuration {
            minutes: hours.saturating_mul(60),
        }
    }

    /// The number of minutes.
    pub const fn minutes(self) -> u32 {
        self.minutes
    }

    /// Whether this is no time at all.
    pub const fn is_zero(self) -> bool {
        self.minutes == 0
    }
}

impl Add for WorkingDuration {
    type Output = WorkingDuration;
    fn add(self, rhs: Self) -> Self {
        WorkingDuration {
            minutes: self.minutes.saturating_add(rhs.minutes),
        }
    }
}

impl AddAssign for WorkingDuration {
    fn add_assign(&mut self, rhs: Self) {
        *self = *self + rhs;
    }
}

impl Sub for WorkingDuration {
    type Output = WorkingDuration;
    /// Saturates at zero.
    fn sub(self, rhs: Self) -> Self {
        WorkingDuration {
            minutes: self.minutes.saturating_sub(rhs.minutes),
        }
    }
}

impl SubAssign for WorkingDuration {
    fn sub_assign(&mut self, rhs: Self) {
        *self = *self - rhs;
    }
}

impl Sum for WorkingDuration {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(WorkingDuration::ZERO, Add::add)
    }
}

impl fmt::Display for WorkingDuration {
    /// `8h00`, `3h15`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}h{:02}", self.minutes / 60, self.minutes % 60)
    }
}

/// A statutory processing time (thời hạn giải quyết) as the procedure publishes it: in
/// working days or in working hours. Days become working time through the calendar's day
/// length ([`crate::Calendar::to_duration`]), 8 hours with the default office hours.
///
/// Serialized externally tagged: `{"days": 15}` or `{"hours": 4}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatutoryTime {
    /// Working days.
    Days(u32),
    /// Working hours.
    Hours(u32),
}

impl fmt::Display for StatutoryTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatutoryTime::Days(n) => write!(f, "{n} working day(s)"),
            StatutoryTime::Hours(n) => write!(f, "{n} working hour(s)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let a = WorkingDuration::from_minutes(30);
        let b = WorkingDuration::from_hours(1);
        assert_eq!((a + b).minutes(), 90);
        assert_eq!(a - b, WorkingDuration::ZERO);
        assert_eq!(b - a, a);
        assert_eq!(
            WorkingDuration::from_minutes(u32::MAX) + a,
            WorkingDuration::from_minutes(u32::MAX)
        );
        assert_eq!(WorkingDuration::from_hours(u32::MAX).minutes(), u32::MAX);
        assert_eq!(
            [a, a, b].into_iter().sum::<WorkingDuration>().minutes(),
            120
        );
        assert_eq!(WorkingDuration::from_minutes(195).to_string(), "3h15");
    }
}
