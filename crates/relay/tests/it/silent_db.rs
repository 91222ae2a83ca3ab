//! A database that goes silent under the relay (a partition, a frozen host: no reset, so every
//! connection looks healthy). Each read of the log is bounded (`db_timeout`): the relay's status
//! leaves `Running` (`Retrying`, then `Stalled`, naming the cause) instead of waiting forever,
//! and publication resumes by itself once the database answers again.

use std::time::Duration;

use eventlog::EventLog;
use relay::{RelayConfig, RelayState};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use testkit::{TcpProxy, TestNats};

use crate::support::{self, Running};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_stalls_the_relay_visibly_and_it_resumes_after() {
    let (db, direct) = support::log().await;
    let options: PgConnectOptions = db.url.parse().expect("test database url");
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve PostgreSQL")
        .next()
        .expect("an address for PostgreSQL");
    let proxy = TcpProxy::start(upstream).await;
    let through_proxy = EventLog::from_pool(
        // A pool that waits long for a connection: only the bound under test can end the wait
        // (a read already in flight when the database goes silent is not bounded by the pool).
        PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(600))
            .connect_with(options.host("127.0.0.1").port(proxy.addr().port()))
            .await
            .expect("connect through the proxy"),
    );
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = RelayConfig {
        db_timeout: Duration::from_secs(1),
        stall_after: Duration::from_secs(2),
        ..support::config(&nats.stream, &nats.prefix)
    };
    let mut relay = Running::start(&through_proxy, js.clone(), cfg.clone());
    let head = support::append_dossiers(&direct, "before", 3, 2).await;
    relay.published(head).await;
    relay
        .status_until("running", |s| s.state == RelayState::Running)
        .await;

    // Silence: the relay, caught up and polling, reads the log and gets no answer.
    proxy.freeze();
    let retrying = relay
        .status_until("retrying", |s| s.state != RelayState::Running)
        .await;
    match &retrying.state {
        RelayState::Retrying { reason, .. } | RelayState::Stalled { reason, .. } => {
            assert!(reason.contains("no answer"), "{reason}");
        }
        other => panic!("expected Retrying, got {other:?}"),
    }
    let stalled = relay
        .status_until("stalled", |s| s.state.is_stalled())
        .await;
    assert!(
        matches!(&stalled.state, RelayState::Stalled { reason, .. } if reason.contains("event log")),
        "{stalled:?}"
    );
    assert!(
        !relay.is_finished(),
        "a silent database is not a reason to exit"
    );
    // The log grows meanwhile (through another connection).
    let after = support::append_dossiers(&direct, "during", 3, 2).await;

    // The database answers again: the frozen connections are reset, new ones work.
    proxy.cut().await;
    proxy.restore();
    relay.published(after).await;
    relay
        .status_until("running again", |s| s.state == RelayState::Running)
        .await;
    support::assert_stream_is_log(&js, &cfg, &direct).await;
    relay.stop().await.expect("the relay stops cleanly");
}
