//! `projection verify`: nothing on a correct projection; a tampered cell, a tampered
//! contribution and a missing dossier are found; lag is told apart from corruption.

use chrono::NaiveDate;
use projection::store;
use projection::verify::{DossierDifference, verify};

use crate::support::{append_dossier, migrated_db};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

async fn setup() -> (testkit::TestDb, eventlog::EventLog) {
    let (db, log) = migrated_db().await;
    for i in 0..20usize {
        let id = format!("HS-V-{i:03}");
        let received = date(2024, 1, 10) + chrono::Days::new(i as u64 * 17);
        let resolved = (i % 2 == 0).then(|| received + chrono::Days::new(4));
        append_dossier(&log, &id, i, received, resolved).await;
        store::apply_and_commit(&log, &id).await.unwrap();
    }
    (db, log)
}

#[tokio::test]
async fn a_correct_projection_verifies_clean() {
    let (db, _log) = setup().await;
    let report = verify(&db.pool, 100).await.unwrap();
    assert!(report.is_exact(), "{report}");
    assert_eq!(
        (report.events, report.dossiers, report.position),
        (30, 20, 30)
    );
}

#[tokio::test]
async fn a_tampered_cell_is_listed_with_its_expected_and_found_values() {
    let (db, _log) = setup().await;
    let (agency, expected): (String, i64) = sqlx::query_as(
        "UPDATE stats_cells c SET received = received + 3 \
         FROM stats_slice s \
         WHERE s.id = c.slice AND (c.slice, c.grain, c.period) = \
           (SELECT c2.slice, c2.grain, c2.period FROM stats_cells c2 \
            JOIN stats_slice s2 ON s2.id = c2.slice \
            WHERE s2.rollup = 3 AND c2.grain = 'm' AND c2.received IS NOT NULL LIMIT 1) \
         RETURNING s.agency, (c.received - 3)::bigint",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let report = verify(&db.pool, 100).await.unwrap();
    assert!(!report.is_consistent());
    assert!(report.dossier_differences.is_empty(), "{report}");
    assert_eq!(report.cell_differences_total, 1, "{report}");
    let cell = &report.cell_differences[0];
    assert_eq!((cell.rollup, cell.grain.code()), (3, "m"));
    assert_eq!(cell.dims[1], agency);
    assert_eq!(cell.metric, "received");
    let expected = i128::from(expected);
    assert_eq!((cell.expected, cell.found), (expected, expected + 3));
    assert!(report.to_string().contains("expected"), "{report}");
}

/// A row whose copied `rollup` is not its slice's would be read by the wrong rollup's
/// questions (they range over `stats_cells_by_rollup`): verify reports its figures as missing.
#[tokio::test]
async fn a_row_under_the_wrong_rollup_is_found() {
    let (db, _log) = setup().await;
    let received: i64 = sqlx::query_scalar(
        "UPDATE stats_cells c SET rollup = 5 \
         WHERE (c.slice, c.grain, c.period) = \
           (SELECT c2.slice, c2.grain, c2.period FROM stats_cells c2 \
            WHERE c2.rollup = 3 AND c2.grain = 'y' AND c2.received IS NOT NULL LIMIT 1) \
         RETURNING c.received::bigint",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let report = verify(&db.pool, 100).await.unwrap();
    assert!(!report.is_consistent());
    assert!(report.dossier_differences.is_empty(), "{report}");
    let cell = report
        .cell_differences
        .iter()
        .find(|c| c.rollup == 3 && c.grain.code() == "y" && c.metric == "received")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        (cell.expected, cell.found),
        (i128::from(received), 0),
        "{report}"
    );
}

#[tokio::test]
async fn a_missing_dossier_and_a_tampered_contribution_are_found() {
    let (db, _log) = setup().await;
    sqlx::query("DELETE FROM projection_contributions WHERE dossier_id = 'HS-V-004'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE projection_contributions \
         SET contribution = (SELECT contribution FROM projection_contributions \
                             WHERE dossier_id = 'HS-V-002') \
         WHERE dossier_id = 'HS-V-006'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let report = verify(&db.pool, 1000).await.unwrap();
    // The missing row: the dossier counts as not applied, yet its cells are still there.
    assert_eq!(report.behind.len(), 1, "{report}");
    assert_eq!(report.behind[0].dossier_id, "HS-V-004");
    assert_eq!((report.behind[0].applied, report.behind[0].log), (0, 2));
    assert!(report.cell_differences_total > 0, "{report}");
    // Province-wide, one reception too many in its year.
    let received_2024 = report
        .cell_differences
        .iter()
        .find(|c| c.rollup == 0 && c.grain.code() == "y" && c.metric == "received")
        .expect("the province-wide yearly reception count differs");
    assert_eq!(received_2024.found - received_2024.expected, 1, "{report}");
    assert_eq!(
        report.dossier_differences,
        vec![DossierDifference::Contribution {
            dossier_id: "HS-V-006".into(),
            version: 2
        }]
    );
}

#[tokio::test]
async fn lag_is_reported_as_behind_not_as_a_difference() {
    let (db, log) = setup().await;
    append_dossier(&log, "HS-V-LATE", 3, date(2024, 5, 5), None).await;
    let report = verify(&db.pool, 100).await.unwrap();
    assert!(report.is_consistent(), "{report}");
    assert!(!report.is_exact());
    assert_eq!(report.behind.len(), 1);
    assert_eq!(report.behind[0].dossier_id, "HS-V-LATE");
    store::apply_and_commit(&log, "HS-V-LATE").await.unwrap();
    assert!(verify(&db.pool, 100).await.unwrap().is_exact());
}
