//! The relay service's wiring (`relay_service::app::app`, what `build` runs): `/metrics` shows
//! the relay's status with its values, `/healthz` fails naming a divergence between the stream
//! and the event log, and passes again once it is resolved.

use std::net::SocketAddr;
use std::time::Duration;

use eventlog::{DossierAppend, EventLog, ExpectedVersion, NewEvent, Routing};
use relay::{Relay, RelayConfig};
use testkit::http;
use testkit::{TestDb, TestNats};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Only a bound, so that a broken build fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

async fn migrated() -> (TestDb, EventLog) {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.unwrap();
    (db, log)
}

async fn append(log: &EventLog, tag: &str, dossiers: usize) -> i64 {
    for d in 0..dossiers {
        log.append(vec![DossierAppend {
            dossier_id: format!("{tag}-{d}"),
            expected_version: ExpectedVersion::NoStream,
            routing: Routing {
                level: "commune".into(),
                agency: "000.00.31.H40".into(),
                sector: "justice".into(),
            },
            events: ["received", "processing"]
                .map(|t| NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    event_type: t.into(),
                    occurred_at: chrono::Utc::now(),
                    payload: serde_json::json!({ "d": d }),
                    fingerprint: [d as u8; 32],
                })
                .into(),
        }])
        .await
        .unwrap();
    }
    log.head().await.unwrap()
}

struct RunningApp {
    metrics: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<Result<(), svc::RunError>>,
}

impl RunningApp {
    async fn start(log: &EventLog, nats: &TestNats) -> RunningApp {
        let cfg = RelayConfig {
            stream: nats.stream.clone(),
            subject_prefix: nats.prefix.clone(),
            max_backoff: Duration::from_millis(400),
            poll_interval: Duration::from_millis(300),
            ..RelayConfig::default()
        };
        let relay = Relay::new(log.clone(), nats.jetstream(), cfg);
        let listener = svc::Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let app = relay_service::app::app(relay, listener);
        let metrics = app.metrics_addr().expect("the metrics listener");
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(stop.clone()));
        RunningApp {
            metrics,
            stop,
            task,
        }
    }

    /// Scrapes `/metrics` until `check` holds for the samples of `names` (in order).
    async fn metrics_until(&self, what: &str, names: &[&str], check: impl Fn(&[f64]) -> bool) {
        let mut last = String::new();
        let reached = tokio::time::timeout(PATIENCE, async {
            loop {
                let (code, text) = http::get(self.metrics, "/metrics").await.unwrap();
                assert_eq!(code, 200, "{text}");
                let values: Vec<f64> = names
                    .iter()
                    .map(|n| {
                        http::sample(&text, n, "").unwrap_or_else(|| panic!("no {n} in {text}"))
                    })
                    .collect();
                if check(&values) {
                    return;
                }
                last = text;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(reached.is_ok(), "waiting for {what}; last scrape:\n{last}");
    }

    async fn healthz(&self) -> (u16, String) {
        http::get(self.metrics, "/healthz").await.unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .unwrap()
            .expect("the relay app stops cleanly");
    }
}

const STATUS: [&str; 5] = [
    "motcua_relay_log_head_position",
    "motcua_relay_published_position",
    "motcua_relay_stalled",
    "motcua_relay_diverged",
    "motcua_relay_oversized_events_total",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_show_the_relay_publishing_diverged_and_recovered() {
    let (_db_a, log_a) = migrated().await;
    let (_db_b, log_b) = migrated().await;
    let nats = TestNats::new().await;

    // Publishing: the log's head and the published position, nothing stalled.
    let app = RunningApp::start(&log_a, &nats).await;
    let head_a = append(&log_a, "a", 3).await;
    assert_eq!(head_a, 6);
    app.metrics_until("everything published", &STATUS, |v| {
        v == [6.0, 6.0, 0.0, 0.0, 0.0]
    })
    .await;
    assert_eq!(app.healthz().await, (200, "ok\n".to_owned()));
    let (_, text) = http::get(app.metrics, "/metrics").await.unwrap();
    assert!(
        text.contains("# TYPE motcua_relay_oversized_events_total counter"),
        "{text}"
    );
    assert!(
        http::sample(&text, "motcua_db_pool_max_connections", "service=\"relay\"").is_some(),
        "{text}"
    );
    app.stop().await;

    // Another database behind the same stream (a restored backup, a wrong configuration):
    // the stream holds position 6, this log ends at 2.
    let head_b = append(&log_b, "b", 1).await;
    let app = RunningApp::start(&log_b, &nats).await;
    app.metrics_until("the divergence", &STATUS, |v| {
        v[0] == head_b as f64 && v[2] == 1.0 && v[3] == 1.0
    })
    .await;
    let (code, body) = app.healthz().await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("relay: stream and event log diverge at position 6"),
        "{body}"
    );

    // The operator starts the stream again from this log: the relay resumes by itself.
    let cfg = RelayConfig {
        stream: nats.stream.clone(),
        subject_prefix: nats.prefix.clone(),
        ..RelayConfig::default()
    };
    relay::reset_stream(&log_b, &nats.jetstream(), &cfg, &nats.stream)
        .await
        .unwrap();
    app.metrics_until("the recovery", &STATUS, |v| {
        v == [head_b as f64, head_b as f64, 0.0, 0.0, 0.0]
    })
    .await;
    assert_eq!(app.healthz().await, (200, "ok\n".to_owned()));
    app.stop().await;
}
