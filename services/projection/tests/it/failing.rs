//! F2 of issue 9: a dossier whose apply keeps failing is never silently missing. Its failures
//! are recorded and counted, gRPC health says NOT_SERVING, `verify` lists it, its redeliveries
//! back off, and everything clears once it applies. The wiring too: the runner's `/metrics`
//! shows the consumer's positions and failures and the queries refused by a bound, and both
//! `/healthz` (the metrics port's and the queries port's) answer 503 naming the failure.

use std::net::SocketAddr;
use std::time::Duration;

use api::v1::stats_service_server::StatsServiceServer;
use projection::verify::verify;
use projection::{ConsumerConfig, ConsumerStatus, Endpoints, ProjectionApp, Stats, store};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::support::{append_dossier, migrated_db};

const BAD: &str = "HS-F-BAD";
const AUDITOR: &str = "test-auditor";
/// Far more than the test needs; only a bound so that a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

fn date(y: i32, m: u32, d: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

async fn wait_for(
    status: &mut watch::Receiver<ConsumerStatus>,
    what: &str,
    f: impl FnMut(&ConsumerStatus) -> bool,
) -> ConsumerStatus {
    let seen = tokio::time::timeout(PATIENCE, async {
        status
            .wait_for(f)
            .await
            .map(|s| *s)
            .expect("the consumer's status is kept")
    })
    .await;
    seen.unwrap_or_else(|_| panic!("waiting for {what}: {:?}", *status.borrow()))
}

/// What a reader of the live indicators is told about dossiers not counted.
async fn not_counted(pool: &sqlx::PgPool) -> u64 {
    let query = stats::Query {
        from: date(2024, 1, 1),
        to: date(2025, 1, 1),
        filter: stats::SliceFilter::default(),
        group_by: Vec::new(),
    };
    let reader = projection::read::Reader::new(
        pool,
        projection::QueryLimits::default(),
        stats::Targets::default(),
    );
    let answer = reader
        .indicators(&query, projection::scope::Source::Live, None)
        .await
        .unwrap();
    let wire =
        projection::service::indicators_response(&answer, projection::scope::Source::Live).unwrap();
    assert_eq!(wire.dossiers_not_counted, answer.dossiers_not_counted);
    answer.dossiers_not_counted
}

/// Waits (bounded by PATIENCE) until the gRPC health of the stats service is `expected`: the
/// runner samples the consumer's status at least every `svc::app::HEALTH_POLL`.
async fn wait_health(addr: SocketAddr, expected: ServingStatus) {
    let reached = tokio::time::timeout(PATIENCE, async {
        while health(addr).await != expected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "health never became {expected:?}");
}

/// `GET path` with a bearer token: status and body.
async fn get_authed(addr: SocketAddr, path: &str, token: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of an unlabelled sample of the runner's `/metrics`.
async fn metric(metrics: SocketAddr, name: &str, labels: &str) -> f64 {
    let (code, text) = testkit::http::get(metrics, "/metrics").await.unwrap();
    assert_eq!(code, 200, "{text}");
    testkit::http::sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} in {text}"))
}

async fn health(addr: SocketAddr) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    let service = <StatsServiceServer<Stats> as NamedService>::NAME.to_owned();
    let response = client.check(HealthCheckRequest { service }).await.unwrap();
    response.into_inner().status()
}

#[tokio::test]
async fn a_failing_dossier_is_counted_backed_off_reported_and_cleared_when_it_applies() {
    let (db, log) = migrated_db().await;
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();
    let relay_config = relay::RelayConfig {
        stream: nats.stream.clone(),
        subject_prefix: nats.prefix.clone(),
        max_backoff: Duration::from_millis(500),
        poll_interval: Duration::from_millis(200),
        ..relay::RelayConfig::default()
    };
    relay::ensure_stream(&js, &relay_config).await.unwrap();
    let stop = CancellationToken::new();
    let relay = relay::Relay::new(log.clone(), js.clone(), relay_config);
    let relay_task = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await.expect("relay runs") }
    });

    // Applying BAD fails for as long as this constraint stands (the apply's first statement
    // inserts the dossier's row).
    sqlx::query(
        "ALTER TABLE projection_contributions ADD CONSTRAINT test_refuses_bad \
         CHECK (dossier_id <> 'HS-F-BAD')",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let durable = format!("projection-failing-{}", testkit::unique_suffix());
    let mut consumer = ConsumerConfig::new(&nats.stream, &nats.prefix, &durable);
    consumer.first_failure_delay = Duration::from_millis(200);
    consumer.max_failure_delay = Duration::from_millis(800);
    consumer.status_refresh = Duration::from_millis(200);
    let mut tokens = svc::Tokens::parse(
        "[[token]]\nname = \"t\"\nagency = \"H40\"\nlevel = \"district\"\nrole = \"counter\"\n\
         sha256 = \"2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\"\n",
    )
    .unwrap();
    tokens.insert(
        AUDITOR,
        svc::Principal {
            name: "auditor".into(),
            agency: None,
            level: None,
            role: svc::Role::Auditor,
            scopes: Vec::new(),
        },
    );
    let app = ProjectionApp::build_with(
        log.clone(),
        tokens,
        Endpoints {
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            targets: stats::Targets::default(),
            // One group at most: a query grouped by procedure over two dossiers is refused.
            limits: projection::QueryLimits {
                max_groups: 1,
                ..projection::QueryLimits::default()
            },
            dashboard: projection::dashboard::DashboardConfig::default(),
        },
        js.clone(),
        consumer,
    )
    .await
    .unwrap();
    let addr = app.local_addr();
    let queries = app.http_addr();
    let mut status = app.status();
    let app = app.into_app().metrics(
        svc::Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap(),
    );
    let metrics = app.metrics_addr().unwrap();
    let serving = tokio::spawn(app.run_until_stopped(stop.clone()));

    append_dossier(&log, "HS-F-001", 1, date(2024, 3, 4), None).await;
    // One event, one message: each failed apply is one attempt of this message.
    append_dossier(&log, BAD, 2, date(2024, 3, 5), None).await;
    append_dossier(&log, "HS-F-003", 3, date(2024, 3, 6), None).await;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    // Failing: counted, health NOT_SERVING, the others applied, every message seen.
    let seen = wait_for(&mut status, "the failing dossier", |s| {
        s.failing_dossiers == 1 && s.stream_position == head
    })
    .await;
    assert!(seen.apply_failures_total >= 1, "{seen:?}");
    wait_health(addr, ServingStatus::NotServing).await;
    assert_eq!(not_counted(&db.pool).await, 1);
    // Both HTTP health checks fail, naming the cause.
    for (port, at) in [("metrics", metrics), ("queries", queries)] {
        let (code, body) = testkit::http::get(at, "/healthz").await.unwrap();
        assert_eq!(code, 503, "{port}: {body}");
        assert!(
            body.contains("consumer: 1 dossier(s) fail to apply"),
            "{port}: {body}"
        );
    }
    // The metrics say the same as the status.
    let now = *status.borrow();
    assert_eq!(now.failing_dossiers, 1);
    assert_eq!(
        metric(metrics, "motcua_projection_failing_dossiers", "").await,
        1.0
    );
    assert_eq!(
        metric(metrics, "motcua_projection_stream_position", "").await,
        head as f64
    );
    assert!(metric(metrics, "motcua_projection_apply_failures_total", "").await >= 1.0);
    // A query beyond a bound is refused and counted by reason.
    let (code, body) = get_authed(
        queries,
        "/v1/indicators?from=2024-01-01&to=2025-01-01&group_by=procedure",
        AUDITOR,
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("too_many_groups"), "{body}");
    assert_eq!(
        metric(
            metrics,
            "motcua_stats_queries_rejected_total",
            "reason=\"too_many_groups\""
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            metrics,
            "motcua_stats_queries_rejected_total",
            "reason=\"query_timeout\""
        )
        .await,
        0.0
    );
    wait_for(&mut status, "the other dossiers", |s| {
        s.applied_position >= 1
    })
    .await;
    for id in ["HS-F-001", "HS-F-003"] {
        let applied = tokio::time::timeout(PATIENCE, async {
            loop {
                if store::applied_version(&db.pool, id).await.unwrap() == 1 {
                    return;
                }
                status.changed().await.unwrap();
            }
        })
        .await;
        assert!(applied.is_ok(), "{id} applied despite the failing one");
    }
    assert_eq!(store::applied_version(&db.pool, BAD).await.unwrap(), 0);

    // Retried, with a delay that grows: the server may redeliver only after 200 + 400 + 800 ms
    // between the first failure and the fourth (a hot loop takes milliseconds).
    wait_for(&mut status, "four failed applies", |s| {
        s.apply_failures_total >= 4
    })
    .await;
    let (attempts, span_ms, last_error): (i64, f64, String) = sqlx::query_as(
        "SELECT attempts, extract(epoch FROM last_failed_at - first_failed_at)::float8 * 1000, \
                last_error \
         FROM projection_failures WHERE dossier_id = $1",
    )
    .bind(BAD)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(attempts >= 4, "{attempts}");
    assert!(
        span_ms >= 1_400.0 * 0.9,
        "{attempts} attempts within {span_ms} ms"
    );
    assert!(last_error.contains("test_refuses_bad"), "{last_error}");

    // Verify lists it and fails, even when lag is allowed.
    let report = verify(&db.pool, 100).await.unwrap();
    assert_eq!(report.failing.len(), 1, "{report}");
    assert_eq!(report.failing[0].dossier_id, BAD);
    assert!(!report.passes(true), "{report}");
    assert!(
        report.to_string().contains("failing     dossier HS-F-BAD"),
        "{report}"
    );

    // The cause goes: the next redelivery applies it, and every sign clears.
    sqlx::query("ALTER TABLE projection_contributions DROP CONSTRAINT test_refuses_bad")
        .execute(&db.pool)
        .await
        .unwrap();
    let cleared = wait_for(&mut status, "the dossier to apply", |s| {
        s.failing_dossiers == 0 && s.applied_position == head
    })
    .await;
    assert!(cleared.is_healthy());
    assert_eq!(store::applied_version(&db.pool, BAD).await.unwrap(), 1);
    assert_eq!(store::failing_dossiers(&db.pool).await.unwrap(), 0);
    wait_health(addr, ServingStatus::Serving).await;
    assert_eq!(not_counted(&db.pool).await, 0);
    for at in [metrics, queries] {
        assert_eq!(
            testkit::http::get(at, "/healthz").await.unwrap(),
            (200, "ok\n".to_owned())
        );
    }
    assert_eq!(
        metric(metrics, "motcua_projection_failing_dossiers", "").await,
        0.0
    );
    assert_eq!(
        metric(metrics, "motcua_projection_applied_position", "").await,
        head as f64
    );
    let report = verify(&db.pool, 100).await.unwrap();
    assert!(report.is_exact(), "{report}");

    stop.cancel();
    serving.await.unwrap().unwrap();
    relay_task.await.unwrap();
}

#[test]
fn the_redelivery_delay_doubles_up_to_its_bound() {
    let config = ConsumerConfig::new("S", "p", "d");
    let delays: Vec<u64> = [1, 2, 3, 4, 9, 10, 1_000, i64::MAX]
        .map(|a| config.failure_delay(a).as_secs())
        .to_vec();
    assert_eq!(delays, [1, 2, 4, 8, 256, 300, 300, 300]);
    assert_eq!(config.failure_delay(0).as_secs(), 1);
}
