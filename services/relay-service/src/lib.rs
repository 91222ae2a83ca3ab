//! The relay service: follows the event log in PostgreSQL and publishes every event to NATS
//! JetStream, exactly once in the stream and in log order (the protocol is in `crates/relay`).
//! It starts, and keeps trying, while NATS is down: the log keeps every event meanwhile.

pub mod app;

use eventlog::EventLog;
use relay::{Relay, RelayConfig};
use svc::Config;
use tokio_util::sync::CancellationToken;

/// The relay's settings from the shared configuration file's `[nats]` section.
pub fn relay_config(config: &Config) -> RelayConfig {
    RelayConfig {
        stream: config.nats.stream.clone(),
        subject_prefix: config.nats.subject_prefix.clone(),
        replicas: config.nats.replicas,
        duplicate_window: config.nats.duplicate_window(),
        ..RelayConfig::default()
    }
}

/// Connects (to NATS in the background: a NATS outage at start is retried, not fatal),
/// applies the log's migrations, and relays until `shutdown`.
pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let log: EventLog = config.database.connect("relay").await?;
    log.migrate().await?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(config.nats.url.as_str())
        .await?;
    let relay = Relay::new(
        log,
        async_nats::jetstream::new(client),
        relay_config(config),
    );
    tracing::info!(stream = %relay.config().stream, prefix = %relay.config().subject_prefix, "relay starting");
    relay.run(shutdown).await?;
    Ok(())
}
