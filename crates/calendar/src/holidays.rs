//! Public holidays computed from the law, before any announcement or provincial override.
//!
//! Labour Code 2019, art. 112 (in force since 2021): 1 January; Tết Nguyên Đán, 5 days; the
//! Hùng Kings' commemoration, lunar 10/3; 30 April; 1 May; 2 September plus one adjacent
//! day. Art. 111(3): a holiday that falls on the weekly rest day is compensated on the next
//! working day. The Government fixes the exact Tết days and may swap working days each year;
//! those announcements are data (see [`crate::announced`]), this module only computes the
//! default that holds when nothing was announced:
//!
//! * Tết: the last day of the old lunar year and lunar 1/1 to 4/1 (the usual choice; 2026 is
//!   exactly that).
//! * The day next to 2 September: 3 September when the 2nd is a Monday or a Thursday (so that
//!   the two days join a weekend), otherwise 1 September. This reproduces every year since the
//!   rule began: 2021 (Thu, 2–3), 2022 (Fri, 1–2), 2023 (Sat, 1–2), 2024 (Mon, 2–3),
//!   2025 (Tue, 1–2).
//! * Holidays on a Saturday or Sunday, and a holiday that coincides with another one (the
//!   Hùng Kings' day can fall on 30 April or 1 May), are compensated in date order on the next
//!   weekdays that are not already holidays, so Tết days on a weekend are compensated after
//!   the Tết block.
//!
//! A public holiday the law adds later (24 November, Vietnam Culture Day, has been proposed for
//! art. 112) is data, not code: a [`PublicHoliday`] with the date it takes effect, given in the
//! shipped file or a province's configuration, is computed like the others from that date on
//! (compensated when it falls on a weekend or on another holiday).
//!
//! Earlier law is applied to earlier years, because history gets imported too: the day next
//! to 2 September only from 2021 (Labour Code 2019), 5 Tết days from 2014 (Labour Code 2012,
//! in force 1 May 2013; before that 4 days: the last day of the year and 1/1 to 3/1), and the
//! Hùng Kings' day from 2007 (amendment of 2007). Years before 1995 get the same list as 1995;
//! they are outside anything this system handles.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, Weekday};
use serde::{Deserialize, Serialize};

use crate::{dates, lunar};

/// Why a weekday is not a working day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HolidayKind {
    /// Tết Dương lịch, 1 January.
    NewYear,
    /// Tết Nguyên Đán: the last day of the lunar year and the first days of the new one.
    LunarNewYear,
    /// Giỗ Tổ Hùng Vương, lunar 10/3.
    HungKings,
    /// Ngày Chiến thắng (Reunification Day), 30 April.
    ReunificationDay,
    /// Ngày Quốc tế Lao động, 1 May.
    LabourDay,
    /// Quốc khánh, 2 September and the adjacent day.
    NationalDay,
    /// Nghỉ bù: replaces a holiday that fell on a weekend or on another holiday.
    Compensatory,
    /// A day off announced by the Government (a swapped working day, an extra Tết day) or
    /// added by the province's configuration.
    Announced,
    /// A public holiday added by configuration ([`PublicHoliday`]), from its effective date.
    Added,
}

/// A public holiday on a fixed solar date, in force from `effective_from` (its occurrences
/// before that date are working days). Given in the shipped data (`[[public_holiday]]` in
/// `data/vn-announced.toml`) or in a province's configuration (`[[public_holidays]]`):
///
/// ```toml
/// [[public_holidays]]
/// name = "vietnam_culture_day"
/// month = 11
/// day = 24
/// effective_from = "2027-01-01"
/// source = "Labour Code art. 112 as amended by Law …/2026/QH15"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicHoliday {
    /// A short identifier (`vietnam_culture_day`), for people reading the configuration.
    pub name: String,
    pub month: u32,
    pub day: u32,
    /// The first date the holiday is observed on or after.
    #[serde(deserialize_with = "dates::one")]
    pub effective_from: NaiveDate,
    /// The law that makes it a holiday: required.
    pub source: String,
}

impl PublicHoliday {
    /// Checks the rule: a valid day of the month (29 February is refused: it would be
    /// observed one year in four), a name and a source.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.source.trim().is_empty() {
            return Err(format!(
                "public holiday {:?}: the name and the source are required",
                self.name
            ));
        }
        if NaiveDate::from_ymd_opt(2023, self.month, self.day).is_none() {
            return Err(format!(
                "public holiday {:?}: {}-{} is not a day of every year",
                self.name, self.month, self.day
            ));
        }
        Ok(())
    }

    /// Its date in `year`, if it is in force then.
    pub(crate) fn date_in(&self, year: i32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(year, self.month, self.day).filter(|d| *d >= self.effective_from)
    }
}

/// A weekday that is not a working day, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Holiday {
    /// The local date.
    pub date: NaiveDate,
    /// Why it is off.
    pub kind: HolidayKind,
}

/// A computed weekday off with the holiday it belongs to: for a compensatory day, the holiday
/// it compensates. Announcements replace holidays by `origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DayOff {
    pub date: NaiveDate,
    pub kind: HolidayKind,
    pub origin: HolidayKind,
}

pub(crate) fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The day next to 2 September that is also a holiday (from 2021).
pub(crate) fn national_day_companion(year: i32) -> Option<NaiveDate> {
    let second = NaiveDate::from_ymd_opt(year, 9, 2)?;
    match second.weekday() {
        Weekday::Mon | Weekday::Thu => second.succ_opt(),
        _ => second.pred_opt(),
    }
}

/// Every statutory holiday date of `year` under the law in force that year, weekends included,
/// then the `added` ones in force, sorted by date (a date may appear twice when two holidays
/// coincide).
pub(crate) fn statutory_dates(year: i32, added: &[PublicHoliday]) -> Vec<(NaiveDate, HolidayKind)> {
    let mut out = Vec::with_capacity(12);
    let fixed = |m, d| NaiveDate::from_ymd_opt(year, m, d);
    if let Some(d) = fixed(1, 1) {
        out.push((d, HolidayKind::NewYear));
    }
    let (tet, hung_kings) = lunar::tet_and_hung_kings(year);
    if let Some(tet) = tet {
        // The last day of the old year, then 1/1 onwards.
        let days_after = if year >= 2014 { 4 } else { 3 };
        let mut d = tet.pred_opt();
        for _ in 0..=days_after {
            let Some(day) = d else { break };
            out.push((day, HolidayKind::LunarNewYear));
            d = day.succ_opt();
        }
    }
    if year >= 2007
        && let Some(d) = hung_kings
    {
        out.push((d, HolidayKind::HungKings));
    }
    if let Some(d) = fixed(4, 30) {
        out.push((d, HolidayKind::ReunificationDay));
    }
    if let Some(d) = fixed(5, 1) {
        out.push((d, HolidayKind::LabourDay));
    }
    if let Some(d) = fixed(9, 2) {
        out.push((d, HolidayKind::NationalDay));
    }
    if year >= 2021
        && let Some(d) = national_day_companion(year)
    {
        out.push((d, HolidayKind::NationalDay));
    }
    out.extend(
        added
            .iter()
            .filter_map(|h| h.date_in(year))
            .map(|d| (d, HolidayKind::Added)),
    );
    out.sort_by_key(|&(d, _)| d);
    out
}

/// The weekdays off of `year` computed from the law: statutory holidays on weekdays and the
/// compensatory days of those that fell on a weekend or on another holiday. Sorted by date.
pub(crate) fn computed_days_off(year: i32, added: &[PublicHoliday]) -> Vec<DayOff> {
    let statutory = statutory_dates(year, added);
    let holidays: BTreeSet<NaiveDate> = statutory.iter().map(|&(d, _)| d).collect();
    let mut used = BTreeSet::new();
    let mut out = Vec::with_capacity(statutory.len());
    for (date, kind) in statutory {
        if !is_weekend(date) && used.insert(date) {
            out.push(DayOff {
                date,
                kind,
                origin: kind,
            });
            continue;
        }
        let mut d = date.succ_opt();
        while let Some(day) = d {
            if !is_weekend(day) && !holidays.contains(&day) && !used.contains(&day) {
                break;
            }
            d = day.succ_opt();
        }
        if let Some(day) = d {
            used.insert(day);
            out.push(DayOff {
                date: day,
                kind: HolidayKind::Compensatory,
                origin: kind,
            });
        }
    }
    out.sort_by_key(|d| d.date);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn dates(year: i32) -> Vec<NaiveDate> {
        computed_days_off(year, &[])
            .into_iter()
            .map(|d| d.date)
            .collect()
    }

    #[test]
    fn national_day_companion_matches_recent_years() {
        assert_eq!(national_day_companion(2021), Some(ymd(2021, 9, 3)));
        assert_eq!(national_day_companion(2022), Some(ymd(2022, 9, 1)));
        assert_eq!(national_day_companion(2023), Some(ymd(2023, 9, 1)));
        assert_eq!(national_day_companion(2024), Some(ymd(2024, 9, 3)));
        assert_eq!(national_day_companion(2025), Some(ymd(2025, 9, 1)));
        assert_eq!(national_day_companion(2026), Some(ymd(2026, 9, 1)));
    }

    #[test]
    fn weekend_holidays_are_compensated_after_the_block() {
        // Tết 2023: 21 Jan (Sat, last day of Nhâm Dần) to 25 Jan; the weekend days are
        // compensated on Thu 26 and Fri 27 by the law alone.
        let off = computed_days_off(2023, &[]);
        let tet: Vec<_> = off
            .iter()
            .filter(|d| d.origin == HolidayKind::LunarNewYear)
            .map(|d| (d.date, d.kind))
            .collect();
        assert_eq!(
            tet,
            vec![
                (ymd(2023, 1, 23), HolidayKind::LunarNewYear),
                (ymd(2023, 1, 24), HolidayKind::LunarNewYear),
                (ymd(2023, 1, 25), HolidayKind::LunarNewYear),
                (ymd(2023, 1, 26), HolidayKind::Compensatory),
                (ymd(2023, 1, 27), HolidayKind::Compensatory),
            ]
        );
        // 1 Jan 2023 was a Sunday: Monday 2 Jan off.
        assert_eq!(off[0].date, ymd(2023, 1, 2));
        assert_eq!(off[0].kind, HolidayKind::Compensatory);
    }

    #[test]
    fn hung_kings_on_saturday_2023_is_compensated_after_1_may() {
        // 29 Apr 2023 (Sat) Hùng Kings, 30 Apr (Sun), 1 May (Mon): off until Wed 3 May.
        let d = dates(2023);
        for day in [ymd(2023, 5, 1), ymd(2023, 5, 2), ymd(2023, 5, 3)] {
            assert!(d.contains(&day), "{day}");
        }
        assert!(!d.contains(&ymd(2023, 5, 4)));
    }

    #[test]
    fn eleven_weekdays_a_year_under_the_2019_code() {
        for year in 2021..=2100 {
            assert_eq!(computed_days_off(year, &[]).len(), 11, "{year}");
        }
    }

    fn culture_day(from: NaiveDate) -> PublicHoliday {
        PublicHoliday {
            name: "vietnam_culture_day".into(),
            month: 11,
            day: 24,
            effective_from: from,
            source: "proposed amendment of Labour Code art. 112".into(),
        }
    }

    #[test]
    fn an_added_holiday_counts_from_its_effective_date_and_is_compensated() {
        let added = [culture_day(ymd(2027, 1, 1))];
        // 24 Nov 2026 (Tue) is before the effective date: a working day.
        assert!(!dates_with(2026, &added).contains(&ymd(2026, 11, 24)));
        // 24 Nov 2027 (Wed): off; twelve weekdays off a year from then.
        assert!(dates_with(2027, &added).contains(&ymd(2027, 11, 24)));
        assert_eq!(computed_days_off(2027, &added).len(), 12);
        // 24 Nov 2029 is a Saturday: compensated on Monday 26 Nov.
        let off = computed_days_off(2029, &added);
        let d = off.iter().find(|d| d.origin == HolidayKind::Added).unwrap();
        assert_eq!(
            (d.date, d.kind),
            (ymd(2029, 11, 26), HolidayKind::Compensatory)
        );
        // Effective in the middle of a year: only the dates from then on.
        assert!(!dates_with(2027, &[culture_day(ymd(2027, 11, 25))]).contains(&ymd(2027, 11, 24)));
    }

    fn dates_with(year: i32, added: &[PublicHoliday]) -> Vec<NaiveDate> {
        computed_days_off(year, added)
            .into_iter()
            .map(|d| d.date)
            .collect()
    }

    #[test]
    fn added_holidays_are_checked() {
        let mut bad = culture_day(ymd(2027, 1, 1));
        bad.month = 2;
        bad.day = 29;
        assert!(bad.check().is_err());
        let mut bad = culture_day(ymd(2027, 1, 1));
        bad.source = " ".into();
        assert!(bad.check().is_err());
        assert!(culture_day(ymd(2027, 1, 1)).check().is_ok());
    }

    #[test]
    fn earlier_law() {
        // 2020: 2 September alone (Wed); Tết 5 days; Hùng Kings 2 Apr 2020 (Thu).
        let d = dates(2020);
        assert!(d.contains(&ymd(2020, 9, 2)));
        assert!(!d.contains(&ymd(2020, 9, 1)) && !d.contains(&ymd(2020, 9, 3)));
        assert!(d.contains(&ymd(2020, 4, 2)));
        assert_eq!(computed_days_off(2020, &[]).len(), 10);
        // 2006: no Hùng Kings' day, 4 Tết days.
        assert_eq!(computed_days_off(2006, &[]).len(), 8);
    }
}
