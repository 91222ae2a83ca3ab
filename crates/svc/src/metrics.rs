//! A service's metrics and health: the Prometheus registry behind `/metrics`, the gRPC
//! requests layer, the PostgreSQL pool gauges, and the components' health behind `/healthz` and
//! the gRPC health service.
//!
//! Every service gets one [`Telemetry`] from the [app runner](crate::app). Components register
//! what they measure on it while the app is built:
//!
//! - a metric they update themselves ([`Telemetry::register`]: a `Counter`, `Gauge`, `Family`…
//!   of the `prometheus-client` crate);
//! - values sampled at scrape time from plain Rust state: several read from one status
//!   ([`Telemetry::sampled`] with a list of [`Sample`]s: a `tokio::sync::watch::Receiver` of a
//!   status struct, or shared atomics), or one read by a closure ([`Telemetry::gauge_fn`],
//!   [`Telemetry::counter_fn`], [`Telemetry::counter_fn_by`]);
//! - their health: pushed ([`Telemetry::component`] → [`Component::failing`]) or sampled
//!   ([`Telemetry::health_check`]). While any component is failing, `/healthz` answers 503 with
//!   the reasons and the gRPC health service says `NOT_SERVING` for every service of the port.
//!
//! Counters are registered without their `_total` suffix: the encoder adds it
//! (`counter_fn("motcua_watcher_marks", …)` is scraped as `motcua_watcher_marks_total`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};
use sqlx::PgPool;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};

/// Every metric name the services expose (as scraped), agreed between the parts that feed
/// them; the dashboard in `deploy/grafana/` shows each (a test checks).
pub const AGREED: [&str; 23] = [
    "motcua_grpc_requests_total",
    "motcua_grpc_request_duration_seconds",
    "motcua_db_pool_connections",
    "motcua_db_pool_max_connections",
    "motcua_relay_log_head_position",
    "motcua_relay_published_position",
    "motcua_relay_stalled",
    "motcua_relay_diverged",
    "motcua_relay_oversized_events_total",
    "motcua_projection_stream_position",
    "motcua_projection_applied_position",
    "motcua_projection_failing_dossiers",
    "motcua_projection_apply_failures_total",
    "motcua_watcher_marks_total",
    "motcua_checkpoint_tree_size",
    "motcua_checkpoint_age_seconds",
    "motcua_stats_queries_rejected_total",
    "motcua_grpc_request_duration_seconds_bucket",
    "motcua_warning_outbox_rows",
    "motcua_warning_outbox_oldest_seconds",
    "motcua_append_group_size_bucket",
    "motcua_append_group_size_sum",
    "motcua_append_group_size_count",
];

/// The metrics the alert rules in `deploy/prometheus/alerts.yml` watch.
pub const ALERTED: [&str; 16] = [
    "motcua_grpc_requests_total",
    "motcua_grpc_request_duration_seconds_bucket",
    "motcua_db_pool_connections",
    "motcua_db_pool_max_connections",
    "motcua_relay_log_head_position",
    "motcua_relay_published_position",
    "motcua_relay_stalled",
    "motcua_relay_diverged",
    "motcua_relay_oversized_events_total",
    "motcua_projection_applied_position",
    "motcua_projection_failing_dossiers",
    "motcua_projection_apply_failures_total",
    "motcua_checkpoint_age_seconds",
    "motcua_stats_queries_rejected_total",
    "motcua_warning_outbox_rows",
    "motcua_warning_outbox_oldest_seconds",
];

/// The labels of a metric: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// The upper bounds (seconds) of `motcua_grpc_request_duration_seconds`' buckets.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label value of a path that is not one of the port's methods (so that unknown paths a
/// client makes up cannot grow the number of series).
pub const UNKNOWN: &str = "unknown";

/// One metric read from a component's status `S` at each scrape ([`Telemetry::sampled`]).
pub enum Sample<S> {
    /// A value that goes up and down.
    Gauge {
        name: &'static str,
        help: &'static str,
        read: fn(&S) -> i64,
    },
    /// A count since the process started (registered without `_total`, scraped with it).
    Counter {
        name: &'static str,
        help: &'static str,
        read: fn(&S) -> u64,
    },
    /// A distribution since the process started (scraped as `_bucket`, `_sum`, `_count`).
    Histogram {
        name: &'static str,
        help: &'static str,
        read: fn(&S) -> HistogramSample,
    },
}

/// A histogram as a component counts it, read at a scrape ([`Sample::histogram`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    /// `(upper bound, observations at most that)`, cumulative, bounds increasing; the last
    /// bound is `f64::INFINITY` (when it is not, a `+Inf` bucket with the last count is added).
    pub buckets: Vec<(f64, u64)>,
    /// The sum of the observations.
    pub sum: f64,
}

impl HistogramSample {
    /// Observations in all (the `+Inf` bucket).
    pub fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |(_, n)| *n)
    }

    /// Per bucket (not cumulative), ending with `+Inf`: what the encoder takes.
    fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        let mut out: Vec<(f64, u64)> = self
            .buckets
            .iter()
            .map(|&(bound, cumulative)| {
                let n = cumulative.saturating_sub(below);
                below = below.max(cumulative);
                (bound, n)
            })
            .collect();
        if out.last().is_none_or(|(bound, _)| *bound != f64::INFINITY) {
            out.push((f64::INFINITY, 0));
        }
        out
    }
}

impl<S> Sample<S> {
    /// A gauge named `name`.
    pub const fn gauge(name: &'static str, help: &'static str, read: fn(&S) -> i64) -> Self {
        Sample::Gauge { name, help, read }
    }

    /// A counter named `name` (without `_total`).
    pub const fn counter(name: &'static str, help: &'static str, read: fn(&S) -> u64) -> Self {
        Sample::Counter { name, help, read }
    }

    /// A histogram named `name` (without `_bucket`, `_sum`, `_count`).
    pub const fn histogram(
        name: &'static str,
        help: &'static str,
        read: fn(&S) -> HistogramSample,
    ) -> Self {
        Sample::Histogram { name, help, read }
    }

    /// The metric's name as registered.
    pub fn name(&self) -> &'static str {
        match self {
            Sample::Gauge { name, .. }
            | Sample::Counter { name, .. }
            | Sample::Histogram { name, .. } => name,
        }
    }
}

impl<S> fmt::Debug for Sample<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Sample").field(&self.name()).finish()
    }
}

/// A count as a gauge's value (saturating at `i64::MAX`, which no count reaches).
pub fn gauge_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

type HealthFn = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// One service process's metrics registry and components' health. Cheap to clone.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    registry: Mutex<Registry>,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    reported: Mutex<BTreeMap<&'static str, String>>,
    checks: Mutex<Vec<(&'static str, HealthFn)>>,
    changed: tokio::sync::Notify,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data (single assignments).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Telemetry {
    /// A registry for the service `service` (the `service` label of the pool gauges) with the
    /// gRPC request metrics registered.
    pub fn new(service: &'static str) -> Telemetry {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let durations = Family::<Labels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "motcua_grpc_requests",
            "gRPC calls answered, by gRPC service, method and status code",
            requests.clone(),
        );
        registry.register(
            "motcua_grpc_request_duration_seconds",
            "gRPC call duration until the last byte of the answer, by gRPC service and method",
            durations.clone(),
        );
        Telemetry {
            inner: Arc::new(Inner {
                service,
                registry: Mutex::new(registry),
                requests,
                durations: Family::clone(&durations),
                reported: Mutex::new(BTreeMap::new()),
                checks: Mutex::new(Vec::new()),
                changed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// The service's name.
    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    /// Registers a metric the component updates itself.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        lock(&self.inner.registry).register(name, help, metric);
    }

    /// Registers every one of `samples`, each read from `source` at each scrape: the one way
    /// a component exposes its status. `source` is typically the `watch::Receiver` of its
    /// status struct (read with `borrow()`: the latest value, never blocking the sender long),
    /// or an `Arc` of the atomics it counts in.
    ///
    /// ```ignore
    /// telemetry.sampled(status, &[
    ///     Sample::gauge("motcua_relay_published_position", "…", |s| s.borrow().published),
    ///     Sample::counter("motcua_relay_oversized_events", "…", |s| s.borrow().oversized_events),
    /// ]);
    /// ```
    pub fn sampled<S: Send + Sync + 'static>(&self, source: S, samples: &[Sample<S>]) {
        let source = Arc::new(source);
        for sample in samples {
            let s = Arc::clone(&source);
            match *sample {
                Sample::Gauge { name, help, read } => {
                    self.gauge_fn(name, help, move || read(&s));
                }
                Sample::Counter { name, help, read } => {
                    self.counter_fn(name, help, move || read(&s));
                }
                Sample::Histogram { name, help, read } => {
                    lock(&self.inner.registry).register_collector(Box::new(SampledHistogram {
                        name,
                        help,
                        sample: Box::new(move || read(&s)),
                    }));
                }
            }
        }
    }

    /// Registers a gauge whose value `sample` reads at each scrape.
    pub fn gauge_fn(
        &self,
        name: &'static str,
        help: &'static str,
        sample: impl Fn() -> i64 + Send + Sync + 'static,
    ) {
        self.collector(name, help, MetricType::Gauge, move || {
            vec![(Vec::new(), sample() as f64)]
        });
    }

    /// Registers a counter (name without `_total`) whose value `sample` reads at each scrape:
    /// for components that count in an atomic of their own.
    pub fn counter_fn(
        &self,
        name: &'static str,
        help: &'static str,
        sample: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        self.collector(name, help, MetricType::Counter, move || {
            vec![(Vec::new(), sample() as f64)]
        });
    }

    /// Registers a counter with one label, `label`, whose values and counts `sample` reads at
    /// each scrape (e.g. `motcua_stats_queries_rejected{reason}`).
    pub fn counter_fn_by(
        &self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        sample: impl Fn() -> Vec<(String, u64)> + Send + Sync + 'static,
    ) {
        self.collector(name, help, MetricType::Counter, move || {
            sample()
                .into_iter()
                .map(|(value, n)| (vec![(label, value)], n as f64))
                .collect()
        });
    }

    fn collector(
        &self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        sample: impl Fn() -> Vec<(Labels, f64)> + Send + Sync + 'static,
    ) {
        lock(&self.inner.registry).register_collector(Box::new(Sampled {
            name,
            help,
            kind,
            sample: Box::new(sample),
        }));
    }

    /// Registers `motcua_db_pool_connections{service,state="idle"|"in_use"}` and
    /// `motcua_db_pool_max_connections{service}`, sampled from `pool` at each scrape.
    pub fn pool(&self, pool: &PgPool) {
        let service = self.inner.service;
        let sampled = pool.clone();
        self.collector(
            "motcua_db_pool_connections",
            "connections of the service's PostgreSQL pool, by state",
            MetricType::Gauge,
            move || {
                let size = sampled.size();
                let idle = u32::try_from(sampled.num_idle())
                    .unwrap_or(u32::MAX)
                    .min(size);
                vec![
                    (
                        vec![("service", service.to_owned()), ("state", "idle".into())],
                        f64::from(idle),
                    ),
                    (
                        vec![("service", service.to_owned()), ("state", "in_use".into())],
                        f64::from(size - idle),
                    ),
                ]
            },
        );
        let max = pool.options().get_max_connections();
        self.collector(
            "motcua_db_pool_max_connections",
            "the most connections the service's PostgreSQL pool opens",
            MetricType::Gauge,
            move || vec![(vec![("service", service.to_owned())], f64::from(max))],
        );
    }

    /// A handle through which the component `name` reports its health (healthy at first).
    pub fn component(&self, name: &'static str) -> Component {
        Component {
            name,
            telemetry: self.clone(),
        }
    }

    /// Registers a health check sampled whenever health is asked (`/healthz`) and at least
    /// every [`HEALTH_POLL`](crate::app::HEALTH_POLL) for the gRPC health service: `Err(reason)`
    /// while the component is stalled or failing. Typically reads a `watch` of its status.
    pub fn health_check(
        &self,
        name: &'static str,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        lock(&self.inner.checks).push((name, Box::new(check)));
        self.inner.changed.notify_one();
    }

    /// The components failing now, with their reasons (empty: healthy).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems: Vec<(&'static str, String)> = lock(&self.inner.reported)
            .iter()
            .map(|(name, reason)| (*name, reason.clone()))
            .collect();
        for (name, check) in lock(&self.inner.checks).iter() {
            if let Err(reason) = check() {
                problems.push((name, reason));
            }
        }
        problems
    }

    /// Waits until a component reports a change.
    pub(crate) async fn changed(&self) {
        self.inner.changed.notified().await;
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = lock(&self.inner.registry);
        if let Err(error) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        {
            tracing::error!(%error, "cannot encode the metrics");
        }
        text
    }

    /// The tower layer that counts and times every gRPC call of the port serving `services`.
    pub(crate) fn grpc_layer(&self, services: &[String]) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            metrics: Arc::new(GrpcMetrics {
                requests: self.inner.requests.clone(),
                durations: self.inner.durations.clone(),
                known: services.iter().cloned().collect(),
            }),
        }
    }

    /// `GET /metrics` (Prometheus text) and `GET /healthz` (200 `ok`, or 503 and one line per
    /// failing component).
    pub fn router(&self) -> axum::Router {
        use axum::http::{StatusCode, header};
        use axum::routing::get;
        let metrics = self.clone();
        let health = self.clone();
        axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    async move {
                        (
                            [(
                                header::CONTENT_TYPE,
                                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                            )],
                            metrics.encode(),
                        )
                    }
                }),
            )
            .route(
                "/healthz",
                get(move || {
                    let health = health.clone();
                    async move {
                        let problems = health.problems();
                        if problems.is_empty() {
                            (StatusCode::OK, "ok\n".to_owned())
                        } else {
                            let text: String = problems
                                .iter()
                                .map(|(name, reason)| format!("{name}: {reason}\n"))
                                .collect();
                            (StatusCode::SERVICE_UNAVAILABLE, text)
                        }
                    }
                }),
            )
    }
}

/// A component's health reporter (see [`Telemetry::component`]). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Component {
    name: &'static str,
    telemetry: Telemetry,
}

impl Component {
    /// The component works again.
    pub fn healthy(&self) {
        let removed = lock(&self.telemetry.inner.reported)
            .remove(self.name)
            .is_some();
        if removed {
            self.telemetry.inner.changed.notify_one();
        }
    }

    /// The component is stalled or failing, for `reason` (shown by `/healthz`).
    pub fn failing(&self, reason: impl Into<String>) {
        lock(&self.telemetry.inner.reported).insert(self.name, reason.into());
        self.telemetry.inner.changed.notify_one();
    }
}

/// A metric sampled at scrape time.
struct Sampled {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    sample: Box<dyn Fn() -> Vec<(Labels, f64)> + Send + Sync>,
}

impl fmt::Debug for Sampled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampled").field("name", &self.name).finish()
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let samples = (self.sample)();
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (labels, value) in &samples {
            let mut family = metric.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => family
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, f64, f64>(
                        value, None,
                    )?,
                _ => family.encode_gauge(value)?,
            }
        }
        Ok(())
    }
}

/// A histogram sampled at scrape time.
struct SampledHistogram {
    name: &'static str,
    help: &'static str,
    sample: Box<dyn Fn() -> HistogramSample + Send + Sync>,
}

impl fmt::Debug for SampledHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SampledHistogram")
            .field("name", &self.name)
            .finish()
    }
}

impl Collector for SampledHistogram {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let sample = (self.sample)();
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Histogram)?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sample.sum,
            sample.count(),
            &sample.per_bucket(),
            None,
        )
    }
}

/// Counts and times gRPC calls (see [`Telemetry::grpc_layer`]).
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

#[derive(Debug)]
struct GrpcMetrics {
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram>,
    known: HashSet<String>,
}

impl GrpcMetrics {
    /// `(service, method)` of a request path `/pkg.Service/Method`; [`UNKNOWN`] for a path
    /// not of a service this port serves.
    fn labels(&self, path: &str) -> (String, String) {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        match (parts.next(), parts.next()) {
            (Some(service), Some(method))
                if self.known.contains(service) && !method.is_empty() && !method.contains('/') =>
            {
                (service.to_owned(), method.to_owned())
            }
            _ => (UNKNOWN.to_owned(), UNKNOWN.to_owned()),
        }
    }

    fn record(&self, call: CallRecord, code: tonic::Code) {
        // An unimplemented method's name is whatever the client sent: not a label value.
        let method = if code == tonic::Code::Unimplemented {
            UNKNOWN.to_owned()
        } else {
            call.method
        };
        self.durations
            .get_or_create(&vec![
                ("service", call.service.clone()),
                ("method", method.clone()),
            ])
            .observe(call.started.elapsed().as_secs_f64());
        self.requests
            .get_or_create(&vec![
                ("service", call.service),
                ("method", method),
                ("code", code_name(code).to_owned()),
            ])
            .inc();
    }
}

/// The canonical upper-case name of a gRPC status code (as grpc-go and grpcurl print it).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

struct CallRecord {
    service: String,
    method: String,
    started: Instant,
}

fn status_of(headers: &tonic::codegen::http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

impl<S, B> Service<Request<B>> for GrpcMetricsService<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<RecordingBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Response<RecordingBody>, S::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (service, method) = self.metrics.labels(request.uri().path());
        let call = CallRecord {
            service,
            method,
            started: Instant::now(),
        };
        let metrics = self.metrics.clone();
        // The clone is ready only if polled; the service polled ready is `self.inner`.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            let (parts, body) = response.into_parts();
            // Trailers-only answers (every error a handler returns) carry the status in the
            // headers; the others carry it in the trailers, at the end of the body.
            let pending = match status_of(&parts.headers) {
                Some(code) => {
                    metrics.record(call, code);
                    None
                }
                None => Some((call, metrics)),
            };
            Ok(Response::from_parts(
                parts,
                RecordingBody {
                    inner: body,
                    pending,
                },
            ))
        })
    }
}

/// A response body that records the call when its trailers (the status) go out, or, if the
/// body is dropped before, as `CANCELLED` (the client went away).
pub struct RecordingBody {
    inner: tonic::body::Body,
    pending: Option<(CallRecord, Arc<GrpcMetrics>)>,
}

impl fmt::Debug for RecordingBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingBody").finish_non_exhaustive()
    }
}

impl RecordingBody {
    fn finish(&mut self, code: tonic::Code) {
        if let Some((call, metrics)) = self.pending.take() {
            metrics.record(call, code);
        }
    }
}

impl http_body::Body for RecordingBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = status_of(trailers).unwrap_or(tonic::Code::Unknown);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.finish(code);
            }
            Poll::Ready(None) => self.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordingBody {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Status {
        position: i64,
        failures: u64,
    }

    /// Each sample reads the status as it is at the scrape, not as it was registered.
    #[test]
    fn sampled_metrics_read_the_latest_status_at_each_scrape() {
        let telemetry = Telemetry::new("test");
        let (tx, rx) = tokio::sync::watch::channel(Status::default());
        telemetry.sampled(
            rx,
            &[
                Sample::gauge("motcua_test_position", "a position", |s| {
                    s.borrow().position
                }),
                Sample::counter("motcua_test_failures", "failures", |s| s.borrow().failures),
                Sample::histogram("motcua_test_sizes", "sizes", |s| HistogramSample {
                    // 1, 3, 3, 4 and 6 once the position is set; nothing before.
                    buckets: if s.borrow().position == 0 {
                        vec![(1.0, 0), (4.0, 0), (f64::INFINITY, 0)]
                    } else {
                        vec![(1.0, 1), (4.0, 4), (f64::INFINITY, 5)]
                    },
                    sum: if s.borrow().position == 0 { 0.0 } else { 17.0 },
                }),
            ],
        );
        let value = |text: &str, name: &str| -> Option<f64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        };
        let before = telemetry.encode();
        assert_eq!(
            value(&before, "motcua_test_position"),
            Some(0.0),
            "{before}"
        );
        assert_eq!(value(&before, "motcua_test_failures_total"), Some(0.0));
        assert!(
            before.contains("# TYPE motcua_test_position gauge"),
            "{before}"
        );
        assert!(
            before.contains("# TYPE motcua_test_failures_total counter"),
            "{before}"
        );
        assert!(
            before.contains("# TYPE motcua_test_sizes histogram"),
            "{before}"
        );
        assert_eq!(value(&before, "motcua_test_sizes_count"), Some(0.0));
        tx.send_replace(Status {
            position: 42,
            failures: 3,
        });
        let after = telemetry.encode();
        assert_eq!(value(&after, "motcua_test_position"), Some(42.0), "{after}");
        assert_eq!(
            value(&after, "motcua_test_sizes_count"),
            Some(5.0),
            "{after}"
        );
        assert_eq!(
            value(&after, "motcua_test_sizes_sum"),
            Some(17.0),
            "{after}"
        );
        for (le, n) in [("1", 1.0), ("4", 4.0), ("+Inf", 5.0)] {
            assert_eq!(
                value(&after, &format!("motcua_test_sizes_bucket{{le=\"{le}\"}}")),
                Some(n),
                "{after}"
            );
        }
        assert_eq!(
            value(&after, "motcua_test_failures_total"),
            Some(3.0),
            "{after}"
        );
    }
}
