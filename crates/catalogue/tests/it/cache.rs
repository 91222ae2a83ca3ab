//! The cached catalogue (`Catalogue::cached`): answers as the table does, and sees every
//! publication — its own at once, another process's when the table's notification arrives, and
//! those made while its listener was cut off once it listens again.

use std::time::Duration;

use calendar::StatutoryTime;
use catalogue::{Catalogue, Procedure};
use chrono::{DateTime, Utc};
use domain::ProcedureCode;
use testkit::TestDb;

use super::{FILE, t};

/// How long a test waits for the listener (a notification, a reconnection) before failing.
const WAIT: Duration = Duration::from_secs(20);

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {WAIT:?} for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn listening(store: &Catalogue) {
    until("the cache's listener", async || store.answers_from_memory()).await;
}

fn land() -> (ProcedureCode, Procedure) {
    let procedures = catalogue::parse_file(FILE).unwrap();
    (procedures[0].code.clone(), procedures[0].clone())
}

async fn statutory(
    store: &Catalogue,
    code: &ProcedureCode,
    at: DateTime<Utc>,
) -> Option<StatutoryTime> {
    store
        .in_force(code, at)
        .await
        .unwrap()
        .map(|v| v.procedure.statutory_time)
}

#[tokio::test]
async fn a_cached_catalogue_answers_as_the_table_at_every_instant() {
    let db = TestDb::new().await;
    let table = Catalogue::new(db.pool.clone());
    table.migrate().await.unwrap();
    let (code, base) = land();
    // Two versions from one instant (the later published wins), one a second later, one a
    // microsecond before: the in-force rule's edges.
    let from = t("2025-06-30T17:00:00Z");
    let mut versions = Vec::new();
    for (days, at) in [
        (30, from),
        (31, from),
        (32, from + chrono::Duration::seconds(1)),
        (33, from - chrono::Duration::microseconds(1)),
    ] {
        let mut p = base.clone();
        p.statutory_time = StatutoryTime::Days(days);
        p.effective_from = at;
        versions.push(p);
    }
    for p in &versions {
        table
            .publish(std::slice::from_ref(p), "admin")
            .await
            .unwrap();
    }
    let cached = Catalogue::cached(db.pool.clone());
    listening(&cached).await;
    let unknown = ProcedureCode::parse("9.999999").unwrap();
    let instants = [
        from - chrono::Duration::microseconds(2),
        from - chrono::Duration::microseconds(1),
        from - chrono::Duration::nanoseconds(1),
        from,
        from + chrono::Duration::milliseconds(999),
        from + chrono::Duration::seconds(1),
        t("2030-01-01T00:00:00Z"),
    ];
    // Twice: the first round fills the cache, the second answers from it.
    for round in 0..2 {
        for at in instants {
            for c in [&code, &unknown] {
                let want = table.in_force(c, at).await.unwrap().map(|v| v.version);
                let got = cached.in_force(c, at).await.unwrap().map(|v| v.version);
                assert_eq!(got, want, "round {round}, {c:?} at {at}");
            }
        }
    }
    assert_eq!(
        statutory(&cached, &code, from).await,
        Some(StatutoryTime::Days(31))
    );
}

#[tokio::test]
async fn a_cached_catalogue_sees_its_own_publication_at_once_and_another_process_s_soon() {
    let db = TestDb::new().await;
    let other = Catalogue::new(db.pool.clone());
    other.migrate().await.unwrap();
    let cached = Catalogue::cached(db.pool.clone());
    listening(&cached).await;
    let (code, mut p) = land();
    let at = p.effective_from + chrono::Duration::days(1);
    // Unknown first: the cache now holds "no version" for the code.
    assert_eq!(statutory(&cached, &code, at).await, None);
    cached
        .publish(std::slice::from_ref(&p), "admin")
        .await
        .unwrap();
    assert_eq!(
        statutory(&cached, &code, at).await,
        Some(StatutoryTime::Days(30)),
        "a publication through the cached handle is seen by its next lookup"
    );
    // Another process publishes a correction: the notification empties the cache.
    p.statutory_time = StatutoryTime::Days(12);
    other
        .publish(std::slice::from_ref(&p), "admin-2")
        .await
        .unwrap();
    until("another handle's publication", async || {
        statutory(&cached, &code, at).await == Some(StatutoryTime::Days(12))
    })
    .await;
    // And an operator's own insert, outside any service.
    sqlx::query(
        "INSERT INTO procedure_versions (code, effective_from, definition, recorded_by) \
         SELECT code, effective_from, jsonb_set(definition, '{statutory_time}', '{\"days\": 7}'), 'psql' \
         FROM procedure_versions ORDER BY version DESC LIMIT 1",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    until("an insert made with SQL", async || {
        statutory(&cached, &code, at).await == Some(StatutoryTime::Days(7))
    })
    .await;
}

#[tokio::test]
async fn publications_made_while_the_listener_was_cut_off_are_seen_once_it_listens_again() {
    let db = TestDb::new().await;
    let other = Catalogue::new(db.pool.clone());
    other.migrate().await.unwrap();
    let (code, mut p) = land();
    let at = p.effective_from + chrono::Duration::days(1);
    other
        .publish(std::slice::from_ref(&p), "admin")
        .await
        .unwrap();
    let cached = Catalogue::cached(db.pool.clone());
    listening(&cached).await;
    assert_eq!(
        statutory(&cached, &code, at).await,
        Some(StatutoryTime::Days(30))
    );

    // Cut the listener off, and publish while it cannot hear (its notification goes nowhere).
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%motcua_catalogue%'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "one listener per cached catalogue");
    until("the cache to stop answering from memory", async || {
        !cached.answers_from_memory()
    })
    .await;
    p.statutory_time = StatutoryTime::Days(9);
    other
        .publish(std::slice::from_ref(&p), "admin-2")
        .await
        .unwrap();
    // Not listening: read from the table.
    assert_eq!(
        statutory(&cached, &code, at).await,
        Some(StatutoryTime::Days(9))
    );
    listening(&cached).await;
    assert_eq!(
        statutory(&cached, &code, at).await,
        Some(StatutoryTime::Days(9))
    );
}
