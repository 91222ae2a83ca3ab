//! Tamper evidence for the event log, for auditors: signed Merkle checkpoints of the whole log,
//! inclusion and consistency proofs, verification of the database and of exports.
//!
//! - [`checkpointer`]: every `audit.checkpoint_interval_secs`, extends the Merkle tree stored in
//!   `merkle_nodes` with the new events' `event_hash` (recomputed from their content, never
//!   trusted), signs a checkpoint (C2SP signed note, Ed25519; see the `merkle` crate), stores it
//!   in `checkpoints` and publishes it on NATS ([`publish`]). Safe with several instances.
//! - [`service`]: gRPC `dossier.v1.AuditService` (checkpoints, proofs, the public key).
//! - [`verify`]: `audit verify`, the whole log recomputed from the rows, by position, streaming.
//! - [`export`]: `audit export` (NDJSON with proofs) and its offline verification.
//! - [`cli`]: the command line; the binary is `cli::run` and nothing else.
//!
//! Migrations 40001+ (`migrations/`), in the log's database.

pub mod checkpointer;
pub mod cli;
pub mod export;
pub mod keys;
pub mod proofs;
pub mod publish;
pub mod service;
pub mod store;
pub mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use api::v1::audit_service_server::AuditServiceServer;
use eventlog::EventLog;
use merkle::Signer;
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::{App, Config, Listener, RunError, StartError, Tokens};
use tokio_util::sync::CancellationToken;

pub use checkpointer::{CheckpointError, Checkpointer, CheckpointerStatus, Tick};
pub use publish::Publisher;
pub use service::Audit;

/// The `[audit]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where the checkpoint and proof queries are served (`MOTCUA_AUDIT_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz` (`MOTCUA_AUDIT_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
    /// How often a signed checkpoint of the log is made (when the log grew).
    pub checkpoint_interval_secs: u64,
    /// The Ed25519 signing key of the checkpoints (created on first start when missing;
    /// `MOTCUA_AUDIT_SIGNING_KEY_FILE`).
    pub signing_key_file: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50057)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9457)),
            checkpoint_interval_secs: 60,
            signing_key_file: PathBuf::from("deploy/config/checkpoint.dev.key"),
        }
    }
}

impl Section for AuditConfig {
    const NAME: &'static str = "audit";

    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(addr) = env.addr("MOTCUA_AUDIT_LISTEN")? {
            self.listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_AUDIT_METRICS_LISTEN")? {
            self.metrics_listen = addr;
        }
        if let Some(file) = env.string("MOTCUA_AUDIT_SIGNING_KEY_FILE") {
            self.signing_key_file = PathBuf::from(file);
        }
        Ok(())
    }
}

/// Why the audit service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditStartError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("audit migrations refused: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Key(#[from] keys::KeyFileError),
    #[error("cannot connect to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Publish(#[from] publish::PublishError),
}

impl From<ConfigError> for AuditStartError {
    fn from(e: ConfigError) -> Self {
        AuditStartError::Start(e.into())
    }
}

#[derive(Debug)]
pub struct AuditApp {
    listener: Listener,
    metrics: Option<Listener>,
    pool: sqlx::PgPool,
    service: Audit,
    checkpointer: Checkpointer,
    interval: Duration,
}

impl AuditApp {
    /// Connects to PostgreSQL (migrating) and NATS, loads tokens and the signing key (creating
    /// it, named `origin`, when the file is missing), binds.
    pub async fn build(config: &Config, origin: &str) -> Result<AuditApp, AuditStartError> {
        let section: AuditConfig = config.section()?;
        let log = config
            .database
            .connect("audit")
            .await
            .map_err(StartError::from)?;
        let tokens = Tokens::load(&config.auth.tokens_file).map_err(StartError::from)?;
        let (signer, created) = keys::load_or_create(&section.signing_key_file, origin)?;
        if created {
            tracing::warn!(
                file = %section.signing_key_file.display(),
                "created a new checkpoint signing key; back it up and keep it secret"
            );
        }
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&config.nats.url)
            .await?;
        let publisher = Publisher::new(
            async_nats::jetstream::new(client),
            &config.nats.stream,
            &config.nats.subject_prefix,
        );
        let app = Self::build_with(
            log,
            tokens,
            signer,
            section.listen,
            Some(publisher),
            Duration::from_secs(section.checkpoint_interval_secs.max(1)),
        )
        .await?;
        Ok(AuditApp {
            metrics: Some(Listener::bind(section.metrics_listen).await?),
            ..app
        })
    }

    /// For tests and embedding: everything given. Without a publisher, checkpoints are only
    /// stored. No metrics listener.
    pub async fn build_with(
        log: EventLog,
        tokens: Tokens,
        signer: Signer,
        listen: SocketAddr,
        publisher: Option<Publisher>,
        interval: Duration,
    ) -> Result<AuditApp, AuditStartError> {
        log.migrate().await.map_err(StartError::from)?;
        store::migrate(log.pool()).await?;
        if let Some(p) = &publisher {
            p.ensure_stream().await?;
        }
        let listener = Listener::bind(listen).await?;
        let verifier = signer.verifier();
        tracing::info!(
            verifier_key = %verifier.to_text(),
            "checkpoints are signed with this key (give it to auditors)"
        );
        let signer = Arc::new(signer);
        Ok(AuditApp {
            listener,
            metrics: None,
            pool: log.pool().clone(),
            service: Audit::new(log.pool().clone(), Arc::new(tokens), verifier),
            checkpointer: Checkpointer::new(log.pool().clone(), signer, publisher),
            interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// The checkpointer this app runs (tests call `tick` on a clone to avoid waiting).
    pub fn checkpointer(&self) -> Checkpointer {
        self.checkpointer.clone()
    }

    /// The app the runner runs: gRPC `AuditService` and the checkpointer, with its metrics
    /// (`motcua_checkpoint_tree_size`, `motcua_checkpoint_age_seconds`) and health.
    pub fn into_app(self) -> App {
        let mut app = App::new("audit").grpc(self.listener);
        if let Some(metrics) = self.metrics {
            app = app.metrics(metrics);
        }
        let telemetry = app.telemetry();
        telemetry.pool(&self.pool);
        let status = self.checkpointer.status();
        let latest = status.latest.clone();
        let read = move || {
            *latest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let size = read.clone();
        telemetry.gauge_fn(
            "motcua_checkpoint_tree_size",
            "the tree size of the latest signed checkpoint (0: none yet)",
            move || size().map_or(0, |(size, _)| i64::try_from(size).unwrap_or(i64::MAX)),
        );
        telemetry.gauge_fn(
            "motcua_checkpoint_age_seconds",
            "seconds since the latest checkpoint was signed (0: none yet)",
            move || {
                read().map_or(0, |(_, signed_at)| {
                    (chrono::Utc::now() - signed_at).num_seconds().max(0)
                })
            },
        );
        let failing = status.failing.clone();
        telemetry.health_check("checkpointer", move || {
            match &*failing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                Some(reason) => Err(reason.clone()),
                None => Ok(()),
            }
        });
        let (checkpointer, interval) = (self.checkpointer, self.interval);
        app.serve(AuditServiceServer::new(self.service)).task(
            "checkpointer",
            move |stop| async move {
                checkpointer.run(interval, stop).await;
                Ok::<(), std::convert::Infallible>(())
            },
        )
    }

    /// Checkpoints and serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), RunError> {
        self.into_app().run_until_stopped(shutdown).await
    }
}
