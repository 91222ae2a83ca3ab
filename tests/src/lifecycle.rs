//! Harness for the end of a dossier's life: the payment and results services started in-process
//! on port 0 next to intake, one event log under all three, request builders, and checks that a
//! refused call answered its exact code and reason and wrote nothing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use api::v1 as pb;
use api::v1::intake_service_client::IntakeServiceClient;
use api::v1::payment_service_client::PaymentServiceClient;
use api::v1::results_service_client::ResultsServiceClient;
use chrono::{DateTime, Utc};
use domain::{Action, Command, Dossier, DossierId, EventId, SupplementPolicy};
use eventlog::{EventLog, StoredEvent};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Response, Status};
use tonic_types::StatusExt;
use writepath::{WriteOutcome, WritePath, WriteRequest};

use crate::{COUNTER_DISTRICT, RunningIntake, authed, new_event_id, test_tokens, ts};

/// A gRPC service running in-process on 127.0.0.1:0 over an event log, with [`test_tokens`],
/// the official Vietnamese calendar and the system clock; stopped (gracefully) when dropped.
#[derive(Debug)]
pub struct RunningService {
    pub addr: SocketAddr,
    pub log: EventLog,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl RunningService {
    /// The payment service over `log` (migrations applied).
    pub async fn payment(log: EventLog) -> RunningService {
        let app = payment::build_with(svc::ServiceDeps::for_tests(log.clone(), test_tokens()))
            .await
            .expect("payment starts");
        let addr = app.local_addr();
        Self::spawn(log, addr, |stop| async move {
            app.run_until_stopped(stop).await.expect("payment serves");
        })
    }

    /// The results service over `log` (migrations applied).
    pub async fn results(log: EventLog) -> RunningService {
        let app = results::build_with(svc::ServiceDeps::for_tests(log.clone(), test_tokens()))
            .await
            .expect("results starts");
        let addr = app.local_addr();
        Self::spawn(log, addr, |stop| async move {
            app.run_until_stopped(stop).await.expect("results serves");
        })
    }

    fn spawn<F, Fut>(log: EventLog, addr: SocketAddr, serve: F) -> RunningService
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(serve(shutdown.clone()));
        RunningService {
            addr,
            log,
            shutdown,
            handle: Some(handle),
        }
    }

    /// A connected channel: wrap it in the service's client.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid address")
            .connect()
            .await
            .expect("connect to the service")
    }

    /// Stops accepting, drains, and waits for the server task.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("service task");
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Intake, payment and results over one event log, and clients for each.
#[derive(Debug)]
pub struct Stack {
    pub log: EventLog,
    pub intake: RunningIntake,
    pub payment: RunningService,
    pub results: RunningService,
}

impl Stack {
    pub async fn start(log: EventLog) -> Stack {
        let intake = RunningIntake::start(log.clone()).await;
        Stack::around(log, intake).await
    }

    /// As [`start`](Self::start), intake with a master key (receptions may carry applicants).
    pub async fn with_master_keys(log: EventLog) -> Stack {
        let intake = RunningIntake::with_master_keys(log.clone()).await;
        Stack::around(log, intake).await
    }

    async fn around(log: EventLog, intake: RunningIntake) -> Stack {
        Stack {
            intake,
            payment: RunningService::payment(log.clone()).await,
            results: RunningService::results(log.clone()).await,
            log,
        }
    }

    pub async fn intake_client(&self) -> IntakeServiceClient<Channel> {
        self.intake.client().await
    }

    pub async fn payment_client(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(self.payment.channel().await)
    }

    pub async fn results_client(&self) -> ResultsServiceClient<Channel> {
        ResultsServiceClient::new(self.results.channel().await)
    }

    /// Receives a district dossier through intake (3 working days; with or without a fee) and
    /// returns its due time.
    pub async fn receive(
        &self,
        dossier_id: &str,
        at: DateTime<Utc>,
        fee_required: bool,
    ) -> DateTime<Utc> {
        let mut request = crate::receive_request(dossier_id, at);
        request.fee_required = fee_required;
        let answer = self
            .intake_client()
            .await
            .receive_dossier(authed(COUNTER_DISTRICT, request))
            .await
            .expect("intake receives the dossier")
            .into_inner();
        let due_at = answer.due_at.expect("due time");
        DateTime::from_timestamp(due_at.seconds, due_at.nanos as u32).expect("valid due time")
    }

    /// Appends a command's event straight through the shared write path, with the services'
    /// calendar: a stand-in for the processing service (resolve, mark late, withdraw) in tests
    /// of the services that come after it. Same log, same rules, no gRPC.
    pub async fn append(&self, dossier_id: &str, at: DateTime<Utc>, action: Action) -> StoredEvent {
        let write = WritePath::new(
            self.log.clone(),
            Arc::new(calendar::Calendar::vietnam_default()),
            SupplementPolicy::Restart,
        );
        let request = WriteRequest {
            event_id: EventId::parse(&new_event_id()).expect("uuid"),
            dossier_id: DossierId::parse(dossier_id).expect("valid dossier id"),
            command: Command {
                occurred_at: at,
                action,
            },
            expected_version: None,
            // A fresh event id per call: the fingerprint never meets a retry.
            fingerprint: [0; 32],
        };
        match write.execute(&request, |_| Ok(())).await {
            Ok(WriteOutcome::Written(mut events)) => events.remove(0).stored,
            other => panic!("appending {:?} to {dossier_id}: {other:?}", request.command),
        }
    }

    /// The dossier folded from the log.
    pub async fn dossier(&self, dossier_id: &str) -> Dossier {
        writepath::fold(&self.log.load_dossier(dossier_id).await.expect("load"))
            .expect("stored events decode")
    }

    /// How many stored events carry `event_id` (0 or 1).
    pub async fn stored_with_id(&self, event_id: &str) -> usize {
        let id = uuid::Uuid::parse_str(event_id).expect("uuid");
        self.log.find_events(&[id]).await.expect("find").len()
    }

    /// Awaits `call` and checks it was refused with `code` and the `google.rpc.ErrorInfo`
    /// `reason`, and that the log did not move. Returns the status for further checks.
    pub async fn refused<T: std::fmt::Debug>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
        code: Code,
        reason: &str,
    ) -> Status {
        let status = self.refused_without_writing(call).await;
        assert_eq!(status.code(), code, "{status:?}");
        assert_eq!(error_reason(&status).as_deref(), Some(reason), "{status:?}");
        status
    }

    /// Awaits `call` and checks it was refused INVALID_ARGUMENT naming `field` in its
    /// `google.rpc.BadRequest`, and that the log did not move.
    pub async fn invalid<T: std::fmt::Debug>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
        field: &str,
    ) -> Status {
        let status = self.refused_without_writing(call).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let violations = status
            .get_details_bad_request()
            .map(|b| b.field_violations)
            .unwrap_or_default();
        assert_eq!(
            violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>(),
            [field],
            "{status:?}"
        );
        status
    }

    /// Awaits `call` (created, not yet polled: futures are lazy) and checks it failed without
    /// moving the log's head.
    pub async fn refused_without_writing<T: std::fmt::Debug>(
        &self,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Status {
        let before = self.log.head().await.expect("head");
        let status = call.await.expect_err("the call must be refused");
        crate::assert_details_agree(&status);
        assert_eq!(
            self.log.head().await.expect("head"),
            before,
            "a refused call wrote nothing ({status:?})"
        );
        status
    }
}

/// The `google.rpc.ErrorInfo.reason` of a status, if it carries one.
pub fn error_reason(status: &Status) -> Option<String> {
    status.get_details_error_info().map(|info| info.reason)
}

/// A recorded event with `duplicate` cleared, to compare a retry's answer with the original.
pub fn as_original(event: &pb::RecordedEvent) -> pb::RecordedEvent {
    pb::RecordedEvent {
        duplicate: false,
        ..event.clone()
    }
}

// Requests, each with a fresh event id.

pub fn assess_fee(
    dossier_id: &str,
    at: DateTime<Utc>,
    amount_vnd: i64,
    kind: pb::FeeKind,
) -> pb::AssessFeeRequest {
    pb::AssessFeeRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        amount_vnd,
        kind: kind as i32,
    }
}

pub fn record_payment(
    dossier_id: &str,
    at: DateTime<Utc>,
    amount_vnd: i64,
    channel: pb::PaymentChannel,
    transaction_id: &str,
) -> pb::RecordPaymentRequest {
    pb::RecordPaymentRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        amount_vnd,
        channel: channel as i32,
        transaction_id: transaction_id.to_owned(),
    }
}

/// A digest of a signed document, as the results service expects it.
pub const RESULT_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

pub fn attach_result(dossier_id: &str, at: DateTime<Utc>) -> pb::AttachResultRequest {
    pb::AttachResultRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        document_ref: format!("kho-ket-qua/{dossier_id}/quyet-dinh.pdf"),
        sha256: RESULT_SHA256.to_owned(),
    }
}

pub fn return_result(
    dossier_id: &str,
    at: DateTime<Utc>,
    method: pb::ReturnMethod,
) -> pb::ReturnResultRequest {
    pb::ReturnResultRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        method: method as i32,
    }
}

pub fn issue_apology(
    dossier_id: &str,
    at: DateTime<Utc>,
    new_appointment: DateTime<Utc>,
) -> pb::IssueApologyRequest {
    pb::IssueApologyRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        reason: "Chờ kết quả đo đạc thực địa".to_owned(),
        new_appointment: Some(ts(new_appointment)),
        // As a client older than Mẫu 04 sends it: no signer, no delivery channel.
        signer: String::new(),
        delivery: pb::ApologyDelivery::Unspecified as i32,
    }
}

pub fn record_rating(
    dossier_id: &str,
    at: DateTime<Utc>,
    rating: pb::Rating,
) -> pb::RecordRatingRequest {
    pb::RecordRatingRequest {
        event_id: new_event_id(),
        dossier_id: dossier_id.to_owned(),
        occurred_at: Some(ts(at)),
        expected_version: None,
        rating: rating as i32,
    }
}

/// Every message of the test's stream, in stream order, with its subject and `Nats-Msg-Id`.
pub async fn published(nats: &testkit::TestNats) -> Vec<(String, String)> {
    let stream = nats
        .jetstream()
        .get_stream(&nats.stream)
        .await
        .expect("the relay created the stream");
    let state = stream.cached_info().state.clone();
    let mut messages = Vec::new();
    if state.messages > 0 {
        for sequence in state.first_sequence..=state.last_sequence {
            let message = stream.get_raw_message(sequence).await.expect("message");
            let id = message
                .headers
                .get_last("Nats-Msg-Id")
                .expect("every message has a Nats-Msg-Id")
                .as_str()
                .to_owned();
            messages.push((message.subject.to_string(), id));
        }
    }
    messages
}
