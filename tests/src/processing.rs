//! Harness for the processing service and its deadline watcher: start the service in-process on
//! port 0 with a chosen supplement policy, build watchers over a test database with a clock the
//! test sets, and build requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::v1 as pb;
use api::v1::processing_service_client::ProcessingServiceClient;
use chrono::{DateTime, Utc};
use domain::SupplementPolicy;
use eventlog::EventLog;
use processing::{Watcher, WatcherConfig};
use svc::{Principal, Role, Tokens};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{DISTRICT_AGENCY, new_event_id, test_tokens, ts};

/// A counter of a third agency, for transfers beyond the province and the district.
pub const COUNTER_COMMUNE: &str = "test-counter-commune";
pub const COMMUNE_AGENCY: &str = "000.00.31.H40";

/// [`test_tokens`] plus a commune counter.
pub fn processing_tokens() -> Tokens {
    let mut tokens = test_tokens();
    tokens.insert(
        COUNTER_COMMUNE,
        Principal {
            name: "commune counter".to_owned(),
            agency: Some(domain::AgencyCode::parse(COMMUNE_AGENCY).expect("valid agency")),
            level: Some(domain::Level::Commune),
            role: Role::Counter,
            scopes: Vec::new(),
        },
    );
    tokens
}

/// A clock the test sets: watchers built with it see exactly the time the test chose.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: Mutex::new(now),
        })
    }

    pub fn set(&self, now: DateTime<Utc>) {
        *self.now.lock().expect("clock lock") = now;
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.now.lock().expect("clock lock") += by;
    }
}

impl writepath::Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().expect("clock lock")
    }
}

/// A running processing service; stopped (gracefully) when dropped.
#[derive(Debug)]
pub struct RunningProcessing {
    pub addr: SocketAddr,
    /// The HTTP route `GET /v1/warnings`, if started with it.
    pub http_addr: Option<SocketAddr>,
    pub log: EventLog,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl RunningProcessing {
    /// Processing on 127.0.0.1:0 over `log` with [`processing_tokens`], the official calendar,
    /// `policy`, the system clock, and no watcher (tests drive watchers themselves).
    pub async fn start(log: EventLog, policy: SupplementPolicy) -> RunningProcessing {
        let mut deps = svc::ServiceDeps::for_tests(log, processing_tokens());
        deps.supplement_policy = policy;
        Self::start_with(deps, None).await
    }

    /// Processing as the binary runs it: gRPC and, if given, the watcher, with `deps.clock`.
    pub async fn start_with(
        deps: svc::ServiceDeps,
        watcher: Option<WatcherConfig>,
    ) -> RunningProcessing {
        Self::start_parts(
            deps,
            processing::Parts {
                watcher,
                ..processing::Parts::default()
            },
        )
        .await
    }

    /// Processing over `log` with [`processing_tokens`], the official calendar, `policy`, no
    /// watcher, and the HTTP route on 127.0.0.1:0 with CORS for `cors_origins`.
    pub async fn start_with_http(
        log: EventLog,
        policy: SupplementPolicy,
        cors_origins: &[&str],
    ) -> RunningProcessing {
        let listener = svc::Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the HTTP port");
        Self::start_with_http_on(log, policy, listener, cors_origins).await
    }

    /// [`RunningProcessing::start_with_http`] on a listener bound beforehand (its address known
    /// to a page that calls the route before this starts).
    pub async fn start_with_http_on(
        log: EventLog,
        policy: SupplementPolicy,
        listener: svc::Listener,
        cors_origins: &[&str],
    ) -> RunningProcessing {
        let mut deps = svc::ServiceDeps::for_tests(log, processing_tokens());
        deps.supplement_policy = policy;
        let origins: Vec<String> = cors_origins.iter().map(|o| (*o).to_owned()).collect();
        let parts = processing::Parts {
            http: Some((
                listener,
                processing::http::cors_origins(&origins).expect("valid origins"),
            )),
            ..processing::Parts::default()
        };
        Self::start_parts(deps, parts).await
    }

    /// Processing with the given parts.
    pub async fn start_parts(
        deps: svc::ServiceDeps,
        parts: processing::Parts,
    ) -> RunningProcessing {
        let log = deps.log.clone();
        let app = processing::ProcessingApp::build_parts(deps, parts)
            .await
            .expect("processing starts");
        let addr = app.local_addr();
        let http_addr = app.http_addr("warnings");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(token)
                .await
                .expect("processing serves");
        });
        RunningProcessing {
            addr,
            http_addr,
            log,
            shutdown,
            handle: Some(handle),
        }
    }

    pub async fn client(&self) -> ProcessingServiceClient<Channel> {
        ProcessingServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to processing")
    }

    /// Stops accepting, drains, stops the watcher, and waits for the server task.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("processing task");
        }
    }
}

impl Drop for RunningProcessing {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A deadline watcher over `log` (both schemas applied) telling time by `clock`: a fresh
/// instance, as after a restart.
pub async fn watcher(log: &EventLog, clock: Arc<ManualClock>) -> Watcher {
    log.migrate().await.expect("event log migrations");
    processing::migrate(log)
        .await
        .expect("deadline watcher migrations");
    let write = writepath::WritePath::new(
        log.clone(),
        Arc::new(calendar::Calendar::vietnam_default()),
        SupplementPolicy::Restart,
    );
    Watcher::new(write, clock, WatcherConfig::default())
}

/// A warnings publisher into `nats`'s private namespace (stream `{stream}_WARNINGS`).
pub fn warning_publisher(nats: &testkit::TestNats) -> processing::WarningPublisher {
    let config = svc::config::NatsConfig {
        url: nats.url.clone(),
        stream: nats.stream.clone(),
        subject_prefix: nats.prefix.clone(),
        ..svc::config::NatsConfig::default()
    };
    processing::WarningPublisher::new(nats.jetstream(), &config)
}

/// Waits, on the log's notifications (no sleeping), until its head reaches `position`.
pub async fn wait_for_head(log: &EventLog, position: i64, timeout: Duration) {
    let mut changes = log.changes().await.expect("listen to the log");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if log.head().await.expect("head") >= position {
            return;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "the log did not reach position {position} within {timeout:?}"
        );
        changes.wait(left).await;
    }
}

/// A receive request for the district agency with `working_days` of statutory time.
pub fn receive_days(
    dossier_id: &str,
    occurred_at: DateTime<Utc>,
    working_days: u32,
) -> pb::ReceiveDossierRequest {
    let mut request = crate::receive_request(dossier_id, occurred_at);
    request.statutory_time = Some(pb::StatutoryTime {
        unit: Some(pb::statutory_time::Unit::WorkingDays(working_days)),
    });
    request
}

pub fn transfer(
    dossier_id: &str,
    at: DateTime<Utc>,
    to_agency: &str,
    mode: pb::TransferMode,
) -> pb::TransferRequest {
    pb::TransferRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        to_agency: to_agency.to_owned(),
        mode: mode as i32,
    }
}

pub fn request_supplement(dossier_id: &str, at: DateTime<Utc>) -> pb::RequestSupplementRequest {
    pb::RequestSupplementRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        reason: "Thiếu bản sao giấy chứng nhận quyền sử dụng đất".to_owned(),
    }
}

pub fn receive_supplement(dossier_id: &str, at: DateTime<Utc>) -> pb::ReceiveSupplementRequest {
    pb::ReceiveSupplementRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
    }
}

pub fn request_obligation(
    dossier_id: &str,
    at: DateTime<Utc>,
) -> pb::RequestFinancialObligationRequest {
    pb::RequestFinancialObligationRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        reason: "Nộp tiền sử dụng đất theo thông báo của cơ quan thuế".to_owned(),
    }
}

pub fn fulfil_obligation(
    dossier_id: &str,
    at: DateTime<Utc>,
) -> pb::FulfilFinancialObligationRequest {
    pb::FulfilFinancialObligationRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
    }
}

/// Resolve, decided by the district agency unless changed.
pub fn resolve(dossier_id: &str, at: DateTime<Utc>, outcome: pb::Outcome) -> pb::ResolveRequest {
    pb::ResolveRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        outcome: outcome as i32,
        deciding_agency: DISTRICT_AGENCY.to_owned(),
    }
}

pub fn stop_processing(dossier_id: &str, at: DateTime<Utc>) -> pb::StopProcessingRequest {
    pb::StopProcessingRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        reason: "Hồ sơ thuộc trường hợp phải dừng xử lý theo quy định".to_owned(),
    }
}

pub fn withdraw(dossier_id: &str, at: DateTime<Utc>) -> pb::WithdrawRequest {
    pb::WithdrawRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        reason: "Công dân có đơn xin rút hồ sơ".to_owned(),
    }
}
