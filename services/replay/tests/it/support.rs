//! The replay service on port 0 over a fresh database, writers for the log, and stream helpers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use api::v1 as pb;
use api::v1::replay_service_client::ReplayServiceClient;
use calendar::{StatutoryTime, WorkingDuration};
use chrono::{DateTime, TimeZone, Utc};
use domain::{
    Action, AgencyCode, ApplicantType, Channel, Command, ComponentCode, DossierEvent, DossierId,
    EventId, Level, OnlineServiceLevel, Outcome, ProcedureCode, Profile, SectorCode,
    SupplementPolicy, Text,
};
use eventlog::{DossierAppend, EventLog, ExpectedVersion, NewEvent, Routing, StoredEvent};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use svc::{Principal, Role, Tokens};
use testkit::TestDb;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel as GrpcChannel;
use tonic::{Request, Status, Streaming};
use uuid::Uuid;
use writepath::{WriteOutcome, WritePath, WriteRequest};

pub const AUDITOR: &str = "replay-test-auditor";
pub const COUNTER: &str = "replay-test-counter";
pub const DISTRICT: &str = "000.00.12.H40";
pub const PROVINCE: &str = "000.00.01.H40";
pub const COMMUNE: &str = "000.00.31.H40";

/// A fresh database with the log, and the replay service serving it on 127.0.0.1:0.
#[derive(Debug)]
pub struct Env {
    pub db: TestDb,
    pub log: EventLog,
    pub client: ReplayServiceClient<GrpcChannel>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    versions: HashMap<String, u32>,
}

impl Env {
    pub async fn start() -> Env {
        let db = TestDb::new().await;
        let log = EventLog::from_pool(db.pool.clone());
        let app = replay::ReplayApp::build_with(
            log.clone(),
            tokens(),
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("replay starts")
        // Followers must be woken by the log's notifications: no poll within a test's time.
        .with_follow_poll(Duration::from_secs(3600));
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            app.run_until_stopped(stop).await.expect("replay serves");
        });
        let client = ReplayServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to replay");
        Env {
            db,
            log,
            client,
            shutdown,
            server: Some(server),
            versions: HashMap::new(),
        }
    }

    /// Stops the service (as on SIGTERM) and waits for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("the service stops promptly, open streams included")
                .expect("server task");
        }
    }

    /// Appends one event per `(dossier, routing, event)` in one call (one transaction), each
    /// after the dossier's previous one; returns them as stored.
    pub async fn append(
        &mut self,
        batch: Vec<(&str, Routing, At<DossierEvent>)>,
    ) -> Vec<StoredEvent> {
        let mut by_dossier: Vec<DossierAppend> = Vec::new();
        for (dossier, routing, At(occurred_at, event)) in batch {
            let (event_type, payload) = event.into_parts();
            let event_id = Uuid::new_v4();
            let new = NewEvent {
                event_id,
                event_type: event_type.to_owned(),
                occurred_at,
                payload,
                fingerprint: Sha256::digest(event_id.as_bytes()).into(),
            };
            match by_dossier.iter_mut().find(|a| a.dossier_id == dossier) {
                Some(append) => append.events.push(new),
                None => {
                    let version = self.versions.get(dossier).copied().unwrap_or(0);
                    by_dossier.push(DossierAppend {
                        dossier_id: dossier.to_owned(),
                        expected_version: if version == 0 {
                            ExpectedVersion::NoStream
                        } else {
                            ExpectedVersion::Exact(version)
                        },
                        routing,
                        events: vec![new],
                    });
                }
            }
        }
        for append in &by_dossier {
            *self.versions.entry(append.dossier_id.clone()).or_default() +=
                append.events.len() as u32;
        }
        let appended = self.log.append(by_dossier).await.expect("append");
        let mut events = appended.events;
        events.sort_by_key(|e| e.position);
        events
    }

    /// The whole log, from the log's own read.
    pub async fn all(&self) -> Vec<StoredEvent> {
        self.log.read_after(0, 1_000_000).await.expect("read")
    }

    /// Streams `request` as the auditor to its end; panics on an error status.
    pub async fn stream(&mut self, request: pb::StreamEventsRequest) -> Vec<pb::ReplayedEvent> {
        let (events, end) = self.stream_until_end(AUDITOR, request).await;
        if let Some(status) = end {
            panic!("the stream failed: {status:?}");
        }
        events
    }

    /// Streams `request` to its end: the events and the final error, if any.
    pub async fn stream_until_end(
        &mut self,
        token: &str,
        request: pb::StreamEventsRequest,
    ) -> (Vec<pb::ReplayedEvent>, Option<Status>) {
        let mut stream = match self.client.stream_events(authed(token, request)).await {
            Ok(response) => response.into_inner(),
            Err(status) => return (Vec::new(), Some(status)),
        };
        let mut events = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                Err(_) => panic!("the stream neither ended nor delivered within 30 s"),
                Ok(None) => return (events, None),
                Ok(Some(Ok(event))) => events.push(event),
                Ok(Some(Err(status))) => return (events, Some(status)),
            }
        }
    }

    /// Opens a stream as the auditor (for following).
    pub async fn open(&mut self, request: pb::StreamEventsRequest) -> Streaming<pb::ReplayedEvent> {
        self.client
            .stream_events(authed(AUDITOR, request))
            .await
            .expect("the stream opens")
            .into_inner()
    }

    /// A write path over the log with the official calendar and the `restart` policy: the
    /// services' own rules, without gRPC.
    pub async fn execute(
        &self,
        dossier: &str,
        occurred_at: DateTime<Utc>,
        action: Action,
    ) -> StoredEvent {
        let write = WritePath::new(
            self.log.clone(),
            Arc::new(calendar::Calendar::vietnam_default()),
            SupplementPolicy::Restart,
        );
        let request = WriteRequest {
            event_id: EventId::parse(&Uuid::new_v4().to_string()).unwrap(),
            dossier_id: DossierId::parse(dossier).unwrap(),
            command: Command {
                occurred_at,
                action,
            },
            expected_version: None,
            fingerprint: [0; 32],
        };
        match write.execute(&request, |_| Ok(())).await {
            Ok(WriteOutcome::Written(mut events)) => events.remove(0).stored,
            other => panic!("{:?} on {dossier}: {other:?}", request.command.action),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The next event of a following stream, within 10 s.
pub async fn next(stream: &mut Streaming<pb::ReplayedEvent>) -> pb::ReplayedEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("an event, not an error")
}

pub fn tokens() -> Tokens {
    let mut tokens = Tokens::default();
    tokens.insert(
        AUDITOR,
        Principal {
            name: "auditor".into(),
            agency: None,
            level: None,
            role: Role::Auditor,
            scopes: Vec::new(),
        },
    );
    tokens.insert(
        COUNTER,
        Principal {
            name: "counter".into(),
            agency: Some(AgencyCode::parse(DISTRICT).unwrap()),
            level: Some(Level::District),
            role: Role::Counter,
            scopes: Vec::new(),
        },
    );
    tokens
}

pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// An event at a business time.
#[derive(Debug, Clone)]
pub struct At<E>(pub DateTime<Utc>, pub E);

pub fn routing(level: Level, agency: &str, sector: &str) -> Routing {
    Routing {
        level: level.as_str().to_owned(),
        agency: agency.to_owned(),
        sector: sector.to_owned(),
    }
}

/// A local (UTC+7) wall-clock time as UTC.
pub fn local(y: i32, m: u32, d: u32, hh: u32, mm: u32) -> DateTime<Utc> {
    calendar::vn_offset()
        .with_ymd_and_hms(y, m, d, hh, mm, 0)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

pub fn ts(t: DateTime<Utc>) -> api::Timestamp {
    svc::status::to_timestamp(t)
}

pub fn time(t: &Option<api::Timestamp>) -> DateTime<Utc> {
    let t = t.as_ref().expect("a timestamp");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

pub fn profile(level: Level, agency: &str, sector: &str) -> Profile {
    Profile {
        procedure: ProcedureCode::parse("1.004227").unwrap(),
        online_level: OnlineServiceLevel::FullOnline,
        sector: SectorCode::parse(sector).unwrap(),
        agency: AgencyCode::parse(agency).unwrap(),
        level,
        channel: Channel::Online,
        applicant_type: ApplicantType::Citizen,
    }
}

pub fn text(s: &str) -> Text {
    Text::parse(s).unwrap()
}

pub fn received(profile: Profile, due_at: DateTime<Utc>) -> DossierEvent {
    DossierEvent::Received {
        procedure: None,
        profile,
        statutory_time: StatutoryTime::Days(3),
        fee_required: false,
        components: vec![ComponentCode::parse("don-de-nghi").unwrap()],
        due_at,
        applicant: None,
        return_method: None,
    }
}

pub fn supplement_received(due_at: DateTime<Utc>) -> DossierEvent {
    DossierEvent::SupplementReceived {
        due_at,
        paused: WorkingDuration::from_minutes(240),
    }
}

pub fn resolved(agency: &str, due_at: DateTime<Utc>) -> DossierEvent {
    DossierEvent::Resolved {
        outcome: Outcome::Approved,
        deciding_agency: AgencyCode::parse(agency).unwrap(),
        due_at,
        timeliness: calendar::Timeliness::OnTime,
    }
}

pub fn positions(events: &[pb::ReplayedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}
