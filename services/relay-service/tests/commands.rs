//! The operator commands through the real binary, against real PostgreSQL and NATS.

use std::process::{Command, Output};
use std::time::Duration;

use eventlog::{DossierAppend, EventLog, ExpectedVersion, NewEvent, Routing};
use relay::{Relay, RelayConfig};
use testkit::{TestDb, TestNats};
use tokio_util::sync::CancellationToken;

fn relay_service(args: &[&str], config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relay-service"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("MOTCUA_DATABASE_URL")
        .env_remove("MOTCUA_NATS_URL")
        .output()
        .expect("run relay-service")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn migrated() -> (TestDb, EventLog) {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    log.migrate().await.unwrap();
    (db, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_log_then_reset_stream_through_the_binary() {
    let (_db_a, log_a) = migrated().await;
    let (db_b, log_b) = migrated().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = RelayConfig {
        stream: nats.stream.clone(),
        subject_prefix: nats.prefix.clone(),
        ..RelayConfig::default()
    };
    for d in 0..4 {
        log_a
            .append(vec![DossierAppend {
                dossier_id: format!("d-{d}"),
                expected_version: ExpectedVersion::NoStream,
                routing: Routing {
                    level: "commune".into(),
                    agency: "000.00.31.H40".into(),
                    sector: "justice".into(),
                },
                events: vec![NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    event_type: "received".into(),
                    occurred_at: chrono::Utc::now(),
                    payload: serde_json::json!({ "d": d }),
                    fingerprint: [d as u8; 32],
                }],
            }])
            .await
            .unwrap();
    }
    let relay = Relay::new(log_a.clone(), js.clone(), cfg.clone());
    let mut progress = relay.progress();
    let token = CancellationToken::new();
    let task = tokio::spawn(relay.run(token.clone()));
    tokio::time::timeout(Duration::from_secs(60), progress.wait_for(|p| *p == 4))
        .await
        .unwrap()
        .unwrap();
    token.cancel();
    task.await.unwrap().unwrap();

    // Database B lost everything; the configuration points at it and at the stream.
    let config = std::env::temp_dir().join(format!("relay-service-{}.toml", db_b.name));
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"{}\"\nmax_connections = 2\n\n[nats]\nurl = \"{}\"\nstream = \"{}\"\n\
             subject_prefix = \"{}\"\n\n[auth]\ntokens_file = \"unused.toml\"\n",
            db_b.url, nats.url, nats.stream, nats.prefix
        ),
    )
    .unwrap();

    let out = relay_service(&["recover-log", "--dry-run"], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("dry run: positions 1..=4"),
        "{}",
        text(&out)
    );
    assert_eq!(log_b.head().await.unwrap(), 0);

    let out = relay_service(&["recover-log"], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("recovered positions 1..=4"),
        "{}",
        text(&out)
    );
    assert_eq!(
        log_b.read_after(0, 100).await.unwrap(),
        log_a.read_after(0, 100).await.unwrap()
    );

    // reset-stream: a usage error without the confirmation, refused with a wrong one.
    let out = relay_service(&["reset-stream"], &config);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = relay_service(&["reset-stream", "--confirm-delete", "OTHER"], &config);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        js.get_stream(&nats.stream)
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages,
        4
    );
    let out = relay_service(&["reset-stream", "--confirm-delete", &nats.stream], &config);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("4 messages"), "{}", text(&out));
    let mut stream = js.get_stream(&nats.stream).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    let _ = std::fs::remove_file(&config);
}
