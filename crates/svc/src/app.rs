//! Starting a write service: the dependencies every one of them needs, built from the
//! configuration or by a test, and the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use calendar::Calendar;
use eventlog::EventLog;
use tokio::net::TcpListener;

use crate::{Clock, Config, SystemClock, Tokens, WritePath};

/// Why a service could not start; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Connect(#[from] eventlog::ConnectError),
    #[error(transparent)]
    Migrate(#[from] eventlog::MigrateError),
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokensError),
    #[error("invalid calendar configuration: {0}")]
    Calendar(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What every write service is built from.
#[derive(Debug)]
pub struct ServiceDeps {
    pub log: EventLog,
    pub tokens: Tokens,
    pub calendar: Calendar,
    pub supplement_policy: domain::SupplementPolicy,
    pub clock: Arc<dyn Clock>,
    pub listen: SocketAddr,
}

impl ServiceDeps {
    /// Connects to PostgreSQL and loads tokens and calendar; `listen` is the service's address.
    pub async fn from_config(
        config: &Config,
        listen: SocketAddr,
    ) -> Result<ServiceDeps, StartError> {
        Ok(ServiceDeps {
            log: EventLog::connect(&config.database.url, config.database.max_connections).await?,
            tokens: Tokens::load(&config.auth.tokens_file)?,
            calendar: Calendar::new(&config.calendar)
                .map_err(|e| StartError::Calendar(e.to_string()))?,
            supplement_policy: config.processing.supplement_policy,
            clock: Arc::new(SystemClock),
            listen,
        })
    }

    /// For tests: the official Vietnamese calendar, `restart` policy, the system clock.
    pub fn for_tests(log: EventLog, tokens: Tokens) -> ServiceDeps {
        ServiceDeps {
            log,
            tokens,
            calendar: Calendar::vietnam_default(),
            supplement_policy: domain::SupplementPolicy::Restart,
            clock: Arc::new(SystemClock),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }

    /// Applies the log's migrations and binds the listener: what every service does first.
    pub async fn prepare(self) -> Result<Prepared, StartError> {
        self.log.migrate().await?;
        let (listener, local_addr) =
            crate::server::bind(self.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: self.listen,
                    source,
                })?;
        Ok(Prepared {
            write: WritePath::new(self.log, Arc::new(self.calendar), self.supplement_policy),
            tokens: Arc::new(self.tokens),
            clock: self.clock,
            listener,
            local_addr,
        })
    }
}

/// A service ready to serve: its write path, tokens, clock and bound listener.
#[derive(Debug)]
pub struct Prepared {
    pub write: WritePath,
    pub tokens: Arc<Tokens>,
    pub clock: Arc<dyn Clock>,
    pub listener: TcpListener,
    pub local_addr: SocketAddr,
}

/// How long in-flight calls may finish after a stop signal.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(20);

/// A gRPC service bound to its listener, ready to serve: what intake, payment and results are.
/// (Processing and projection run a background task next to theirs and have their own app.)
#[derive(Debug)]
pub struct App<S> {
    name: &'static str,
    listener: TcpListener,
    local_addr: SocketAddr,
    service: S,
}

impl Prepared {
    /// Wraps the service built from this preparation into a runnable [`App`].
    pub fn into_app<S>(
        self,
        name: &'static str,
        service: impl FnOnce(WritePath, Arc<Tokens>, Arc<dyn Clock>) -> S,
    ) -> App<S> {
        App {
            name,
            listener: self.listener,
            local_addr: self.local_addr,
            service: service(self.write, self.tokens, self.clock),
        }
    }
}

impl<S> App<S>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls for up to [`DRAIN`].
    pub async fn run_until_stopped(
        self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(service = self.name, addr = %self.local_addr, "listening");
        crate::server::serve(self.service, self.listener, shutdown, DRAIN).await
    }
}
