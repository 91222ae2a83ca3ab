//! The results service: the end of a dossier at the one-stop counter — the decision attached as
//! a signed electronic file, the result returned to the applicant, the written apology with a
//! new appointment for a late dossier, and the applicant's satisfaction rating.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`ResultsApp::build`] →
//! [`ResultsApp::run_until_stopped`]. Tests build the app on port 0 with their own database.
//! Stateless: any number of instances may serve the same event log.

mod service;

use std::net::SocketAddr;
use std::time::Duration;

use api::v1::results_service_server::ResultsServiceServer;
use svc::handler::Desk;
use svc::{Config, ServiceDeps, StartError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use service::Results;

/// How long in-flight calls may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct ResultsApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    results: Results,
}

impl ResultsApp {
    /// Connects to PostgreSQL, applies the migrations, loads tokens and calendar, binds.
    pub async fn build(config: &Config) -> Result<ResultsApp, StartError> {
        Self::build_with(ServiceDeps::from_config(config, config.results.listen).await?).await
    }

    pub async fn build_with(deps: ServiceDeps) -> Result<ResultsApp, StartError> {
        let ready = deps.prepare().await?;
        Ok(ResultsApp {
            listener: ready.listener,
            local_addr: ready.local_addr,
            results: Results::new(Desk::new(ready.write, ready.tokens, ready.clock)),
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
        tracing::info!(addr = %self.local_addr, "results service listening");
        svc::server::serve(
            ResultsServiceServer::new(self.results),
            self.listener,
            shutdown,
            DRAIN,
        )
        .await
    }
}
