//! The relay as the app runner hosts it: the relay loop as a background task (its end before
//! the stop — a permanent error — stops the service with the error), `/metrics` and `/healthz`
//! on `relay.metrics_listen`, no gRPC port.

use std::net::SocketAddr;

use relay::{Relay, RelayState, RelayStatus};
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::{App, Config, Listener};
use tokio::sync::watch;

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
/// applies the log's migrations, binds the metrics listener, and registers the relay's status:
/// `motcua_relay_log_head_position`, `motcua_relay_published_position`, `motcua_relay_stalled`,
/// `motcua_relay_diverged`, `motcua_relay_oversized_events_total`, and a health check that
/// fails (`/healthz` 503, gRPC-less) while the relay is stalled or diverged.
pub async fn build(config: &Config) -> anyhow::Result<App> {
    let section: RelaySection = config.section()?;
    let relay: Relay = crate::build(config).await?;
    let metrics = Listener::bind(section.metrics_listen).await?;
    tracing::info!(stream = %relay.config().stream, prefix = %relay.config().subject_prefix, "relay starting");
    Ok(app(relay, metrics))
}

/// The app of `relay` (built by [`crate::build`], or by a test): the relay loop as its task,
/// its pool's gauges and its status ([`register_status`]) served on `metrics`.
pub fn app(relay: Relay, metrics: Listener) -> App {
    let app = App::new("relay").metrics(metrics);
    let telemetry = app.telemetry();
    telemetry.pool(relay.log().pool());
    register_status(telemetry, relay.status());
    app.task("relay", move |stop| relay.run(stop))
}

/// Exposes the relay's status as metrics and as a health check.
pub fn register_status(telemetry: &svc::Telemetry, status: watch::Receiver<RelayStatus>) {
    use svc::metrics::Sample;
    telemetry.sampled(
        status.clone(),
        &[
            Sample::gauge(
                "motcua_relay_log_head_position",
                "the event log's head position, as last read by the relay",
                |s| s.borrow().log_head,
            ),
            Sample::gauge(
                "motcua_relay_published_position",
                "the position of the last event known to be in the stream",
                |s| s.borrow().published,
            ),
            Sample::gauge(
                "motcua_relay_stalled",
                "1 while publication is stopped (stalled past stall_after, or diverged)",
                |s| i64::from(s.borrow().state.is_stalled()),
            ),
            Sample::gauge(
                "motcua_relay_diverged",
                "1 while the stream and the event log diverge (operator action needed)",
                |s| i64::from(s.borrow().state.is_diverged()),
            ),
            Sample::counter(
                "motcua_relay_oversized_events",
                "events published as placeholders because they did not fit in max_payload",
                |s| s.borrow().oversized_events,
            ),
        ],
    );
    telemetry.health_check("relay", move || {
        let status = status.borrow();
        match &status.state {
            RelayState::Stalled { reason, .. } => Err(format!("publication stalled: {reason}")),
            RelayState::Diverged { position, .. } => Err(format!(
                "stream and event log diverge at position {position}: see README \"Operating the relay\""
            )),
            _ => Ok(()),
        }
    });
}
