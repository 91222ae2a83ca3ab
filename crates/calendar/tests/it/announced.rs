//! `Calendar::vietnam_default()` gives exactly the announced non-working weekdays.

use calendar::{Calendar, CalendarConfig, HolidayKind};
use chrono::{Datelike, NaiveDate, Weekday};

use crate::ymd;

fn weekdays_off(cal: &Calendar, year: i32) -> Vec<NaiveDate> {
    // From the day predicate, independently of `holidays()`.
    let mut out = Vec::new();
    let mut d = ymd(year, 1, 1);
    while d.year() == year {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && !cal.is_working_day(d) {
            out.push(d);
        }
        d = d.succ_opt().unwrap();
    }
    out
}

fn working_weekend(cal: &Calendar, year: i32) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut d = ymd(year, 1, 1);
    while d.year() == year {
        if matches!(d.weekday(), Weekday::Sat | Weekday::Sun) && cal.is_working_day(d) {
            out.push(d);
        }
        d = d.succ_opt().unwrap();
    }
    out
}

fn check(year: i32, expected_off: &[NaiveDate], expected_working_weekend: &[NaiveDate]) {
    let cal = Calendar::vietnam_default();
    assert_eq!(
        weekdays_off(&cal, year),
        expected_off,
        "weekdays off in {year}"
    );
    let listed: Vec<NaiveDate> = cal.holidays(year).iter().map(|h| h.date).collect();
    assert_eq!(listed, expected_off, "holidays({year})");
    assert_eq!(
        working_weekend(&cal, year),
        expected_working_weekend,
        "working weekend days in {year}"
    );
    assert_eq!(cal.working_weekend_days(year), expected_working_weekend);
}

#[test]
fn year_2023() {
    check(
        2023,
        &[
            ymd(2023, 1, 2),  // 1 Jan was a Sunday
            ymd(2023, 1, 20), // Tết Quý Mão 20–26 Jan
            ymd(2023, 1, 23),
            ymd(2023, 1, 24),
            ymd(2023, 1, 25),
            ymd(2023, 1, 26),
            ymd(2023, 5, 1), // Hùng Kings 29 Apr (Sat), 30 Apr (Sun), 1 May: 29 Apr–3 May
            ymd(2023, 5, 2),
            ymd(2023, 5, 3),
            ymd(2023, 9, 1), // Quốc khánh 1–4 Sep
            ymd(2023, 9, 4),
        ],
        &[],
    );
}

#[test]
fn year_2024() {
    check(
        2024,
        &[
            ymd(2024, 1, 1),
            ymd(2024, 2, 8), // Tết Giáp Thìn 8–14 Feb
            ymd(2024, 2, 9),
            ymd(2024, 2, 12),
            ymd(2024, 2, 13),
            ymd(2024, 2, 14),
            ymd(2024, 4, 18), // Hùng Kings
            ymd(2024, 4, 29), // swapped with Saturday 4 May
            ymd(2024, 4, 30),
            ymd(2024, 5, 1),
            ymd(2024, 9, 2), // Quốc khánh 31 Aug–3 Sep
            ymd(2024, 9, 3),
        ],
        &[ymd(2024, 5, 4)],
    );
}

#[test]
fn year_2025() {
    check(
        2025,
        &[
            ymd(2025, 1, 1),
            ymd(2025, 1, 27), // Tết Ất Tỵ 25 Jan–2 Feb
            ymd(2025, 1, 28),
            ymd(2025, 1, 29),
            ymd(2025, 1, 30),
            ymd(2025, 1, 31),
            ymd(2025, 4, 7),  // Hùng Kings
            ymd(2025, 4, 30), // 30 Apr–4 May
            ymd(2025, 5, 1),
            ymd(2025, 5, 2), // swapped with Saturday 26 Apr
            ymd(2025, 9, 1), // Quốc khánh 30 Aug–2 Sep
            ymd(2025, 9, 2),
        ],
        &[ymd(2025, 4, 26)],
    );
}

#[test]
fn year_2026() {
    check(
        2026,
        &[
            ymd(2026, 1, 1),
            ymd(2026, 1, 2),  // swapped with Saturday 10 Jan
            ymd(2026, 2, 16), // Tết Bính Ngọ 14–22 Feb
            ymd(2026, 2, 17),
            ymd(2026, 2, 18),
            ymd(2026, 2, 19),
            ymd(2026, 2, 20),
            ymd(2026, 4, 27), // Hùng Kings on Sunday 26 Apr
            ymd(2026, 4, 30),
            ymd(2026, 5, 1),
            ymd(2026, 8, 31), // swapped with Saturday 22 Aug
            ymd(2026, 9, 1),
            ymd(2026, 9, 2),
        ],
        &[ymd(2026, 1, 10), ymd(2026, 8, 22)],
    );
}

#[test]
fn kinds_say_why() {
    let cal = Calendar::vietnam_default();
    let kinds: Vec<(NaiveDate, HolidayKind)> = cal
        .holidays(2024)
        .iter()
        .map(|h| (h.date, h.kind))
        .collect();
    use HolidayKind::*;
    assert_eq!(
        kinds,
        vec![
            (ymd(2024, 1, 1), NewYear),
            (ymd(2024, 2, 8), Announced),
            (ymd(2024, 2, 9), LunarNewYear),
            (ymd(2024, 2, 12), LunarNewYear),
            (ymd(2024, 2, 13), LunarNewYear),
            (ymd(2024, 2, 14), Compensatory),
            (ymd(2024, 4, 18), HungKings),
            (ymd(2024, 4, 29), Announced),
            (ymd(2024, 4, 30), ReunificationDay),
            (ymd(2024, 5, 1), LabourDay),
            (ymd(2024, 9, 2), NationalDay),
            (ymd(2024, 9, 3), NationalDay),
        ]
    );
}

#[test]
fn without_official_overrides_the_law_alone_applies() {
    let cal = Calendar::new(&CalendarConfig {
        use_official_overrides: false,
        ..CalendarConfig::default()
    })
    .unwrap();
    // Tết 2024 by the law: 9 Feb (last day) to 13 Feb, weekend days compensated 14 and 15 Feb.
    assert!(cal.is_working_day(ymd(2024, 2, 8)));
    assert!(!cal.is_working_day(ymd(2024, 2, 15)));
    // No swap around 30 April 2024.
    assert!(cal.is_working_day(ymd(2024, 4, 29)));
    assert!(!cal.is_working_day(ymd(2024, 5, 4)));
    // Every year of the 2019 code has 11 weekdays off.
    for year in [2023, 2024, 2025, 2026, 2030, 2099] {
        assert_eq!(weekdays_off(&cal, year).len(), 11, "{year}");
        assert!(working_weekend(&cal, year).is_empty());
    }
}

#[test]
fn years_outside_the_precomputed_range_follow_the_same_rules() {
    let cal = Calendar::vietnam_default();
    // 1 Jan 2101 is a Saturday, compensated on Monday 3 Jan.
    assert!(!cal.is_working_day(ymd(2101, 1, 3)));
    assert_eq!(weekdays_off(&cal, 2101).len(), 11);
    assert_eq!(cal.holidays(2101).len(), 11);
    assert!(cal.is_working_day(ymd(1899, 6, 1)));
}
