//! F2 of issue 9: sums beyond `i64`. Dossiers imported with payments of 10^15 VND each (the
//! request bounds bypassed: appended straight to the log, as an import of old data could hold)
//! add up past `i64::MAX`, within one dossier and across dossiers. Every figure must stay exact
//! (checked against PostgreSQL's own `numeric` sum of the log's payments), rebuild must give
//! the same, verify must be clean, and verify must find an amount cell that is off — in
//! particular one clamped to `i64::MAX`, which is what the saturating code stored.

use chrono::NaiveDate;
use projection::store;
use projection::verify::verify;
use stats::{Dimension, Metric, Query, SliceFilter};

use crate::support::{append_paid_dossier, migrated_db};

/// The amount of every payment: 10^15 VND, the largest one accepted when F2 was found.
const AMOUNT: i64 = 1_000_000_000_000_000;
/// One dossier alone past `i64::MAX`: 9 300 × 10^15 = 9.3 × 10^18.
const BIG_DOSSIER_PAYMENTS: usize = 9_300;
/// Then these many dossiers of `PAYMENTS` payments each.
const DOSSIERS: usize = 24;
const PAYMENTS: usize = 50;

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 5, 14).unwrap()
}

fn year() -> Query {
    Query {
        from: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
        to: NaiveDate::from_ymd_opt(2025, 1, 1).unwrap(),
        filter: SliceFilter::default(),
        group_by: Vec::new(),
    }
}

/// The log's payments summed by PostgreSQL in `numeric`, without any of the projection's code.
async fn payments_in_log(pool: &sqlx::PgPool) -> (i64, i128, i128) {
    let (count, all, online): (i64, String, String) = sqlx::query_as(
        "SELECT count(*), sum((payload->>'amount_vnd')::numeric)::text, \
                COALESCE(sum((payload->>'amount_vnd')::numeric) \
                  FILTER (WHERE payload->>'channel' <> 'counter'), 0)::text \
         FROM events WHERE event_type = 'paid'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (count, all.parse().unwrap(), online.parse().unwrap())
}

async fn check_figures(pool: &sqlx::PgPool, expected: (i64, i128, i128)) {
    let (payments, amount, online_amount) = expected;
    for query in [
        year(),
        Query {
            group_by: vec![Dimension::Agency],
            ..year()
        },
        Query {
            from: day(),
            to: day().succ_opt().unwrap(),
            ..year()
        },
    ] {
        let groups = store::query(pool, &query).await.unwrap();
        let sum = |m: Metric| groups.values().map(|t| t.flow(m)).sum::<i128>();
        assert_eq!(sum(Metric::Received), (DOSSIERS + 1) as i128, "{query:?}");
        assert_eq!(sum(Metric::Payments), i128::from(payments), "{query:?}");
        assert_eq!(sum(Metric::PaymentAmountVnd), amount, "{query:?}");
        assert_eq!(
            sum(Metric::PaymentAmountOnlineVnd),
            online_amount,
            "{query:?}"
        );
    }
}

#[tokio::test]
async fn payments_summing_past_i64_stay_exact_through_apply_rebuild_and_verify() {
    let (db, log) = migrated_db().await;
    append_paid_dossier(&log, "HS-BIG-0000", 0, day(), BIG_DOSSIER_PAYMENTS, AMOUNT).await;
    store::apply_and_commit(&log, "HS-BIG-0000").await.unwrap();
    for i in 1..=DOSSIERS {
        let id = format!("HS-BIG-{i:04}");
        append_paid_dossier(&log, &id, i, day(), PAYMENTS, AMOUNT).await;
        store::apply_and_commit(&log, &id).await.unwrap();
    }

    let expected = payments_in_log(&db.pool).await;
    let (payments, amount, _) = expected;
    assert_eq!(
        payments as usize,
        BIG_DOSSIER_PAYMENTS + DOSSIERS * PAYMENTS
    );
    assert_eq!(amount, i128::from(payments) * i128::from(AMOUNT));
    assert!(
        amount > i128::from(i64::MAX) + i128::from(AMOUNT) * 1000,
        "{amount}"
    );
    check_figures(&db.pool, expected).await;

    // The stored contribution of the big dossier holds its sum exactly.
    let stored: String = sqlx::query_scalar(
        "SELECT contribution::text FROM projection_contributions WHERE dossier_id = 'HS-BIG-0000'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let big = (BIG_DOSSIER_PAYMENTS as i128 * i128::from(AMOUNT)).to_string();
    assert!(stored.contains(&big), "{stored}");

    let report = verify(&db.pool, 100).await.unwrap();
    assert!(report.is_exact(), "{report}");

    projection::rebuild::rebuild(&db.pool, |_| {})
        .await
        .unwrap();
    check_figures(&db.pool, expected).await;
    let report = verify(&db.pool, 100).await.unwrap();
    assert!(report.is_exact(), "{report}");

    // The answer holds the exact amount; the wire (gRPC and its JSON mapping over HTTP), whose
    // field is int64, refuses it rather than answering a wrong one.
    let answer = projection::answers::indicators_of(
        &year(),
        &store::query(&db.pool, &year()).await.unwrap(),
        &stats::Targets::default(),
    );
    assert_eq!(answer.total.payment.amount_vnd, amount);
    let refused =
        projection::service::indicators_response(&answer, projection::scope::Source::Live)
            .unwrap_err();
    assert_eq!(refused.value, amount);
    let status = tonic::Status::from(refused);
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(status.message().contains(&amount.to_string()), "{status:?}");
}

#[tokio::test]
async fn verify_finds_an_amount_cell_clamped_to_i64_max_or_off_by_one() {
    let (db, log) = migrated_db().await;
    for i in 0..DOSSIERS {
        let id = format!("HS-BIG-{i:04}");
        append_paid_dossier(&log, &id, i, day(), PAYMENTS * 10, AMOUNT).await;
        store::apply_and_commit(&log, &id).await.unwrap();
    }
    let (_, amount, _) = payments_in_log(&db.pool).await;
    assert!(amount > i128::from(i64::MAX));
    assert!(verify(&db.pool, 100).await.unwrap().is_exact());

    for (found, label) in [
        (i128::from(i64::MAX), "clamped"),
        (amount + 1, "off by one"),
    ] {
        sqlx::query(
            "UPDATE stats_cells SET payment_amount_vnd = $1::numeric \
             WHERE grain = 'y' AND payment_amount_vnd IS NOT NULL \
               AND slice IN (SELECT id FROM stats_slice WHERE rollup = 0)",
        )
        .bind(found.to_string())
        .execute(&db.pool)
        .await
        .unwrap();
        let report = verify(&db.pool, 100).await.unwrap();
        assert_eq!(report.cell_differences_total, 1, "{label}: {report}");
        let cell = &report.cell_differences[0];
        assert_eq!(
            (cell.rollup, cell.grain.code(), cell.metric.as_str()),
            (0, "y", "payment_amount_vnd"),
            "{label}"
        );
        assert_eq!((cell.expected, cell.found), (amount, found), "{label}");
    }
}
