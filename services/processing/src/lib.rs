//! The processing service: what the agencies do with a received dossier — transfer it to
//! another agency, ask for and receive a supplement, resolve it, stop it, or record its
//! withdrawal — and the deadline watcher that records `late` when a due time passes.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`ProcessingApp::build`] →
//! [`ProcessingApp::run_until_stopped`], which serves gRPC and runs the [`Watcher`] side by
//! side. Tests build the app on port 0 with their own database, and start watchers on their own
//! with a clock they control.

pub mod service;
mod watcher;

use std::net::SocketAddr;
use std::time::Duration;

use api::v1::processing_service_server::ProcessingServiceServer;
use svc::handler::Desk;
use svc::{Config, ServiceDeps, StartError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use service::Processing;
pub use watcher::{
    MARK_LATE_NAMESPACE, TickReport, Watcher, WatcherConfig, WatcherError, mark_late_event_id,
    migrate,
};

/// How long in-flight calls may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

/// Why the processing service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("deadline watcher: {0}")]
    Watcher(#[from] WatcherError),
}

#[derive(Debug)]
pub struct ProcessingApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    processing: Processing,
    watcher: Option<Watcher>,
}

impl ProcessingApp {
    /// Connects to PostgreSQL, applies the migrations (the log's and the watcher's), loads
    /// tokens and calendar, binds; the watcher runs every `processing.watcher_interval_secs`.
    pub async fn build(config: &Config) -> Result<ProcessingApp, BuildError> {
        let deps = ServiceDeps::from_config(config, config.processing.listen).await?;
        Self::build_with(deps, Some(WatcherConfig::from_config(&config.processing))).await
    }

    /// Builds from prepared dependencies. `watcher: None` serves gRPC only (tests that drive
    /// watchers themselves); the watcher uses `deps.clock`.
    pub async fn build_with(
        deps: ServiceDeps,
        watcher: Option<WatcherConfig>,
    ) -> Result<ProcessingApp, BuildError> {
        let ready = deps.prepare().await?;
        watcher::migrate(ready.write.log()).await?;
        let watcher =
            watcher.map(|config| Watcher::new(ready.write.clone(), ready.clock.clone(), config));
        Ok(ProcessingApp {
            listener: ready.listener,
            local_addr: ready.local_addr,
            processing: Processing::new(Desk::new(ready.write, ready.tokens, ready.clock)),
            watcher,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves (and runs the watcher, if any) until `shutdown` is cancelled, then drains
    /// in-flight calls and lets the watcher finish the dossier it is marking.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(addr = %self.local_addr, "processing service listening");
        let watcher = self.watcher.map(|w| {
            let stop = shutdown.clone();
            tokio::spawn(async move { w.run(stop).await })
        });
        let served = svc::server::serve(
            ProcessingServiceServer::new(self.processing),
            self.listener,
            shutdown.clone(),
            DRAIN,
        )
        .await;
        // If serving failed, the watcher must not outlive the service.
        shutdown.cancel();
        if let Some(handle) = watcher
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "deadline watcher task failed");
        }
        served
    }
}
