use std::net::SocketAddr;

use svc::{App, Listener, RunError};
use testkit::http;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn app(name: &'static str) -> App {
    App::new(name)
        .grpc(Listener::bind(any_port()).await.unwrap())
        .metrics(Listener::bind(any_port()).await.unwrap())
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn health(addr: SocketAddr, service: &str) -> Result<i32, tonic::Status> {
    let mut client = HealthClient::new(channel(addr).await);
    client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map(|r| r.into_inner().status)
}

/// Asks the health service until it answers `want` (the runner applies a report at once, but
/// through a task: this waits for it, it does not time it).
async fn health_becomes(addr: SocketAddr, want: ServingStatus) {
    loop {
        if health(addr, "").await.unwrap() == want as i32 {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn grpc_calls_are_counted_by_service_method_and_code() {
    let app = app("test").await;
    let grpc = app.local_addr();
    let metrics = app.metrics_addr().unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));

    health_becomes(grpc, ServingStatus::Serving).await;
    health(grpc, "").await.unwrap();
    let missing = health(grpc, "no.such.Service").await.unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut client = HealthClient::new(channel(grpc).await);
    let unknown = client
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ());
    assert!(unknown.is_ok());

    let (status, text) = http::get(metrics, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let ok = http::sample(
        &text,
        "motcua_grpc_requests_total",
        r#"service="grpc.health.v1.Health",method="Check",code="OK""#,
    )
    .unwrap_or_default();
    assert!(ok >= 3.0, "{text}");
    assert_eq!(
        http::sample(
            &text,
            "motcua_grpc_requests_total",
            r#"service="grpc.health.v1.Health",method="Check",code="NOT_FOUND""#,
        ),
        Some(1.0),
        "{text}"
    );
    let timed = http::sample(
        &text,
        "motcua_grpc_request_duration_seconds_count",
        r#"service="grpc.health.v1.Health",method="Check""#,
    )
    .unwrap_or_default();
    assert!(timed >= 4.0, "{text}");
    assert!(
        text.contains(r#"motcua_grpc_request_duration_seconds_bucket{service="grpc.health.v1.Health",method="Check",le="0.001"}"#),
        "{text}"
    );

    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_made_up_method_does_not_become_a_label() {
    let app = app("test").await;
    let grpc = app.local_addr();
    let metrics = app.metrics_addr().unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));
    health_becomes(grpc, ServingStatus::Serving).await;

    // A raw gRPC call to a path nobody serves.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc_client = tonic::client::Grpc::new(channel);
    grpc_client.ready().await.unwrap();
    let answer = grpc_client
        .unary::<_, HealthCheckRequest, _>(
            tonic::Request::new(HealthCheckRequest::default()),
            "/made.up.Service/Whatever".parse().unwrap(),
            tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckRequest>::default(),
        )
        .await;
    assert_eq!(answer.unwrap_err().code(), tonic::Code::Unimplemented);

    let (_, text) = http::get(metrics, "/metrics").await.unwrap();
    assert!(!text.contains("made.up"), "{text}");
    assert_eq!(
        http::sample(
            &text,
            "motcua_grpc_requests_total",
            r#"service="unknown",method="unknown",code="UNIMPLEMENTED""#,
        ),
        Some(1.0),
        "{text}"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failing_component_makes_the_service_not_serving_until_it_recovers() {
    let app = app("test").await;
    let grpc = app.local_addr();
    let metrics = app.metrics_addr().unwrap();
    let consumer = app.telemetry().component("consumer");
    let (status, watched) = tokio::sync::watch::channel(false);
    app.telemetry().health_check("relay", move || {
        if *watched.borrow() {
            Err("stalled at position 7".to_owned())
        } else {
            Ok(())
        }
    });
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));

    health_becomes(grpc, ServingStatus::Serving).await;
    assert_eq!(
        http::get(metrics, "/healthz").await.unwrap(),
        (200, "ok\n".into())
    );

    consumer.failing("cannot apply dossier X");
    health_becomes(grpc, ServingStatus::NotServing).await;
    let (code, body) = http::get(metrics, "/healthz").await.unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("consumer: cannot apply dossier X"), "{body}");

    consumer.healthy();
    health_becomes(grpc, ServingStatus::Serving).await;

    // A sampled check: read at each /healthz, polled for the gRPC health.
    status.send_replace(true);
    let (code, body) = http::get(metrics, "/healthz").await.unwrap();
    assert_eq!(
        (code, body.as_str()),
        (503, "relay: stalled at position 7\n")
    );
    health_becomes(grpc, ServingStatus::NotServing).await;
    status.send_replace(false);
    health_becomes(grpc, ServingStatus::Serving).await;

    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn sampled_metrics_are_read_at_scrape_time() {
    let app = app("test").await;
    let metrics = app.metrics_addr().unwrap();
    let marks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = marks.clone();
    app.telemetry()
        .counter_fn("motcua_watcher_marks", "late marks", move || {
            counted.load(std::sync::atomic::Ordering::Relaxed)
        });
    app.telemetry()
        .gauge_fn("motcua_relay_stalled", "stalled", || 1);
    app.telemetry().counter_fn_by(
        "motcua_stats_queries_rejected",
        "rejected",
        "reason",
        || vec![("too_many_groups".to_owned(), 2)],
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone()));
    marks.store(5, std::sync::atomic::Ordering::Relaxed);
    let (_, text) = http::get(metrics, "/metrics").await.unwrap();
    assert_eq!(
        http::sample(&text, "motcua_watcher_marks_total", ""),
        Some(5.0),
        "{text}"
    );
    assert!(
        text.contains("# TYPE motcua_watcher_marks_total counter"),
        "{text}"
    );
    assert_eq!(
        http::sample(&text, "motcua_relay_stalled", ""),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        http::sample(
            &text,
            "motcua_stats_queries_rejected_total",
            r#"reason="too_many_groups""#
        ),
        Some(2.0),
        "{text}"
    );
    stop.cancel();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_task_that_fails_stops_the_service_with_its_name() {
    let app = app("test")
        .await
        .task("long", |stop: CancellationToken| async move {
            stop.cancelled().await;
            Ok::<(), String>(())
        })
        .task("watcher", |_stop| async { Err::<(), _>("database gone") });
    let grpc = app.local_addr();
    let err = app
        .run_until_stopped(CancellationToken::new())
        .await
        .unwrap_err();
    let RunError::Task { task, reason, .. } = &err;
    assert_eq!(
        (task.as_str(), reason.as_str()),
        ("watcher", "database gone")
    );
    assert!(
        err.to_string().contains("watcher stopped: database gone"),
        "{err}"
    );
    // Everything else stopped: the port no longer answers.
    assert!(tokio::net::TcpStream::connect(grpc).await.is_err());
}

#[tokio::test]
async fn a_task_that_ends_or_panics_before_the_stop_stops_the_service() {
    let ends = app("test")
        .await
        .task("consumer", |_stop| async { Ok::<(), String>(()) });
    let err = ends
        .run_until_stopped(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("consumer stopped: ended unexpectedly"),
        "{err}"
    );

    let panics = app("test").await.task("relay", |_stop| async {
        if true {
            panic!("boom");
        }
        Ok::<(), String>(())
    });
    let err = panics
        .run_until_stopped(CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("relay stopped: panicked"), "{err}");
}

#[tokio::test]
async fn a_task_that_ignores_the_stop_is_abandoned_after_the_drain_timeout() {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let app = app("test")
        .await
        .drain(std::time::Duration::from_millis(50))
        .task("stubborn", |_stop| async move {
            let _keep = done_tx;
            std::future::pending::<()>().await;
            Ok::<(), String>(())
        });
    let stop = CancellationToken::new();
    stop.cancel();
    app.run_until_stopped(stop).await.unwrap();
    // Aborted: its future (and the sender it holds) was dropped.
    assert!(done_rx.await.is_err());
}
