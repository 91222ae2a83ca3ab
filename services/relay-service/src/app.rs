//! The relay as the app runner hosts it: the relay loop as a background task (its end before
//! the stop — a permanent error — stops the service with the error), `/metrics` and `/healthz`
//! on `relay.metrics_listen`, no gRPC port.

use std::net::SocketAddr;

use relay::Relay;
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::{App, Config, Listener, StartError};

/// The `[relay]` section (the stream itself is configured in `[nats]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySection {
    /// `/metrics` and `/healthz` (`MOTCUA_RELAY_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
}

impl Default for RelaySection {
    fn default() -> Self {
        RelaySection {
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9458)),
        }
    }
}

impl Section for RelaySection {
    const NAME: &'static str = "relay";

    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(addr) = env.addr("MOTCUA_RELAY_METRICS_LISTEN")? {
            self.metrics_listen = addr;
        }
        Ok(())
    }
}

/// Connects (to NATS in the background: a NATS outage at start is retried, not fatal),
/// applies the log's migrations, binds the metrics listener.
pub async fn build(config: &Config) -> anyhow::Result<App> {
    let section: RelaySection = config.section()?;
    let log = config
        .database
        .connect("relay")
        .await
        .map_err(StartError::from)?;
    log.migrate().await.map_err(StartError::from)?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(config.nats.url.as_str())
        .await?;
    let app = App::new("relay").metrics(Listener::bind(section.metrics_listen).await?);
    app.telemetry().pool(log.pool());
    let relay = Relay::new(
        log,
        async_nats::jetstream::new(client),
        crate::relay_config(config),
    );
    tracing::info!(stream = %relay.config().stream, prefix = %relay.config().subject_prefix, "relay starting");
    Ok(app.task("relay", move |stop| relay.run(stop)))
}
