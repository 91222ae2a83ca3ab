//! The projection service: keeps the statistics' aggregates exact from the event log and answers
//! indicator queries.
//!
//! - [`store`]: the tables (`projection_contributions`, `stats_rollup` at day, month and year
//!   grain for a few rollups; migrations 30001+), [`store::apply_dossier`], which recomputes one
//!   dossier's contribution from the log and applies the difference to every rollup and grain,
//!   in one transaction (exactly-once effect under any delivery), and [`store::query`], whose
//!   cost does not grow with the number of dossiers.
//! - [`rebuild`]: the read models rebuilt from the log into shadow tables and swapped in;
//!   [`verify`]: every figure recomputed from the log and compared with the read models.
//! - [`consumer`]: a durable JetStream pull consumer on `{prefix}.>`; apply, commit, then ack.
//! - [`scope`] parses what a request asks ([`stats::Query`] and [`scope::Source`]: live, or as
//!   recorded at a past instant), once for both transports; [`figures`] answers it from the
//!   aggregates or from the log; [`answers`] builds indicators (with S5 and S14) and report
//!   forms ([`forms`]: one table shape for gRPC, JSON and CSV) and a dossier's status.
//! - [`read`]: the queries' bounds (admission, deadline, answer size; `[projection.limits]`)
//!   and read errors; [`service`]: gRPC `StatsService`; [`http`]: the same over HTTP/JSON and
//!   CSV.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`ProjectionApp::build`] →
//! [`ProjectionApp::run_until_stopped`], or the `rebuild` / `verify` subcommands. Tests build the app on port 0 with their own database
//! and JetStream namespace.

pub mod answers;
pub mod consumer;
pub mod figures;
pub mod forms;
pub mod http;
pub mod read;
pub mod rebuild;
pub mod scope;
pub mod service;
pub mod store;
pub mod verify;

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
    #[error("cannot listen for HTTP on {addr}: {source}")]
    HttpBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Where the service listens and what it answers with.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// gRPC `StatsService`.
    pub grpc: SocketAddr,
    /// HTTP/JSON and CSV.
    pub http: SocketAddr,
    /// S14's targets.
    pub targets: stats::Targets,
    /// The bounds of the queries.
    pub limits: svc::config::QueryLimits,
}

#[derive(Debug)]
pub struct ProjectionApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    http: axum::Router,
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
        let endpoints = Endpoints {
            grpc: config.projection.listen,
            http: config.projection.http_listen,
            targets: config.projection.targets,
            limits: config.projection.limits,
        };
        Self::build_with(log, tokens, endpoints, jetstream::new(client), consumer).await
    }

    pub async fn build_with(
        log: EventLog,
        tokens: Tokens,
        endpoints: Endpoints,
        jetstream: jetstream::Context,
        consumer: ConsumerConfig,
    ) -> Result<ProjectionApp, ProjectionStartError> {
        log.migrate().await.map_err(StartError::from)?;
        store::migrate(log.pool()).await?;
        let listen = endpoints.grpc;
        let (listener, local_addr) =
            svc::server::bind(listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: listen,
                    source,
                })?;
        let http_listener = TcpListener::bind(endpoints.http).await.map_err(|source| {
            ProjectionStartError::HttpBind {
                addr: endpoints.http,
                source,
            }
        })?;
        let http_addr =
            http_listener
                .local_addr()
                .map_err(|source| ProjectionStartError::HttpBind {
                    addr: endpoints.http,
                    source,
                })?;
        let tokens = Arc::new(tokens);
        let reader = read::Reader::new(log.pool(), endpoints.limits, endpoints.targets);
        Ok(ProjectionApp {
            listener,
            local_addr,
            http_listener,
            http_addr,
            http: http::router(reader.clone(), tokens.clone()),
            stats: Stats::new(reader, tokens),
            log,
            jetstream,
            consumer,
        })
    }

    /// The statistics queries refused by a bound (for the metrics).
    pub fn query_rejections(&self) -> Arc<read::Rejections> {
        self.stats.rejections()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The HTTP/JSON and CSV address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Consumes and serves queries until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(addr = %self.local_addr, http = %self.http_addr, "projection service listening");
        let http_stop = shutdown.clone();
        let http = tokio::spawn(async move {
            let served = axum::serve(self.http_listener, self.http)
                .with_graceful_shutdown(async move { http_stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server failed");
            }
        });
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
        if let Err(e) = http.await {
            tracing::error!(error = %e, "HTTP server task failed");
        }
        served
    }
}
