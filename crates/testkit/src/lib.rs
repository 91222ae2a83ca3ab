//! Real, isolated dependencies for integration tests.
//!
//! Every test gets its own PostgreSQL database and its own JetStream namespace (stream name and
//! subject prefix), so tests run in parallel against the one PostgreSQL and the one NATS server
//! of the machine. Nothing here mocks anything. `cargo xtask test` makes sure both servers run.
//!
//! Environment: `TEST_DATABASE_URL` (an admin connection to any database, default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`) and `TEST_NATS_URL` (default
//! `nats://127.0.0.1:4222`).

use std::time::Duration;

pub mod http;
pub mod nats_cluster;
pub use nats_cluster::NatsCluster;
pub mod nats_server;
pub use nats_server::NatsServer;
pub mod pg_cluster;
pub use pg_cluster::{PgCluster, StopMode};
pub mod proxy;
pub use proxy::TcpProxy;
pub mod rng;
pub mod schemathesis;
pub mod xlsx;
pub use rng::Rng;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};

/// The admin connection URL used to create and drop per-test databases.
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The NATS server tests publish to.
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A short random suffix, lower-case hex, safe in database names, stream names and subjects.
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// A fresh, empty database, dropped (with `FORCE`) when the value is dropped.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    /// Creates `test_<random>` and connects a pool of up to 16 connections to it.
    /// The database is empty: the caller applies migrations (usually through the code under test).
    pub async fn new() -> Self {
        Self::with_pool_size(16).await
    }

    pub async fn with_pool_size(max_connections: u32) -> Self {
        let name = format!("test_{}", unique_suffix());
        let admin: PgConnectOptions = admin_database_url().parse().expect("TEST_DATABASE_URL");
        let mut conn = admin
            .connect()
            .await
            .expect("connect to PostgreSQL (is it running? `cargo xtask test` starts it)");
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        let options = admin.database(&name);
        let url = options.to_url_lossy().to_string();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .expect("connect to test database");
        TestDb { name, url, pool }
    }

    /// A new single connection to the test database, outside the pool (for holding transactions open).
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Async drop does not exist. Drop the database from a helper thread with its own
        // runtime and its own connection; `FORCE` ends the pool's sessions server-side. The
        // pool itself is not touched there: its sockets belong to the test's runtime, which is
        // blocked in `join` (closing it from here would wait forever on a current-thread runtime).
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(admin) = admin_database_url().parse::<PgConnectOptions>() else {
                    return;
                };
                if let Ok(mut conn) = admin.connect().await {
                    let _ = sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A private JetStream namespace: a stream name and a subject prefix no other test uses.
/// The stream itself is created by the code under test; it is deleted when the value is dropped.
#[derive(Debug)]
pub struct TestNats {
    pub url: String,
    pub client: async_nats::Client,
    /// Stream name, e.g. `T_3f2a…`.
    pub stream: String,
    /// Subject prefix, e.g. `t3f2a….dossier`.
    pub prefix: String,
}

impl TestNats {
    pub async fn new() -> Self {
        let suffix = unique_suffix();
        let url = nats_url();
        let client = async_nats::connect(&url)
            .await
            .expect("connect to NATS (is it running with -js? `cargo xtask test` starts it)");
        TestNats {
            url,
            client,
            stream: format!("T_{suffix}"),
            prefix: format!("t{suffix}.dossier"),
        }
    }

    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client.clone())
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let url = self.url.clone();
        let stream = self.stream.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(client) = async_nats::connect(&url).await {
                    let js = async_nats::jetstream::new(client);
                    let _ = js.delete_stream(&stream).await;
                }
            });
        })
        .join();
    }
}

/// Polls `check` every 50 ms until it answers `Some`, and returns that; panics naming `what`
/// once `timeout` has passed. The one way the integration tests wait for a condition.
pub async fn eventually_some<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_ok(what, timeout, || {
        let found = check();
        async move { found.await.ok_or("not yet") }
    })
    .await
}

/// [`eventually_some`] for a check that says what it still sees: polls `check` every 50 ms
/// until it answers `Ok`, and returns that; once `timeout` has passed, panics naming `what` and
/// the last `Err` (e.g. the sessions still open), so that a failure says what was stuck.
pub async fn eventually_ok<T, E, F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    mut check: F,
) -> T
where
    E: std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(found) => return found,
            Err(last) => last,
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
