//! The intake service: a one-stop counter receives a dossier, records its digitized
//! components, or refuses it at the counter; a migration tool imports history in bulk.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`IntakeApp::build`] →
//! [`IntakeApp::run_until_stopped`]. Tests build the app on port 0 with their own database.

mod import;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::v1::intake_service_server::IntakeServiceServer;
use calendar::Calendar;
use eventlog::EventLog;
use svc::{Clock, Config, SystemClock, Tokens, WritePath};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use import::MAX_BATCH;
pub use service::Intake;

/// How long in-flight calls may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Connect(#[from] eventlog::ConnectError),
    #[error(transparent)]
    Migrate(#[from] eventlog::MigrateError),
    #[error(transparent)]
    Tokens(#[from] svc::auth::TokensError),
    #[error("invalid calendar configuration: {0}")]
    Calendar(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the service needs, built from configuration or by a test.
#[derive(Debug)]
pub struct IntakeDeps {
    pub log: EventLog,
    pub tokens: Tokens,
    pub calendar: Calendar,
    pub supplement_policy: domain::SupplementPolicy,
    pub clock: Arc<dyn Clock>,
    pub listen: SocketAddr,
}

#[derive(Debug)]
pub struct IntakeApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    intake: Intake,
}

impl IntakeApp {
    /// Connects to PostgreSQL, applies the migrations, loads tokens and calendar, binds.
    pub async fn build(config: &Config) -> Result<IntakeApp, StartError> {
        let log = EventLog::connect(&config.database.url, config.database.max_connections).await?;
        let deps = IntakeDeps {
            log,
            tokens: Tokens::load(&config.auth.tokens_file)?,
            calendar: Calendar::new(&config.calendar)
                .map_err(|e| StartError::Calendar(e.to_string()))?,
            supplement_policy: config.processing.supplement_policy,
            clock: Arc::new(SystemClock),
            listen: config.intake.listen,
        };
        Self::build_with(deps).await
    }

    pub async fn build_with(deps: IntakeDeps) -> Result<IntakeApp, StartError> {
        deps.log.migrate().await?;
        let (listener, local_addr) =
            svc::server::bind(deps.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: deps.listen,
                    source,
                })?;
        let write = WritePath::new(deps.log, Arc::new(deps.calendar), deps.supplement_policy);
        let intake = Intake::new(write, Arc::new(deps.tokens), deps.clock);
        Ok(IntakeApp {
            listener,
            local_addr,
            intake,
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
