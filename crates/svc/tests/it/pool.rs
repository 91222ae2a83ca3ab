//! The services' pools (`DatabaseConfig::pool_options`) against a real PostgreSQL: a connection
//! is pinged before use only after `PING_AFTER_IDLE` idle. A connection that died while idle
//! that long is replaced before a call sees it; one that died within the last second fails the
//! one call that takes it, and is not handed out again.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use svc::config::{DatabaseConfig, PING_AFTER_IDLE};
use testkit::TestDb;

async fn one_connection_pool(db: &TestDb) -> PgPool {
    DatabaseConfig::with_url(&db.url)
        .pool_options_sized(1)
        .connect(&db.url)
        .await
        .expect("connect the service pool")
}

async fn backend_pid(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Ends the session `pid` from outside the pool and waits until the server has ended it.
async fn terminate(db: &TestDb, pid: i32) {
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .expect("pg_terminate_backend");
    assert!(ended, "session {pid} did not end");
}

#[tokio::test]
async fn a_connection_idle_past_the_ping_threshold_is_checked_and_replaced() {
    let db = TestDb::new().await;
    let pool = one_connection_pool(&db).await;
    let first = backend_pid(&pool).await.expect("first query");
    terminate(&db, first).await;
    tokio::time::sleep(PING_AFTER_IDLE + Duration::from_millis(200)).await;

    let second = backend_pid(&pool)
        .await
        .expect("the dead connection is pinged, found dead and replaced before the query");
    assert_ne!(first, second, "a new session");
}

#[tokio::test]
async fn a_connection_dead_within_the_second_fails_one_call_and_is_not_reused() {
    let db = TestDb::new().await;
    let pool = one_connection_pool(&db).await;
    let first = backend_pid(&pool).await.expect("first query");
    // sqlx tests a connection as it goes back to the pool, in a task of its own: end the
    // session only once it is back (idle), or that test would find it dead first.
    testkit::eventually_some(
        "the connection back in the pool",
        Duration::from_secs(10),
        || {
            let idle = pool.num_idle();
            async move { (idle > 0).then_some(()) }
        },
    )
    .await;
    let last_used = Instant::now();
    terminate(&db, first).await;

    let taken = Instant::now();
    let outcome = backend_pid(&pool).await;
    if taken - last_used < PING_AFTER_IDLE - Duration::from_millis(100) {
        // Used within the last second: trusted without a ping, so this one call fails…
        let err = outcome.expect_err("a query on a connection that died unseen within the second");
        assert!(
            matches!(err, sqlx::Error::Io(_) | sqlx::Error::Database(_)),
            "a connection error, got {err:?}"
        );
    } else {
        // (A slow machine took the second to end the session: the connection was pinged.)
        let pid = outcome.expect("a connection idle past the second is pinged and replaced");
        assert_ne!(pid, first, "a new session");
    }
    // …and the pool does not hand that connection out again: the next call, at once, works.
    let second = backend_pid(&pool)
        .await
        .expect("the next call gets a new connection");
    assert_ne!(first, second, "a new session");
    assert_eq!(backend_pid(&pool).await.expect("and keeps it"), second);
}
