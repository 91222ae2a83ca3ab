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
        "UPDATE stats_cells SET received = received + 5 \
         WHERE grain = 'y' AND slice IN (SELECT id FROM stats_slice WHERE rollup = 0)",
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
    // The wide rows with a non-zero figure (apply leaves rows whose deltas cancelled).
    let cells: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT (rollup, grain, period, level, agency, sector, procedure, \
           channel, applicant_type)) FROM stats_rollup WHERE value <> 0",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let migrated = keys(&db.pool).await;
    assert_eq!(migrated.len(), 5, "{migrated:#?}");
    let report = rebuild::rebuild(&db.pool, |_| {}).await.unwrap();
    assert_eq!(report.reapplied, 0);
    assert_eq!(report.cells, cells, "the same cells as apply wrote");
    assert_eq!(answers(&db.pool).await, before);
    // The keys and indexes as the migrations made them (the rebuild builds them its own way).
    assert_eq!(keys(&db.pool).await, migrated);
    // Names are as before the swap, so a second rebuild works the same way.
    let again = rebuild::rebuild(&db.pool, |_| {}).await.unwrap();
    assert_eq!(again.cells, cells);
    assert_eq!(answers(&db.pool).await, before);
    assert_eq!(keys(&db.pool).await, migrated);
}

/// The indexes and constraints of the tables a rebuild replaces, by name, with their
/// definitions.
async fn keys(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
           WHERE tablename IN ('stats_cells', 'projection_contributions') \
         UNION ALL \
         SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
           WHERE conrelid IN ('stats_cells'::regclass, 'projection_contributions'::regclass) \
             AND contype IN ('p', 'u') \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap()
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
    once_unlocked(|| rebuild::prepare(&db.pool, |_| {}))
        .await
        .unwrap()
        .swap(Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(answers(&db.pool).await, before);
}

/// Every non-zero row of `stats_rollup` (apply leaves the cells whose deltas cancelled at 0; a
/// rebuild does not write them) and every row of `projection_contributions`, in key order,
/// values as text.
async fn tables(pool: &sqlx::PgPool) -> (Vec<String>, Vec<String>) {
    let cells: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', rollup, grain, period, level, agency, sector, procedure, channel, \
           applicant_type, metric, value) \
         FROM stats_rollup WHERE value <> 0 \
         ORDER BY rollup, grain, period, level, agency, sector, procedure, channel, \
           applicant_type, metric",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let contributions: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', dossier_id, contribution::text, version) \
         FROM projection_contributions ORDER BY dossier_id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    (cells, contributions)
}

/// Runs `attempt` until it is not refused as `Busy`: the lock of a rebuild that failed or was
/// dropped goes with its connection, which the server notices a moment later.
async fn once_unlocked<T, F, Fut>(mut attempt: F) -> Result<T, RebuildError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RebuildError>>,
{
    testkit::eventually_ok(
        "the previous rebuild's lock to be released",
        Duration::from_secs(5),
        || {
            let tried = attempt();
            async move {
                match tried.await {
                    Err(RebuildError::Busy) => Err("busy"),
                    other => Ok(other),
                }
            }
        },
    )
    .await
}

/// Asserts equal tables, showing the first rows that differ.
fn assert_same(found: &(Vec<String>, Vec<String>), expected: &(Vec<String>, Vec<String>)) {
    for (what, f, e) in [
        ("stats_rollup", &found.0, &expected.0),
        ("projection_contributions", &found.1, &expected.1),
    ] {
        let extra: Vec<&String> = f.iter().filter(|r| !e.contains(r)).take(5).collect();
        let missing: Vec<&String> = e.iter().filter(|r| !f.contains(r)).take(5).collect();
        assert!(
            f == e,
            "{what}: {} rows, expected {}; extra {extra:?}; missing {missing:?}",
            f.len(),
            e.len()
        );
    }
}

#[tokio::test]
async fn a_rebuild_short_of_memory_spills_sorted_runs_and_writes_exactly_the_same_tables() {
    let (db, log) = migrated_db().await;
    history(&log).await;
    // What apply wrote, dossier by dossier.
    let applied = tables(&db.pool).await;
    assert!(applied.0.len() > 1000, "enough cells to spill many runs");

    let in_memory = rebuild::rebuild(&db.pool, |_| {}).await.unwrap();
    assert_eq!(in_memory.spilled_runs, 0, "60 dossiers fit in 1 GiB");
    assert_same(&tables(&db.pool).await, &applied);

    // A budget of a few hundred cells: every batch's cells are spilled as a run, in a
    // directory of its own under the spill directory, removed at the end.
    let spill_dir = scratch_dir("spill");
    let mut phases = Vec::new();
    let options = rebuild::RebuildOptions {
        memory_bytes: 1,
        spill_dir: Some(spill_dir.clone()),
    };
    let spilled = rebuild::rebuild_with(&db.pool, options, |p| phases.push(p.phase))
        .await
        .unwrap();
    assert!(spilled.spilled_runs >= 2, "{spilled:?}");
    assert!(phases.contains(&rebuild::Phase::Merging), "{phases:?}");
    assert_eq!(spilled.cells, in_memory.cells);
    assert_same(&tables(&db.pool).await, &applied);
    assert_eq!(
        std::fs::read_dir(&spill_dir).unwrap().count(),
        0,
        "the runs' directory is removed"
    );
    let scratch: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('stats_cells_runs')::text")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(scratch, None, "no scratch table in the database");
    let verified = projection::verify::verify(&db.pool, 10).await.unwrap();
    assert!(verified.is_exact(), "{verified}");
    std::fs::remove_dir_all(spill_dir).unwrap();
}

/// An empty directory of this test's own for spilled runs.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "motcua-rebuild-test-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_spill_that_cannot_be_written_fails_the_rebuild_and_leaves_the_live_tables_alone() {
    let (db, log) = migrated_db().await;
    history(&log).await;
    let before = tables(&db.pool).await;
    let missing = scratch_dir("missing").join("not-there");
    let options = rebuild::RebuildOptions {
        memory_bytes: 1,
        spill_dir: Some(missing.clone()),
    };
    match rebuild::rebuild_with(&db.pool, options, |_| {}).await {
        Err(e @ RebuildError::Spill { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&*missing.to_string_lossy()), "{text}");
        }
        other => panic!("expected a spill error, got {other:?}"),
    }
    assert_eq!(tables(&db.pool).await, before, "nothing swapped");
    // With room to spill, the next one runs and gives the same tables.
    let options = rebuild::RebuildOptions {
        memory_bytes: 1,
        spill_dir: missing.parent().map(Into::into),
    };
    let report = once_unlocked(|| rebuild::rebuild_with(&db.pool, options.clone(), |_| {}))
        .await
        .unwrap();
    assert!(report.spilled_runs > 0);
    assert_eq!(tables(&db.pool).await, before);
    std::fs::remove_dir_all(missing.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn an_undecodable_event_fails_the_rebuild_and_leaves_the_live_tables_alone() {
    let (db, log) = migrated_db().await;
    history(&log).await;
    let before = tables(&db.pool).await;
    // A stored event whose payload no longer decodes (what a bug in an old writer would leave).
    // `events` refuses UPDATE through a trigger: disable it for this session's change only.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET payload = '{\"unexpected\": true}' \
         WHERE dossier_id = 'HS-R-0031' AND version = 1",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let result = rebuild::rebuild(&db.pool, |_| {}).await;
    match result {
        Err(RebuildError::Corrupt(text)) => assert!(text.contains("HS-R-0031"), "{text}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert_eq!(tables(&db.pool).await, before, "nothing swapped");
    // The lock went with the failed rebuild's connection; the next one runs.
    let again = once_unlocked(|| rebuild::prepare(&db.pool, |_| {})).await;
    assert!(matches!(again, Err(RebuildError::Corrupt(_))), "{again:?}");
}

/// The slice dictionary survives a rebuild: every id keeps naming the same slice (ids can be
/// cached), a slice whose figures went back to zero keeps its entry, and a slice new after the
/// rebuild gets a new id, never an old one.
#[tokio::test]
async fn slice_ids_are_stable_across_a_rebuild() {
    let (db, log) = migrated_db().await;
    history(&log).await;
    let dictionary = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (i32, String)>(
            "SELECT id, concat_ws('|', rollup, level, agency, sector, procedure, channel, \
               applicant_type) FROM stats_slice ORDER BY id",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    // A slice no dossier has: its entry must stay, its id must not be given again.
    sqlx::query(
        "INSERT INTO stats_slice (rollup, level, agency, sector, procedure, channel, \
           applicant_type) VALUES (3, 'district', 'ZZ-GONE', '', '', '', '')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let before = dictionary(db.pool.clone()).await;
    assert!(before.len() > 10, "{before:?}");
    rebuild::rebuild(&db.pool, |_| {}).await.unwrap();
    let after = dictionary(db.pool.clone()).await;
    assert_eq!(after, before, "same ids, same slices");
    // Every cell names a slice of the dictionary, under that slice's rollup.
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stats_cells c WHERE NOT EXISTS \
           (SELECT 1 FROM stats_slice s WHERE s.id = c.slice AND s.rollup = c.rollup)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(orphans, 0);

    // A dossier of a new agency after the rebuild: new slices, with ids above every old one.
    append_dossier(&log, "HS-R-LATE", 61, date(2024, 8, 1), None).await;
    store::apply_and_commit(&log, "HS-R-LATE").await.unwrap();
    rebuild::rebuild(&db.pool, |_| {}).await.unwrap();
    let last = dictionary(db.pool.clone()).await;
    assert_eq!(&last[..before.len()], &before[..]);
    let max_before = before.iter().map(|(id, _)| *id).max().unwrap();
    assert!(last[before.len()..].iter().all(|(id, _)| *id > max_before));
    assert_eq!(answers(&db.pool).await, from_log(&log).await);
}
