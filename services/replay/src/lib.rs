//! The replay service: the event log as auditors see it, read-only.
//!
//! - [`service`]: gRPC `ReplayService` — `StreamEvents` (every event in position order from a
//!   position or a recorded time, filtered by dossier, agency, level, sector, event type and
//!   business time; resumable; optionally following new appends) and `GetTimeline` (a dossier's
//!   events, due-time history and current state). Any valid token may read.
//! - [`query`]: the filtered, bounded, index-driven reads on `events`.
//! - [`stream`]: the producer behind a stream — constant memory, back-pressure, cancellation,
//!   never a silent truncation.
//! - [`timeline`]: the due-time history, pure, through the domain's fold.
//! - [`convert`]: stored events → `ReplayedEvent` (typed content, canonical bytes, hashes).
//!
//! It never writes and keeps no state of its own: no migrations beyond the log's, no cursor
//! (the client's last position is the cursor). The binary is wiring only (`main.rs`): config →
//! tracing → [`ReplayApp::build`] → [`ReplayApp::run_until_stopped`].

pub mod convert;
pub mod query;
pub mod service;
pub mod stream;
pub mod timeline;
mod wakeups;

use std::net::SocketAddr;
use std::sync::Arc;

use api::v1::replay_service_server::ReplayServiceServer;
use eventlog::EventLog;
use svc::{Config, StartError, Tokens};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use service::Replay;

/// How long in-flight calls may finish after a stop signal. Open streams are ended at once
/// (UNAVAILABLE: resume elsewhere), so this only bounds calls already answering.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

/// The replay service bound to its listener, ready to serve.
#[derive(Debug)]
pub struct ReplayApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    log: EventLog,
    replay: Replay,
    wakeups: watch::Sender<u64>,
}

impl ReplayApp {
    /// Connects to PostgreSQL (applying the log's migrations, so it can start first), loads
    /// tokens, binds `replay.listen`.
    pub async fn build(config: &Config) -> Result<ReplayApp, StartError> {
        let log = EventLog::connect(&config.database.url, config.database.max_connections).await?;
        let tokens = Tokens::load(&config.auth.tokens_file)?;
        Self::build_with(log, tokens, config.replay.listen).await
    }

    /// As [`build`](Self::build), from parts (tests listen on port 0).
    pub async fn build_with(
        log: EventLog,
        tokens: Tokens,
        listen: SocketAddr,
    ) -> Result<ReplayApp, StartError> {
        log.migrate().await?;
        let (listener, local_addr) =
            svc::server::bind(listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: listen,
                    source,
                })?;
        let (wakeups, receiver) = watch::channel(0);
        Ok(ReplayApp {
            listener,
            local_addr,
            replay: Replay::new(log.clone(), Arc::new(tokens), receiver),
            log,
            wakeups,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets how often following streams look at the log when no notification came
    /// ([`stream::FOLLOW_POLL`] by default).
    pub fn with_follow_poll(self, poll: std::time::Duration) -> ReplayApp {
        ReplayApp {
            replay: self.replay.follow_poll(poll),
            ..self
        }
    }

    /// Serves until `shutdown` is cancelled: then open streams end with UNAVAILABLE, no new
    /// call is accepted, and calls in flight finish for up to [`DRAIN`].
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(addr = %self.local_addr, "replay service listening");
        // Stops the listener and ends open streams on shutdown, and when serving fails.
        let stopping = shutdown.child_token();
        let listening = tokio::spawn(wakeups::run(self.log, self.wakeups, stopping.clone()));
        let served = svc::server::serve(
            ReplayServiceServer::new(self.replay.stopping_on(stopping.clone())),
            self.listener,
            shutdown,
            DRAIN,
        )
        .await;
        stopping.cancel();
        if let Err(e) = listening.await {
            tracing::error!(error = %e, "replay listener task failed");
        }
        served
    }
}
