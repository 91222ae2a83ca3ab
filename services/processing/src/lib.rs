//! The processing service: what the agencies do with a received dossier — transfer it to
//! another agency, ask for and receive a supplement, resolve it, stop it, or record its
//! withdrawal — and the deadline watcher that records `late` when a due time passes.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`ProcessingApp::build`] →
//! [`svc::App::run_until_stopped`], which serves gRPC and runs the [`Watcher`] side by
//! side. Tests build the app on port 0 with their own database, and start watchers on their own
//! with a clock they control.

pub mod http;
pub mod openapi;
pub mod publish;
pub mod service;
mod warnings;
mod watcher;

use std::net::SocketAddr;

use api::v1::processing_service_server::ProcessingServiceServer;
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::handler::Desk;
use svc::{App, Config, ServiceDeps, StartError};

pub use publish::{WarningChange, WarningPublisher};
pub use service::Processing;
pub use warnings::{
    DEFAULT_PAGE_SIZE, ListError, ListQuery, MAX_PAGE_SIZE, Page, ReadError, WITHDRAW_REASONS,
    Warning, WarningList, list, list_query,
};
pub use watcher::{
    CLOSE_NAMESPACE, MARK_LATE_NAMESPACE, OutboxBacklog, TickReport, Watcher, WatcherConfig,
    WatcherError, WatcherStatus, mark_late_event_id, migrate,
};

/// The `[processing]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    /// The gRPC address (`MOTCUA_PROCESSING_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz` (`MOTCUA_PROCESSING_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
    /// Read by every write service (through [`svc::Config::rules`]).
    pub supplement_policy: domain::SupplementPolicy,
    /// Read by every write service (through [`svc::Config::rules`]): the unit of the
    /// apology's "at least one day before the due time", `working_day` (default) or
    /// `calendar_day`. The deadline watcher's apology deadlines and default warning horizon
    /// follow it (through the write path's rules).
    pub apology_notice: domain::NoticeUnit,
    /// How often the deadline watcher looks for dossiers that fell due.
    pub watcher_interval_secs: u64,
    /// The early warning's HTTP route `GET /v1/warnings` (`MOTCUA_PROCESSING_HTTP_LISTEN`).
    pub http_listen: SocketAddr,
    /// Origins (`scheme://host[:port]`) whose pages may call the HTTP route from a browser
    /// (CORS), e.g. the dashboard's; empty: none.
    pub cors_origins: Vec<String>,
    /// Working minutes before its due time from which a running dossier is warned about; absent:
    /// the apology notice (one day in `apology_notice`'s unit), so the warning starts at the
    /// apology deadline.
    pub warning_horizon_minutes: Option<u32>,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9452)),
            supplement_policy: domain::SupplementPolicy::default(),
            apology_notice: domain::NoticeUnit::default(),
            watcher_interval_secs: 30,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8052)),
            cors_origins: Vec::new(),
            warning_horizon_minutes: None,
        }
    }
}

impl Section for ProcessingConfig {
    const NAME: &'static str = "processing";

    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(addr) = env.addr("MOTCUA_PROCESSING_LISTEN")? {
            self.listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_PROCESSING_METRICS_LISTEN")? {
            self.metrics_listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_PROCESSING_HTTP_LISTEN")? {
            self.http_listen = addr;
        }
        Ok(())
    }
}

/// Why the processing service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("deadline watcher: {0}")]
    Watcher(#[from] WatcherError),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot connect to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Start(e.into())
    }
}

/// What the processing service runs besides its gRPC service.
#[derive(Debug, Default)]
pub struct Parts {
    /// The deadline watcher (`None`: tests that drive watchers themselves).
    pub watcher: Option<WatcherConfig>,
    /// Where the watcher publishes the early warnings (`None`: they stay in the outbox).
    pub publisher: Option<WarningPublisher>,
    /// The HTTP route `GET /v1/warnings`, with its CORS origins (`None`: not served).
    pub http: Option<(svc::Listener, Vec<axum::http::HeaderValue>)>,
}

/// The processing service and its deadline watcher, bound and ready to run.
#[derive(Debug)]
pub struct ProcessingApp;

impl ProcessingApp {
    /// Connects to PostgreSQL and NATS, applies the migrations (the log's and the watcher's),
    /// loads tokens and calendar, binds; the watcher runs every
    /// `processing.watcher_interval_secs` and publishes the early warnings on NATS.
    pub async fn build(config: &Config) -> Result<App, BuildError> {
        let section: ProcessingConfig = config.section()?;
        let origins = http::cors_origins(&section.cors_origins).map_err(BuildError::Config)?;
        let deps =
            ServiceDeps::from_config(config, "processing", section.listen, section.metrics_listen)
                .await?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&config.nats.url)
            .await?;
        let http = svc::Listener::bind(section.http_listen).await?;
        Self::build_parts(
            deps,
            Parts {
                watcher: Some(WatcherConfig::from_config(&section)),
                publisher: Some(WarningPublisher::new(
                    async_nats::jetstream::new(client),
                    &config.nats,
                )),
                http: Some((http, origins)),
            },
        )
        .await
    }

    /// Builds from prepared dependencies: gRPC and, if given, the watcher (with `deps.clock`),
    /// no NATS publication and no HTTP route.
    pub async fn build_with(
        deps: ServiceDeps,
        watcher: Option<WatcherConfig>,
    ) -> Result<App, BuildError> {
        Self::build_parts(
            deps,
            Parts {
                watcher,
                ..Parts::default()
            },
        )
        .await
    }

    /// Builds from prepared dependencies and the parts to run (tests start them on port 0).
    pub async fn build_parts(deps: ServiceDeps, parts: Parts) -> Result<App, BuildError> {
        let ready = deps.prepare().await?;
        watcher::migrate(ready.write.log()).await?;
        let list = WarningList::new(ready.write.log().pool().clone(), ready.tokens.clone());
        let clock = ready.clock.clone();
        let watcher = parts.watcher.map(|config| {
            let watcher = Watcher::new(ready.write.clone(), ready.clock.clone(), config);
            match parts.publisher {
                Some(publisher) => watcher.with_publisher(publisher),
                None => watcher,
            }
        });
        let grpc_list = list.clone();
        let mut app = ready.into_app("processing", |w, t, c| {
            ProcessingServiceServer::new(Processing::new(Desk::new(w, t, c), grpc_list))
                .max_decoding_message_size(domain::limits::MAX_REQUEST_MESSAGE_BYTES)
        });
        if let Some((listener, origins)) = parts.http {
            app = app.http("warnings", listener, http::router(list, &origins));
        }
        Ok(match watcher {
            Some(watcher) => {
                let status = watcher.status();
                register_watcher(app.telemetry(), status.clone(), clock);
                let failing = status.failing.clone();
                app.telemetry().health_check("deadline watcher", move || {
                    match &*failing
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                    {
                        Some(reason) => Err(format!("ticks fail: {reason}")),
                        None => Ok(()),
                    }
                });
                app.task("deadline watcher", move |stop| async move {
                    watcher.run(stop).await;
                    Ok::<(), std::convert::Infallible>(())
                })
            }
            None => app,
        })
    }
}

/// The watcher's metrics: its late marks and the early-warning outbox's backlog (rows, and the
/// age of the oldest by the service's clock at the scrape).
fn register_watcher(
    telemetry: &svc::Telemetry,
    status: watcher::WatcherStatus,
    clock: std::sync::Arc<dyn writepath::Clock>,
) {
    use std::sync::atomic::Ordering;
    use svc::metrics::Sample;
    telemetry.sampled(
        (status, clock),
        &[
            Sample::counter(
                "motcua_watcher_marks",
                "late events the deadline watcher recorded",
                |(s, _)| s.marks.load(Ordering::Relaxed),
            ),
            Sample::gauge(
                "motcua_warning_outbox_rows",
                "early-warning changes not yet published on NATS (deadline_warning_outbox, as of the last tick)",
                |(s, _)| s.backlog.borrow().rows,
            ),
            Sample::gauge(
                "motcua_warning_outbox_oldest_seconds",
                "age of the oldest early-warning change not yet published on NATS (0: none)",
                |(s, clock)| s.backlog.borrow().age_secs(clock.now()),
            ),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_processing_section_parses() {
        let config = Config::parse(include_str!("../../../deploy/config/local.toml")).unwrap();
        let section: ProcessingConfig = config.section().unwrap();
        assert_eq!(section.http_listen.port(), 8052);
        assert_eq!(http::cors_origins(&section.cors_origins).unwrap().len(), 2);
        assert_eq!(
            WatcherConfig::from_config(&section).horizon,
            domain::WarningHorizon::ApologyNotice
        );
    }
}
