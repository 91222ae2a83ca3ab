//! Provincial configuration: TOML, office hours, extra days off and working days.

use calendar::{
    Calendar, CalendarConfig, CalendarError, HolidayKind, StatutoryTime, WorkingDuration,
};

use crate::{vn, ymd};

#[test]
fn empty_config_is_the_national_calendar() {
    let config = CalendarConfig::from_toml("").unwrap();
    assert_eq!(config, CalendarConfig::default());
    assert!(config.use_official_overrides);
    let cal = Calendar::new(&config).unwrap();
    let national = Calendar::vietnam_default();
    for year in 2020..=2030 {
        assert_eq!(cal.holidays(year), national.holidays(year), "{year}");
    }
}

#[test]
fn full_config_from_toml() {
    let config = CalendarConfig::from_toml(
        r#"
        office_hours = [["07:30", "11:30"], ["13:00", "17:00"]]
        days_off = ["2025-03-07", 2025-03-10]   # quoted or bare TOML dates
        working_days = [2025-03-08, "2025-04-07"]
        use_official_overrides = true
        "#,
    )
    .unwrap();
    assert_eq!(config.days_off, vec![ymd(2025, 3, 7), ymd(2025, 3, 10)]);
    let cal = Calendar::new(&config).unwrap();
    assert_eq!(
        cal.office_hours().day_length(),
        WorkingDuration::from_hours(8)
    );
    // Extra days off are listed as announced.
    assert!(!cal.is_working_day(ymd(2025, 3, 7)));
    assert!(
        cal.holidays(2025)
            .iter()
            .any(|h| h.date == ymd(2025, 3, 10) && h.kind == HolidayKind::Announced)
    );
    // A Saturday made a working day, and a holiday (Hùng Kings 2025) worked by the province.
    assert!(cal.is_working_day(ymd(2025, 3, 8)));
    assert!(cal.is_working_day(ymd(2025, 4, 7)));
    assert!(cal.holidays(2025).iter().all(|h| h.date != ymd(2025, 4, 7)));
    assert_eq!(
        cal.working_weekend_days(2025),
        vec![ymd(2025, 3, 8), ymd(2025, 4, 26)]
    );
    // Thursday 6 March 16:00 plus 2 h: 1 h Thursday, Friday and Monday off, Saturday worked
    // from 07:30.
    assert_eq!(
        cal.due_time(vn(2025, 3, 6, 16, 0), StatutoryTime::Hours(2)),
        vn(2025, 3, 8, 8, 30)
    );
}

#[test]
fn office_hours_change_the_day_length() {
    let config = CalendarConfig {
        office_hours: Some(vec![
            ("08:00".into(), "12:00".into()),
            ("13:00".into(), "16:00".into()),
        ]),
        ..CalendarConfig::default()
    };
    let cal = Calendar::new(&config).unwrap();
    assert_eq!(
        cal.to_duration(StatutoryTime::Days(1)),
        WorkingDuration::from_hours(7)
    );
    // From opening, one 7-hour day ends at closing; from 09:00, at 09:00 the next day.
    assert_eq!(
        cal.due_time(vn(2025, 3, 3, 8, 0), StatutoryTime::Days(1)),
        vn(2025, 3, 3, 16, 0)
    );
    assert_eq!(
        cal.due_time(vn(2025, 3, 3, 9, 0), StatutoryTime::Days(1)),
        vn(2025, 3, 4, 9, 0)
    );
    assert_eq!(
        cal.due_time(vn(2025, 3, 3, 8, 0), StatutoryTime::Hours(4)),
        vn(2025, 3, 3, 12, 0)
    );
    assert_eq!(
        cal.due_time(vn(2025, 3, 3, 7, 0), StatutoryTime::Hours(0)),
        vn(2025, 3, 3, 8, 0)
    );
}

#[test]
fn working_days_win_over_shipped_announcements() {
    // A province that works the swapped Monday 29 April 2024 (and so not Saturday 4 May).
    let config = CalendarConfig::from_toml(
        r#"
        working_days = ["2024-04-29"]
        days_off = ["2024-05-04"]
        "#,
    )
    .unwrap();
    let cal = Calendar::new(&config).unwrap();
    assert!(cal.is_working_day(ymd(2024, 4, 29)));
    assert!(!cal.is_working_day(ymd(2024, 5, 4)));
    assert!(cal.working_weekend_days(2024).is_empty());
}

#[test]
fn invalid_configs_are_refused() {
    let conflict = CalendarConfig {
        days_off: vec![ymd(2025, 3, 7)],
        working_days: vec![ymd(2025, 3, 7)],
        ..CalendarConfig::default()
    };
    assert_eq!(
        Calendar::new(&conflict).unwrap_err(),
        CalendarError::ConflictingOverride(ymd(2025, 3, 7))
    );
    let bad_time = CalendarConfig::from_toml(r#"office_hours = [["7h", "11:30"]]"#).unwrap();
    assert_eq!(
        Calendar::new(&bad_time).unwrap_err(),
        CalendarError::InvalidTime("7h".into())
    );
    let overlapping =
        CalendarConfig::from_toml(r#"office_hours = [["07:00", "12:00"], ["11:00", "17:00"]]"#)
            .unwrap();
    assert!(matches!(
        Calendar::new(&overlapping),
        Err(CalendarError::OverlappingPeriods(_))
    ));
    let empty = CalendarConfig::from_toml("office_hours = []").unwrap();
    assert_eq!(
        Calendar::new(&empty).unwrap_err(),
        CalendarError::NoOfficePeriod
    );
    assert!(matches!(
        CalendarConfig::from_toml("days_of = []"),
        Err(CalendarError::InvalidConfig(_))
    ));
    assert!(matches!(
        CalendarConfig::from_toml(r#"days_off = ["2025-02-30"]"#),
        Err(CalendarError::InvalidConfig(_))
    ));
}

#[test]
fn serialized_forms() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct W {
        time: StatutoryTime,
        paused: WorkingDuration,
    }
    let parsed: W = toml::from_str("time = { days = 15 }\npaused = 90").unwrap();
    assert_eq!(
        parsed,
        W {
            time: StatutoryTime::Days(15),
            paused: WorkingDuration::from_minutes(90)
        }
    );
    let hours: W = toml::from_str("time = { hours = 4 }\npaused = 0").unwrap();
    assert_eq!(hours.time, StatutoryTime::Hours(4));
    assert_eq!(
        toml::Value::try_from(&parsed).unwrap(),
        toml::from_str::<toml::Value>("time = { days = 15 }\npaused = 90").unwrap()
    );
    // The config round-trips.
    let config = CalendarConfig {
        days_off: vec![ymd(2025, 3, 7)],
        ..CalendarConfig::default()
    };
    let value = toml::Value::try_from(&config).unwrap();
    let back: CalendarConfig = value.try_into().unwrap();
    assert_eq!(back, config);
}
