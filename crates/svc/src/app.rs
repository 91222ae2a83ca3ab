//! Starting a service: the dependencies every write service needs ([`ServiceDeps`], built from
//! the configuration or by a test), and the one runner every service binary uses ([`App`]).
//!
//! # The runner
//!
//! An [`App`] is a service bound to its listeners and ready to run: a gRPC port (its service(s),
//! gRPC health and server reflection v1 and v1alpha listing only what the port serves), optional
//! HTTP routers, the metrics listener (`/metrics`, `/healthz`, see [`crate::metrics`]) and
//! background tasks (the deadline watcher, the projection consumer, the relay loop, the
//! checkpointer…). [`App::run_until_stopped`] runs them all until the given token is cancelled
//! (the binaries cancel it on SIGINT/SIGTERM: [`crate::server::shutdown_on_signal`]), then stops
//! accepting, lets calls and tasks finish for up to the drain timeout ([`DRAIN`] by default) and
//! returns.
//!
//! A background task that fails, panics or ends on its own before the stop stops the whole
//! service, which returns [`RunError::Task`] naming it: it is not restarted in-process. A task
//! that can recover from a passing fault (NATS or PostgreSQL away) retries inside itself; one
//! that returns has met something a restart of the process (systemd `Restart=on-failure`) or an
//! operator must deal with, and a service that keeps answering while a part of it is dead would
//! hide that.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use calendar::Calendar;
use eventlog::EventLog;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use writepath::{Clock, SystemClock, WritePath};

use crate::metrics::Telemetry;
use crate::{Config, Tokens};

/// How long in-flight calls and background tasks may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

/// How often the components' sampled health checks are looked at for the gRPC health service
/// (reported changes are applied at once).
pub const HEALTH_POLL: Duration = Duration::from_secs(1);

/// Why a service could not start; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Connect(#[from] eventlog::ConnectError),
    #[error(transparent)]
    Migrate(#[from] eventlog::MigrateError),
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokensError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("invalid calendar configuration: {0}")]
    Calendar(String),
    #[error(transparent)]
    Keyring(#[from] personal::KeyringError),
    #[error("cannot apply the personal data migrations: {0}")]
    PersonalMigrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A bound TCP listener and its actual address (port 0 picks a free port: tests do that).
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    pub async fn bind(addr: SocketAddr) -> Result<Listener, StartError> {
        let (listener, local) = crate::server::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        Ok(Listener {
            listener,
            addr: local,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What every write service is built from.
#[derive(Debug)]
pub struct ServiceDeps {
    pub log: EventLog,
    pub tokens: Tokens,
    pub calendar: Calendar,
    pub supplement_policy: domain::SupplementPolicy,
    pub apology_notice: domain::NoticeUnit,
    pub clock: Arc<dyn Clock>,
    pub listen: SocketAddr,
    /// Where `/metrics` and `/healthz` are served (`None`: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// The master keys of the applicants' personal data (`None`: not configured).
    pub keyring: Option<personal::Keyring>,
}

impl ServiceDeps {
    /// Connects the pool of `service` to PostgreSQL and loads tokens and calendar; `listen` is
    /// the service's gRPC address, `metrics_listen` its metrics address.
    pub async fn from_config(
        config: &Config,
        service: &'static str,
        listen: SocketAddr,
        metrics_listen: SocketAddr,
    ) -> Result<ServiceDeps, StartError> {
        let rules = config.rules()?;
        Ok(ServiceDeps {
            log: config.database.connect(service).await?,
            tokens: Tokens::load(&config.auth.tokens_file)?,
            calendar: Calendar::new(&config.calendar)
                .map_err(|e| StartError::Calendar(e.to_string()))?,
            supplement_policy: rules.supplement_policy,
            apology_notice: rules.apology_notice,
            clock: Arc::new(SystemClock),
            listen,
            metrics_listen: Some(metrics_listen),
            keyring: config.keyring()?,
        })
    }

    /// For tests: the official Vietnamese calendar, `restart` policy, the system clock, gRPC
    /// and metrics on free ports of 127.0.0.1.
    pub fn for_tests(log: EventLog, tokens: Tokens) -> ServiceDeps {
        ServiceDeps {
            log,
            tokens,
            calendar: Calendar::vietnam_default(),
            supplement_policy: domain::SupplementPolicy::Restart,
            apology_notice: domain::NoticeUnit::WorkingDay,
            clock: Arc::new(SystemClock),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            keyring: None,
        }
    }

    /// Applies the log's migrations and binds the listeners: what every service does first.
    pub async fn prepare(self) -> Result<Prepared, StartError> {
        self.log.migrate().await?;
        let listener = Listener::bind(self.listen).await?;
        let metrics = match self.metrics_listen {
            Some(addr) => Some(Listener::bind(addr).await?),
            None => None,
        };
        Ok(Prepared {
            write: WritePath::new(self.log, Arc::new(self.calendar), self.supplement_policy)
                .with_apology_notice(self.apology_notice),
            tokens: Arc::new(self.tokens),
            clock: self.clock,
            listener,
            metrics,
        })
    }
}

/// A write service ready to be assembled: its write path, tokens, clock and bound listeners.
#[derive(Debug)]
pub struct Prepared {
    pub write: WritePath,
    pub tokens: Arc<Tokens>,
    pub clock: Arc<dyn Clock>,
    pub listener: Listener,
    pub metrics: Option<Listener>,
}

impl Prepared {
    /// The [`App`] named `name` serving on the gRPC listener the service built from this
    /// preparation, with the pool's gauges and the metrics listener.
    pub fn into_app<S>(
        self,
        name: &'static str,
        service: impl FnOnce(WritePath, Arc<Tokens>, Arc<dyn Clock>) -> S,
    ) -> App
    where
        S: GrpcService,
    {
        let mut app = App::new(name).grpc(self.listener);
        if let Some(metrics) = self.metrics {
            app = app.metrics(metrics);
        }
        app.telemetry().pool(self.write.log().pool());
        register_group_commit(app.telemetry(), self.write.log());
        app.serve(service(self.write, self.tokens, self.clock))
    }
}

/// What a gRPC service (a tonic `…Server<T>`) is to the runner.
pub trait GrpcService:
    tonic::codegen::Service<
        tonic::codegen::http::Request<tonic::body::Body>,
        Response = tonic::codegen::http::Response<tonic::body::Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

type TaskFn = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, Result<(), String>> + Send>;

/// Why a running service stopped other than by its stop signal.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A background task or server failed, panicked or ended before the stop: the service
    /// stopped everything else. Restart the process (systemd does) once the cause is fixed.
    #[error("{service}: {task} stopped: {reason}")]
    Task {
        service: &'static str,
        task: String,
        reason: String,
    },
}

/// One service, bound and ready to run (see the [module documentation](self)).
pub struct App {
    name: &'static str,
    telemetry: Telemetry,
    grpc: Option<Listener>,
    routes: RoutesBuilder,
    services: Vec<String>,
    http: Vec<(&'static str, Listener, axum::Router)>,
    metrics: Option<Listener>,
    tasks: Vec<(&'static str, TaskFn)>,
    drain: Duration,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("grpc", &self.grpc)
            .field("services", &self.services)
            .field("metrics", &self.metrics)
            .field(
                "tasks",
                &self.tasks.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl App {
    /// An app named `name` (logs, the `service` label of its metrics) with nothing yet.
    pub fn new(name: &'static str) -> App {
        App {
            name,
            telemetry: Telemetry::new(name),
            grpc: None,
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            http: Vec::new(),
            metrics: None,
            tasks: Vec::new(),
            drain: DRAIN,
        }
    }

    /// The gRPC listener (needed by [`serve`](Self::serve)).
    pub fn grpc(mut self, listener: Listener) -> App {
        self.grpc = Some(listener);
        self
    }

    /// Serves `service` on the gRPC listener (several services may share it).
    pub fn serve<S: GrpcService>(mut self, service: S) -> App {
        self.services.push(S::NAME.to_owned());
        self.routes.add_service(service);
        self
    }

    /// Serves `router` over HTTP/1.1 on `listener`; `name` names it in logs and errors.
    pub fn http(mut self, name: &'static str, listener: Listener, router: axum::Router) -> App {
        self.http.push((name, listener, router));
        self
    }

    /// Serves `/metrics` and `/healthz` on `listener`.
    pub fn metrics(mut self, listener: Listener) -> App {
        self.metrics = Some(listener);
        self
    }

    /// Runs `task` in the background. It gets a token cancelled at the stop and must return
    /// soon after; returning (or failing, or panicking) before stops the service.
    pub fn task<F, Fut, E>(mut self, name: &'static str, task: F) -> App
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        self.tasks.push((
            name,
            Box::new(move |stop| {
                let fut = task(stop);
                Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
            }),
        ));
        self
    }

    /// How long calls and tasks may finish after the stop ([`DRAIN`] by default).
    pub fn drain(mut self, drain: Duration) -> App {
        self.drain = drain;
        self
    }

    /// Where components register their metrics and report their health.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The gRPC address (unspecified if the app serves no gRPC).
    pub fn local_addr(&self) -> SocketAddr {
        self.grpc
            .as_ref()
            .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), Listener::local_addr)
    }

    /// The address of the HTTP router `name`.
    pub fn http_addr(&self, name: &str) -> Option<SocketAddr> {
        self.http
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, l, _)| l.local_addr())
    }

    /// The address of `/metrics` and `/healthz`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(Listener::local_addr)
    }

    /// Runs everything until `shutdown` is cancelled, then stops accepting and lets calls and
    /// tasks finish for up to the drain timeout (what is still running then is aborted).
    /// Returns an error if a task or server stopped before the stop (after stopping the rest).
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), RunError> {
        let name = self.name;
        // `stop` is cancelled by the stop signal or by the first failure.
        let stop = shutdown.child_token();
        let tracker = TaskTracker::new();
        let mut handles = Vec::new();
        let (failed, mut failures) = mpsc::unbounded_channel::<(String, String)>();

        // Each part runs in its own task; a part that ends before the stop is a failure.
        let mut spawn = |task: String, part: BoxFuture<'static, Result<(), String>>| {
            let stop = stop.clone();
            let failed = failed.clone();
            let inner = tokio::spawn(part);
            let abort = inner.abort_handle();
            tracker.spawn(async move {
                let outcome = match inner.await {
                    Ok(Ok(())) if stop.is_cancelled() => None,
                    Ok(Ok(())) => Some("ended unexpectedly".to_owned()),
                    Ok(Err(reason)) => Some(reason),
                    Err(e) if e.is_panic() => Some("panicked".to_owned()),
                    Err(_) => None,
                };
                if let Some(reason) = outcome {
                    tracing::error!(service = name, task = %task, %reason, "stopping the service");
                    // The receiver lives until the runner returns.
                    let _ = failed.send((task, reason));
                    stop.cancel();
                }
            });
            handles.push(abort);
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        if let Some(listener) = self.grpc {
            let mut names = self.services.clone();
            let reflection_v1 = crate::server::reflection_v1(&names);
            let reflection_v1alpha = crate::server::reflection_v1alpha(&names);
            names.extend(crate::server::INFRASTRUCTURE_SERVICES.map(str::to_owned));
            let layer = self.telemetry.grpc_layer(&names);
            let mut routes = self.routes;
            routes
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha);
            tracing::info!(service = name, addr = %listener.addr, services = ?self.services, "gRPC listening");
            let stopping = stop.clone();
            let server = tonic::transport::Server::builder()
                .layer(layer)
                .add_routes(routes.routes())
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener.listener),
                    stopping.cancelled_owned(),
                );
            spawn(
                "gRPC server".to_owned(),
                Box::pin(async move { server.await.map_err(|e| e.to_string()) }),
            );
            let telemetry = self.telemetry.clone();
            let services = self.services.clone();
            let stopping = stop.clone();
            let reporter = health.clone();
            spawn(
                "health".to_owned(),
                Box::pin(async move {
                    report_health(telemetry, reporter, services, stopping).await;
                    Ok(())
                }),
            );
        }
        let mut http = self.http;
        if let Some(listener) = self.metrics {
            tracing::info!(service = name, addr = %listener.addr, "metrics listening");
            http.push(("metrics", listener, self.telemetry.router()));
        }
        for (part, listener, router) in http {
            tracing::info!(service = name, part, addr = %listener.addr, "HTTP listening");
            let stopping = stop.clone();
            spawn(
                format!("HTTP server {part}"),
                Box::pin(async move {
                    // With the peer's address (`ConnectInfo<SocketAddr>`): rate limits by client.
                    axum::serve(
                        listener.listener,
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(stopping.cancelled_owned())
                    .await
                    .map_err(|e| e.to_string())
                }),
            );
        }
        for (task, run) in self.tasks {
            spawn(task.to_owned(), run(stop.clone()));
        }
        drop(failed);
        tracker.close();

        stop.cancelled().await;
        if shutdown.is_cancelled() {
            tracing::info!(service = name, "stopping: no new calls accepted, draining");
        }
        if tokio::time::timeout(self.drain, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(service = name, drain = ?self.drain, "drain timeout passed; stopping with work in flight");
            for handle in &handles {
                handle.abort();
            }
        }
        match failures.try_recv() {
            Ok((task, reason)) => Err(RunError::Task {
                service: name,
                task,
                reason,
            }),
            Err(_) => {
                tracing::info!(service = name, "stopped");
                Ok(())
            }
        }
    }
}

/// Keeps the gRPC health of `services` (and of the whole server, `""`) SERVING while no
/// component reports a problem, NOT_SERVING otherwise and from the stop on.
async fn report_health(
    telemetry: Telemetry,
    reporter: tonic_health::server::HealthReporter,
    services: Vec<String>,
    stop: CancellationToken,
) {
    let mut last = None;
    loop {
        let problems = telemetry.problems();
        let status = if problems.is_empty() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            if status == ServingStatus::NotServing {
                tracing::warn!(
                    service = telemetry.service(),
                    ?problems,
                    "health: NOT_SERVING"
                );
            } else if last.is_some() {
                tracing::info!(service = telemetry.service(), "health: SERVING again");
            }
            set_all(&reporter, &services, status).await;
            last = Some(status);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = telemetry.changed() => {}
            () = tokio::time::sleep(HEALTH_POLL) => {}
        }
    }
    set_all(&reporter, &services, ServingStatus::NotServing).await;
}

async fn set_all(
    reporter: &tonic_health::server::HealthReporter,
    services: &[String],
    status: ServingStatus,
) {
    reporter.set_service_status("", status).await;
    for service in services {
        reporter.set_service_status(service, status).await;
    }
}

/// Exposes the log's group commit: `motcua_append_group_size` (the histogram of calls per
/// group: `_count` is the groups, `_sum` the calls), `motcua_append_calls_queued` (calls
/// waiting for a group slot now), `motcua_append_group_reruns_total` (groups run again after
/// losing a race), `motcua_append_group_heads_looked_up_total` (groups whose callers' dossier
/// heads were out of date, run again with the look-ups) and `motcua_append_group_splits_total`
/// (groups whose calls were run one by one); and the batched dossier loads of the write path
/// (`eventlog::load`): `motcua_dossier_load_batches_total`, `motcua_dossier_loads_total` (loads
/// per batch on average: their ratio), `motcua_dossier_loads_queued` and
/// `motcua_dossier_load_batch_splits_total` (batches read again one dossier at a time).
fn register_group_commit(telemetry: &crate::Telemetry, log: &eventlog::EventLog) {
    use crate::metrics::{HistogramSample, Sample, gauge_of};
    telemetry.sampled(
        log.clone(),
        &[
            Sample::histogram(
                "motcua_append_group_size",
                "calls per group of appends committed in one transaction",
                |l| {
                    let stats = l.group_commit_stats();
                    HistogramSample {
                        buckets: stats
                            .size_buckets
                            .iter()
                            .map(|&(le, groups)| {
                                let bound = if le == u64::MAX {
                                    f64::INFINITY
                                } else {
                                    le as f64
                                };
                                (bound, groups)
                            })
                            .collect(),
                        sum: stats.calls as f64,
                    }
                },
            ),
            Sample::gauge(
                "motcua_append_calls_queued",
                "append calls waiting for a free group slot now",
                |l| gauge_of(l.group_commit_stats().queued),
            ),
            Sample::counter(
                "motcua_append_group_reruns",
                "groups of appends run again after losing a race to another writer",
                |l| l.group_commit_stats().reruns,
            ),
            Sample::counter(
                "motcua_append_group_heads_looked_up",
                "groups of appends whose callers' dossier heads were out of date (or would refuse a call), run again with the look-ups",
                |l| l.group_commit_stats().heads_looked_up,
            ),
            Sample::counter(
                "motcua_append_group_splits",
                "groups of appends whose calls were run one by one (a race lost twice, or one call's data refused)",
                |l| l.group_commit_stats().splits,
            ),
            Sample::counter(
                "motcua_dossier_load_batches",
                "statements that read the dossiers of the write path's calls (a lone load is a batch of one)",
                |l| l.load_batch_stats().batches,
            ),
            Sample::counter(
                "motcua_dossier_loads",
                "dossier loads of the write path's calls, read in batches",
                |l| l.load_batch_stats().loads,
            ),
            Sample::gauge(
                "motcua_dossier_loads_queued",
                "dossier loads waiting for a free batch slot now",
                |l| gauge_of(l.load_batch_stats().queued),
            ),
            Sample::counter(
                "motcua_dossier_load_batch_splits",
                "batches of dossier loads whose statement failed, read again one dossier at a time",
                |l| l.load_batch_stats().splits,
            ),
        ],
    );
}
