//! The working-time calendar: which days are working days, and arithmetic on working time.

use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::announced::{self, Announcement};
use crate::dates;
use crate::holidays::{self, DayOff, Holiday, HolidayKind, PublicHoliday, is_weekend};
use crate::{CalendarError, OfficeHours, StatutoryTime, WorkingDuration};

/// Years whose working days are precomputed at construction. Other years are computed on
/// demand, with the same rules, at some cost per query.
const FIRST_YEAR: i32 = 1900;
const LAST_YEAR: i32 = 2100;

/// A province's calendar settings, as found in its configuration file (TOML):
///
/// ```toml
/// office_hours = [["07:00", "11:30"], ["13:30", "17:00"]]
/// days_off = ["2025-09-03"]          # or bare TOML dates: 2025-09-03
/// working_days = []
/// use_official_overrides = true
///
/// [[public_holidays]]                # a holiday added to the law's list, from a date
/// name = "vietnam_culture_day"
/// month = 11
/// day = 24
/// effective_from = "2027-01-01"
/// source = "Labour Code art. 112 as amended by …"
/// ```
///
/// Every field may be left out; the default is the national calendar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalendarConfig {
    /// Office periods as `HH:MM` pairs; default 07:00–11:30 and 13:30–17:00.
    pub office_hours: Option<Vec<(String, String)>>,
    /// Extra non-working days decided by the Government or the province (swapped days,
    /// extra Tết days, a provincial anniversary).
    #[serde(deserialize_with = "dates::many")]
    pub days_off: Vec<NaiveDate>,
    /// Days that would otherwise be off (a swapped Saturday, a holiday the province works)
    /// but are working days with the normal office hours. Wins over everything else.
    #[serde(deserialize_with = "dates::many")]
    pub working_days: Vec<NaiveDate>,
    /// Apply the Government's announced days off shipped with this crate
    /// (`data/vn-announced.toml`); default true.
    pub use_official_overrides: bool,
    /// Public holidays added to the law's list, each from its effective date (in addition to
    /// those shipped in `data/vn-announced.toml`).
    pub public_holidays: Vec<PublicHoliday>,
}

impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            office_hours: None,
            days_off: Vec::new(),
            working_days: Vec::new(),
            use_official_overrides: true,
            public_holidays: Vec::new(),
        }
    }
}

impl CalendarConfig {
    /// Reads a configuration from TOML text (the caller reads the file).
    pub fn from_toml(text: &str) -> Result<Self, CalendarError> {
        toml::from_str(text).map_err(|e| CalendarError::InvalidConfig(e.to_string()))
    }
}

/// What decides a year beyond the law: announcements and the province's overrides.
#[derive(Clone, Debug)]
struct Overrides {
    official: &'static [Announcement],
    /// Public holidays added by data (shipped and configured), with their effective dates.
    added: Vec<PublicHoliday>,
    days_off: Vec<NaiveDate>,
    working_days: Vec<NaiveDate>,
}

/// The days of one year that differ from "Monday to Friday".
#[derive(Clone, Debug, Default)]
struct YearDays {
    /// Weekdays off, sorted by date.
    off: Vec<Holiday>,
    /// Weekend days that are working days, sorted.
    working_weekend: Vec<NaiveDate>,
}

impl YearDays {
    fn is_working(&self, d: NaiveDate) -> bool {
        if is_weekend(d) {
            self.working_weekend.binary_search(&d).is_ok()
        } else {
            self.off.binary_search_by_key(&d, |h| h.date).is_err()
        }
    }
}

impl Overrides {
    fn year(&self, year: i32) -> YearDays {
        let computed = holidays::computed_days_off(year, &self.added);
        let (mut off, mut working) = announced::apply(year, computed, self.official);
        for &d in self.days_off.iter().filter(|d| d.year() == year) {
            working.retain(|w| *w != d);
            if !is_weekend(d) && off.iter().all(|o| o.date != d) {
                off.push(DayOff {
                    date: d,
                    kind: HolidayKind::Announced,
                    origin: HolidayKind::Announced,
                });
            }
        }
        for &d in self.working_days.iter().filter(|d| d.year() == year) {
            off.retain(|o| o.date != d);
            if is_weekend(d) {
                working.push(d);
            }
        }
        let mut off: Vec<Holiday> = off
            .into_iter()
            .map(|o| Holiday {
                date: o.date,
                kind: o.kind,
            })
            .collect();
        off.sort_by_key(|h| h.date);
        off.dedup_by_key(|h| h.date);
        working.sort();
        working.dedup();
        YearDays {
            off,
            working_weekend: working,
        }
    }
}

/// A working-time calendar: office hours plus the working days of every year.
///
/// Build it once at start-up ([`Calendar::new`] or [`Calendar::vietnam_default`]); it then
/// answers every query from a precomputed bit per day for 1900–2100 (other years are computed
/// on demand). Cloning copies about 10 KB.
#[derive(Clone)]
pub struct Calendar {
    hours: OfficeHours,
    overrides: Overrides,
    /// 1 January of `FIRST_YEAR`.
    base: NaiveDate,
    /// Number of precomputed days.
    days: usize,
    /// Bit `i` set when `base + i` days is not a working day.
    closed: Vec<u64>,
    /// Weekdays off of the precomputed years, sorted by date.
    holidays: Vec<Holiday>,
}

impl fmt::Debug for Calendar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Calendar")
            .field("office_hours", &self.hours.periods())
            .field("precomputed", &(FIRST_YEAR..=LAST_YEAR))
            .field("official_announcements", &self.overrides.official.len())
            .field("added_holidays", &self.overrides.added)
            .field("days_off", &self.overrides.days_off)
            .field("working_days", &self.overrides.working_days)
            .finish()
    }
}

impl Calendar {
    /// Builds a province's calendar from its configuration.
    pub fn new(config: &CalendarConfig) -> Result<Calendar, CalendarError> {
        let hours = match &config.office_hours {
            Some(periods) => OfficeHours::parse(periods)?,
            None => OfficeHours::default(),
        };
        let mut days_off = config.days_off.clone();
        let mut working_days = config.working_days.clone();
        days_off.sort();
        days_off.dedup();
        working_days.sort();
        working_days.dedup();
        if let Some(d) = days_off
            .iter()
            .find(|d| working_days.binary_search(d).is_ok())
        {
            return Err(CalendarError::ConflictingOverride(*d));
        }
        for h in &config.public_holidays {
            h.check().map_err(CalendarError::InvalidConfig)?;
        }
        let shipped = announced::shipped();
        let official: &'static [Announcement] = if config.use_official_overrides {
            &shipped.announcement
        } else {
            &[]
        };
        // Added holidays are law, not announcements: they apply either way.
        let mut added = shipped.public_holiday.clone();
        added.extend(config.public_holidays.iter().cloned());
        Ok(Calendar::build(
            hours,
            Overrides {
                official,
                added,
                days_off,
                working_days,
            },
        ))
    }

    /// The national calendar: default office hours, holidays computed from the Labour Code and
    /// the shipped Government announcements. Built once per process, then cloned.
    pub fn vietnam_default() -> Calendar {
        static DEFAULT: OnceLock<Calendar> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Calendar::new(&CalendarConfig::default()).expect("the default config is valid")
            })
            .clone()
    }

    fn build(hours: OfficeHours, overrides: Overrides) -> Calendar {
        let base = NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1).expect("valid constant date");
        let end = NaiveDate::from_ymd_opt(LAST_YEAR, 12, 31).expect("valid constant date");
        let days = usize::try_from((end - base).num_days() + 1).expect("positive span");
        let mut closed = vec![0u64; days.div_ceil(64)];
        let mut all_holidays = Vec::with_capacity(12 * (LAST_YEAR - FIRST_YEAR + 1) as usize);
        for year in FIRST_YEAR..=LAST_YEAR {
            let year_days = overrides.year(year);
            let first = NaiveDate::from_ymd_opt(year, 1, 1).expect("valid year");
            for d in first.iter_days().take_while(|d| d.year() == year) {
                if !year_days.is_working(d) {
                    let i = (d - base).num_days() as usize;
                    closed[i / 64] |= 1 << (i % 64);
                }
            }
            all_holidays.extend(year_days.off);
        }
        Calendar {
            hours,
            overrides,
            base,
            days,
            closed,
            holidays: all_holidays,
        }
    }

    fn index(&self, d: NaiveDate) -> Option<usize> {
        let i = usize::try_from((d - self.base).num_days()).ok()?;
        (i < self.days).then_some(i)
    }

    /// The office hours.
    pub fn office_hours(&self) -> &OfficeHours {
        &self.hours
    }

    /// Whether working time accrues on local date `d`: Monday to Friday and not a day off, or
    /// a weekend day declared a working day.
    pub fn is_working_day(&self, d: NaiveDate) -> bool {
        Days::new(self).is_working(d)
    }

    /// Every weekday off of `year`, and why, sorted by date: holidays, compensatory days,
    /// announced and provincial days off.
    pub fn holidays(&self, year: i32) -> Vec<Holiday> {
        if (FIRST_YEAR..=LAST_YEAR).contains(&year) {
            let from = self.holidays.partition_point(|h| h.date.year() < year);
            let to = self.holidays.partition_point(|h| h.date.year() <= year);
            self.holidays[from..to].to_vec()
        } else {
            self.overrides.year(year).off
        }
    }

    /// Saturdays and Sundays of `year` that are working days (make-up days of swaps), sorted.
    pub fn working_weekend_days(&self, year: i32) -> Vec<NaiveDate> {
        let mut days = Days::new(self);
        NaiveDate::from_ymd_opt(year, 1, 1)
            .into_iter()
            .flat_map(|first| first.iter_days())
            .take_while(|d| d.year() == year)
            .filter(|d| is_weekend(*d) && days.is_working(*d))
            .collect()
    }

    /// The make-up working days (ngày làm bù) of `year`, sorted: weekend days worked, each with
    /// the bridge day it pays for and its source when an announcement set it; weekend days a
    /// province's `working_days` opened have neither.
    pub fn make_up_days(&self, year: i32) -> Vec<MakeUpDay<'_>> {
        self.working_weekend_days(year)
            .into_iter()
            .map(|date| {
                let announced = self.overrides.official.iter().find_map(|a| {
                    a.make_up
                        .iter()
                        .find(|m| m.work == date)
                        .map(|m| (m.instead_of, a.source.as_str()))
                });
                MakeUpDay {
                    date,
                    instead_of: announced.map(|(d, _)| d),
                    source: announced.map(|(_, s)| s),
                }
            })
            .collect()
    }

    /// Where the status of local date `d` comes from, when data decided it: the announcement
    /// whose break (weekends included) or make-up day it is, else the added public holiday
    /// falling on it. `None` for days the law alone decides.
    pub fn source_of(&self, d: NaiveDate) -> Option<&str> {
        let announced = self
            .overrides
            .official
            .iter()
            .find(|a| (a.first..=a.last).contains(&d) || a.make_up.iter().any(|m| m.work == d));
        if let Some(a) = announced {
            return Some(a.source.as_str());
        }
        self.overrides
            .added
            .iter()
            .find(|h| h.date_in(d.year()) == Some(d))
            .map(|h| h.source.as_str())
    }

    /// Whether `t` is inside office hours (period ends included) on a working day.
    pub fn is_office_time(&self, t: DateTime<Utc>) -> bool {
        let l = crate::local(t).naive_local();
        self.is_working_day(l.date()) && self.hours.contains(l.time())
    }

    /// The instant `d` of working time after `start`: the earliest instant at which `d` has
    /// accrued. Time accrues only inside office periods of working days, so a start outside
    /// office hours starts counting at the next period, and a result that completes exactly
    /// at the end of a period is that end (Monday 07:00 plus one 8-hour day is Monday 17:00,
    /// not Tuesday 07:00).
    ///
    /// A zero duration returns `start` if it is inside office hours of a working day (period
    /// ends included), otherwise the start of the next office period: "counting starts here".
    /// So the result is always a moment of office hours, and
    /// `add(add(s, a), b) == add(s, a + b)` for any `s` inside office hours.
    ///
    /// Runs in time proportional to the number of calendar days crossed.
    pub fn add_working_time(&self, start: DateTime<Utc>, d: WorkingDuration) -> DateTime<Utc> {
        let Some(local) = local_naive(start) else {
            return DateTime::<Utc>::MAX_UTC;
        };
        let result = if d.is_zero() {
            self.next_office_instant_local(local)
        } else {
            self.add_local(local, TimeDelta::minutes(i64::from(d.minutes())))
        };
        result
            .and_then(utc_of_local)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The latest instant from which `d` of working time accrues before `end`: walking back
    /// from `end`, where `d` of working time has passed. Any later instant leaves less than `d`
    /// before `end` (the result, unless `d` is zero, is a moment where working time was just
    /// counted); any earlier one leaves at least `d`. So
    /// `working_time_between(t, end) >= d` exactly when `t <= subtract_working_time(end, d)`
    /// (for whole-minute `d`). A zero duration returns `end`.
    ///
    /// The deadlines before a due time are this: the last moment an apology is on time (one
    /// working day before), the start of an early warning.
    ///
    /// Runs in time proportional to the number of calendar days crossed.
    pub fn subtract_working_time(&self, end: DateTime<Utc>, d: WorkingDuration) -> DateTime<Utc> {
        if d.is_zero() {
            return end;
        }
        local_naive(end)
            .and_then(|local| {
                self.subtract_local(local, TimeDelta::minutes(i64::from(d.minutes())))
            })
            .and_then(utc_of_local)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// The due time (ngày hẹn trả) of a dossier received at `received_at` with statutory
    /// time `t`: [`Calendar::add_working_time`] of [`Calendar::to_duration`]. Received Monday
    /// 08:00 with one working day, it is due Tuesday 08:00.
    pub fn due_time(&self, received_at: DateTime<Utc>, t: StatutoryTime) -> DateTime<Utc> {
        self.add_working_time(received_at, self.to_duration(t))
    }

    /// Working time accrued from `from` to `to` (zero if `to <= from`), rounded down to the
    /// minute. The inverse of [`Calendar::add_working_time`]:
    /// `working_time_between(s, add_working_time(s, d)) == d`.
    pub fn working_time_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> WorkingDuration {
        if to <= from {
            return WorkingDuration::ZERO;
        }
        let (Some(a), Some(b)) = (local_naive(from), local_naive(to)) else {
            return WorkingDuration::ZERO;
        };
        let mut days = Days::new(self);
        let mut total = TimeDelta::zero();
        let mut day = a.date();
        while day <= b.date() {
            if days.is_working(day) {
                for &(s, e) in self.hours.periods() {
                    let lo = day.and_time(s).max(a);
                    let hi = day.and_time(e).min(b);
                    if hi > lo {
                        total += hi - lo;
                    }
                }
            }
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        WorkingDuration::from_minutes(u32::try_from(total.num_minutes()).unwrap_or(u32::MAX))
    }

    /// The working time a statutory time is worth: `Days(n)` is `n` times the day length
    /// (8 hours by default), `Hours(h)` is `h` hours.
    pub fn to_duration(&self, t: StatutoryTime) -> WorkingDuration {
        match t {
            StatutoryTime::Days(n) => {
                WorkingDuration::from_minutes(self.hours.day_length().minutes().saturating_mul(n))
            }
            StatutoryTime::Hours(h) => WorkingDuration::from_hours(h),
        }
    }

    /// `start` if it is a moment of office hours, else the start of the next office period.
    fn next_office_instant_local(&self, start: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut days = Days::new(self);
        let mut day = start.date();
        let mut time = start.time();
        loop {
            if days.is_working(day)
                && let Some(&(s, _)) = self.hours.periods().iter().find(|(_, e)| time <= *e)
            {
                return Some(day.and_time(time.max(s)));
            }
            day = day.succ_opt()?;
            time = NaiveTime::MIN;
        }
    }

    fn subtract_local(
        &self,
        end: NaiveDateTime,
        mut remaining: TimeDelta,
    ) -> Option<NaiveDateTime> {
        let mut days = Days::new(self);
        let mut day = end.date();
        // `None`: the whole day lies before the instant walked back to.
        let mut time = Some(end.time());
        loop {
            if days.is_working(day) {
                for &(s, e) in self.hours.periods().iter().rev() {
                    let to = time.map_or(e, |t| t.min(e));
                    if to <= s {
                        continue;
                    }
                    let available = to - s;
                    if remaining <= available {
                        return Some(day.and_time(to) - remaining);
                    }
                    remaining -= available;
                    time = Some(s);
                }
            }
            day = day.pred_opt()?;
            time = None;
        }
    }

    fn add_local(&self, start: NaiveDateTime, mut remaining: TimeDelta) -> Option<NaiveDateTime> {
        let mut days = Days::new(self);
        let mut day = start.date();
        let mut time = start.time();
        loop {
            if days.is_working(day) {
                for &(s, e) in self.hours.periods() {
                    if time >= e {
                        continue;
                    }
                    let from = time.max(s);
                    let available = e - from;
                    if remaining <= available {
                        return Some(day.and_time(from) + remaining);
                    }
                    remaining -= available;
                    time = e;
                }
            }
            day = day.succ_opt()?;
            time = NaiveTime::MIN;
        }
    }
}

/// A make-up working day (ngày làm bù): a weekend day worked, in exchange for a bridge day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MakeUpDay<'a> {
    /// The weekend day worked.
    pub date: NaiveDate,
    /// The weekday of the break it pays for, when an announcement says.
    pub instead_of: Option<NaiveDate>,
    /// The announcement's source, if it came from one.
    pub source: Option<&'a str>,
}

/// Day lookups for one walk through the calendar: the precomputed bits, or for other years
/// the year's days computed once per walk.
struct Days<'a> {
    calendar: &'a Calendar,
    other_year: Option<(i32, YearDays)>,
}

impl<'a> Days<'a> {
    fn new(calendar: &'a Calendar) -> Self {
        Days {
            calendar,
            other_year: None,
        }
    }

    fn is_working(&mut self, d: NaiveDate) -> bool {
        if let Some(i) = self.calendar.index(d) {
            return self.calendar.closed[i / 64] & (1 << (i % 64)) == 0;
        }
        let year = d.year();
        match &self.other_year {
            Some((y, days)) if *y == year => days.is_working(d),
            _ => {
                let days = self.calendar.overrides.year(year);
                let working = days.is_working(d);
                self.other_year = Some((year, days));
                working
            }
        }
    }
}

/// Local wall-clock time (UTC+7) of an instant, if representable.
fn local_naive(t: DateTime<Utc>) -> Option<NaiveDateTime> {
    t.naive_utc()
        .checked_add_signed(TimeDelta::seconds(i64::from(
            crate::vn_offset().local_minus_utc(),
        )))
}

fn utc_of_local(t: NaiveDateTime) -> Option<DateTime<Utc>> {
    t.checked_sub_signed(TimeDelta::seconds(i64::from(
        crate::vn_offset().local_minus_utc(),
    )))
    .map(|n| n.and_utc())
}
