//! Office-hour edges of `add_working_time`: where counting starts and where it ends.

use calendar::{Calendar, WorkingDuration};
use chrono::{TimeZone, Utc};

use crate::{vn, vn_s};

const HOUR: WorkingDuration = WorkingDuration::from_minutes(60);

fn add(start: chrono::DateTime<Utc>, d: WorkingDuration) -> chrono::DateTime<Utc> {
    Calendar::vietnam_default().add_working_time(start, d)
}

// Monday 3 March 2025 starts an ordinary week.

#[test]
fn just_before_the_noon_break() {
    // 1 minute before 11:30, the other 59 after 13:30.
    assert_eq!(add(vn(2025, 3, 3, 11, 29), HOUR), vn(2025, 3, 3, 14, 29));
}

#[test]
fn during_the_noon_break_counting_starts_at_13_30() {
    assert_eq!(add(vn(2025, 3, 3, 11, 31), HOUR), vn(2025, 3, 3, 14, 30));
    assert_eq!(add(vn(2025, 3, 3, 11, 30), HOUR), vn(2025, 3, 3, 14, 30));
    assert_eq!(add(vn(2025, 3, 3, 13, 29), HOUR), vn(2025, 3, 3, 14, 30));
}

#[test]
fn just_before_closing() {
    assert_eq!(add(vn(2025, 3, 3, 16, 59), HOUR), vn(2025, 3, 4, 7, 59));
}

#[test]
fn at_or_after_closing_counting_starts_next_morning() {
    assert_eq!(add(vn(2025, 3, 3, 17, 0), HOUR), vn(2025, 3, 4, 8, 0));
    assert_eq!(add(vn(2025, 3, 3, 17, 1), HOUR), vn(2025, 3, 4, 8, 0));
    assert_eq!(add(vn(2025, 3, 3, 20, 0), HOUR), vn(2025, 3, 4, 8, 0));
}

#[test]
fn before_opening() {
    assert_eq!(add(vn(2025, 3, 4, 6, 30), HOUR), vn(2025, 3, 4, 8, 0));
}

#[test]
fn around_midnight() {
    // 23:59:59 Monday and 00:00:01 Tuesday local both start Tuesday 07:00.
    assert_eq!(
        add(vn_s(2025, 3, 3, 23, 59, 59), HOUR),
        vn(2025, 3, 4, 8, 0)
    );
    assert_eq!(add(vn_s(2025, 3, 4, 0, 0, 1), HOUR), vn(2025, 3, 4, 8, 0));
    // Local midnight is 17:00 UTC of the day before: the local date decides.
    let before = Utc.with_ymd_and_hms(2025, 3, 3, 16, 59, 59).unwrap();
    let after = Utc.with_ymd_and_hms(2025, 3, 3, 17, 0, 0).unwrap();
    assert_eq!(add(before, HOUR), vn(2025, 3, 4, 8, 0));
    assert_eq!(add(after, HOUR), vn(2025, 3, 4, 8, 0));
    // Friday just before midnight: the next working day is Monday.
    assert_eq!(
        add(vn_s(2025, 3, 7, 23, 59, 59), HOUR),
        vn(2025, 3, 10, 8, 0)
    );
    // Saturday just after midnight too.
    assert_eq!(add(vn_s(2025, 3, 8, 0, 0, 1), HOUR), vn(2025, 3, 10, 8, 0));
}

#[test]
fn friday_evening_before_the_april_2024_holidays() {
    // Sat 27 Apr to Wed 1 May 2024 off (Mon 29 Apr swapped): counting starts Thu 2 May.
    assert_eq!(add(vn(2024, 4, 26, 18, 0), HOUR), vn(2024, 5, 2, 8, 0));
    assert_eq!(
        add(vn(2024, 4, 26, 18, 0), WorkingDuration::ZERO),
        vn(2024, 5, 2, 7, 0)
    );
    // Friday 3 May evening: the next day, Saturday 4 May, is a working day.
    assert_eq!(add(vn(2024, 5, 3, 18, 0), HOUR), vn(2024, 5, 4, 8, 0));
}

#[test]
fn at_year_end() {
    // 31 Dec 2024 (Tue) evening: 1 Jan 2025 is a holiday, counting starts Thu 2 Jan.
    assert_eq!(add(vn(2024, 12, 31, 18, 0), HOUR), vn(2025, 1, 2, 8, 0));
    // 31 Dec 2025 (Wed) evening: 1 Jan 2026, Fri 2 Jan (swapped) and the weekend are off.
    assert_eq!(add(vn(2025, 12, 31, 18, 0), HOUR), vn(2026, 1, 5, 8, 0));
    // ... and the swapped Saturday 10 Jan 2026 is worked.
    assert_eq!(add(vn(2026, 1, 9, 17, 0), HOUR), vn(2026, 1, 10, 8, 0));
}

#[test]
fn a_day_from_opening_ends_at_closing_the_same_day() {
    let day = WorkingDuration::from_hours(8);
    assert_eq!(add(vn(2025, 3, 3, 7, 0), day), vn(2025, 3, 3, 17, 0));
    // The morning period alone ends exactly at 11:30, not at 13:30.
    assert_eq!(
        add(vn(2025, 3, 3, 7, 0), WorkingDuration::from_minutes(270)),
        vn(2025, 3, 3, 11, 30)
    );
}

#[test]
fn zero_duration_moves_only_outside_office_hours() {
    let zero = WorkingDuration::ZERO;
    assert_eq!(add(vn(2025, 3, 3, 9, 15), zero), vn(2025, 3, 3, 9, 15));
    assert_eq!(add(vn(2025, 3, 3, 11, 30), zero), vn(2025, 3, 3, 11, 30));
    assert_eq!(add(vn(2025, 3, 3, 17, 0), zero), vn(2025, 3, 3, 17, 0));
    assert_eq!(add(vn(2025, 3, 3, 12, 0), zero), vn(2025, 3, 3, 13, 30));
    assert_eq!(add(vn(2025, 3, 3, 17, 1), zero), vn(2025, 3, 4, 7, 0));
    assert_eq!(add(vn(2025, 3, 8, 10, 0), zero), vn(2025, 3, 10, 7, 0));
}

#[test]
fn seconds_are_kept() {
    assert_eq!(
        add(vn_s(2025, 3, 3, 9, 0, 30), HOUR),
        vn_s(2025, 3, 3, 10, 0, 30)
    );
}

#[test]
fn working_time_between_edges() {
    let cal = Calendar::vietnam_default();
    let between = |a, b| cal.working_time_between(a, b).minutes();
    assert_eq!(between(vn(2025, 3, 3, 11, 0), vn(2025, 3, 3, 14, 0)), 60);
    assert_eq!(between(vn(2025, 3, 3, 17, 0), vn(2025, 3, 4, 7, 0)), 0);
    assert_eq!(between(vn(2025, 3, 4, 7, 0), vn(2025, 3, 3, 7, 0)), 0);
    assert_eq!(between(vn(2025, 3, 7, 16, 0), vn(2025, 3, 10, 8, 0)), 120);
    // Over Tết 2025 (25 Jan to 2 Feb off): Friday 24 Jan 16:00 to Monday 3 Feb 08:00.
    assert_eq!(between(vn(2025, 1, 24, 16, 0), vn(2025, 2, 3, 8, 0)), 120);
    // A whole working week.
    assert_eq!(
        between(vn(2025, 3, 3, 0, 0), vn(2025, 3, 10, 0, 0)),
        5 * 480
    );
    // Partial minutes round down.
    assert_eq!(between(vn(2025, 3, 3, 9, 0), vn_s(2025, 3, 3, 9, 1, 59)), 1);
}

#[test]
fn extreme_instants_and_years_do_not_panic() {
    let cal = Calendar::vietnam_default();
    assert_eq!(
        add(chrono::DateTime::<Utc>::MAX_UTC, HOUR),
        chrono::DateTime::<Utc>::MAX_UTC
    );
    assert_eq!(
        cal.working_time_between(
            chrono::DateTime::<Utc>::MIN_UTC,
            chrono::DateTime::<Utc>::MAX_UTC
        ),
        WorkingDuration::ZERO
    );
    for d in [chrono::NaiveDate::MIN, chrono::NaiveDate::MAX] {
        let _ = cal.is_working_day(d);
        let _ = calendar::lunar::solar_to_lunar(d);
    }
    assert!(cal.holidays(i32::MAX).is_empty());
    assert!(cal.holidays(i32::MIN).is_empty());
    assert_eq!(calendar::lunar::leap_month(i32::MAX), None);
    assert_eq!(calendar::lunar::lunar_to_solar(i32::MIN, 1, 1, false), None);
}
