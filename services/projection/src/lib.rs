//! The projection service: keeps the statistics' aggregates exact from the event log and answers
//! indicator queries.
//!
//! - [`store`]: the tables (`projection_contributions`, `stats_daily`; migrations 30001+) and
//!   [`store::apply_dossier`], which recomputes one dossier's contribution from the log and
//!   applies the difference, in one transaction: exactly-once effect under any delivery.
//! - [`consumer`]: a durable JetStream pull consumer on `{prefix}.>`; apply, commit, then ack.
//! - [`service`]: `StatsService.GetIndicators`, S1–S13 from `stats_daily` via `stats`.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`ProjectionApp::build`] →
//! [`ProjectionApp::run_until_stopped`]. Tests build the app on port 0 with their own database
//! and JetStream namespace.

pub mod consumer;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::v1::stats_service_server::StatsServiceServer;
use async_nats::jetstream;
use eventlog::EventLog;
use svc::{Config, StartError, Tokens};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use consumer::ConsumerConfig;
pub use service::Stats;
pub use store::{Applied, ApplyError, QueryError, applied_version, apply_dossier};

/// How long in-flight queries may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

/// Why the projection could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionStartError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("projection migrations refused: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot connect to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
}

#[derive(Debug)]
pub struct ProjectionApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    log: EventLog,
    stats: Stats,
    jetstream: jetstream::Context,
    consumer: ConsumerConfig,
}

impl ProjectionApp {
    /// Connects to PostgreSQL (migrating) and NATS, loads tokens, binds.
    pub async fn build(config: &Config) -> Result<ProjectionApp, ProjectionStartError> {
        let log = EventLog::connect(&config.database.url, config.database.max_connections)
            .await
            .map_err(StartError::from)?;
        let tokens = Tokens::load(&config.auth.tokens_file).map_err(StartError::from)?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&config.nats.url)
            .await?;
        let consumer = ConsumerConfig::new(
            &config.nats.stream,
            &config.nats.subject_prefix,
            &config.projection.consumer,
        );
        Self::build_with(
            log,
            tokens,
            config.projection.listen,
            jetstream::new(client),
            consumer,
        )
        .await
    }

    pub async fn build_with(
        log: EventLog,
        tokens: Tokens,
        listen: SocketAddr,
        jetstream: jetstream::Context,
        consumer: ConsumerConfig,
    ) -> Result<ProjectionApp, ProjectionStartError> {
        log.migrate().await.map_err(StartError::from)?;
        store::migrate(log.pool()).await?;
        let (listener, local_addr) =
            svc::server::bind(listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: listen,
                    source,
                })?;
        Ok(ProjectionApp {
            listener,
            local_addr,
            stats: Stats::new(log.pool().clone(), Arc::new(tokens)),
            log,
            jetstream,
            consumer,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Consumes and serves queries until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(addr = %self.local_addr, "projection service listening");
        let consuming = tokio::spawn(consumer::run(
            self.log,
            self.jetstream,
            self.consumer,
            shutdown.clone(),
        ));
        let served = svc::server::serve(
            StatsServiceServer::new(self.stats),
            self.listener,
            shutdown.clone(),
            DRAIN,
        )
        .await;
        shutdown.cancel();
        if let Err(e) = consuming.await {
            tracing::error!(error = %e, "projection consumer task failed");
        }
        served
    }
}
