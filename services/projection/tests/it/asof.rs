//! "As recorded at T" from checkpoints (`projection::asof`): equal to the scan of the log for
//! every instant and query, whatever the window size (the scan fallback checked on a sample); a checkpoint failing or cut off midway
//! leaves nothing behind and the next one resumes; concurrent checkpointers count each window
//! once; what the checkpoints cannot answer falls back to the scan.
//!
//! The reference is computed here from the log with the query the projection used before the
//! checkpoints (every event `recorded_at <= T`, by dossier and version), so a mistake shared by
//! the fast path and the new scan would still show.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use eventlog::EventLog;
use projection::asof;
use sqlx::{PgPool, Row};
use stats::{Aggregates, Dimension, Query, SliceFilter};

use crate::crash::{Interleaving, Life, Shape, life};
use crate::support::{AGENCIES, PROCEDURES, Rng, SECTORS, migrated_db};

/// Appends `lives` piecewise and interleaved, one small append per transaction (so that most
/// appends have an instant of their own), as counters would.
async fn write_lives(log: &EventLog, lives: &[Life], rng: &mut Rng) {
    let mut pieces = Interleaving::new(lives.len());
    let shape = Shape {
        several_percent: 15,
        most_dossiers: 2,
        active: 10,
        start_percent: 25,
        most_events: 2,
    };
    while !pieces.done(lives) {
        let batch = pieces.next_batch(lives, rng, shape);
        let calls = pieces.appends(lives, &batch, rng);
        if !calls.is_empty() {
            log.append(calls).await.expect("append");
        }
        pieces.written_now(lives, &batch);
    }
}

fn lives(rng: &mut Rng, from: usize, n: usize) -> Vec<Life> {
    (from..from + n)
        .map(|i| life(rng, i))
        .filter(|l| !l.events.is_empty())
        .collect()
}

/// The aggregates of every event recorded up to `at`, as the projection computed them before
/// checkpoints (its SQL without the filter, which `Aggregates::query` applies, and its fold).
async fn reference(pool: &PgPool, at: DateTime<Utc>) -> Aggregates {
    let rows = sqlx::query(
        "SELECT dossier_id, event_type, payload, occurred_at FROM events \
         WHERE recorded_at <= $1 ORDER BY dossier_id, version",
    )
    .bind(at)
    .fetch_all(pool)
    .await
    .expect("reference read");
    let mut by_dossier: BTreeMap<String, Vec<domain::Event>> = BTreeMap::new();
    for row in rows {
        let body = domain::DossierEvent::from_parts(
            &row.get::<String, _>("event_type"),
            &row.get::<serde_json::Value, _>("payload"),
        )
        .expect("decodes");
        by_dossier
            .entry(row.get("dossier_id"))
            .or_default()
            .push(domain::Event {
                occurred_at: row.get("occurred_at"),
                body,
            });
    }
    let mut aggregates = Aggregates::new();
    for events in by_dossier.values() {
        if let Some(c) = stats::contribution(events) {
            aggregates.add_contribution(&c);
        }
    }
    aggregates
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// Periods across months and the year end, groupings by level, agency and sector, filters on
/// them — and a few the checkpoints cannot answer (procedure, channel, applicant type).
fn queries() -> Vec<Query> {
    let mut out = Vec::new();
    let periods = [
        (date(2024, 1, 1), date(2025, 1, 1)),
        (date(2024, 2, 10), date(2024, 11, 3)),
        (date(2023, 12, 20), date(2024, 1, 15)),
        (date(2024, 3, 1), date(2024, 4, 1)),
        (date(2024, 12, 30), date(2025, 2, 2)),
    ];
    for (from, to) in periods {
        for group_by in [
            vec![],
            vec![Dimension::Level],
            vec![Dimension::Agency],
            vec![Dimension::Sector, Dimension::Agency],
            vec![Dimension::Level, Dimension::Sector],
        ] {
            out.push(Query {
                from,
                to,
                filter: SliceFilter::default(),
                group_by,
            });
        }
    }
    for (i, (from, to)) in periods.into_iter().enumerate() {
        out.push(Query {
            from,
            to,
            filter: SliceFilter {
                level: Some(domain::Level::ALL[i % domain::Level::ALL.len()]),
                ..SliceFilter::default()
            },
            group_by: vec![],
        });
    }
    let year = periods[0];
    for (i, agency) in AGENCIES.iter().enumerate() {
        out.push(Query {
            from: year.0,
            to: year.1,
            filter: SliceFilter {
                agency: Some(domain::AgencyCode::parse(*agency).unwrap()),
                sector: (i == 1).then(|| domain::SectorCode::parse(SECTORS[0]).unwrap()),
                ..SliceFilter::default()
            },
            group_by: if i == 2 {
                vec![Dimension::Sector]
            } else {
                vec![]
            },
        });
    }
    out.push(Query {
        from: periods[1].0,
        to: periods[1].1,
        filter: SliceFilter {
            level: Some(domain::Level::District),
            ..SliceFilter::default()
        },
        group_by: vec![Dimension::Agency],
    });
    // Beyond the checkpoints: the scan answers.
    out.push(Query {
        from: year.0,
        to: year.1,
        filter: SliceFilter::default(),
        group_by: vec![Dimension::Procedure, Dimension::Channel],
    });
    out.push(Query {
        from: periods[2].0,
        to: periods[2].1,
        filter: SliceFilter {
            procedure: Some(domain::ProcedureCode::parse(PROCEDURES[1]).unwrap()),
            agency: Some(domain::AgencyCode::parse(AGENCIES[0]).unwrap()),
            ..SliceFilter::default()
        },
        group_by: vec![],
    });
    out
}

/// Instants to ask at: before the first event, at and just before every checkpoint, at and
/// just before random positions (inside windows), and after the head.
async fn instants(pool: &PgPool, rng: &mut Rng) -> Vec<DateTime<Utc>> {
    let micro = chrono::Duration::microseconds(1);
    let mut out = Vec::new();
    let first: DateTime<Utc> =
        sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = 1")
            .fetch_one(pool)
            .await
            .unwrap();
    out.push(first - micro);
    out.push(first);
    let checkpoints: Vec<DateTime<Utc>> =
        sqlx::query_scalar("SELECT recorded_at FROM asof_checkpoints ORDER BY seq")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(!checkpoints.is_empty(), "no checkpoint written");
    let mut picked: Vec<usize> = vec![0, 1, 2, checkpoints.len() - 1];
    picked.extend((0..5).map(|_| rng.below(checkpoints.len() as u64) as usize));
    picked.retain(|i| *i < checkpoints.len());
    for i in picked {
        out.push(checkpoints[i]);
        out.push(checkpoints[i] - micro);
    }
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(pool)
        .await
        .unwrap();
    for _ in 0..6 {
        let p = 1 + rng.below(head as u64) as i64;
        let t: DateTime<Utc> =
            sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
                .bind(p)
                .fetch_one(pool)
                .await
                .unwrap();
        out.push(t);
        out.push(t - micro);
    }
    out.push(Utc::now() + chrono::Duration::days(1));
    out
}

/// Every query at every instant: the fast path answers exactly the reference when the
/// checkpoints can answer, `None` otherwise, and then `figures::as_recorded_at` (the scan)
/// answers it. Returns the number of fast answers compared.
async fn assert_exact_everywhere(pool: &PgPool, rng: &mut Rng, label: &str) -> usize {
    let mut compared = 0;
    for at in instants(pool, rng).await {
        let reference = reference(pool, at).await;
        for query in queries() {
            let expected = reference.query(&query);
            let fast = asof::as_recorded_at(pool, &query, at)
                .await
                .expect("fast path");
            match asof::checkpoint_rollup_for(&query) {
                Some(_) => {
                    let fast = fast.expect("the checkpoints answer a coarse query");
                    assert_eq!(fast, expected, "{label}: at {at}, {query:?}");
                    compared += 1;
                }
                None => {
                    assert!(fast.is_none(), "{label}: {query:?} needs the scan");
                    if !rng.chance(20) {
                        continue;
                    }
                    let served = projection::figures::as_recorded_at(pool, &query, at)
                        .await
                        .expect("figures");
                    assert_eq!(served, expected, "{label}: scanned at {at}, {query:?}");
                }
            }
        }
    }
    compared
}

async fn checkpoint_all(pool: &PgPool, window: u32) -> usize {
    let mut n = 0;
    while asof::checkpoint_once(pool, window)
        .await
        .expect("checkpoint")
        .is_some()
    {
        n += 1;
    }
    n
}

async fn reset_checkpoints(pool: &PgPool) {
    sqlx::query("TRUNCATE asof_cells, asof_checkpoints")
        .execute(pool)
        .await
        .unwrap();
}

/// Checkpoints are consecutive, each `window` events after the previous one.
async fn assert_consecutive(pool: &PgPool, window: i64) -> i64 {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT seq, position FROM asof_checkpoints ORDER BY seq")
            .fetch_all(pool)
            .await
            .unwrap();
    for (i, (seq, position)) in rows.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1);
        assert_eq!(*position, (i as i64 + 1) * window, "checkpoint {seq}");
    }
    rows.len() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_recorded_at_from_checkpoints_equals_the_scan_for_every_instant_and_query() {
    let (db, log) = migrated_db().await;
    let mut rng = Rng::new(0xa5_0f);
    let lives = lives(&mut rng, 0, 160);
    write_lives(&log, &lives, &mut rng).await;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(head > 600, "only {head} events");

    // Windows: tiny (several tiers of blocks), odd-sized, and larger than most partial runs.
    for window in [3u32, 16, 97] {
        reset_checkpoints(&db.pool).await;
        let written = checkpoint_all(&db.pool, window).await;
        assert_eq!(written as i64, head / i64::from(window));
        assert_eq!(
            assert_consecutive(&db.pool, i64::from(window)).await,
            written as i64
        );
        if window == 3 {
            let tiers: i16 = sqlx::query_scalar("SELECT max(tier) FROM asof_cells")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert!(tiers >= 2, "blocks of tier {tiers} only");
        }
        let compared =
            assert_exact_everywhere(&db.pool, &mut rng, &format!("window {window}")).await;
        assert!(compared > 300, "{compared} comparisons");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_failing_or_cut_off_midway_leaves_nothing_and_the_next_resumes() {
    let (db, log) = migrated_db().await;
    let mut rng = Rng::new(0xc4_a5);
    let lives = lives(&mut rng, 0, 60);
    write_lives(&log, &lives, &mut rng).await;
    let window = 5u32;

    // The fourth checkpoint fails at its last statement, after its cells were written.
    sqlx::query("ALTER TABLE asof_checkpoints ADD CONSTRAINT no_fourth CHECK (seq < 4)")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(checkpoint_all_until_error(&db.pool, window).await, 3);
    let blocks: Vec<i64> =
        sqlx::query_scalar("SELECT DISTINCT block FROM asof_cells WHERE tier = 0 ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(blocks, vec![0, 1, 2], "the failed window left cells");
    sqlx::query("ALTER TABLE asof_checkpoints DROP CONSTRAINT no_fourth")
        .execute(&db.pool)
        .await
        .unwrap();

    // Checkpoints dropped at random moments (a process killed: its transaction is rolled back).
    let mut cut_off = 0;
    for _ in 0..40 {
        let pool = db.pool.clone();
        let task = tokio::spawn(async move { asof::checkpoint_once(&pool, window).await });
        tokio::time::sleep(Duration::from_micros(rng.below(8_000))).await;
        if !task.is_finished() {
            cut_off += 1;
        }
        task.abort();
        let _ = task.await;
    }
    assert!(cut_off > 0, "no checkpoint was cut off");
    // The aborted connections' transactions end when PostgreSQL sees them closed.
    no_transaction_open_elsewhere(&db.pool).await;
    checkpoint_all(&db.pool, window).await;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        assert_consecutive(&db.pool, i64::from(window)).await,
        head / i64::from(window)
    );
    assert_exact_everywhere(&db.pool, &mut rng, "after failures").await;
}

/// Waits until no other session of this database is inside a transaction; on timeout, names
/// the sessions still there (state, wait, query), so that a failure says what was stuck.
async fn no_transaction_open_elsewhere(pool: &PgPool) {
    testkit::eventually_ok(
        "aborted transactions to end (sessions still open: state, wait, query)",
        Duration::from_secs(30),
        || async {
            let open: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT state, wait_event_type || ':' || wait_event, left(query, 200) \
                 FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND state IN ('active', 'idle in transaction', \
                                 'idle in transaction (aborted)')",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            if open.is_empty() { Ok(()) } else { Err(open) }
        },
    )
    .await;
}

async fn checkpoint_all_until_error(pool: &PgPool, window: u32) -> usize {
    let mut n = 0;
    loop {
        match asof::checkpoint_once(pool, window).await {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("the failing checkpoint did not fail"),
            Err(_) => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkpointers_while_appending_count_each_window_once() {
    let (db, log) = migrated_db().await;
    let mut rng = Rng::new(0x2c_4e);
    let first = lives(&mut rng, 0, 40);
    write_lives(&log, &first, &mut rng).await;
    let window = 4u32;
    let stop = tokio_util::sync::CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let pool = db.pool.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut wrote = 0;
            while !stop.is_cancelled() {
                match asof::checkpoint_once(&pool, window)
                    .await
                    .expect("checkpoint")
                {
                    Some(_) => wrote += 1,
                    None => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
            wrote
        }));
    }
    let more = lives(&mut rng, 1000, 60);
    write_lives(&log, &more, &mut rng).await;
    // The checkpointers catch up with the head before they stop.
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    testkit::eventually_some(
        "the checkpointers to reach the head",
        Duration::from_secs(30),
        || async {
            let done: i64 = sqlx::query_scalar("SELECT count(*) FROM asof_checkpoints")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            (done >= head / i64::from(window)).then_some(())
        },
    )
    .await;
    stop.cancel();
    let mut per_task = Vec::new();
    for t in tasks {
        per_task.push(t.await.unwrap());
    }
    checkpoint_all(&db.pool, window).await;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let n = assert_consecutive(&db.pool, i64::from(window)).await;
    assert_eq!(n, head / i64::from(window));
    assert!(
        per_task.iter().filter(|w| **w > 0).count() >= 2,
        "only one checkpointer ever worked: {per_task:?}"
    );
    assert_exact_everywhere(&db.pool, &mut rng, "concurrent").await;
}

/// The running checkpointer (`asof::run`) reports the shared progress its metrics expose: the
/// last checkpoint's position, the events past it, and its own failures (counted, retried,
/// and caught up after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_checkpointer_reports_its_progress_and_failures() {
    let (db, log) = migrated_db().await;
    let mut rng = Rng::new(0x5a_7e);
    write_lives(&log, &lives(&mut rng, 0, 30), &mut rng).await;
    let window = 8u32;
    // Every checkpoint fails until the constraint goes.
    sqlx::query("ALTER TABLE asof_checkpoints ADD CONSTRAINT none_yet CHECK (seq < 1)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, mut seen) = tokio::sync::watch::channel(asof::CheckpointerStatus::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let settings = asof::CheckpointSettings {
        enabled: true,
        window_events: window,
        idle_poll_ms: 10,
    };
    let task = tokio::spawn(asof::run(db.pool.clone(), settings, status, stop.clone()));
    let head = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT position FROM log_head")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let at_head = head(db.pool.clone()).await;
    assert!(at_head > i64::from(window) * 3, "only {at_head} events");
    let failing =
        testkit::eventually_some("failures to be counted", Duration::from_secs(30), || {
            let s = *seen.borrow_and_update();
            async move { (s.failures_total >= 2 && s.head_position == at_head).then_some(s) }
        })
        .await;
    assert_eq!(failing.checkpointed_position, 0);
    assert_eq!(failing.events_past_checkpoint(), at_head);

    sqlx::query("ALTER TABLE asof_checkpoints DROP CONSTRAINT none_yet")
        .execute(&db.pool)
        .await
        .unwrap();
    write_lives(&log, &lives(&mut rng, 500, 10), &mut rng).await;
    let at_head = head(db.pool.clone()).await;
    let caught_up = at_head - at_head % i64::from(window);
    let done = testkit::eventually_some(
        "the checkpointer to catch up",
        Duration::from_secs(30),
        || {
            let s = *seen.borrow_and_update();
            async move {
                (s.checkpointed_position == caught_up && s.head_position == at_head).then_some(s)
            }
        },
    )
    .await;
    assert_eq!(done.events_past_checkpoint(), at_head % i64::from(window));
    assert!(done.failures_total >= failing.failures_total);
    stop.cancel();
    task.await.unwrap();
    assert_eq!(
        assert_consecutive(&db.pool, i64::from(window)).await * i64::from(window),
        caught_up
    );
}
