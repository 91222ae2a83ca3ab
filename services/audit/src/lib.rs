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
use std::sync::Arc;
use std::time::Duration;

use api::v1::audit_service_server::AuditServiceServer;
use eventlog::EventLog;
use merkle::Signer;
use svc::{Config, StartError, Tokens};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use checkpointer::{CheckpointError, Checkpointer, Tick};
pub use publish::Publisher;
pub use service::Audit;

/// How long in-flight calls may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

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

#[derive(Debug)]
pub struct AuditApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    service: Audit,
    checkpointer: Checkpointer,
    interval: Duration,
}

impl AuditApp {
    /// Connects to PostgreSQL (migrating) and NATS, loads tokens and the signing key (creating
    /// it, named `origin`, when the file is missing), binds.
    pub async fn build(config: &Config, origin: &str) -> Result<AuditApp, AuditStartError> {
        let log = EventLog::connect(&config.database.url, config.database.max_connections)
            .await
            .map_err(StartError::from)?;
        let tokens = Tokens::load(&config.auth.tokens_file).map_err(StartError::from)?;
        let (signer, created) = keys::load_or_create(&config.audit.signing_key_file, origin)?;
        if created {
            tracing::warn!(
                file = %config.audit.signing_key_file.display(),
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
        Self::build_with(
            log,
            tokens,
            signer,
            config.audit.listen,
            Some(publisher),
            Duration::from_secs(config.audit.checkpoint_interval_secs.max(1)),
        )
        .await
    }

    /// For tests and embedding: everything given. Without a publisher, checkpoints are only
    /// stored.
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
        let (listener, local_addr) =
            svc::server::bind(listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: listen,
                    source,
                })?;
        let verifier = signer.verifier();
        tracing::info!(
            verifier_key = %verifier.to_text(),
            "checkpoints are signed with this key (give it to auditors)"
        );
        let signer = Arc::new(signer);
        Ok(AuditApp {
            listener,
            local_addr,
            service: Audit::new(log.pool().clone(), Arc::new(tokens), verifier),
            checkpointer: Checkpointer::new(log.pool().clone(), signer, publisher),
            interval,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The checkpointer this app runs (tests call `tick` on a clone to avoid waiting).
    pub fn checkpointer(&self) -> Checkpointer {
        self.checkpointer.clone()
    }

    /// Checkpoints and serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(addr = %self.local_addr, "audit service listening");
        let checkpointing = tokio::spawn(self.checkpointer.run(self.interval, shutdown.clone()));
        let served = svc::server::serve(
            AuditServiceServer::new(self.service),
            self.listener,
            shutdown.clone(),
            DRAIN,
        )
        .await;
        shutdown.cancel();
        if let Err(e) = checkpointing.await {
            tracing::error!(error = %e, "checkpointer task failed");
        }
        served
    }
}
