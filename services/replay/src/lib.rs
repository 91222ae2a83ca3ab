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
use svc::{App, Config, Listener, RunError, StartError, Tokens};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use service::Replay;

svc::listen_section!(ReplayConfig, "replay", 50056, 9456, "MOTCUA_REPLAY");

/// The replay service bound to its listeners, ready to serve.
#[derive(Debug)]
pub struct ReplayApp {
    listener: Listener,
    metrics: Option<Listener>,
    log: EventLog,
    replay: Replay,
    wakeups: watch::Sender<u64>,
}

impl ReplayApp {
    /// Connects to PostgreSQL (applying the log's migrations, so it can start first), loads
    /// tokens, binds `replay.listen` and `replay.metrics_listen`.
    pub async fn build(config: &Config) -> Result<ReplayApp, StartError> {
        let section: ReplayConfig = config.section()?;
        let log = config.database.connect("replay").await?;
        let tokens = Tokens::load(&config.auth.tokens_file)?;
        let app = Self::build_with(log, tokens, section.listen).await?;
        Ok(ReplayApp {
            metrics: Some(Listener::bind(section.metrics_listen).await?),
            ..app
        })
    }

    /// As [`build`](Self::build), from parts (tests listen on port 0; no metrics listener).
    pub async fn build_with(
        log: EventLog,
        tokens: Tokens,
        listen: SocketAddr,
    ) -> Result<ReplayApp, StartError> {
        log.migrate().await?;
        // Replay reads `personal_keys` to show erased applicants.
        personal::migrate(log.pool()).await?;
        let listener = Listener::bind(listen).await?;
        let (wakeups, receiver) = watch::channel(0);
        Ok(ReplayApp {
            listener,
            metrics: None,
            replay: Replay::new(log.clone(), Arc::new(tokens), receiver),
            log,
            wakeups,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr()
    }

    /// Sets how often following streams look at the log when no notification came
    /// ([`stream::FOLLOW_POLL`] by default).
    pub fn with_follow_poll(self, poll: std::time::Duration) -> ReplayApp {
        ReplayApp {
            replay: self.replay.follow_poll(poll),
            ..self
        }
    }

    /// The app the runner runs: gRPC, the `LISTEN` connection's task, and one that ends the
    /// open streams (UNAVAILABLE: resume elsewhere) at the stop, so that the drain only waits
    /// for calls already answering.
    pub fn into_app(self) -> App {
        let streams = CancellationToken::new();
        let mut app = App::new("replay").grpc(self.listener);
        if let Some(metrics) = self.metrics {
            app = app.metrics(metrics);
        }
        app.telemetry().pool(self.log.pool());
        let ending = streams.clone();
        let (log, wakeups) = (self.log, self.wakeups);
        app.serve(ReplayServiceServer::new(self.replay.stopping_on(streams)))
            .task("append listener", move |stop| async move {
                wakeups::run(log, wakeups, stop).await;
                Ok::<(), std::convert::Infallible>(())
            })
            .task("stream closer", move |stop| async move {
                stop.cancelled().await;
                ending.cancel();
                Ok::<(), std::convert::Infallible>(())
            })
    }

    /// Serves until `shutdown` is cancelled (see [`into_app`](Self::into_app)).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), RunError> {
        self.into_app().run_until_stopped(shutdown).await
    }
}
