//! The report forms as plain data rows (the projection lays them out as tables); the 766
//! scorecard in points is [`crate::scorecard`].

use std::collections::BTreeMap;

use domain::{Level, OnlineServiceLevel};
use serde::Serialize;

use crate::indicators::{Rate, indicators};
use crate::metric::Metric;
use crate::totals::Totals;

/// One row of form II.06a (Circular 01/2020/TT-VPCP) for a group (a sector, a level, an
/// agency…).
///
/// The form's "received, total" is the number of dossiers to handle in the period: received in
/// the period plus carried over, as the provinces print it (Quảng Bình H1 2021: 599,827 =
/// 5,862 online + 566,460 direct/postal + 27,505 carried over). The form has no column for
/// dossiers withdrawn or stopped; [`Ii06aRow::ended_without_result`] is added so that the row
/// adds up: `received_total = resolved_total + pending_total + ended_without_result`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ii06aRow<K> {
    pub group: K,
    /// Received in the period + carried over.
    pub received_total: i64,
    /// Received online in the period.
    pub received_online: i64,
    /// Received at the counter or by post in the period.
    pub received_direct_and_postal: i64,
    /// Pending at the period start.
    pub carried_over: i64,
    pub resolved_total: i64,
    pub resolved_early: i64,
    pub resolved_on_time: i64,
    pub resolved_late: i64,
    /// Pending at the period end.
    pub pending_total: i64,
    pub pending_within_time: i64,
    pub pending_overdue: i64,
    /// Withdrawn or stopped in the period (not a column of the printed form).
    pub ended_without_result: i64,
}

impl<K> Ii06aRow<K> {
    /// The row of one group from its totals.
    pub fn new(group: K, t: &Totals) -> Self {
        let i = indicators(t);
        Ii06aRow {
            group,
            received_total: i.received.with_carried_over(),
            received_online: i.received.online,
            received_direct_and_postal: i.received.direct_and_postal(),
            carried_over: i.received.carried_over,
            resolved_total: i.resolved.total,
            resolved_early: i.resolved.early,
            resolved_on_time: i.resolved.on_time,
            resolved_late: i.resolved.late,
            pending_total: i.pending.total,
            pending_within_time: i.pending.within_time,
            pending_overdue: i.pending.overdue,
            ended_without_result: i.ended.total,
        }
    }
}

/// Form II.06a: one row per group, in the groups' order.
pub fn ii06a<K: Clone>(groups: &BTreeMap<K, Totals>) -> Vec<Ii06aRow<K>> {
    groups
        .iter()
        .map(|(k, t)| Ii06aRow::new(k.clone(), t))
        .collect()
}

/// One line of Biểu mẫu 3, section 3: the on-time rate of a level with its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OnTimeRow {
    /// "3.1" provincial agencies, "3.2" districts, "3.3" communes.
    pub code: &'static str,
    pub level: Level,
    pub resolved: i64,
    pub early: i64,
    pub on_time: i64,
    pub late: i64,
    /// (early + on time) / resolved; absent for a level with nothing resolved (or unused).
    pub rate: Rate,
}

/// Biểu mẫu 3, section 3: the three levels in order; a level with no totals (unused, or
/// filtered out) has zero counts and an absent rate, and is left out when `in_use` says the
/// level no longer exists (a province with two tiers since 1 July 2025 prints no empty
/// district row). A level with figures is always listed.
pub fn bieu_mau_3_section_3(
    by_level: &BTreeMap<Level, Totals>,
    in_use: impl Fn(Level) -> bool,
) -> Vec<OnTimeRow> {
    let row = |code: &'static str, level: Level| {
        let (early, on_time, late, resolved) = by_level.get(&level).map_or((0, 0, 0, 0), |t| {
            (
                t.flow_count(Metric::ResolvedEarly),
                t.flow_count(Metric::ResolvedOnTime),
                t.flow_count(Metric::ResolvedLate),
                t.flow_count(Metric::Resolved),
            )
        });
        OnTimeRow {
            code,
            level,
            resolved,
            early,
            on_time,
            late,
            rate: Rate::new(early + on_time, resolved),
        }
    };
    [
        ("3.1", Level::Province),
        ("3.2", Level::District),
        ("3.3", Level::Commune),
    ]
    .into_iter()
    .filter(|(_, level)| by_level.contains_key(level) || in_use(*level))
    .map(|(code, level)| row(code, level))
    .collect()
}

/// One line of Biểu mẫu 7, section 6: the share of dossiers submitted online among those of
/// the procedures with one online service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OnlineShareRow {
    /// "6.3" full-online procedures, "6.4" partial-online procedures.
    pub code: &'static str,
    pub online_level: OnlineServiceLevel,
    /// Received in the period for such procedures.
    pub received: i64,
    /// Of those, received online.
    pub received_online: i64,
    /// received_online / received.
    pub rate: Rate,
}

/// Biểu mẫu 7, section 6, lines 6.3 and 6.4.
pub fn bieu_mau_7_section_6(t: &Totals) -> [OnlineShareRow; 2] {
    let row = |code, online_level, all: Metric, online: Metric| OnlineShareRow {
        code,
        online_level,
        received: t.flow_count(all),
        received_online: t.flow_count(online),
        rate: Rate::new(t.flow_count(online), t.flow_count(all)),
    };
    [
        row(
            "6.3",
            OnlineServiceLevel::FullOnline,
            Metric::ReceivedFullOnline,
            Metric::ReceivedFullOnlineOnline,
        ),
        row(
            "6.4",
            OnlineServiceLevel::PartialOnline,
            Metric::ReceivedPartialOnline,
            Metric::ReceivedPartialOnlineOnline,
        ),
    ]
}

/// Decision 766 item 2.1: (resolved in the period early or on time + pending at the period end
/// within time, both excluding dossiers whose supplement was requested more than once) /
/// (resolved in the period + pending at the period end). A dossier with two or more
/// supplement requests counts as overdue: in the denominator, not in the numerator.
pub fn on_time_progress(t: &Totals) -> Rate {
    Rate::new(
        t.flow_count(Metric::Resolved766InTime) + t.end_count(Metric::Pending766WithinTime),
        t.flow_count(Metric::Resolved) + t.end_count(Metric::Pending),
    )
}
