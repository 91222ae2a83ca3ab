//! The processing service: what the agencies do with a received dossier — transfer it to
//! another agency, ask for and receive a supplement, resolve it, stop it, or record its
//! withdrawal — and the deadline watcher that records `late` when a due time passes.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`ProcessingApp::build`] →
//! [`svc::App::run_until_stopped`], which serves gRPC and runs the [`Watcher`] side by
//! side. Tests build the app on port 0 with their own database, and start watchers on their own
//! with a clock they control.

pub mod service;
mod watcher;

use std::net::SocketAddr;

use api::v1::processing_service_server::ProcessingServiceServer;
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::handler::Desk;
use svc::{App, Config, ServiceDeps, StartError};

pub use service::Processing;
pub use watcher::{
    MARK_LATE_NAMESPACE, TickReport, Watcher, WatcherConfig, WatcherError, WatcherStatus,
    mark_late_event_id, migrate,
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
    /// `calendar_day`.
    pub apology_notice: domain::NoticeUnit,
    /// How often the deadline watcher looks for dossiers that fell due.
    pub watcher_interval_secs: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9452)),
            supplement_policy: domain::SupplementPolicy::default(),
            apology_notice: domain::NoticeUnit::default(),
            watcher_interval_secs: 30,
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
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Start(e.into())
    }
}

/// The processing service and its deadline watcher, bound and ready to run.
#[derive(Debug)]
pub struct ProcessingApp;

impl ProcessingApp {
    /// Connects to PostgreSQL, applies the migrations (the log's and the watcher's), loads
    /// tokens and calendar, binds; the watcher runs every `processing.watcher_interval_secs`.
    pub async fn build(config: &Config) -> Result<App, BuildError> {
        let section: ProcessingConfig = config.section()?;
        let deps =
            ServiceDeps::from_config(config, "processing", section.listen, section.metrics_listen)
                .await?;
        Self::build_with(deps, Some(WatcherConfig::from_config(&section))).await
    }

    /// Builds from prepared dependencies. `watcher: None` serves gRPC only (tests that drive
    /// watchers themselves); the watcher uses `deps.clock`.
    pub async fn build_with(
        deps: ServiceDeps,
        watcher: Option<WatcherConfig>,
    ) -> Result<App, BuildError> {
        let ready = deps.prepare().await?;
        watcher::migrate(ready.write.log()).await?;
        let watcher =
            watcher.map(|config| Watcher::new(ready.write.clone(), ready.clock.clone(), config));
        let app = ready.into_app("processing", |w, t, c| {
            ProcessingServiceServer::new(Processing::new(Desk::new(w, t, c)))
                .max_decoding_message_size(domain::limits::MAX_REQUEST_MESSAGE_BYTES)
        });
        Ok(match watcher {
            Some(watcher) => {
                let status = watcher.status();
                let marks = status.marks.clone();
                app.telemetry().counter_fn(
                    "motcua_watcher_marks",
                    "late events the deadline watcher recorded",
                    move || marks.load(std::sync::atomic::Ordering::Relaxed),
                );
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
