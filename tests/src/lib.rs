//! The harness the end-to-end tests (and the benchmark) share: start the services in-process
//! on port 0 against an isolated database and JetStream namespace, and talk to them over real
//! gRPC with real tokens.

pub mod browser;
pub mod http;
pub mod lifecycle;
pub mod portal;
pub mod processing;
pub mod projection;

use std::net::SocketAddr;

use api::v1 as pb;
use api::v1::catalogue_service_client::CatalogueServiceClient;
use api::v1::intake_service_client::IntakeServiceClient;
use chrono::{DateTime, TimeZone, Utc};
use eventlog::EventLog;
use relay::{Relay, RelayConfig};
use svc::{Principal, Role, Tokens};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Request;
use tonic::transport::Channel;

/// Tokens every spawned service knows.
pub const COUNTER_PROVINCE: &str = "test-counter-province"; // agency 000.00.01.H40
pub const COUNTER_DISTRICT: &str = "test-counter-district"; // agency 000.00.12.H40
pub const IMPORTER: &str = "test-importer";
pub const AUDITOR: &str = "test-auditor";
/// An all-agency auditor token granted the `erasure` scope (erases applicant data).
pub const ERASURE_ADMIN: &str = "test-erasure-admin";
/// An administrator token: changes the procedure catalogue, never a dossier.
pub const ADMIN: &str = "test-admin";
pub const PROVINCE_AGENCY: &str = "000.00.01.H40";
pub const DISTRICT_AGENCY: &str = "000.00.12.H40";
/// A second district's counter (the model test merges its district into the first).
pub const COUNTER_DISTRICT_2: &str = "test-counter-district-2"; // agency 000.00.13.H40
pub const DISTRICT_AGENCY_2: &str = "000.00.13.H40";

pub fn test_tokens() -> Tokens {
    let mut tokens = Tokens::default();
    let principal = |name: &str, agency: Option<&str>, level, role| Principal {
        name: name.to_owned(),
        agency: agency.map(|a| domain::AgencyCode::parse(a).unwrap()),
        level,
        role,
        scopes: Vec::new(),
    };
    tokens.insert(
        COUNTER_PROVINCE,
        principal(
            "province counter",
            Some(PROVINCE_AGENCY),
            Some(domain::Level::Province),
            Role::Counter,
        ),
    );
    tokens.insert(
        COUNTER_DISTRICT,
        principal(
            "district counter",
            Some(DISTRICT_AGENCY),
            Some(domain::Level::District),
            Role::Counter,
        ),
    );
    tokens.insert(
        COUNTER_DISTRICT_2,
        principal(
            "second district counter",
            Some(DISTRICT_AGENCY_2),
            Some(domain::Level::District),
            Role::Counter,
        ),
    );
    // The commune counter of `processing` (which adds it for transfers) also receives.
    tokens.insert(
        processing::COUNTER_COMMUNE,
        principal(
            "commune counter",
            Some(processing::COMMUNE_AGENCY),
            Some(domain::Level::Commune),
            Role::Counter,
        ),
    );
    tokens.insert(IMPORTER, principal("importer", None, None, Role::Importer));
    tokens.insert(AUDITOR, principal("auditor", None, None, Role::Auditor));
    tokens.insert(
        ERASURE_ADMIN,
        Principal {
            scopes: vec![svc::Scope::Erasure],
            ..principal("erasure admin", None, None, Role::Auditor)
        },
    );
    tokens.insert(ADMIN, principal("catalogue admin", None, None, Role::Admin));
    tokens
}

/// A running intake service; stopped (gracefully) when dropped.
#[derive(Debug)]
pub struct RunningIntake {
    pub addr: SocketAddr,
    /// `/metrics` and `/healthz`.
    pub metrics_addr: SocketAddr,
    pub log: EventLog,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl RunningIntake {
    /// Starts intake on 127.0.0.1:0 over `log` (migrations applied), with [`test_tokens`],
    /// the official Vietnamese calendar and the `restart` supplement policy.
    pub async fn start(log: EventLog) -> RunningIntake {
        let deps = svc::ServiceDeps::for_tests(log.clone(), test_tokens());
        RunningIntake::start_with(log, deps).await
    }

    /// As [`start`](Self::start), with a generated master key: receptions may carry an
    /// applicant, and the applicant and citizen lookup services are served.
    pub async fn with_master_keys(log: EventLog) -> RunningIntake {
        let mut deps = svc::ServiceDeps::for_tests(log.clone(), test_tokens());
        deps.keyring = Some(personal::Keyring::generate("test-master").expect("a master key"));
        RunningIntake::start_with(log, deps).await
    }

    async fn start_with(log: EventLog, deps: svc::ServiceDeps) -> RunningIntake {
        let app = intake::build_with(deps).await.expect("intake starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr().expect("tests serve metrics");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(token).await.expect("intake serves");
        });
        RunningIntake {
            addr,
            metrics_addr,
            log,
            shutdown,
            handle: Some(handle),
        }
    }

    pub async fn client(&self) -> IntakeServiceClient<Channel> {
        IntakeServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to intake")
    }

    /// The procedure catalogue, served on the same port.
    pub async fn catalogue_client(&self) -> CatalogueServiceClient<Channel> {
        CatalogueServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the catalogue")
    }

    /// Stops accepting, drains, and waits for the server task.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("intake task");
        }
    }
}

impl Drop for RunningIntake {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A running relay over `log` into the JetStream at `nats_url`; stopped when dropped.
#[derive(Debug)]
pub struct RunningRelay {
    pub progress: tokio::sync::watch::Receiver<i64>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl RunningRelay {
    pub async fn start(log: EventLog, nats_url: &str, stream: &str, prefix: &str) -> RunningRelay {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(nats_url)
            .await
            .expect("nats client");
        let cfg = RelayConfig {
            stream: stream.to_owned(),
            subject_prefix: prefix.to_owned(),
            max_backoff: std::time::Duration::from_millis(500),
            poll_interval: std::time::Duration::from_millis(200),
            ..RelayConfig::default()
        };
        let relay = Relay::new(log, async_nats::jetstream::new(client), cfg);
        let progress = relay.progress();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            relay.run(token).await.expect("relay runs");
        });
        RunningRelay {
            progress,
            shutdown,
            handle: Some(handle),
        }
    }

    /// Waits until the relay reports `position` published (bounded by `timeout`).
    pub async fn wait_published(&mut self, position: i64, timeout: std::time::Duration) {
        tokio::time::timeout(timeout, self.progress.wait_for(|p| *p >= position))
            .await
            .unwrap_or_else(|_| panic!("relay did not publish up to {position} within {timeout:?}"))
            .expect("relay progress channel");
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("relay task");
        }
    }
}

impl Drop for RunningRelay {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Every message of the JetStream `stream` at `url`, read back by sequence.
pub async fn all_messages(
    url: &str,
    stream: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let client = async_nats::connect(url)
        .await
        .expect("connect to the test NATS");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(stream)
        .await
        .expect("the relay created the stream");
    let state = stream.cached_info().state.clone();
    let mut messages = Vec::new();
    if state.messages > 0 {
        for sequence in state.first_sequence..=state.last_sequence {
            messages.push(stream.get_raw_message(sequence).await.expect("message"));
        }
    }
    messages
}

/// Wraps a message with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

pub fn ts(t: DateTime<Utc>) -> api::Timestamp {
    svc::status::to_timestamp(t)
}

/// A local (UTC+7) wall-clock time as UTC.
pub fn local(y: i32, m: u32, d: u32, hh: u32, mm: u32) -> DateTime<Utc> {
    calendar::vn_offset()
        .with_ymd_and_hms(y, m, d, hh, mm, 0)
        .single()
        .expect("valid local time")
        .with_timezone(&Utc)
}

pub fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A profile for `agency` at district level, land sector, online channel, full-online procedure.
pub fn profile(agency: &str) -> pb::Profile {
    pb::Profile {
        procedure_code: "1.004227".to_owned(),
        online_level: pb::OnlineServiceLevel::FullOnline as i32,
        sector_code: "land".to_owned(),
        agency_code: agency.to_owned(),
        level: if agency == PROVINCE_AGENCY {
            pb::Level::Province as i32
        } else {
            pb::Level::District as i32
        },
        channel: pb::Channel::Online as i32,
        applicant_type: pb::ApplicantType::Citizen as i32,
    }
}

/// A valid receive request for the district agency: 3 working days, two components.
pub fn receive_request(dossier_id: &str, occurred_at: DateTime<Utc>) -> pb::ReceiveDossierRequest {
    pb::ReceiveDossierRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(occurred_at)),
        profile: Some(profile(DISTRICT_AGENCY)),
        statutory_time: Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(3)),
        }),
        fee_required: true,
        components: vec!["don-de-nghi".to_owned(), "ban-ve".to_owned()],
        applicant: None,
        return_method: 0,
    }
}

/// Checks a status as Python's grpcio-status (`rpc_status.from_call`) reads it: the
/// `grpc-status-details-bin` trailer, when present, must decode as a `google.rpc.Status` whose
/// code and message are exactly the call's `grpc-status` and `grpc-message`; otherwise the
/// client rejects the details and loses the reason code. Returns the decoded status, if any.
#[track_caller]
pub fn assert_details_agree(status: &tonic::Status) -> Option<tonic_types::pb::Status> {
    use prost::Message;
    if status.details().is_empty() {
        return None;
    }
    let rich = tonic_types::pb::Status::decode(status.details())
        .unwrap_or_else(|e| panic!("details of {status:?} do not decode: {e}"));
    assert_eq!(
        rich.code,
        status.code() as i32,
        "the details' code differs from grpc-status: {status:?}"
    );
    assert_eq!(
        rich.message,
        status.message(),
        "the details' message differs from grpc-message: {status:?}"
    );
    Some(rich)
}

/// The one way the end-to-end tests wait for a condition (in `testkit`, shared with the
/// services' own integration tests).
pub use testkit::eventually_some;
