//! Due times for statutory times in working days and hours.

use calendar::{Calendar, StatutoryTime, WorkingDuration};

use crate::vn;

fn due(received: chrono::DateTime<chrono::Utc>, t: StatutoryTime) -> chrono::DateTime<chrono::Utc> {
    Calendar::vietnam_default().due_time(received, t)
}

#[test]
fn one_day_from_opening_is_closing_the_same_day() {
    assert_eq!(
        due(vn(2025, 3, 3, 7, 0), StatutoryTime::Days(1)),
        vn(2025, 3, 3, 17, 0)
    );
}

#[test]
fn days_from_monday_morning() {
    let received = vn(2025, 3, 3, 8, 0); // Monday, ordinary weeks follow
    assert_eq!(due(received, StatutoryTime::Days(1)), vn(2025, 3, 4, 8, 0));
    assert_eq!(due(received, StatutoryTime::Days(3)), vn(2025, 3, 6, 8, 0));
    assert_eq!(due(received, StatutoryTime::Days(5)), vn(2025, 3, 10, 8, 0));
    assert_eq!(
        due(received, StatutoryTime::Days(15)),
        vn(2025, 3, 24, 8, 0)
    );
}

#[test]
fn hours_from_monday_morning() {
    let received = vn(2025, 3, 3, 8, 0);
    // 3 h 30 before noon, 30 min after 13:30.
    assert_eq!(
        due(received, StatutoryTime::Hours(4)),
        vn(2025, 3, 3, 14, 0)
    );
    assert_eq!(due(received, StatutoryTime::Hours(8)), vn(2025, 3, 4, 8, 0));
    assert_eq!(due(received, StatutoryTime::Hours(0)), received);
}

#[test]
fn received_in_the_afternoon() {
    let received = vn(2025, 3, 5, 15, 45); // Wednesday
    assert_eq!(
        due(received, StatutoryTime::Hours(4)),
        vn(2025, 3, 6, 9, 45)
    );
    assert_eq!(
        due(received, StatutoryTime::Days(1)),
        vn(2025, 3, 6, 15, 45)
    );
    assert_eq!(
        due(received, StatutoryTime::Days(3)),
        vn(2025, 3, 10, 15, 45)
    );
}

#[test]
fn received_outside_office_hours_counts_from_the_next_period() {
    // Saturday: counting starts Monday 07:00, one day ends Monday 17:00.
    assert_eq!(
        due(vn(2025, 3, 8, 9, 0), StatutoryTime::Days(1)),
        vn(2025, 3, 10, 17, 0)
    );
    // During the noon break: 13:30–17:00 Monday, then 4 h 30 Tuesday morning.
    assert_eq!(
        due(vn(2025, 3, 3, 12, 15), StatutoryTime::Hours(8)),
        vn(2025, 3, 4, 11, 30)
    );
}

#[test]
fn across_tet_2025() {
    // Friday 24 Jan 10:00: 5 h that day, Tết from 25 Jan to 2 Feb, then 8 h a day from Monday
    // 3 Feb (a working day: the 5 Tết days were 27–31 Jan), 3 h left on Friday 7 Feb.
    assert_eq!(
        due(vn(2025, 1, 24, 10, 0), StatutoryTime::Days(5)),
        vn(2025, 2, 7, 10, 0)
    );
}

#[test]
fn fifteen_days_across_the_april_2024_swap() {
    // Thu 25 Apr 2024 09:00; off 27 Apr–1 May; Saturday 4 May worked: the 15th working day
    // after Thursday is Monday 20 May.
    assert_eq!(
        due(vn(2024, 4, 25, 9, 0), StatutoryTime::Days(15)),
        vn(2024, 5, 20, 9, 0)
    );
}

#[test]
fn statutory_time_to_duration() {
    let cal = Calendar::vietnam_default();
    assert_eq!(
        cal.to_duration(StatutoryTime::Days(1)),
        WorkingDuration::from_hours(8)
    );
    assert_eq!(
        cal.to_duration(StatutoryTime::Days(15)),
        WorkingDuration::from_hours(120)
    );
    assert_eq!(
        cal.to_duration(StatutoryTime::Hours(4)),
        WorkingDuration::from_minutes(240)
    );
    assert_eq!(
        cal.office_hours().day_length(),
        WorkingDuration::from_hours(8)
    );
}
