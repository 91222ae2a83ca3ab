//! The projection service: keeps the statistics' aggregates exact from the event log and answers
//! indicator queries.
//!
//! - [`store`]: the tables (`projection_contributions`, the slice dictionary `stats_slice` and
//!   the wide rows `stats_cells` at day, month and year
//!   grain for a few rollups; migrations 30001+), [`store::apply_dossier`], which recomputes one
//!   dossier's contribution from the log and applies the difference to every rollup and grain,
//!   in one transaction (exactly-once effect under any delivery), [`store::apply_batch`], the
//!   same for many dossiers in one transaction, and [`store::query`], whose
//!   cost does not grow with the number of dossiers.
//! - [`rebuild`]: the read models rebuilt from the log into shadow tables and swapped in;
//!   [`verify`]: every figure recomputed from the log and compared with the read models.
//! - [`consumer`]: a durable JetStream pull consumer on `{prefix}.>`; batches of messages, each
//!   touched dossier applied once in one transaction, commit, then ack.
//! - [`scope`] parses what a request asks ([`stats::Query`] and [`scope::Source`]: live, or as
//!   recorded at a past instant), once for both transports; [`figures`] answers it from the
//!   aggregates or from the log; [`answers`] builds indicators (with S5 and S14) and report
//!   forms ([`forms`]: one table shape for gRPC, JSON and CSV) and a dossier's status.
//! - [`dashboard`]: the web page on the HTTP port (embedded assets) and the live notices
//!   (`GET /v1/stream`) fed by the consumer's applied position.
//! - [`read`]: the queries' bounds (admission, deadline, answer size; `[projection.limits]`)
//!   and read errors; [`service`]: gRPC `StatsService`; [`http`]: the same over HTTP/JSON and
//!   CSV.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`ProjectionApp::build`] →
//! [`ProjectionApp::run_until_stopped`], or the `rebuild` / `verify` subcommands. Tests build the app on port 0 with their own database
//! and JetStream namespace.

pub mod answers;
pub mod asof;
pub mod consumer;
pub mod dashboard;
pub mod figures;
pub mod forms;
pub mod http;
pub mod openapi;
pub mod read;
pub mod rebuild;
pub mod rollup;
pub mod scope;
pub mod scoring;
pub mod service;
pub mod store;
pub mod structure;
pub mod structure_service;
pub mod verify;
pub mod xlsx;

use std::net::SocketAddr;
use std::sync::Arc;

use api::v1::agency_structure_service_server::AgencyStructureServiceServer;
use api::v1::stats_service_server::StatsServiceServer;
use async_nats::jetstream;
use eventlog::EventLog;
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::{App, Config, Listener, RunError, StartError, Tokens};
use tokio_util::sync::CancellationToken;

pub use consumer::{ApplySettings, ConsumerConfig, ConsumerStatus};
pub use read::QueryLimits;
pub use service::Stats;
pub use store::{Applied, ApplyError, QueryError, applied_version, apply_batch, apply_dossier};

/// The `[projection]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionConfig {
    /// Where the statistics queries (`StatsService`) are served (`MOTCUA_PROJECTION_LISTEN`).
    pub listen: SocketAddr,
    /// Where the same queries are served over HTTP/JSON and CSV (dashboards, BI tools;
    /// `MOTCUA_PROJECTION_HTTP_LISTEN`).
    pub http_listen: SocketAddr,
    /// `/metrics` and `/healthz` (`MOTCUA_PROJECTION_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
    /// The durable JetStream consumer the projection instances share.
    pub consumer: String,
    /// S14: the target of each rate, in percent (defaults: Resolution 76/NQ-CP).
    pub targets: stats::Targets,
    /// What one statistics query may cost (`[projection.limits]`).
    pub limits: QueryLimits,
    /// How the consumer batches its applies (`[projection.apply]`).
    pub apply: consumer::ApplySettings,
    /// The dashboard's settings (`[projection.dashboard]`).
    pub dashboard: dashboard::DashboardConfig,
    /// The checkpointer of "as recorded at" figures (`[projection.checkpoints]`).
    pub checkpoints: asof::CheckpointSettings,
    /// An agency-structure file whose entries not yet recorded are published at start, as
    /// `config:<path>` (README, "Two-tier government and merged provinces"); none: the recorded
    /// structure as it is.
    pub agency_structure_file: Option<std::path::PathBuf>,
    /// The 766 scoring (versions by effective date); none: the shipped
    /// `deploy/config/scorecard-766.toml`, compiled in.
    pub scorecard_766_file: Option<std::path::PathBuf>,
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        ProjectionConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50055)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8055)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9455)),
            consumer: "projection".to_owned(),
            targets: stats::Targets::default(),
            limits: QueryLimits::default(),
            apply: consumer::ApplySettings::default(),
            dashboard: dashboard::DashboardConfig::default(),
            checkpoints: asof::CheckpointSettings::default(),
            agency_structure_file: None,
            scorecard_766_file: None,
        }
    }
}

impl Section for ProjectionConfig {
    const NAME: &'static str = "projection";

    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(addr) = env.addr("MOTCUA_PROJECTION_LISTEN")? {
            self.listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_PROJECTION_HTTP_LISTEN")? {
            self.http_listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_PROJECTION_METRICS_LISTEN")? {
            self.metrics_listen = addr;
        }
        Ok(())
    }
}

/// Why the projection could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionStartError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("projection migrations refused: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot connect to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error("the agency structure file is refused: {0}")]
    Structure(#[from] structure::StructureStoreError),
}

impl From<ConfigError> for ProjectionStartError {
    fn from(e: ConfigError) -> Self {
        ProjectionStartError::Start(e.into())
    }
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
    pub limits: QueryLimits,
    /// The dashboard and its live notices.
    pub dashboard: dashboard::DashboardConfig,
}

/// The projection bound to its listeners: queries over gRPC and HTTP, and the consumer.
#[derive(Debug)]
pub struct ProjectionApp {
    app: App,
    status: tokio::sync::watch::Receiver<ConsumerStatus>,
    rejections: Arc<read::Rejections>,
}

impl ProjectionApp {
    /// Connects to PostgreSQL (migrating) and NATS, loads tokens, binds.
    pub async fn build(config: &Config) -> Result<ProjectionApp, ProjectionStartError> {
        let section: ProjectionConfig = config.section()?;
        section
            .apply
            .validate()
            .and_then(|()| section.dashboard.validate())
            .and_then(|()| section.checkpoints.validate())
            .map_err(|message| ConfigError::Section {
                section: "projection",
                message,
            })?;
        let scoring = scoring::load(section.scorecard_766_file.as_deref()).map_err(|message| {
            ConfigError::Section {
                section: "projection",
                message: format!("scorecard_766_file: {message}"),
            }
        })?;
        let structure_file = section
            .agency_structure_file
            .as_deref()
            .map(|path| structure::read_file(path).map(|file| (path.to_owned(), file)))
            .transpose()?;
        let log = config
            .database
            .connect("projection")
            .await
            .map_err(StartError::from)?;
        let tokens = Tokens::load(&config.auth.tokens_file).map_err(StartError::from)?;
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&config.nats.url)
            .await?;
        let mut consumer = ConsumerConfig::new(
            &config.nats.stream,
            &config.nats.subject_prefix,
            &section.consumer,
        );
        section.apply.apply_to(&mut consumer);
        let endpoints = Endpoints {
            grpc: section.listen,
            http: section.http_listen,
            targets: section.targets,
            limits: section.limits,
            dashboard: section.dashboard,
        };
        if let Some((path, file)) = &structure_file {
            log.migrate().await.map_err(StartError::from)?;
            store::migrate(log.pool()).await?;
            let published =
                structure::publish(log.pool(), file, &format!("config:{}", path.display())).await?;
            tracing::info!(
                added = published.added,
                unchanged = published.unchanged,
                file = %path.display(),
                "agency structure published"
            );
        }
        let metrics = Listener::bind(section.metrics_listen).await?;
        let checkpointer = section.checkpoints.enabled.then(|| log.pool().clone());
        let built = Self::build_with_scoring(
            log,
            tokens,
            endpoints,
            Arc::new(scoring),
            jetstream::new(client),
            consumer,
        )
        .await?;
        let built = match checkpointer {
            Some(pool) => built.with_checkpointer(pool, section.checkpoints),
            None => built,
        };
        Ok(ProjectionApp {
            app: built.app.metrics(metrics),
            status: built.status,
            rejections: built.rejections,
        })
    }

    /// Runs the "as recorded at" checkpointer ([`asof::run`]) with the service.
    pub fn with_checkpointer(
        mut self,
        pool: sqlx::PgPool,
        settings: asof::CheckpointSettings,
    ) -> Self {
        let status = tokio::sync::watch::Sender::new(asof::CheckpointerStatus::default());
        register_checkpointer(self.app.telemetry(), status.subscribe());
        self.app = self.app.task("checkpointer", move |stop| async move {
            asof::run(pool, settings, status, stop).await;
            Ok::<(), std::convert::Infallible>(())
        });
        self
    }

    /// From parts (tests listen on port 0; no metrics listener), with the shipped 766 scoring.
    pub async fn build_with(
        log: EventLog,
        tokens: Tokens,
        endpoints: Endpoints,
        jetstream: jetstream::Context,
        consumer: ConsumerConfig,
    ) -> Result<ProjectionApp, ProjectionStartError> {
        let scoring = Arc::new(scoring::shipped());
        Self::build_with_scoring(log, tokens, endpoints, scoring, jetstream, consumer).await
    }

    /// From parts, with a 766 scoring.
    pub async fn build_with_scoring(
        log: EventLog,
        tokens: Tokens,
        endpoints: Endpoints,
        scoring: Arc<stats::scorecard::ScoringConfig>,
        jetstream: jetstream::Context,
        consumer: ConsumerConfig,
    ) -> Result<ProjectionApp, ProjectionStartError> {
        log.migrate().await.map_err(StartError::from)?;
        store::migrate(log.pool()).await?;
        let grpc = Listener::bind(endpoints.grpc).await?;
        let http_listener = Listener::bind(endpoints.http).await?;
        let tokens = Arc::new(tokens);
        let reader = read::Reader::new(log.pool(), endpoints.limits, endpoints.targets)
            .with_scoring(scoring);
        let rejections = reader.rejections();
        let app = App::new("projection").grpc(grpc);
        app.telemetry().pool(log.pool());
        let status = tokio::sync::watch::Sender::new(ConsumerStatus::default());
        register_status(app.telemetry(), status.subscribe());
        register_rejections(app.telemetry(), rejections.clone());
        let receiver = status.subscribe();
        let health = app.telemetry().clone();
        // The notice streams end when the service stops (else they would hold the HTTP
        // server's graceful shutdown until the drain timeout).
        let closing = CancellationToken::new();
        let notices =
            dashboard::Notices::new(status.subscribe(), &endpoints.dashboard, closing.clone());
        let app = app
            .serve(StatsServiceServer::new(Stats::new(
                reader.clone(),
                tokens.clone(),
            )))
            .serve(AgencyStructureServiceServer::new(
                structure_service::AgencyStructureRpc::new(log.pool().clone(), tokens.clone()),
            ))
            .http(
                "queries",
                http_listener,
                http::router(reader, tokens, health, notices, &endpoints.dashboard),
            )
            .task("notices", move |stop| async move {
                stop.cancelled().await;
                closing.cancel();
                Ok::<(), std::convert::Infallible>(())
            })
            .task("consumer", move |stop| async move {
                consumer::run(log, jetstream, consumer, status, stop).await;
                Ok::<(), std::convert::Infallible>(())
            });
        Ok(ProjectionApp {
            app,
            status: receiver,
            rejections,
        })
    }

    /// The statistics queries refused by a bound (for the metrics).
    pub fn query_rejections(&self) -> Arc<read::Rejections> {
        self.rejections.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.app.local_addr()
    }

    /// The consumer's status (failing dossiers, positions), updated while it runs: gRPC health
    /// is NOT_SERVING while a dossier fails to apply.
    pub fn status(&self) -> tokio::sync::watch::Receiver<ConsumerStatus> {
        self.status.clone()
    }

    /// The HTTP/JSON and CSV address.
    pub fn http_addr(&self) -> SocketAddr {
        self.app
            .http_addr("queries")
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The runner's app (to add what other parts expose: the consumer's status…).
    pub fn into_app(self) -> App {
        self.app
    }

    /// Consumes and serves queries until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), RunError> {
        self.app.run_until_stopped(shutdown).await
    }
}

/// Exposes the "as recorded at" checkpointer's progress as metrics (`motcua_asof_*`; alert
/// `MotcuaAsofCheckpointsBehind`).
fn register_checkpointer(
    telemetry: &svc::Telemetry,
    status: tokio::sync::watch::Receiver<asof::CheckpointerStatus>,
) {
    use svc::metrics::Sample;
    telemetry.sampled(
        status,
        &[
            Sample::gauge(
                "motcua_asof_checkpointed_position",
                "the log position the last \"as recorded at\" checkpoint covers (any instance's)",
                |s| s.borrow().checkpointed_position,
            ),
            Sample::gauge(
                "motcua_asof_events_past_checkpoint",
                "events recorded after the last checkpoint: read dossier by dossier by an as-of answer near the head; past 100000 it scans the log",
                |s| s.borrow().events_past_checkpoint(),
            ),
            Sample::counter(
                "motcua_asof_checkpoint_failures",
                "checkpoints of this instance that failed (nothing written; retried)",
                |s| s.borrow().failures_total,
            ),
        ],
    );
}

/// Exposes the consumer's status as metrics (`motcua_projection_*`) and as a health check that
/// fails (gRPC health NOT_SERVING, `/healthz` 503) while a dossier fails to apply.
fn register_status(
    telemetry: &svc::Telemetry,
    status: tokio::sync::watch::Receiver<ConsumerStatus>,
) {
    use svc::metrics::{Sample, gauge_of};
    telemetry.sampled(
        status.clone(),
        &[
            Sample::gauge(
                "motcua_projection_stream_position",
                "the highest log position of a stream message this instance received",
                |s| s.borrow().stream_position,
            ),
            Sample::gauge(
                "motcua_projection_applied_position",
                "the highest log position this instance applied and acknowledged",
                |s| s.borrow().applied_position,
            ),
            Sample::gauge(
                "motcua_projection_failing_dossiers",
                "dossiers whose apply failed and has not succeeded since (missing from the figures)",
                |s| gauge_of(s.borrow().failing_dossiers),
            ),
            Sample::counter(
                "motcua_projection_apply_failures",
                "failed applies by this instance since it started",
                |s| s.borrow().apply_failures_total,
            ),
            Sample::counter(
                "motcua_projection_batches",
                "transactions of several dossiers committed by this instance since it started",
                |s| s.borrow().batches_total,
            ),
            Sample::counter(
                "motcua_projection_batch_fallbacks",
                "batches whose transaction failed, then applied one dossier at a time",
                |s| s.borrow().batch_fallbacks_total,
            ),
        ],
    );
    telemetry.health_check("consumer", move || {
        let failing = status.borrow().failing_dossiers;
        if failing == 0 {
            Ok(())
        } else {
            Err(format!(
                "{failing} dossier(s) fail to apply and are missing from the figures: see projection_failures and `projection verify`"
            ))
        }
    });
}

/// Exposes the statistics queries refused by a bound as `motcua_stats_queries_rejected_total`.
fn register_rejections(telemetry: &svc::Telemetry, rejections: Arc<read::Rejections>) {
    telemetry.counter_fn_by(
        "motcua_stats_queries_rejected",
        "statistics queries refused by a bound, by reason",
        "reason",
        move || {
            rejections
                .counts()
                .into_iter()
                .map(|(reason, n)| (reason.to_owned(), n))
                .collect()
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_projection_section_parses() {
        let config = Config::parse(include_str!("../../../deploy/config/local.toml")).unwrap();
        let section: ProjectionConfig = config.section().unwrap();
        assert_eq!(section.http_listen.port(), 8055);
        assert_eq!(section.dashboard.max_stream_subscribers, 64);
        section.dashboard.validate().unwrap();
    }
}
