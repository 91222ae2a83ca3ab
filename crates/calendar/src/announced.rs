//! The Government's yearly announcements of days off, shipped as data
//! (`data/vn-announced.toml`, embedded at build time), and how they change the computed
//! holidays.

use std::sync::OnceLock;

use chrono::{Datelike, NaiveDate};
use serde::Deserialize;

use crate::dates;
use crate::holidays::{DayOff, HolidayKind, PublicHoliday, is_weekend};

/// The shipped announcements, as text.
pub(crate) const SHIPPED: &str = include_str!("../data/vn-announced.toml");

/// One announced holiday period.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Announcement {
    /// The year whose computed holidays it replaces.
    pub year: i32,
    /// Which computed holidays (by kind; their compensatory days included) it replaces.
    pub replaces: Vec<HolidayKind>,
    /// First day of the break.
    #[serde(deserialize_with = "dates::one")]
    pub first: NaiveDate,
    /// Last day of the break, inclusive.
    #[serde(deserialize_with = "dates::one")]
    pub last: NaiveDate,
    /// Make-up working days (ngày làm bù): weekend days worked in exchange for a bridge day
    /// of the break.
    #[serde(default)]
    pub make_up: Vec<MakeUp>,
    /// The decision it comes from.
    pub source: String,
}

/// A weekend day worked in exchange for a weekday of the break (a bridge day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MakeUp {
    /// The Saturday (or Sunday) worked.
    #[serde(deserialize_with = "dates::one")]
    pub work: NaiveDate,
    /// The weekday of the break it pays for.
    #[serde(deserialize_with = "dates::one")]
    pub instead_of: NaiveDate,
}

/// The shipped data: the announcements and the public holidays added to the law's list.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Shipped {
    pub announcement: Vec<Announcement>,
    #[serde(default)]
    pub public_holiday: Vec<PublicHoliday>,
}

impl Announcement {
    fn check(&self) -> Result<(), String> {
        let what = format!(
            "announcement {}..{} of {}",
            self.first, self.last, self.year
        );
        if self.first > self.last || (self.last - self.first).num_days() > 15 {
            return Err(format!("{what}: the break must be 1 to 16 days"));
        }
        if (self.first.year() - self.year).abs() > 1 || (self.last.year() - self.year).abs() > 1 {
            return Err(format!("{what}: dates too far from its year"));
        }
        if self.replaces.is_empty()
            || self
                .replaces
                .iter()
                .any(|k| matches!(k, HolidayKind::Compensatory | HolidayKind::Announced))
        {
            return Err(format!("{what}: `replaces` must name statutory holidays"));
        }
        for m in &self.make_up {
            if !is_weekend(m.work) || (self.first..=self.last).contains(&m.work) {
                return Err(format!(
                    "{what}: make-up day {} must be a weekend day outside the break",
                    m.work
                ));
            }
            if is_weekend(m.instead_of) || !(self.first..=self.last).contains(&m.instead_of) {
                return Err(format!(
                    "{what}: make-up day {} must pay for a weekday of the break, not {}",
                    m.work, m.instead_of
                ));
            }
        }
        if self.source.trim().is_empty() {
            return Err(format!("{what}: the source is missing"));
        }
        Ok(())
    }

    /// The weekdays of the break.
    pub fn weekdays_off(&self) -> impl Iterator<Item = NaiveDate> + '_ {
        self.first
            .iter_days()
            .take_while(|d| *d <= self.last)
            .filter(|d| !is_weekend(*d))
    }
}

/// Parses and checks a file of announcements.
pub(crate) fn parse(text: &str) -> Result<Shipped, String> {
    let file: Shipped = toml::from_str(text).map_err(|e| e.to_string())?;
    for a in &file.announcement {
        a.check()?;
    }
    for h in &file.public_holiday {
        h.check()?;
    }
    Ok(file)
}

/// The shipped data, parsed once. The file is part of the source and checked by the tests, so
/// a failure here is a build defect.
pub(crate) fn shipped() -> &'static Shipped {
    static PARSED: OnceLock<Shipped> = OnceLock::new();
    PARSED.get_or_init(|| {
        parse(SHIPPED).unwrap_or_else(|e| panic!("data/vn-announced.toml is invalid: {e}"))
    })
}

/// Applies the announcements to the computed weekdays off of `year`. Returns the weekdays off
/// (unsorted) and the weekend days of `year` that become working days.
pub(crate) fn apply(
    year: i32,
    computed: Vec<DayOff>,
    announcements: &[Announcement],
) -> (Vec<DayOff>, Vec<NaiveDate>) {
    let computed_kind = |d: NaiveDate| computed.iter().find(|c| c.date == d).map(|c| c.kind);
    let mut off: Vec<DayOff> = computed
        .iter()
        .copied()
        .filter(|c| {
            !announcements
                .iter()
                .any(|a| a.year == year && a.replaces.contains(&c.origin))
        })
        .collect();
    let mut working = Vec::new();
    for a in announcements {
        for d in a.weekdays_off().filter(|d| d.year() == year) {
            if off.iter().all(|o| o.date != d) {
                off.push(DayOff {
                    date: d,
                    kind: computed_kind(d).unwrap_or(HolidayKind::Announced),
                    // Settled by an announcement: no other announcement removes it.
                    origin: HolidayKind::Announced,
                });
            }
        }
        working.extend(
            a.make_up
                .iter()
                .map(|m| m.work)
                .filter(|d| d.year() == year),
        );
    }
    (off, working)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_parses_and_checks() {
        let a = parse(SHIPPED).unwrap().announcement;
        assert!(a.len() >= 16);
        for year in 2023..=2026 {
            assert!(a.iter().any(|x| x.year == year), "{year}");
        }
    }

    #[test]
    fn bad_files_are_rejected() {
        let bad_working = r#"
            [[announcement]]
            year = 2024
            replaces = ["labour_day"]
            first = "2024-04-27"
            last = "2024-05-01"
            make_up = [{ work = "2024-05-06", instead_of = "2024-04-29" }]
            source = "x"
        "#;
        assert!(parse(bad_working).unwrap_err().contains("weekend"));
        let outside = bad_working
            .replace("2024-05-06", "2024-05-04")
            .replace("2024-04-29", "2024-05-03");
        assert!(
            parse(&outside)
                .unwrap_err()
                .contains("weekday of the break")
        );
        assert!(parse(&bad_working.replace("2024-05-06", "2024-05-04")).is_ok());
        let reversed = bad_working
            .replace("2024-05-06", "2024-05-04")
            .replace("first = \"2024-04-27\"", "first = \"2024-05-02\"");
        assert!(parse(&reversed).is_err());
        let unknown = bad_working.replace("source", "sauce");
        assert!(parse(&unknown).is_err());
    }
}
