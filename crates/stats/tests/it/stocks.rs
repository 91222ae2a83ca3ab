//! Stock metrics: pending, within time, overdue at the start of each day, stored as deltas.

use domain::{Action, SupplementPolicy};
use stats::{Metric, indicators};

use crate::support::*;

const PENDING_WITHIN: [i128; 4] = [1, 1, 0, 1];
const PENDING_OVERDUE: [i128; 4] = [1, 0, 1, 0];
const NOT_PENDING: [i128; 4] = [0, 0, 0, 0];

#[test]
fn a_dossier_is_pending_from_the_first_day_start_after_its_reception() {
    let c = received(vn(2024, 3, 4, 9, 0), false, None).contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 4)), NOT_PENDING);
    assert_eq!(stocks_at(&c, date(2024, 3, 5)), PENDING_WITHIN);
}

#[test]
fn received_exactly_at_midnight_is_received_that_day_not_carried_into_it() {
    let life = received(vn(2024, 3, 4, 0, 0), false, None);
    let c = life.contribution();
    assert_eq!(c.get(date(2024, 3, 4), Metric::Received), 1);
    assert_eq!(stocks_at(&c, date(2024, 3, 4)), NOT_PENDING);
    let i = indicators(&totals_of([&life], date(2024, 3, 4), date(2024, 3, 5)));
    assert_eq!(i.received.carried_over, 0);
    assert_eq!(i.received.total, 1);
    assert_eq!(i.pending.total, 1);
    assert!(i.check().is_empty());
}

#[test]
fn resolved_exactly_at_midnight_is_still_pending_at_that_instant() {
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    life.act(vn(2024, 3, 6, 0, 0), resolve());
    let c = life.contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 6)), PENDING_WITHIN);
    assert_eq!(stocks_at(&c, date(2024, 3, 7)), NOT_PENDING);
    assert_eq!(c.get(date(2024, 3, 6), Metric::Resolved), 1);
    let i = indicators(&totals_of([&life], date(2024, 3, 6), date(2024, 3, 7)));
    assert_eq!((i.received.carried_over, i.resolved.total), (1, 1));
    assert!(i.check().is_empty());
}

#[test]
fn pending_exactly_at_its_due_time_is_within_time() {
    // An imported dossier due exactly at 00:00 on 7 March.
    let life = received(vn(2024, 3, 4, 9, 0), false, Some(vn(2024, 3, 7, 0, 0)));
    let c = life.contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 7)), PENDING_WITHIN);
    assert_eq!(stocks_at(&c, date(2024, 3, 8)), PENDING_OVERDUE);
    let i = indicators(&totals_of([&life], date(2024, 3, 1), date(2024, 3, 7)));
    assert_eq!((i.pending.within_time, i.pending.overdue), (1, 0));
    let i = indicators(&totals_of([&life], date(2024, 3, 1), date(2024, 3, 8)));
    assert_eq!((i.pending.within_time, i.pending.overdue), (0, 1));
}

#[test]
fn a_never_closed_dossier_stays_overdue_forever() {
    // Due Thursday 7 March 09:00: within time at the start of the 7th, overdue from the 8th.
    let c = received(vn(2024, 3, 4, 9, 0), false, None).contribution();
    let stock_deltas: Vec<_> = c
        .deltas
        .iter()
        .filter(|((_, m), _)| m.kind() == stats::MetricKind::Stock)
        .map(|((d, m), v)| (*d, *m, *v))
        .collect();
    assert_eq!(
        stock_deltas,
        vec![
            (date(2024, 3, 5), Metric::Pending, 1),
            (date(2024, 3, 5), Metric::PendingWithinTime, 1),
            (date(2024, 3, 5), Metric::Pending766WithinTime, 1),
            (date(2024, 3, 8), Metric::PendingWithinTime, -1),
            (date(2024, 3, 8), Metric::PendingOverdue, 1),
            (date(2024, 3, 8), Metric::Pending766WithinTime, -1),
        ]
    );
    assert_eq!(stocks_at(&c, date(2030, 1, 1)), PENDING_OVERDUE);
}

#[test]
fn a_dossier_paused_for_a_supplement_counts_within_time() {
    let mut paused = received(vn(2024, 3, 4, 9, 0), false, None);
    paused.act(vn(2024, 3, 6, 9, 0), request_supplement());
    let c = paused.contribution();
    // Due 7 March 09:00; on 10 and 20 March it is past due, but paused.
    assert_eq!(stocks_at(&c, date(2024, 3, 10)), PENDING_WITHIN);
    assert_eq!(stocks_at(&c, date(2024, 3, 20)), PENDING_WITHIN);
    let not_paused = received(vn(2024, 3, 4, 9, 0), false, None).contribution();
    assert_eq!(stocks_at(&not_paused, date(2024, 3, 10)), PENDING_OVERDUE);
}

#[test]
fn a_request_while_overdue_counts_within_time_from_the_next_day_start() {
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    life.act(vn(2024, 3, 8, 10, 0), request_supplement());
    let c = life.contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 8)), PENDING_OVERDUE);
    assert_eq!(stocks_at(&c, date(2024, 3, 9)), PENDING_WITHIN);
}

#[test]
fn a_received_supplement_moves_the_due_time_and_flips_overdue_back_to_within_time() {
    // Restart: the statutory time counts again from the supplement's receipt.
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    // Overdue since the due time, Thursday 7 March 09:00.
    life.act(vn(2024, 3, 8, 10, 0), request_supplement())
        .act(vn(2024, 3, 8, 14, 0), Action::ReceiveSupplement);
    assert_eq!(life.due(), vn(2024, 3, 13, 14, 0));
    let c = life.contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 8)), PENDING_OVERDUE);
    assert_eq!(stocks_at(&c, date(2024, 3, 9)), PENDING_WITHIN);
    assert_eq!(stocks_at(&c, date(2024, 3, 13)), PENDING_WITHIN);
    assert_eq!(stocks_at(&c, date(2024, 3, 14)), PENDING_OVERDUE);
}

#[test]
fn an_extended_due_time_keeps_a_dossier_within_time_for_the_paused_time() {
    // Extend: the due time moves later by the working time paused (3 working days here).
    let mut life = Life::new(SupplementPolicy::Extend);
    life.events = received(vn(2024, 3, 4, 9, 0), false, None).events;
    life.state = domain::Dossier::from_events(&life.events);
    life.act(vn(2024, 3, 6, 9, 0), request_supplement())
        .act(vn(2024, 3, 11, 9, 0), Action::ReceiveSupplement);
    assert_eq!(life.due(), vn(2024, 3, 12, 9, 0));
    let c = life.contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 8)), PENDING_WITHIN);
    assert_eq!(stocks_at(&c, date(2024, 3, 12)), PENDING_WITHIN);
    assert_eq!(stocks_at(&c, date(2024, 3, 13)), PENDING_OVERDUE);
}

#[test]
fn the_due_time_in_force_at_resolution_decides_lateness() {
    // Due 7 March 09:00 at reception, 13 March 14:00 after the supplement: resolving on
    // 12 March is early, not late; the apology's new appointment moves nothing.
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    life.act(vn(2024, 3, 6, 9, 0), apology(vn(2024, 3, 20, 9, 0)))
        .act(vn(2024, 3, 8, 10, 0), request_supplement())
        .act(vn(2024, 3, 8, 14, 0), Action::ReceiveSupplement)
        .act(vn(2024, 3, 12, 9, 0), resolve());
    assert_eq!(
        life.contribution()
            .get(date(2024, 3, 12), Metric::ResolvedEarly),
        1
    );
    let mut late = received(vn(2024, 3, 4, 9, 0), false, None);
    late.act(vn(2024, 3, 6, 9, 0), apology(vn(2024, 3, 20, 9, 0)))
        .act(vn(2024, 3, 12, 9, 0), resolve());
    let c = late.contribution();
    assert_eq!(c.get(date(2024, 3, 12), Metric::ResolvedLate), 1);
    assert_eq!(stocks_at(&c, date(2024, 3, 8)), PENDING_OVERDUE);
}

#[test]
fn withdrawn_leaves_pending_from_the_next_day_start() {
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    life.act(
        vn(2024, 3, 8, 10, 0),
        Action::Withdraw {
            reason: text("applicant request"),
        },
    );
    let c = life.contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 8)), PENDING_OVERDUE);
    assert_eq!(stocks_at(&c, date(2024, 3, 9)), NOT_PENDING);
    assert_eq!(stocks_at(&c, date(2025, 1, 1)), NOT_PENDING);
    let i = indicators(&totals_of([&life], date(2024, 3, 1), date(2024, 4, 1)));
    assert_eq!(
        (
            i.received.total,
            i.resolved.total,
            i.ended.withdrawn,
            i.pending.total
        ),
        (1, 0, 1, 0)
    );
}

#[test]
fn two_supplement_requests_take_a_dossier_out_of_766_within_time() {
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    life.act(vn(2024, 3, 5, 9, 0), request_supplement())
        .act(vn(2024, 3, 5, 10, 0), Action::ReceiveSupplement)
        .act(vn(2024, 3, 6, 9, 0), request_supplement());
    let c = life.contribution();
    assert_eq!(stocks_at(&c, date(2024, 3, 6)), PENDING_WITHIN);
    // From the start of 7 March it has had two requests: within time, but not for 766.
    assert_eq!(stocks_at(&c, date(2024, 3, 7)), [1, 1, 0, 0]);
}

#[test]
fn the_carried_over_balance_holds_across_periods() {
    let mut a = received(vn(2024, 3, 4, 9, 0), false, None);
    a.act(vn(2024, 3, 12, 9, 0), resolve());
    let b = received(vn(2024, 3, 5, 23, 59), false, None);
    let mut c = received(vn(2024, 3, 6, 8, 0), false, None);
    c.act(
        vn(2024, 3, 6, 9, 0),
        Action::Stop {
            reason: text("court dispute"),
        },
    );
    let lives = [&a, &b, &c];
    for (from, to) in [(5, 7), (6, 13), (7, 8), (4, 4), (1, 31)] {
        let i = indicators(&totals_of(lives, date(2024, 3, from), date(2024, 3, to)));
        assert!(i.check().is_empty(), "[{from}, {to}): {:?}", i.check());
    }
    let i = indicators(&totals_of(lives, date(2024, 3, 6), date(2024, 3, 13)));
    assert_eq!(i.received.carried_over, 2);
    assert_eq!(i.received.total, 1);
    assert_eq!(i.resolved.total, 1);
    assert_eq!(i.ended.stopped, 1);
    assert_eq!(i.pending.total, 1);
}
