//! `projection rebuild`: the figures after equal those before; queries meanwhile answer the old
//! figures; events appended meanwhile are counted after it; a corrupted aggregate is repaired.

use std::time::Duration;

use chrono::NaiveDate;
use eventlog::EventLog;
use projection::rebuild::{self, RebuildError};
use projection::store;
use stats::Aggregates;

use crate::support::{
    answers, append_dossier, append_resolution, migrated_db, normal, sample_queries,
};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Sixty dossiers received from December 2023 to December 2024, two in three resolved, every
/// one applied as the consumer would.
async fn history(log: &EventLog) -> Vec<(String, usize, NaiveDate, bool)> {
    let mut dossiers = Vec::new();
    for i in 0..60usize {
        let id = format!("HS-R-{i:04}");
        let received = date(2023, 12, 1) + chrono::Days::new((i as u64 * 6) % 390);
        let resolved = (i % 3 != 0).then(|| received + chrono::Days::new(3 + (i as u64 % 20)));
        append_dossier(log, &id, i, received, resolved).await;
        store::apply_and_commit(log, &id).await.unwrap();
        dossiers.push((id, i, received, resolved.is_some()));
    }
    dossiers
}

/// The answers computed straight from the log, without the projection's tables.
async fn from_log(
    log: &EventLog,
) -> Vec<std::collections::BTreeMap<stats::GroupKey, stats::Totals>> {
    let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT dossier_id FROM events")
        .fetch_all(log.pool())
        .await
        .unwrap();
    let mut model = Aggregates::new();
    for id in ids {
        let events: Vec<domain::Event> = log
            .load_dossier(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| domain::Event {
                occurred_at: e.occurred_at,
                body: domain::DossierEvent::from_parts(&e.event_type, &e.payload).unwrap(),
            })
            .collect();
        if let Some(c) = stats::contribution(&events) {
            model.add_contribution(&c);
        }
    }
    sample_queries()
        .iter()
        .map(|q| normal(model.query(q)))
        .collect()
}

#[tokio::test]
async fn rebuild_keeps_serving_the_old_figures_until_the_swap_and_loses_nothing_appended_meanwhile()
{
    let (db, log) = migrated_db().await;
    let dossiers = history(&log).await;
    let before = answers(&db.pool).await;
    assert_eq!(
        before,
        from_log(&log).await,
        "the projection is exact to begin with"
    );

    // Corrupt the live aggregates (what a bug or a hand edit would do).
    let touched = sqlx::query(
        "UPDATE stats_rollup SET value = value + 5 \
         WHERE rollup = 0 AND grain = 'y' AND metric = 'received'",
    )
    .execute(&db.pool)
    .await
    .unwrap()
    .rows_affected();
    assert!(touched > 0);
    let corrupted = answers(&db.pool).await;
    assert_ne!(corrupted, before);

    let mut reports = Vec::new();
    let shadow = rebuild::prepare(&db.pool, |p| reports.push(*p))
        .await
        .unwrap();
    assert_eq!(shadow.events, 60 + 40, "every event up to the head");
    assert_eq!(shadow.dossiers, 60);
    let last = reports.last().expect("a final progress report");
    assert_eq!((last.events, last.head), (100, 100));

    // Meanwhile: queries answer from the old tables, corruption included.
    assert_eq!(answers(&db.pool).await, corrupted);
    // Meanwhile: new events, one applied by the live consumer (to the old tables), one not.
    let (open_id, open_kind, open_received, _) = dossiers.iter().find(|d| !d.3).cloned().unwrap();
    append_resolution(&log, &open_id, open_kind, open_received, date(2024, 12, 30)).await;
    append_dossier(&log, "HS-R-NEW", 7, date(2024, 6, 3), None).await;
    store::apply_and_commit(&log, "HS-R-NEW").await.unwrap();

    let report = shadow.swap(Duration::from_secs(10)).await.unwrap();
    assert_eq!(report.position, 100);
    assert_eq!(
        report.reapplied, 2,
        "the two dossiers with events after the snapshot"
    );

    let after = answers(&db.pool).await;
    let expected = from_log(&log).await;
    assert_eq!(
        after, expected,
        "repaired, and the events appended meanwhile counted"
    );
    assert_ne!(after, before, "the appended events changed the figures");
    assert_eq!(store::applied_version(&db.pool, &open_id).await.unwrap(), 2);

    // The pool's connections (and their prepared statements) work on the new tables.
    append_dossier(
        &log,
        "HS-R-AFTER",
        8,
        date(2024, 7, 1),
        Some(date(2024, 7, 2)),
    )
    .await;
    store::apply_and_commit(&log, "HS-R-AFTER").await.unwrap();
    assert_eq!(answers(&db.pool).await, from_log(&log).await);
    let verified = projection::verify::verify(&db.pool, 10).await.unwrap();
    assert!(verified.is_exact(), "{verified}");
}

#[tokio::test]
async fn rebuild_of_a_correct_projection_changes_no_figure_and_runs_again() {
    let (db, log) = migrated_db().await;
    history(&log).await;
    let before = answers(&db.pool).await;
    let cells: i64 = sqlx::query_scalar("SELECT count(*) FROM stats_rollup WHERE value <> 0")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let report = rebuild::rebuild(&db.pool, |_| {}).await.unwrap();
    assert_eq!(report.reapplied, 0);
    assert_eq!(report.cells, cells, "the same cells as apply wrote");
    assert_eq!(answers(&db.pool).await, before);
    // Names are as before the swap, so a second rebuild works the same way.
    let again = rebuild::rebuild(&db.pool, |_| {}).await.unwrap();
    assert_eq!(again.cells, cells);
    assert_eq!(answers(&db.pool).await, before);
}

#[tokio::test]
async fn only_one_rebuild_runs_at_a_time() {
    let (db, log) = migrated_db().await;
    history(&log).await;
    let first = rebuild::prepare(&db.pool, |_| {}).await.unwrap();
    let second = rebuild::prepare(&db.pool, |_| {}).await;
    assert!(matches!(second, Err(RebuildError::Busy)), "{second:?}");
    // Dropping an unswapped shadow releases the lock; the live tables are untouched.
    let before = answers(&db.pool).await;
    drop(first);
    let mut third = None;
    for _ in 0..50 {
        match rebuild::prepare(&db.pool, |_| {}).await {
            Ok(shadow) => {
                third = Some(shadow);
                break;
            }
            // The server notices the closed connection a moment later.
            Err(RebuildError::Busy) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    }
    third
        .expect("the lock is released")
        .swap(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answers(&db.pool).await, before);
}
