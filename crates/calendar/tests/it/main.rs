//! Integration tests of the `calendar` crate, one binary with a module per concern.

mod announced;
mod classify;
mod config;
mod due;
mod edges;
mod lunar;
mod props;
mod year_2026;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

/// A local date.
pub fn ymd(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

/// The instant of a local (UTC+7) wall-clock time.
pub fn vn(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    vn_s(y, mo, d, h, mi, 0)
}

/// The instant of a local (UTC+7) wall-clock time with seconds.
pub fn vn_s(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    calendar::vn_offset()
        .with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid local time")
        .with_timezone(&Utc)
}
