//! The intake service: a one-stop counter receives a dossier, records its digitized
//! components, or refuses it at the counter; a migration tool imports history in bulk.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`IntakeApp::build`] →
//! [`IntakeApp::run_until_stopped`]. Tests build the app on port 0 with their own database.

mod import;
mod service;

use std::net::SocketAddr;
use std::time::Duration;

use api::v1::intake_service_server::IntakeServiceServer;
use svc::{Config, ServiceDeps, StartError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use import::MAX_BATCH;
pub use service::Intake;

/// How long in-flight calls may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct IntakeApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    intake: Intake,
}

impl IntakeApp {
    /// Connects to PostgreSQL, applies the migrations, loads tokens and calendar, binds.
    pub async fn build(config: &Config) -> Result<IntakeApp, StartError> {
        Self::build_with(ServiceDeps::from_config(config, config.intake.listen).await?).await
    }

    pub async fn build_with(deps: ServiceDeps) -> Result<IntakeApp, StartError> {
        let ready = deps.prepare().await?;
        Ok(IntakeApp {
            listener: ready.listener,
            local_addr: ready.local_addr,
            intake: Intake::new(ready.write, ready.tokens, ready.clock),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(addr = %self.local_addr, "intake service listening");
        svc::server::serve(
            IntakeServiceServer::new(self.intake),
            self.listener,
            shutdown,
            DRAIN,
        )
        .await
    }
}
