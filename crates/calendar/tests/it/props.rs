//! Properties of working-time arithmetic, over random instants of 2020–2030.

use calendar::{Calendar, StatutoryTime, WorkingDuration, lunar};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;

fn cal() -> Calendar {
    Calendar::vietnam_default()
}

/// Any instant from 2020 to 2030, to the second.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let from = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    (0i64..11 * 365 * 86_400).prop_map(move |s| from + Duration::seconds(s))
}

/// Any instant from 2020 to 2030 on a whole minute.
fn minute() -> impl Strategy<Value = DateTime<Utc>> {
    let from = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    (0i64..11 * 365 * 24 * 60).prop_map(move |m| from + Duration::minutes(m))
}

fn statutory() -> impl Strategy<Value = StatutoryTime> {
    prop_oneof![
        (0u32..=30).prop_map(StatutoryTime::Days),
        (0u32..=48).prop_map(StatutoryTime::Hours),
    ]
}

fn duration() -> impl Strategy<Value = WorkingDuration> {
    (0u32..=30 * 480).prop_map(WorkingDuration::from_minutes)
}

proptest! {
    #[test]
    fn due_time_is_inside_office_hours_of_a_working_day(start in instant(), t in statutory()) {
        let cal = cal();
        let due = cal.due_time(start, t);
        prop_assert!(cal.is_office_time(due), "{start} + {t} = {due}");
        let local = calendar::local(due);
        prop_assert!(cal.is_working_day(local.date_naive()));
        prop_assert!(due >= start);
    }

    #[test]
    fn due_time_never_moves_earlier_when_the_statutory_time_grows(
        start in instant(), a in 0u32..=30, b in 0u32..=30, h in 0u32..=48, k in 0u32..=48,
    ) {
        let cal = cal();
        let (a, b) = (a.min(b), a.max(b));
        prop_assert!(cal.due_time(start, StatutoryTime::Days(a)) <= cal.due_time(start, StatutoryTime::Days(b)));
        let (h, k) = (h.min(k), h.max(k));
        prop_assert!(cal.due_time(start, StatutoryTime::Hours(h)) <= cal.due_time(start, StatutoryTime::Hours(k)));
    }

    #[test]
    fn working_time_between_inverts_add(start in instant(), d in duration()) {
        let cal = cal();
        let end = cal.add_working_time(start, d);
        prop_assert_eq!(cal.working_time_between(start, end), d);
    }

    #[test]
    fn add_is_additive_from_inside_office_hours(start in instant(), a in duration(), b in duration()) {
        let cal = cal();
        let s = cal.add_working_time(start, WorkingDuration::ZERO); // inside office hours
        prop_assert!(cal.is_office_time(s));
        prop_assert_eq!(cal.add_working_time(cal.add_working_time(s, a), b), cal.add_working_time(s, a + b));
    }

    #[test]
    fn add_returns_the_earliest_instant(start in minute(), d in 1u32..=30 * 480) {
        // One minute earlier, less than d has accrued.
        let cal = cal();
        let d = WorkingDuration::from_minutes(d);
        let end = cal.add_working_time(start, d);
        let before = end - Duration::minutes(1);
        prop_assert!(cal.working_time_between(start, before) < d);
    }

    #[test]
    fn working_time_between_adds_up(a in minute(), b in minute(), c in minute()) {
        let cal = cal();
        let mut v = [a, b, c];
        v.sort();
        let [a, b, c] = v;
        prop_assert_eq!(
            cal.working_time_between(a, c),
            cal.working_time_between(a, b) + cal.working_time_between(b, c)
        );
    }

    #[test]
    fn lunar_dates_round_trip(days in 0i64..(201 * 365)) {
        let d = NaiveDate::from_ymd_opt(1900, 3, 1).unwrap() + Duration::days(days);
        let l = lunar::solar_to_lunar(d);
        prop_assert_eq!(lunar::lunar_to_solar(l.year, l.month, l.day, l.leap), Some(d));
        prop_assert!(l.day >= 1 && l.day <= 30 && (1..=12).contains(&l.month));
    }

    #[test]
    fn subtract_returns_the_latest_instant_leaving_the_duration(end in instant(), d in 1u32..=30 * 480, back in 0i64..40 * 86_400) {
        // working_time_between(t, end) >= d exactly when t <= subtract(end, d), for any t.
        let cal = cal();
        let d = WorkingDuration::from_minutes(d);
        let latest = cal.subtract_working_time(end, d);
        prop_assert!(latest < end);
        prop_assert_eq!(cal.working_time_between(latest, end), d);
        prop_assert!(cal.working_time_between(latest + Duration::seconds(60), end) < d);
        let t = end - Duration::seconds(back);
        prop_assert_eq!(cal.working_time_between(t, end) >= d, t <= latest, "t = {}, latest = {}", t, latest);
    }
}
