//! Early / on time / late, judged on local dates.

use calendar::{Timeliness, classify};
use chrono::{TimeZone, Utc};

use crate::{vn, vn_s};

#[test]
fn on_the_due_date() {
    let due = vn(2025, 3, 4, 8, 0); // Tuesday 08:00
    assert_eq!(classify(vn(2025, 3, 4, 7, 59), due), Timeliness::OnTime);
    assert_eq!(classify(due, due), Timeliness::OnTime);
    assert_eq!(classify(vn_s(2025, 3, 4, 8, 0, 1), due), Timeliness::Late);
    assert_eq!(classify(vn(2025, 3, 4, 16, 0), due), Timeliness::Late);
}

#[test]
fn earlier_and_later_dates() {
    let due = vn(2025, 3, 4, 16, 0);
    assert_eq!(classify(vn(2025, 3, 3, 16, 30), due), Timeliness::Early);
    assert_eq!(classify(vn(2025, 2, 1, 9, 0), due), Timeliness::Early);
    assert_eq!(classify(vn(2025, 3, 5, 7, 0), due), Timeliness::Late);
}

#[test]
fn local_midnight_separates_early_from_on_time() {
    let due = vn(2025, 3, 4, 8, 0);
    assert_eq!(
        classify(vn_s(2025, 3, 3, 23, 59, 59), due),
        Timeliness::Early
    );
    assert_eq!(classify(vn(2025, 3, 4, 0, 0), due), Timeliness::OnTime);
    // 06:00 local on the due date is still the previous day in UTC: local dates decide.
    let resolved = Utc.with_ymd_and_hms(2025, 3, 3, 23, 0, 0).unwrap();
    assert_eq!(classify(resolved, due), Timeliness::OnTime);
}

#[test]
fn serialized_in_snake_case() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct W {
        t: Timeliness,
    }
    let value = toml::Value::try_from(W {
        t: Timeliness::OnTime,
    })
    .unwrap();
    assert_eq!(
        value,
        toml::from_str::<toml::Value>(r#"t = "on_time""#).unwrap()
    );
    let back: W = toml::from_str(r#"t = "early""#).unwrap();
    assert_eq!(back.t, Timeliness::Early);
}
