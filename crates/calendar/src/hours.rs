//! Office hours: the periods of a working day during which working time accrues.

use chrono::{NaiveTime, Timelike};

use crate::{CalendarError, WorkingDuration};

/// The office periods of a working day, sorted and not overlapping; by default
/// 07:00–11:30 and 13:30–17:00 (8 working hours), which provinces may change.
///
/// A period is closed at both ends for the purpose of "is this a moment of office hours"
/// (a due time of exactly 17:00 is inside), while working time accrues over `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OfficeHours {
    periods: Vec<(NaiveTime, NaiveTime)>,
}

impl Default for OfficeHours {
    fn default() -> Self {
        let t = |h, m| NaiveTime::from_hms_opt(h, m, 0).expect("valid constant time");
        OfficeHours {
            periods: vec![(t(7, 0), t(11, 30)), (t(13, 30), t(17, 0))],
        }
    }
}

impl OfficeHours {
    /// Checks and builds office hours. Periods must be non-empty, on whole minutes, sorted and
    /// non-overlapping; periods that touch (one ends when the next starts) are merged.
    pub fn new(periods: Vec<(NaiveTime, NaiveTime)>) -> Result<Self, CalendarError> {
        if periods.is_empty() {
            return Err(CalendarError::NoOfficePeriod);
        }
        let whole_minute = |t: NaiveTime| t.second() == 0 && t.nanosecond() == 0;
        let mut merged: Vec<(NaiveTime, NaiveTime)> = Vec::with_capacity(periods.len());
        for (start, end) in periods {
            if start >= end || !whole_minute(start) || !whole_minute(end) {
                return Err(CalendarError::InvalidPeriod { start, end });
            }
            match merged.last_mut() {
                Some(last) if start < last.1 => {
                    return Err(CalendarError::OverlappingPeriods(start));
                }
                Some(last) if start == last.1 => last.1 = end,
                _ => merged.push((start, end)),
            }
        }
        Ok(OfficeHours { periods: merged })
    }

    /// Parses `[["07:00", "11:30"], ["13:30", "17:00"]]`-style pairs.
    pub fn parse<S: AsRef<str>>(periods: &[(S, S)]) -> Result<Self, CalendarError> {
        let time = |s: &str| {
            NaiveTime::parse_from_str(s.trim(), "%H:%M")
                .map_err(|_| CalendarError::InvalidTime(s.to_owned()))
        };
        let parsed = periods
            .iter()
            .map(|(a, b)| Ok((time(a.as_ref())?, time(b.as_ref())?)))
            .collect::<Result<Vec<_>, CalendarError>>()?;
        OfficeHours::new(parsed)
    }

    /// The periods, sorted.
    pub fn periods(&self) -> &[(NaiveTime, NaiveTime)] {
        &self.periods
    }

    /// Working time in one working day: what one statutory working day is worth.
    pub fn day_length(&self) -> WorkingDuration {
        let minutes: i64 = self
            .periods
            .iter()
            .map(|(s, e)| (*e - *s).num_minutes())
            .sum();
        WorkingDuration::from_minutes(u32::try_from(minutes).unwrap_or(u32::MAX))
    }

    /// Whether `t` is within a period, ends included.
    pub fn contains(&self, t: NaiveTime) -> bool {
        self.periods.iter().any(|&(s, e)| s <= t && t <= e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn default_is_eight_hours() {
        assert_eq!(
            OfficeHours::default().day_length(),
            WorkingDuration::from_hours(8)
        );
        assert!(OfficeHours::default().contains(t(17, 0)));
        assert!(!OfficeHours::default().contains(t(12, 0)));
    }

    #[test]
    fn validation() {
        assert_eq!(OfficeHours::new(vec![]), Err(CalendarError::NoOfficePeriod));
        assert!(matches!(
            OfficeHours::new(vec![(t(9, 0), t(8, 0))]),
            Err(CalendarError::InvalidPeriod { .. })
        ));
        assert!(matches!(
            OfficeHours::new(vec![(t(8, 0), NaiveTime::from_hms_opt(9, 0, 30).unwrap())]),
            Err(CalendarError::InvalidPeriod { .. })
        ));
        assert_eq!(
            OfficeHours::new(vec![(t(8, 0), t(12, 0)), (t(11, 0), t(13, 0))]),
            Err(CalendarError::OverlappingPeriods(t(11, 0)))
        );
        assert_eq!(
            OfficeHours::new(vec![(t(13, 0), t(17, 0)), (t(8, 0), t(12, 0))]),
            Err(CalendarError::OverlappingPeriods(t(8, 0)))
        );
        let merged = OfficeHours::new(vec![(t(8, 0), t(12, 0)), (t(12, 0), t(16, 0))]).unwrap();
        assert_eq!(merged.periods(), &[(t(8, 0), t(16, 0))]);
        assert_eq!(
            OfficeHours::parse(&[("7:30", "11:30"), ("13:00", "16:00")])
                .unwrap()
                .day_length(),
            WorkingDuration::from_hours(7)
        );
        assert_eq!(
            OfficeHours::parse(&[("7h", "11:30")]),
            Err(CalendarError::InvalidTime("7h".into()))
        );
    }
}
