//! Operating the services: reflection per port (v1 and v1alpha), `/metrics` after real calls,
//! and the installation's PostgreSQL connection budget under load.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use eventlog::EventLog;
use sqlx::Connection;
use testkit::{TestDb, http};
use tests::{COUNTER_DISTRICT, RunningIntake, authed, local, receive_request};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `ListServices` through reflection v1, then v1alpha; and the file of `symbol` through v1alpha.
async fn reflected(addr: SocketAddr, symbol: &str) -> (BTreeSet<String>, BTreeSet<String>, usize) {
    use tonic_reflection::pb::{v1, v1alpha};
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection v1 is served")
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("v1: not a service list: {answer:?}");
    };
    let v1_names = list.service.into_iter().map(|s| s.name).collect();

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(channel(addr).await);
    let requests = [
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        },
        v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                    symbol.to_owned(),
                ),
            ),
        },
    ];
    let mut answers = client
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .expect("reflection v1alpha is served")
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("v1alpha: not a service list: {answer:?}");
    };
    let v1alpha_names = list.service.into_iter().map(|s| s.name).collect();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        answer.message_response
    else {
        panic!("v1alpha: no file for {symbol}: {answer:?}");
    };
    (v1_names, v1alpha_names, files.file_descriptor_proto.len())
}

fn expected(own: &[&str]) -> BTreeSet<String> {
    [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .chain(own.iter().copied())
    .map(str::to_owned)
    .collect()
}

#[tokio::test]
async fn each_port_lists_what_it_serves_over_reflection_v1_and_v1alpha() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let payment = tests::lifecycle::RunningService::payment(log.clone()).await;

    // Intake also serves the procedure catalogue.
    let intake_services = ["dossier.v1.IntakeService", "dossier.v1.CatalogueService"];
    let (v1, v1alpha, files) = reflected(intake.addr, "dossier.v1.IntakeService").await;
    assert_eq!(v1, expected(&intake_services));
    assert_eq!(v1alpha, expected(&intake_services));
    assert!(files > 0);
    let (_, _, files) = reflected(intake.addr, "dossier.v1.CatalogueService").await;
    assert!(files > 0);

    let (v1, v1alpha, files) = reflected(payment.addr, "dossier.v1.PaymentService").await;
    assert_eq!(v1, expected(&["dossier.v1.PaymentService"]));
    assert_eq!(v1alpha, expected(&["dossier.v1.PaymentService"]));
    assert!(files > 0);
}

#[tokio::test]
async fn metrics_count_the_calls_of_a_running_service_by_method_and_code() {
    let db = TestDb::new().await;
    let intake = RunningIntake::start(EventLog::from_pool(db.pool.clone())).await;
    let mut client = intake.client().await;
    let at = local(2024, 3, 4, 9, 0);
    for id in ["H40-MET-1", "H40-MET-2"] {
        client
            .receive_dossier(authed(COUNTER_DISTRICT, receive_request(id, at)))
            .await
            .expect("received");
    }
    let mut bad = receive_request("H40-MET-3", at);
    bad.event_id = "not a uuid".into();
    let refused = client
        .receive_dossier(authed(COUNTER_DISTRICT, bad))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let anonymous = client
        .receive_dossier(tonic::Request::new(receive_request("H40-MET-4", at)))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let (status, text) = http::get(intake.metrics_addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let calls = |code: &str| {
        http::sample(
            &text,
            "motcua_grpc_requests_total",
            &format!(r#"service="dossier.v1.IntakeService",method="ReceiveDossier",code="{code}""#),
        )
    };
    assert_eq!(calls("OK"), Some(2.0), "{text}");
    assert_eq!(calls("INVALID_ARGUMENT"), Some(1.0), "{text}");
    assert_eq!(calls("UNAUTHENTICATED"), Some(1.0), "{text}");
    assert_eq!(
        http::sample(
            &text,
            "motcua_grpc_request_duration_seconds_count",
            r#"service="dossier.v1.IntakeService",method="ReceiveDossier""#
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        http::sample(
            &text,
            "motcua_grpc_request_duration_seconds_bucket",
            r#"service="dossier.v1.IntakeService",method="ReceiveDossier",le="+Inf""#
        ),
        Some(4.0),
        "{text}"
    );
    // The pool's gauges, from the pool the service was built with.
    let max = db.pool.options().get_max_connections();
    assert_eq!(
        http::sample(
            &text,
            "motcua_db_pool_max_connections",
            r#"service="intake""#
        ),
        Some(f64::from(max)),
        "{text}"
    );
    let idle = http::sample(
        &text,
        "motcua_db_pool_connections",
        r#"service="intake",state="idle""#,
    )
    .expect("idle gauge");
    let in_use = http::sample(
        &text,
        "motcua_db_pool_connections",
        r#"service="intake",state="in_use""#,
    )
    .expect("in use gauge");
    assert!(
        idle + in_use >= 1.0 && idle + in_use <= f64::from(max),
        "{text}"
    );
    assert_eq!(
        http::get(intake.metrics_addr, "/healthz").await.unwrap(),
        (200, "ok\n".to_owned())
    );
}

/// Connections of `database` in `pg_stat_activity`, counted from another database.
async fn connections(admin: &sqlx::PgPool, database: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(database)
        .fetch_one(admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_service_under_load_stays_within_the_connection_budget_and_releases_idle_ones() {
    let db = TestDb::new().await;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&testkit::admin_database_url())
        .await
        .unwrap();
    let config = svc::Config::parse(&format!(
        "[database]\nurl = \"{}\"\nidle_timeout_secs = 1\n[auth]\ntokens_file = \"x\"\n",
        db.url
    ))
    .unwrap();
    // The test database's own pool is not one of the services'.
    db.pool.close().await;

    // Every service's pool, and the connections outside the pools the services hold
    // (relay's and replay's LISTEN; a projection rebuild's pool and its lock connection).
    let mut pools = Vec::new();
    for service in svc::config::SERVICE_SECTIONS {
        pools.push(config.database.connect(service).await.unwrap());
    }
    let tool = config
        .database
        .connect_sized(svc::config::PROJECTION_TOOL_CONNECTIONS)
        .await
        .unwrap();
    pools.push(tool.clone());
    let mut listeners = Vec::new();
    for log in [&pools[5], &pools[7]] {
        listeners.push(log.changes().await.unwrap());
    }
    let lock = sqlx::PgConnection::connect_with(&tool.pool().connect_options())
        .await
        .unwrap();
    let budget = i64::from(config.database.budget());
    let pooled: i64 = pools
        .iter()
        .map(|p| i64::from(p.pool().options().get_max_connections()))
        .sum();

    // Load: three times as many concurrent statements as each pool has connections.
    let stop = CancellationToken::new();
    let mut load = Vec::new();
    for log in &pools {
        for _ in 0..3 * log.pool().options().get_max_connections() {
            let pool = log.pool().clone();
            let stop = stop.clone();
            load.push(tokio::spawn(async move {
                while !stop.is_cancelled() {
                    sqlx::query("SELECT pg_sleep(0.05)")
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            }));
        }
    }
    // Every pool full, then a few more samples while the load goes on.
    let mut most = 0;
    let mut full_samples = 0;
    for _ in 0..2000 {
        if full_samples == 20 {
            break;
        }
        let seen = connections(&admin, &db.name).await;
        most = most.max(seen);
        if seen >= pooled {
            full_samples += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    for task in load {
        task.await.unwrap();
    }
    assert!(
        most <= budget,
        "{most} connections seen, the documented budget is {budget}"
    );
    assert!(
        most >= pooled + 3,
        "the load did not fill the pools ({most} < {pooled} + 3)"
    );
    assert!(budget <= 50, "the default budget is {budget}");

    // Idle connections are released: only the three outside the pools stay.
    let mut left = connections(&admin, &db.name).await;
    for _ in 0..600 {
        if left <= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = connections(&admin, &db.name).await;
    }
    assert_eq!(left, 3, "idle connections were not released");
    drop((listeners, lock));
}
