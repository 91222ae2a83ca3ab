//! Every metric name the shipped dashboard (`deploy/grafana/motcua.json`) and alert rules
//! (`deploy/prometheus/alerts.yml`) use is exported by some service: the names are gathered from
//! the `/metrics` of every service's app, built as the service builds it and running (intake,
//! processing with its watcher, payment, results, replay, relay, projection, audit), after one
//! gRPC call on each gRPC port (a family is exported from its first sample on). A name that the
//! dashboard shows and no service exports would be an empty panel, an alert that never fires.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use eventlog::EventLog;
use svc::{App, ServiceDeps};
use tests::test_tokens;
use tokio_util::sync::CancellationToken;

const DASHBOARD: &str = include_str!("../../../deploy/grafana/motcua.json");
const ALERTS: &str = include_str!("../../../deploy/prometheus/alerts.yml");

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The `motcua_…` names a file uses.
fn used(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("motcua_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// The series names an exposition holds or will hold: every `# TYPE` (with a histogram's
/// `_bucket`, `_sum`, `_count`) and every sample's name.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            names.insert(name.to_owned());
            match kind {
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                // OpenMetrics style: the family without `_total`, its samples with it.
                "counter" if !name.ends_with("_total") => {
                    names.insert(format!("{name}_total"));
                }
                _ => {}
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// One call on a gRPC port: `ListServices` through reflection v1.
async fn list_services(addr: SocketAddr) {
    use tonic_reflection::pb::v1;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .expect("reflection is served")
        .into_inner();
    while answers.message().await.expect("an answer").is_some() {}
}

async fn log() -> (testkit::TestDb, EventLog) {
    let db = testkit::TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.expect("migrate");
    (db, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_the_alerts_use_is_exported_by_a_service() {
    let (_db, log) = log().await;
    let nats = testkit::TestNats::new().await;
    let deps = || ServiceDeps::for_tests(log.clone(), test_tokens());
    let mut apps: Vec<App> = vec![
        intake::build_with(deps()).await.expect("intake"),
        processing::ProcessingApp::build_with(deps(), Some(processing::WatcherConfig::default()))
            .await
            .expect("processing"),
        payment::build_with(deps()).await.expect("payment"),
        results::build_with(deps()).await.expect("results"),
    ];
    apps.push(
        replay::ReplayApp::build_with(log.clone(), test_tokens(), any_port())
            .await
            .expect("replay")
            .into_app(),
    );
    let relay = relay::Relay::new(
        log.clone(),
        nats.jetstream(),
        relay::RelayConfig {
            stream: nats.stream.clone(),
            subject_prefix: nats.prefix.clone(),
            ..relay::RelayConfig::default()
        },
    );
    apps.push(relay_service::app::app(
        relay,
        svc::Listener::bind(any_port()).await.expect("bind"),
    ));
    apps.push(
        projection::ProjectionApp::build_with(
            log.clone(),
            test_tokens(),
            projection::Endpoints {
                grpc: any_port(),
                http: any_port(),
                targets: stats::Targets::default(),
                limits: projection::QueryLimits::default(),
                dashboard: projection::dashboard::DashboardConfig::default(),
            },
            nats.jetstream(),
            projection::ConsumerConfig::new(&nats.stream, &nats.prefix, "names"),
        )
        .await
        .expect("projection")
        .with_checkpointer(log.pool().clone(), Default::default())
        .into_app(),
    );
    apps.push(
        audit::AuditApp::build_with(
            log.clone(),
            test_tokens(),
            merkle::Signer::from_seed("motcua.test/names", [7; 32]).expect("signer"),
            any_port(),
            None,
            Duration::from_secs(3600),
        )
        .await
        .expect("audit")
        .into_app(),
    );

    let stop = CancellationToken::new();
    let mut running = Vec::new();
    for app in apps {
        let app = match app.metrics_addr() {
            Some(_) => app,
            None => app.metrics(svc::Listener::bind(any_port()).await.expect("bind")),
        };
        let (name, grpc) = (app.name(), app.local_addr());
        let metrics = app.metrics_addr().expect("a metrics listener");
        running.push((name, grpc, metrics));
        tokio::spawn(app.run_until_stopped(stop.clone()));
    }
    let mut exported_by: Vec<(&'static str, BTreeSet<String>)> = Vec::new();
    for (name, grpc, metrics) in running {
        let serves_grpc = grpc.port() != 0;
        if serves_grpc {
            list_services(grpc).await;
        }
        // The call is recorded when its answer ends: scrape until it shows (bounded).
        let names = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                let (code, text) = testkit::http::get(metrics, "/metrics")
                    .await
                    .expect("scrape");
                assert_eq!(code, 200, "{name}: {text}");
                let names = exported(&text);
                if !serves_grpc || names.contains("motcua_grpc_requests_total") {
                    return names;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{name}: the gRPC call never showed in /metrics"));
        exported_by.push((name, names));
    }
    stop.cancel();
    let all: BTreeSet<&String> = exported_by.iter().flat_map(|(_, n)| n).collect();
    for (file, text) in [("dashboard", DASHBOARD), ("alerts", ALERTS)] {
        let names = used(text);
        assert!(names.len() >= 10, "{file}: {names:?}");
        for name in &names {
            assert!(
                all.contains(name),
                "the {file} uses {name}, which no service exports; exported: {exported_by:#?}"
            );
        }
    }
    for name in svc::metrics::AGREED {
        assert!(
            all.contains(&name.to_owned()),
            "{name} is agreed but no service exports it"
        );
    }
    // Each component's metrics come from the service that owns the component.
    let by = |service: &str, name: &str| {
        exported_by
            .iter()
            .any(|(s, names)| *s == service && names.contains(name))
    };
    for (service, name) in [
        ("processing", "motcua_watcher_marks_total"),
        ("processing", "motcua_warning_outbox_rows"),
        ("processing", "motcua_warning_outbox_oldest_seconds"),
        ("relay", "motcua_relay_stalled"),
        ("relay", "motcua_relay_oversized_events_total"),
        ("projection", "motcua_projection_failing_dossiers"),
        ("projection", "motcua_stats_queries_rejected_total"),
        ("projection", "motcua_asof_events_past_checkpoint"),
        ("audit", "motcua_checkpoint_age_seconds"),
        ("intake", "motcua_db_pool_connections"),
        ("replay", "motcua_grpc_requests_total"),
    ] {
        assert!(by(service, name), "{service} does not export {name}");
    }
}
