//! The database itself refuses to change or remove events.

use eventlog::ExpectedVersion;
use sqlx::{AssertSqlSafe, Connection};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_delete_truncate_are_refused() {
    let (db, log) = log().await;
    log.append(vec![dossier("D", ExpectedVersion::NoStream, events(2))])
        .await
        .unwrap();
    let before = read_all(&log).await;

    let mut conn = db.connect().await;
    for statement in [
        "UPDATE events SET payload = '{}'::jsonb WHERE position = 1",
        "UPDATE events SET event_type = 'x' WHERE false",
        "DELETE FROM events WHERE position = 2",
        "DELETE FROM events",
        "TRUNCATE events",
        "TRUNCATE events CASCADE",
        "DELETE FROM log_head",
        "TRUNCATE log_head",
        "INSERT INTO log_head (singleton, position, chain_hash, recorded_at) VALUES (false, 0, '\\x00', now())",
        "UPDATE log_head SET position = 0",
    ] {
        let err = sqlx::query(AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
            .expect_err(statement);
        let message = err.to_string();
        assert!(
            message.contains("append-only") || message.contains("only move forward"),
            "{statement}: {message}"
        );
    }
    // Inside a transaction too.
    let mut tx = conn.begin().await.unwrap();
    assert!(
        sqlx::query("DELETE FROM events")
            .execute(&mut *tx)
            .await
            .is_err()
    );
    tx.rollback().await.unwrap();

    assert_eq!(read_all(&log).await, before);
    assert_eq!(log.head().await.unwrap(), 2);
}

/// Migrations can run again, and applied migrations of other crates (other version ranges in
/// the same `_sqlx_migrations` table) do not stop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_repeatable_next_to_other_crates_migrations() {
    let (_db, log) = log().await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (20001, 'another crate', true, '\\x00', 0)",
    )
    .execute(log.pool())
    .await
    .unwrap();
    log.migrate().await.expect("second migrate");
    log.migrate().await.expect("third migrate");
    let ours: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM _sqlx_migrations WHERE version BETWEEN 10000 AND 19999 ORDER BY 1",
    )
    .fetch_all(log.pool())
    .await
    .unwrap();
    assert_eq!(ours, vec![10001]);
    assert_eq!(log.head().await.unwrap(), 0);
}
