//! The report forms: II.06a, Biểu mẫu 3 §3, Biểu mẫu 7 §6, the 766 on-time progress.

use std::collections::BTreeMap;

use domain::{Action, Channel, Level, OnlineServiceLevel, Profile};
use stats::reports::{bieu_mau_3_section_3, bieu_mau_7_section_6, ii06a, on_time_progress};
use stats::{Aggregates, Metric, Rate, Totals};

use crate::support::*;

fn aggregates<'a>(lives: impl IntoIterator<Item = &'a Life>) -> Aggregates {
    let mut a = Aggregates::new();
    for life in lives {
        a.add_contribution(&life.contribution());
    }
    a
}

fn with(f: impl FnOnce(&mut Profile)) -> Profile {
    let mut p = profile();
    f(&mut p);
    p
}

/// March 2024: land carried over (received in February) and resolved late; land received
/// online and resolved early; justice received directly and still pending, overdue; justice
/// withdrawn.
fn march() -> Vec<Life> {
    let justice = with(|p| {
        p.sector = sector("justice");
        p.level = Level::Commune;
        p.channel = Channel::Direct;
    });
    let mut carried = received(vn(2024, 2, 26, 9, 0), false, None);
    carried.act(vn(2024, 3, 5, 9, 0), resolve());
    let mut early = received(vn(2024, 3, 4, 9, 0), false, None);
    early.act(vn(2024, 3, 5, 9, 0), resolve());
    let overdue = received_as(vn(2024, 3, 11, 9, 0), justice.clone(), false, None);
    let mut withdrawn = received_as(vn(2024, 3, 12, 9, 0), justice, false, None);
    withdrawn.act(
        vn(2024, 3, 13, 9, 0),
        Action::Withdraw {
            reason: text("applicant request"),
        },
    );
    vec![carried, early, overdue, withdrawn]
}

#[test]
fn ii06a_has_one_row_per_sector_that_adds_up() {
    let lives = march();
    let groups = aggregates(&lives).grouped(
        date(2024, 3, 1),
        date(2024, 4, 1),
        |_| true,
        |s| s.sector.as_str().to_owned(),
    );
    let rows = ii06a(&groups);
    assert_eq!(rows.len(), 2);
    let justice = &rows[0];
    assert_eq!(justice.group, "justice");
    assert_eq!(
        (
            justice.received_total,
            justice.received_online,
            justice.received_direct_and_postal,
            justice.carried_over
        ),
        (2, 0, 2, 0)
    );
    assert_eq!(
        (
            justice.pending_total,
            justice.pending_within_time,
            justice.pending_overdue,
            justice.ended_without_result
        ),
        (1, 0, 1, 1)
    );
    let land = &rows[1];
    assert_eq!(land.group, "land");
    assert_eq!(
        (
            land.received_total,
            land.received_online,
            land.received_direct_and_postal,
            land.carried_over
        ),
        (2, 1, 0, 1)
    );
    assert_eq!(
        (
            land.resolved_total,
            land.resolved_early,
            land.resolved_on_time,
            land.resolved_late
        ),
        (2, 1, 0, 1)
    );
    for row in &rows {
        assert_eq!(
            row.received_total,
            row.resolved_total + row.pending_total + row.ended_without_result
        );
        assert_eq!(
            row.received_total,
            row.received_online + row.received_direct_and_postal + row.carried_over
        );
        assert_eq!(
            row.resolved_total,
            row.resolved_early + row.resolved_on_time + row.resolved_late
        );
        assert_eq!(
            row.pending_total,
            row.pending_within_time + row.pending_overdue
        );
    }
}

#[test]
fn bieu_mau_3_lists_the_three_levels_with_an_absent_rate_for_an_unused_one() {
    let lives = march();
    let by_level =
        aggregates(&lives).grouped(date(2024, 3, 1), date(2024, 4, 1), |_| true, |s| s.level);
    let rows = bieu_mau_3_section_3(&by_level, |_| true);
    let codes: Vec<_> = rows.iter().map(|r| r.code).collect();
    assert_eq!(codes, ["3.1", "3.2", "3.3"]);
    let levels: Vec<_> = rows.iter().map(|r| r.level).collect();
    assert_eq!(levels, [Level::Province, Level::District, Level::Commune]);
    assert_eq!(rows[0].rate.value(), None);
    assert_eq!((rows[1].resolved, rows[1].early, rows[1].late), (2, 1, 1));
    assert_eq!(rows[1].rate, Rate::new(1, 2));
    // Communes: received, nothing resolved.
    assert_eq!(rows[2].resolved, 0);
    assert_eq!(rows[2].rate.value(), None);
}

#[test]
fn bieu_mau_7_gives_the_online_share_within_full_and_partial_online_procedures() {
    let mut lives = Vec::new();
    for (level, channel) in [
        (OnlineServiceLevel::FullOnline, Channel::Online),
        (OnlineServiceLevel::FullOnline, Channel::Online),
        (OnlineServiceLevel::FullOnline, Channel::Direct),
        (OnlineServiceLevel::PartialOnline, Channel::Postal),
        (OnlineServiceLevel::NotOnline, Channel::Direct),
    ] {
        let p = with(|p| {
            p.online_level = level;
            p.channel = channel;
        });
        lives.push(received_as(vn(2024, 3, 4, 9, 0), p, false, None));
    }
    let t = aggregates(&lives).totals(date(2024, 3, 1), date(2024, 4, 1), |_| true);
    let rows = bieu_mau_7_section_6(&t);
    assert_eq!(rows[0].code, "6.3");
    assert_eq!((rows[0].received, rows[0].received_online), (3, 2));
    assert_eq!(rows[0].rate, Rate::new(2, 3));
    assert_eq!(rows[1].code, "6.4");
    assert_eq!(rows[1].rate, Rate::new(0, 1));
}

#[test]
fn the_766_on_time_progress_counts_resolved_in_time_and_pending_within_time() {
    // Resolved early; resolved on time after two supplement requests (counts as overdue);
    // resolved late; pending within time; pending within time after two requests; pending
    // overdue.
    let mut lives = Vec::new();
    let mut early = received(vn(2024, 3, 4, 9, 0), false, None);
    early.act(vn(2024, 3, 5, 9, 0), resolve());
    lives.push(early);
    let mut twice = received(vn(2024, 3, 4, 9, 0), false, None);
    twice
        .act(vn(2024, 3, 5, 9, 0), request_supplement())
        .act(vn(2024, 3, 5, 10, 0), Action::ReceiveSupplement)
        .act(vn(2024, 3, 6, 9, 0), request_supplement())
        .act(vn(2024, 3, 6, 10, 0), Action::ReceiveSupplement);
    let due = twice.due();
    twice.act(due, resolve());
    lives.push(twice);
    let mut late = received(vn(2024, 3, 4, 9, 0), false, None);
    late.act(vn(2024, 3, 20, 9, 0), resolve());
    lives.push(late);
    lives.push(received(vn(2024, 3, 29, 9, 0), false, None));
    let mut pending_twice = received(vn(2024, 3, 25, 9, 0), false, None);
    pending_twice
        .act(vn(2024, 3, 26, 9, 0), request_supplement())
        .act(vn(2024, 3, 26, 10, 0), Action::ReceiveSupplement)
        .act(vn(2024, 3, 27, 9, 0), request_supplement());
    lives.push(pending_twice);
    lives.push(received(vn(2024, 3, 11, 9, 0), false, None));

    let t = aggregates(&lives).totals(date(2024, 3, 1), date(2024, 4, 1), |_| true);
    assert_eq!(t.flow(Metric::Resolved), 3);
    assert_eq!(t.end(Metric::Pending), 3);
    assert_eq!(t.end(Metric::PendingWithinTime), 2);
    assert_eq!(on_time_progress(&t), Rate::new(1 + 1, 3 + 3));
}

/// Two tiers since 1 July 2025 (Law on the Organisation of Local Government 2025): a level no
/// longer in use prints no empty row, but a level with figures (history before the reform) is
/// always listed.
#[test]
fn bieu_mau_3_leaves_out_an_abolished_level_only_when_it_is_empty() {
    let mut commune = profile();
    commune.level = Level::Commune;
    let mut life = received_as(vn(2025, 7, 7, 9, 0), commune, false, None);
    life.act(vn(2025, 7, 8, 9, 0), resolve());
    let t = aggregates([&life]);
    let by_level: BTreeMap<Level, Totals> = t
        .grouped(date(2025, 7, 1), date(2025, 8, 1), |_| true, |s| s.level)
        .into_iter()
        .collect();
    let two_tiers = |l: Level| l != Level::District;
    let codes: Vec<_> = bieu_mau_3_section_3(&by_level, two_tiers)
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, ["3.1", "3.3"]);

    // The district's history before the reform keeps its row.
    let mut before = received(vn(2025, 6, 2, 9, 0), false, None);
    before.act(vn(2025, 6, 3, 9, 0), resolve());
    let t = aggregates([&life, &before]);
    let by_level: BTreeMap<Level, Totals> = t
        .grouped(date(2025, 6, 1), date(2025, 8, 1), |_| true, |s| s.level)
        .into_iter()
        .collect();
    let rows = bieu_mau_3_section_3(&by_level, two_tiers);
    let codes: Vec<_> = rows.iter().map(|r| r.code).collect();
    assert_eq!(codes, ["3.1", "3.2", "3.3"]);
    assert_eq!(rows[1].resolved, 1);
}
