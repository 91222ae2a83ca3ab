//! Flow metrics: which local date each counts on, and which dossiers count.

use chrono::{TimeZone, Utc};
use domain::{
    Action, Channel, OnlineServiceLevel, PaymentChannel, Rating, SupplementPolicy, TransferMode,
};
use stats::{Metric, indicators};

use crate::support::*;

#[test]
fn received_at_2359_local_counts_that_day_and_0001_the_next() {
    let late_evening = received(vn(2024, 3, 4, 23, 59), false, None);
    let after_midnight = received(vn(2024, 3, 5, 0, 1), false, None);
    assert_eq!(
        late_evening
            .contribution()
            .get(date(2024, 3, 4), Metric::Received),
        1
    );
    assert_eq!(
        after_midnight
            .contribution()
            .get(date(2024, 3, 5), Metric::Received),
        1
    );
    let both = [&late_evening, &after_midnight];
    let monday = totals_of(both, date(2024, 3, 4), date(2024, 3, 5));
    let tuesday = totals_of(both, date(2024, 3, 5), date(2024, 3, 6));
    assert_eq!(monday.flow(Metric::Received), 1);
    assert_eq!(tuesday.flow(Metric::Received), 1);
}

#[test]
fn the_date_is_the_local_date_not_the_utc_date() {
    // 17:30 UTC on 4 March is 00:30 on 5 March in Vietnam.
    let utc_evening = Utc.with_ymd_and_hms(2024, 3, 4, 17, 30, 0).unwrap();
    let life = received(utc_evening, false, None);
    let c = life.contribution();
    assert_eq!(c.get(date(2024, 3, 5), Metric::Received), 1);
    assert_eq!(c.get(date(2024, 3, 4), Metric::Received), 0);
    // 16:59 UTC on 4 March is still 4 March locally (23:59).
    let utc_late_afternoon = Utc.with_ymd_and_hms(2024, 3, 4, 16, 59, 0).unwrap();
    let c = received(utc_late_afternoon, false, None).contribution();
    assert_eq!(c.get(date(2024, 3, 4), Metric::Received), 1);
}

#[test]
fn received_counts_by_channel_and_online_service_level() {
    let cases = [
        (
            Channel::Online,
            OnlineServiceLevel::FullOnline,
            vec![
                Metric::Received,
                Metric::ReceivedOnline,
                Metric::ReceivedFullOnline,
                Metric::ReceivedFullOnlineOnline,
            ],
        ),
        (
            Channel::Direct,
            OnlineServiceLevel::FullOnline,
            vec![
                Metric::Received,
                Metric::ReceivedDirect,
                Metric::ReceivedFullOnline,
            ],
        ),
        (
            Channel::Online,
            OnlineServiceLevel::PartialOnline,
            vec![
                Metric::Received,
                Metric::ReceivedOnline,
                Metric::ReceivedPartialOnline,
                Metric::ReceivedPartialOnlineOnline,
            ],
        ),
        (
            Channel::Postal,
            OnlineServiceLevel::PartialOnline,
            vec![
                Metric::Received,
                Metric::ReceivedPostal,
                Metric::ReceivedPartialOnline,
            ],
        ),
        (
            Channel::Postal,
            OnlineServiceLevel::NotOnline,
            vec![Metric::Received, Metric::ReceivedPostal],
        ),
    ];
    for (channel, online_level, expected) in cases {
        let p = domain::Profile {
            channel,
            online_level,
            ..profile()
        };
        let life = received_as(vn(2024, 3, 4, 9, 0), p, false, None);
        let got: Vec<Metric> = flows(&life.contribution())
            .into_iter()
            .map(|(d, m, v)| {
                assert_eq!((d, v), (date(2024, 3, 4), 1), "{m}");
                m
            })
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(got, expected, "{channel:?} {online_level:?}");
    }
}

#[test]
fn resolution_is_early_on_time_or_late_against_the_due_time_on_the_resolution_date() {
    // Received Monday 4 March 2024 09:00, three working days: due Thursday 7 March 09:00.
    let cases = [
        (vn(2024, 3, 6, 16, 0), Metric::ResolvedEarly),
        (vn(2024, 3, 7, 0, 0), Metric::ResolvedOnTime),
        (vn(2024, 3, 7, 9, 0), Metric::ResolvedOnTime),
        // the due date, one minute after the due time: late
        (vn(2024, 3, 7, 9, 1), Metric::ResolvedLate),
        (vn(2024, 3, 8, 8, 0), Metric::ResolvedLate),
    ];
    for (at, expected) in cases {
        let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
        assert_eq!(life.due(), vn(2024, 3, 7, 9, 0));
        life.act(at, resolve());
        let day = calendar::local_date(at);
        let c = life.contribution();
        assert_eq!(c.get(day, Metric::Resolved), 1, "{at}");
        for m in [
            Metric::ResolvedEarly,
            Metric::ResolvedOnTime,
            Metric::ResolvedLate,
        ] {
            assert_eq!(c.get(day, m), i128::from(m == expected), "{at} {m}");
        }
        let t = indicators(&totals_of([&life], day, day.succ_opt().unwrap()));
        assert!(t.check().is_empty(), "{:?}", t.check());
    }
}

#[test]
fn refused_at_intake_counts_only_in_its_own_count() {
    let mut life = Life::new(SupplementPolicy::Restart);
    life.act(
        vn(2024, 3, 4, 10, 0),
        Action::RefuseAtIntake {
            profile: profile(),
            reason: text("incomplete application"),
        },
    );
    let c = life.contribution();
    assert_eq!(
        c.deltas.iter().collect::<Vec<_>>(),
        vec![(&(date(2024, 3, 4), Metric::RefusedAtIntake), &1)]
    );
    let i = indicators(&totals_of([&life], date(2024, 3, 1), date(2024, 4, 1)));
    assert_eq!(i.refused_at_intake, 1);
    assert_eq!(i.received.total, 0);
    assert_eq!(i.resolved.total, 0);
    assert_eq!(i.pending.total, 0);
    assert!(i.check().is_empty());
}

#[test]
fn withdrawn_and_stopped_count_as_ended_never_as_resolved() {
    for (action, metric) in [
        (
            Action::Withdraw {
                reason: text("applicant request"),
            },
            Metric::Withdrawn,
        ),
        (
            Action::Stop {
                reason: text("court dispute"),
            },
            Metric::Stopped,
        ),
    ] {
        let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
        life.act(vn(2024, 3, 6, 10, 0), action);
        let c = life.contribution();
        assert_eq!(c.get(date(2024, 3, 6), Metric::Ended), 1);
        assert_eq!(c.get(date(2024, 3, 6), metric), 1);
        assert_eq!(c.get(date(2024, 3, 6), Metric::Resolved), 0);
        let i = indicators(&totals_of([&life], date(2024, 3, 5), date(2024, 3, 8)));
        assert_eq!(i.received.carried_over, 1);
        assert_eq!(i.ended.total, 1);
        assert_eq!(i.resolved.total, 0);
        assert_eq!(i.pending.total, 0);
        assert!(i.check().is_empty(), "{:?}", i.check());
    }
}

#[test]
fn apology_counts_for_s6_only_when_issued_before_the_resolution() {
    // Due Thursday 7 March 09:00; resolved late on Friday 8 March 10:00.
    let mut before = received(vn(2024, 3, 4, 9, 0), false, None);
    before
        .act(vn(2024, 3, 6, 9, 0), apology(vn(2024, 3, 12, 9, 0)))
        .act(vn(2024, 3, 8, 10, 0), resolve());
    let mut after = received(vn(2024, 3, 4, 9, 0), false, None);
    after
        .act(vn(2024, 3, 8, 10, 0), resolve())
        .act(vn(2024, 3, 8, 11, 0), apology(vn(2024, 3, 12, 9, 0)));
    let mut none = received(vn(2024, 3, 4, 9, 0), false, None);
    none.act(vn(2024, 3, 8, 10, 0), resolve());

    let day = date(2024, 3, 8);
    assert_eq!(
        before
            .contribution()
            .get(day, Metric::ResolvedLateWithApology),
        1
    );
    assert_eq!(
        after
            .contribution()
            .get(day, Metric::ResolvedLateWithApology),
        0
    );
    let i = indicators(&totals_of([&before, &after, &none], day, date(2024, 3, 9)));
    assert_eq!(i.resolved.late, 3);
    assert_eq!(i.apology_rate, stats::Rate::new(1, 3));
}

#[test]
fn an_apology_recorded_late_but_dated_before_the_resolution_counts() {
    // An offline counter syncs the apology after the resolution was recorded.
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    life.act(vn(2024, 3, 8, 10, 0), resolve())
        .act(vn(2024, 3, 7, 8, 0), apology(vn(2024, 3, 12, 9, 0)));
    assert_eq!(
        life.contribution()
            .get(date(2024, 3, 8), Metric::ResolvedLateWithApology),
        1
    );
}

#[test]
fn components_count_as_digitized_when_each_is_scanned_or_reused() {
    let cases: [(&[&str], &[&str], bool, bool); 4] = [
        (&["GT01", "GT02", "GT03"], &[], true, false),
        (&["GT01", "GT02"], &["GT03"], true, true),
        (&["GT01"], &["GT03"], false, true),
        (&[], &["GT01", "GT02", "GT03"], true, true),
    ];
    for (digitized, reused, all, any_reused) in cases {
        let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
        life.act(
            vn(2024, 3, 4, 9, 5),
            Action::RecordDigitized {
                digitized: digitized.iter().map(|c| comp(c)).collect(),
                reused: reused.iter().map(|c| comp(c)).collect(),
            },
        );
        let c = life.contribution();
        let day = date(2024, 3, 4);
        assert_eq!(
            c.get(day, Metric::ReceivedAllDigitized),
            i128::from(all),
            "{digitized:?} {reused:?}"
        );
        assert_eq!(c.get(day, Metric::ReceivedReused), i128::from(any_reused));
    }
}

#[test]
fn digitization_recorded_in_two_steps_counts_on_the_reception_date() {
    let mut life = received(vn(2024, 3, 4, 16, 50), false, None);
    life.act(
        vn(2024, 3, 4, 16, 55),
        Action::RecordDigitized {
            digitized: vec![comp("GT01")],
            reused: vec![],
        },
    )
    .act(
        vn(2024, 3, 5, 8, 0),
        Action::RecordDigitized {
            digitized: vec![comp("GT02"), comp("GT03")],
            reused: vec![],
        },
    );
    let c = life.contribution();
    assert_eq!(c.get(date(2024, 3, 4), Metric::ReceivedAllDigitized), 1);
    assert_eq!(c.get(date(2024, 3, 5), Metric::ReceivedAllDigitized), 0);
}

#[test]
fn only_electronic_transfers_count_for_s13() {
    for (mode, expected) in [(TransferMode::Electronic, 1), (TransferMode::Paper, 0)] {
        let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
        life.act(vn(2024, 3, 5, 9, 0), transfer(mode));
        assert_eq!(
            life.contribution()
                .get(date(2024, 3, 4), Metric::ReceivedElectronicTransfer),
            expected
        );
    }
}

#[test]
fn a_digitized_result_counts_on_the_resolution_date() {
    let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
    life.act(vn(2024, 3, 6, 9, 0), resolve()).act(
        vn(2024, 3, 9, 9, 0),
        Action::AttachResult {
            document_ref: text("QD-123"),
            sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        },
    );
    let c = life.contribution();
    assert_eq!(c.get(date(2024, 3, 6), Metric::ResolvedResultDigitized), 1);
    assert_eq!(c.get(date(2024, 3, 9), Metric::ResolvedResultDigitized), 0);
}

#[test]
fn payments_count_and_add_up_by_payment_date() {
    let mut life = received(vn(2024, 3, 4, 9, 0), true, None);
    life.act(vn(2024, 3, 4, 10, 0), assess(50_000))
        .act(
            vn(2024, 3, 5, 10, 0),
            pay(10_000, PaymentChannel::Counter, "T1"),
        )
        .act(
            vn(2024, 3, 9, 23, 30),
            pay(15_000, PaymentChannel::NationalPlatform, "T2"),
        )
        .act(
            vn(2024, 3, 10, 0, 0),
            pay(25_000, PaymentChannel::ProvincialGateway, "T3"),
        );
    let c = life.contribution();
    let on = |d, m| c.get(date(2024, 3, d), m);
    assert_eq!(on(5, Metric::Payments), 1);
    assert_eq!(on(5, Metric::PaymentAmountVnd), 10_000);
    assert_eq!(on(5, Metric::PaymentsOnline), 0);
    assert_eq!(on(9, Metric::Payments), 1);
    assert_eq!(on(9, Metric::PaymentAmountVnd), 15_000);
    assert_eq!(on(9, Metric::PaymentAmountOnlineVnd), 15_000);
    assert_eq!(on(10, Metric::PaymentsOnline), 1);
    assert_eq!(on(10, Metric::PaymentAmountOnlineVnd), 25_000);

    let i = indicators(&totals_of([&life], date(2024, 3, 5), date(2024, 3, 10)));
    assert_eq!(i.payment.transactions, 2);
    assert_eq!(i.payment.amount_vnd, 25_000);
    assert_eq!(i.payment.online_transactions, 1);
    assert_eq!(i.payment.online_amount_vnd, 15_000);
    // The dossier was received on 4 March: outside this period's S11 rate.
    assert_eq!(i.payment.rate, stats::Rate::new(0, 0));
    assert_eq!(i.payment.rate.value(), None);
}

#[test]
fn s11_counts_dossiers_with_an_assessed_fee_not_the_fee_flag() {
    let flagged_only = received(vn(2024, 3, 4, 9, 0), true, None);
    let mut assessed = received(vn(2024, 3, 4, 9, 0), true, None);
    assessed.act(vn(2024, 3, 4, 10, 0), assess(50_000));
    let mut paid_at_counter = assessed.clone();
    paid_at_counter.act(
        vn(2024, 3, 4, 11, 0),
        pay(50_000, PaymentChannel::Counter, "T1"),
    );
    let i = indicators(&totals_of(
        [&flagged_only, &assessed, &paid_at_counter],
        date(2024, 3, 1),
        date(2024, 4, 1),
    ));
    assert_eq!(i.payment.rate, stats::Rate::new(0, 2));
}

#[test]
fn s11_numerator_follows_a_late_online_payment() {
    let mut life = received(vn(2024, 3, 4, 9, 0), true, None);
    life.act(vn(2024, 3, 4, 10, 0), assess(50_000));
    let before = life.contribution();
    let march = |l: &Life| indicators(&totals_of([l], date(2024, 3, 1), date(2024, 4, 1)));
    assert_eq!(march(&life).payment.rate, stats::Rate::new(0, 1));

    life.act(
        vn(2024, 4, 15, 9, 0),
        pay(50_000, PaymentChannel::NationalPlatform, "T1"),
    );
    let after = life.contribution();
    assert_eq!(march(&life).payment.rate, stats::Rate::new(1, 1));
    // What the projection applies: the March numerator moves, April gets the transaction.
    let slice = after.slice.clone();
    assert_eq!(
        stats::diff(Some(&before), Some(&after)),
        vec![
            (
                slice.clone(),
                date(2024, 3, 4),
                Metric::ReceivedWithFeePaidOnline,
                1
            ),
            (slice.clone(), date(2024, 4, 15), Metric::Payments, 1),
            (
                slice.clone(),
                date(2024, 4, 15),
                Metric::PaymentAmountVnd,
                50_000
            ),
            (slice.clone(), date(2024, 4, 15), Metric::PaymentsOnline, 1),
            (
                slice,
                date(2024, 4, 15),
                Metric::PaymentAmountOnlineVnd,
                50_000
            ),
        ]
    );
}

#[test]
fn ratings_count_by_rating_date() {
    let cases = [
        (Rating::VerySatisfied, Metric::RatedVerySatisfied),
        (Rating::Satisfied, Metric::RatedSatisfied),
        (Rating::Unsatisfied, Metric::RatedUnsatisfied),
    ];
    let mut lives = Vec::new();
    for (rating, metric) in cases {
        let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
        life.act(vn(2024, 3, 6, 9, 0), resolve())
            .act(vn(2024, 3, 6, 10, 0), return_result())
            .act(vn(2024, 3, 11, 8, 0), rate(rating));
        assert_eq!(life.contribution().get(date(2024, 3, 11), metric), 1);
        lives.push(life);
    }
    let i = indicators(&totals_of(&lives, date(2024, 3, 11), date(2024, 3, 12)));
    assert_eq!(i.satisfaction.rate, stats::Rate::new(2, 3));
    let earlier = indicators(&totals_of(&lives, date(2024, 3, 1), date(2024, 3, 11)));
    assert_eq!(earlier.satisfaction.rate.value(), None);
}

#[test]
fn a_dossier_with_two_supplement_requests_is_not_in_time_for_766() {
    let resolved_after = |requests: usize| {
        let mut life = received(vn(2024, 3, 4, 9, 0), false, None);
        for k in 0..requests {
            let day = 5 + u32::try_from(k).unwrap();
            life.act(vn(2024, 3, day, 9, 0), request_supplement())
                .act(vn(2024, 3, day, 10, 0), Action::ReceiveSupplement);
        }
        let at = life.due();
        life.act(at, resolve());
        (life.contribution(), calendar::local_date(at))
    };
    for (requests, in_time) in [(0, 1), (1, 1), (2, 0), (3, 0)] {
        let (c, day) = resolved_after(requests);
        assert_eq!(c.get(day, Metric::ResolvedOnTime), 1);
        assert_eq!(c.get(day, Metric::Resolved766InTime), in_time, "{requests}");
    }
}
