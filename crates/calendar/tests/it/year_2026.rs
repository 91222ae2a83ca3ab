//! Every 2026 case of the calendar for state bodies, one table row each, with its source
//! (shared/DOMAIN.md "Rules in force (2025–2026)"): Government Office letter 9859/VPCP-KGVX
//! and Ministry of Home Affairs notice 9441/TB-BNV for 2026; the Labour Code 2019 (art. 111(3)
//! compensatory days, art. 112 holidays) for the days computed, not announced. The rows check
//! the day predicate, the reason given, the make-up days with the bridge day they pay for, the
//! source the shipped data cites, and a due time across each break.

use calendar::{Calendar, CalendarConfig, HolidayKind, MakeUpDay, PublicHoliday, StatutoryTime};
use chrono::{Datelike, NaiveDate};

use crate::{vn, ymd};

/// One day of 2026 (or early 2027): working or not, why, and what the shipped data cites.
struct Row {
    date: NaiveDate,
    working: bool,
    /// For a weekday off: the kind `holidays()` gives.
    kind: Option<HolidayKind>,
    /// A fragment the shipped data's source must contain (`None`: decided by the law alone).
    source: Option<&'static str>,
    why: &'static str,
}

fn row(
    date: NaiveDate,
    working: bool,
    kind: Option<HolidayKind>,
    source: Option<&'static str>,
    why: &'static str,
) -> Row {
    Row {
        date,
        working,
        kind,
        source,
        why,
    }
}

fn check(rows: &[Row]) {
    let cal = Calendar::vietnam_default();
    for r in rows {
        assert_eq!(
            cal.is_working_day(r.date),
            r.working,
            "{} ({}): {}",
            r.date,
            r.date.weekday(),
            r.why
        );
        let listed = cal
            .holidays(r.date.year())
            .into_iter()
            .find(|h| h.date == r.date)
            .map(|h| h.kind);
        assert_eq!(listed, r.kind, "{}: {}", r.date, r.why);
        match r.source {
            Some(fragment) => {
                let source = cal.source_of(r.date).unwrap_or_default();
                assert!(
                    source.contains(fragment),
                    "{}: the data cites {source:?}, not {fragment}",
                    r.date
                );
            }
            None => assert_eq!(cal.source_of(r.date), None, "{}: {}", r.date, r.why),
        }
    }
}

use HolidayKind::*;

#[test]
fn tet_binh_ngo_16_to_20_february_with_the_weekends_14_to_22() {
    // Thông báo 9441/TB-BNV and Văn bản 9859/VPCP-KGVX: Mon 16 (29 tháng Chạp) to Fri 20 Feb
    // (mùng 4), nine days off with the weekends around it; no make-up day.
    let src = Some("9441/TB-BNV");
    check(&[
        row(
            ymd(2026, 2, 13),
            true,
            None,
            None,
            "Friday before Tết: worked",
        ),
        row(
            ymd(2026, 2, 14),
            false,
            None,
            src,
            "Saturday, start of the break",
        ),
        row(ymd(2026, 2, 15), false, None, src, "Sunday"),
        row(
            ymd(2026, 2, 16),
            false,
            Some(LunarNewYear),
            src,
            "29 tháng Chạp",
        ),
        row(ymd(2026, 2, 17), false, Some(LunarNewYear), src, "mùng 1"),
        row(ymd(2026, 2, 18), false, Some(LunarNewYear), src, "mùng 2"),
        row(ymd(2026, 2, 19), false, Some(LunarNewYear), src, "mùng 3"),
        row(ymd(2026, 2, 20), false, Some(LunarNewYear), src, "mùng 4"),
        row(ymd(2026, 2, 21), false, None, src, "Saturday"),
        row(
            ymd(2026, 2, 22),
            false,
            None,
            src,
            "Sunday, end of the break",
        ),
        row(
            ymd(2026, 2, 23),
            true,
            None,
            None,
            "Monday after Tết: worked",
        ),
    ]);
    assert!(
        Calendar::vietnam_default()
            .source_of(ymd(2026, 2, 16))
            .unwrap()
            .contains("9859/VPCP-KGVX")
    );
    // One working day from Friday 13 Feb 09:00 is Monday 23 Feb 09:00.
    assert_eq!(
        Calendar::vietnam_default().due_time(vn(2026, 2, 13, 9, 0), StatutoryTime::Days(1)),
        vn(2026, 2, 23, 9, 0)
    );
}

#[test]
fn hung_kings_on_sunday_26_april_is_compensated_on_monday_27() {
    // Computed, not announced: lunar 10/3 Bính Ngọ is Sunday 26 Apr 2026; Labour Code art.
    // 111(3) moves it to the next working day, Monday 27 Apr.
    let src = Some("art. 111(3)");
    check(&[
        row(ymd(2026, 4, 24), true, None, None, "Friday"),
        row(
            ymd(2026, 4, 26),
            false,
            None,
            src,
            "Hùng Kings' day on a Sunday",
        ),
        row(
            ymd(2026, 4, 27),
            false,
            Some(Compensatory),
            src,
            "compensatory day",
        ),
        row(ymd(2026, 4, 28), true, None, None, "Tuesday: worked"),
    ]);
    assert_eq!(
        calendar::lunar::lunar_to_solar(2026, 3, 10, false),
        Some(ymd(2026, 4, 26))
    );
}

#[test]
fn reunification_and_labour_day_thursday_30_april_and_friday_1_may() {
    // Computed, not announced: Labour Code art. 112, 30 Apr (Thu) and 1 May (Fri) join the
    // weekend; no swap.
    let src = Some("art. 112");
    check(&[
        row(ymd(2026, 4, 29), true, None, None, "Wednesday"),
        row(
            ymd(2026, 4, 30),
            false,
            Some(ReunificationDay),
            src,
            "30 April",
        ),
        row(ymd(2026, 5, 1), false, Some(LabourDay), src, "1 May"),
        row(ymd(2026, 5, 2), false, None, src, "Saturday"),
        row(ymd(2026, 5, 3), false, None, src, "Sunday"),
        row(ymd(2026, 5, 4), true, None, None, "Monday: worked"),
    ]);
    // Hùng Kings' Monday and the two holidays in one week: four working days from
    // Friday 24 Apr 09:00 (to Tue 28, Wed 29, Mon 4, Tue 5 at 09:00) end on Tuesday 5 May.
    assert_eq!(
        Calendar::vietnam_default().due_time(vn(2026, 4, 24, 9, 0), StatutoryTime::Days(4)),
        vn(2026, 5, 5, 9, 0)
    );
}

#[test]
fn national_day_29_august_to_2_september_with_monday_31_swapped_for_saturday_22() {
    // Văn bản 9859/VPCP-KGVX (with the Ministry of Home Affairs' proposal): holidays Tue 1 and
    // Wed 2 Sep; Monday 31 Aug off in exchange for Saturday 22 Aug worked; break 29 Aug–2 Sep.
    let src = Some("9859/VPCP-KGVX");
    check(&[
        row(ymd(2026, 8, 21), true, None, None, "Friday"),
        row(
            ymd(2026, 8, 22),
            true,
            None,
            src,
            "Saturday worked (make-up day)",
        ),
        row(ymd(2026, 8, 23), false, None, None, "Sunday"),
        row(
            ymd(2026, 8, 28),
            true,
            None,
            None,
            "Friday before the break",
        ),
        row(
            ymd(2026, 8, 29),
            false,
            None,
            src,
            "Saturday, start of the break",
        ),
        row(ymd(2026, 8, 30), false, None, src, "Sunday"),
        row(
            ymd(2026, 8, 31),
            false,
            Some(Announced),
            src,
            "Monday swapped (bridge day)",
        ),
        row(
            ymd(2026, 9, 1),
            false,
            Some(NationalDay),
            src,
            "the day next to 2 September",
        ),
        row(
            ymd(2026, 9, 2),
            false,
            Some(NationalDay),
            src,
            "National Day",
        ),
        row(ymd(2026, 9, 3), true, None, None, "Thursday: worked"),
    ]);
    let cal = Calendar::vietnam_default();
    // Friday 21 Aug 16:00 plus 2 working hours: 1 h on Friday, 1 h on Saturday 22 from 07:00.
    assert_eq!(
        cal.due_time(vn(2026, 8, 21, 16, 0), StatutoryTime::Hours(2)),
        vn(2026, 8, 22, 8, 0)
    );
    // Friday 28 Aug 09:00 plus one working day: Thursday 3 Sep 09:00.
    assert_eq!(
        cal.due_time(vn(2026, 8, 28, 9, 0), StatutoryTime::Days(1)),
        vn(2026, 9, 3, 9, 0)
    );
}

#[test]
fn the_make_up_days_of_2026_are_entries_with_their_bridge_day_and_source() {
    let cal = Calendar::vietnam_default();
    let days = cal.make_up_days(2026);
    assert_eq!(days.len(), 2, "{days:?}");
    // New Year: Friday 2 Jan off, Saturday 10 Jan worked (Văn bản 12729/VPCP-KGVX).
    assert_eq!(
        (days[0].date, days[0].instead_of),
        (ymd(2026, 1, 10), Some(ymd(2026, 1, 2)))
    );
    assert!(days[0].source.unwrap().contains("12729/VPCP-KGVX"));
    // National Day: Monday 31 Aug off, Saturday 22 Aug worked (Văn bản 9859/VPCP-KGVX).
    assert_eq!(
        (days[1].date, days[1].instead_of),
        (ymd(2026, 8, 22), Some(ymd(2026, 8, 31)))
    );
    assert!(days[1].source.unwrap().contains("9859/VPCP-KGVX"));
    // 2025: Saturday 26 Apr for Friday 2 May (Văn bản 8726/VPCP-KGVX, 6150/TB-BLĐTBXH).
    let y2025 = cal.make_up_days(2025);
    assert_eq!(
        y2025,
        vec![MakeUpDay {
            date: ymd(2025, 4, 26),
            instead_of: Some(ymd(2025, 5, 2)),
            source: cal.source_of(ymd(2025, 4, 26)),
        }]
    );
    assert!(y2025[0].source.unwrap().contains("6150/TB-BLĐTBXH"));
    // A Saturday a province opens by configuration is a make-up day with no announcement.
    let province = Calendar::new(&CalendarConfig {
        working_days: vec![ymd(2026, 3, 7)],
        ..CalendarConfig::default()
    })
    .unwrap();
    assert_eq!(
        province
            .make_up_days(2026)
            .into_iter()
            .find(|m| m.date == ymd(2026, 3, 7)),
        Some(MakeUpDay {
            date: ymd(2026, 3, 7),
            instead_of: None,
            source: None,
        })
    );
}

#[test]
fn year_end_2026_and_tet_2027_day_1_on_saturday_6_february() {
    // Computed, not announced (no 2027 letter yet): Tết Đinh Mùi day 1 is Saturday 6 Feb 2027
    // (the lunar calendar, UTC+7); the law's default is the last day of the year and mùng 1–4,
    // Fri 5 to Tue 9 Feb, the weekend days compensated on Wed 10 and Thu 11 (Labour Code art.
    // 111(3), 112).
    assert_eq!(calendar::lunar::lunar_new_year(2027), ymd(2027, 2, 6));
    check(&[
        row(ymd(2026, 12, 31), true, None, None, "31 December is worked"),
        row(
            ymd(2027, 1, 1),
            false,
            Some(NewYear),
            None,
            "New Year, a Friday",
        ),
        row(ymd(2027, 2, 4), true, None, None, "Thursday before Tết"),
        row(
            ymd(2027, 2, 5),
            false,
            Some(LunarNewYear),
            None,
            "last day of Bính Ngọ",
        ),
        row(ymd(2027, 2, 6), false, None, None, "mùng 1, a Saturday"),
        row(ymd(2027, 2, 8), false, Some(LunarNewYear), None, "mùng 3"),
        row(ymd(2027, 2, 9), false, Some(LunarNewYear), None, "mùng 4"),
        row(
            ymd(2027, 2, 10),
            false,
            Some(Compensatory),
            None,
            "for mùng 1 (Saturday)",
        ),
        row(
            ymd(2027, 2, 11),
            false,
            Some(Compensatory),
            None,
            "for mùng 2 (Sunday)",
        ),
        row(ymd(2027, 2, 12), true, None, None, "Friday: worked"),
    ]);
    // Thursday 31 Dec 2026 16:00 plus 2 working hours: Monday 4 Jan 2027 08:00.
    assert_eq!(
        Calendar::vietnam_default().due_time(vn(2026, 12, 31, 16, 0), StatutoryTime::Hours(2)),
        vn(2027, 1, 4, 8, 0)
    );
}

#[test]
fn a_new_public_holiday_is_added_by_configuration_from_its_effective_date() {
    // 24 November, Vietnam Culture Day, proposed for Labour Code art. 112 (not in force as
    // far as is known): an administrator adds it to the province's calendar configuration.
    let config = CalendarConfig::from_toml(
        r#"
        [[public_holidays]]
        name = "vietnam_culture_day"
        month = 11
        day = 24
        effective_from = 2027-01-01
        source = "Labour Code art. 112 as amended (proposal, for the test)"
        "#,
    )
    .unwrap();
    assert_eq!(
        config.public_holidays,
        vec![PublicHoliday {
            name: "vietnam_culture_day".into(),
            month: 11,
            day: 24,
            effective_from: ymd(2027, 1, 1),
            source: "Labour Code art. 112 as amended (proposal, for the test)".into(),
        }]
    );
    let cal = Calendar::new(&config).unwrap();
    // Tuesday 24 Nov 2026: before it takes effect, worked.
    assert!(cal.is_working_day(ymd(2026, 11, 24)));
    // Wednesday 24 Nov 2027: off, with its source.
    assert!(!cal.is_working_day(ymd(2027, 11, 24)));
    assert!(
        cal.holidays(2027)
            .iter()
            .any(|h| h.date == ymd(2027, 11, 24) && h.kind == HolidayKind::Added)
    );
    assert!(
        cal.source_of(ymd(2027, 11, 24))
            .unwrap()
            .contains("art. 112")
    );
    // Saturday 24 Nov 2029: compensated on Monday 26 Nov.
    assert!(!cal.is_working_day(ymd(2029, 11, 26)));
    assert!(Calendar::vietnam_default().is_working_day(ymd(2029, 11, 26)));
    // The national calendar is unchanged.
    assert!(Calendar::vietnam_default().is_working_day(ymd(2027, 11, 24)));

    // A rule that cannot be observed every year, or without a source, is refused.
    for bad in [
        "month = 2\nday = 29\nsource = \"x\"",
        "month = 11\nday = 24\nsource = \" \"",
    ] {
        let text =
            format!("[[public_holidays]]\nname = \"x\"\neffective_from = 2027-01-01\n{bad}\n");
        let config = CalendarConfig::from_toml(&text).unwrap();
        assert!(Calendar::new(&config).is_err(), "{bad}");
    }
}
