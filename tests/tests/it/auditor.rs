//! Auditor tokens are read-only: every write RPC of intake, processing, payment and results
//! refuses them with PERMISSION_DENIED and writes nothing.
//!
//! Each RPC is tried with a request that is valid at that point of a dossier's life: the auditor
//! is refused and the log's head does not move, then the same request with a counter's (or, for
//! the import, an importer's) token succeeds and moves the head by one event. So the refusal is
//! the role's, never a side effect of a bad request or a missing dossier. The list of RPCs is
//! checked against the services' .proto files, so a new write RPC cannot be forgotten here.

use std::future::Future;

use api::v1 as pb;
use chrono::{DateTime, Duration, Utc};
use pb::event::Body;
use testkit::TestDb;
use tests::lifecycle::{
    Stack, assess_fee, attach_result, issue_apology, record_payment, record_rating, return_result,
};
use tests::processing::{
    RunningProcessing, fulfil_obligation, receive_supplement, request_obligation,
    request_supplement, resolve, stop_processing, transfer, withdraw,
};
use tests::{
    AUDITOR, COUNTER_DISTRICT, DISTRICT_AGENCY, IMPORTER, PROVINCE_AGENCY, authed, local,
    new_event_id, profile, receive_request, ts,
};
use tonic::{Code, Response, Status};

/// The read RPCs of the write services' protos: any valid token may call them (auditors
/// included), so they are not probed here. A new RPC is either listed here or in `WRITE_RPCS`.
const READ_RPCS: [&str; 1] = ["ListDueSoon"];

/// Every write RPC, by service: what this test must cover.
const WRITE_RPCS: [(&str, &[&str]); 4] = [
    (
        "IntakeService",
        &[
            "ReceiveDossier",
            "RecordDigitizedComponents",
            "RefuseAtCounter",
            "ImportHistory",
        ],
    ),
    (
        "ProcessingService",
        &[
            "Transfer",
            "RequestSupplement",
            "ReceiveSupplement",
            "Resolve",
            "StopProcessing",
            "Withdraw",
            "RequestFinancialObligation",
            "FulfilFinancialObligation",
        ],
    ),
    ("PaymentService", &["AssessFee", "RecordPayment"]),
    (
        "ResultsService",
        &[
            "AttachResult",
            "ReturnResult",
            "IssueApology",
            "RecordRating",
        ],
    ),
];

#[test]
fn the_list_is_every_rpc_of_the_write_services() {
    for (service, rpcs) in WRITE_RPCS {
        let file = match service {
            "IntakeService" => "intake",
            "ProcessingService" => "processing",
            "PaymentService" => "payment",
            _ => "results",
        };
        let path = format!(
            "{}/../proto/dossier/v1/{file}.proto",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect(&path);
        assert!(text.contains(&format!("service {service} {{")), "{path}");
        let mut described: Vec<&str> = text
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("rpc "))
            .map(|rest| rest.split('(').next().unwrap_or_default().trim())
            .filter(|rpc| !READ_RPCS.contains(rpc))
            .collect();
        described.sort_unstable();
        let mut listed = rpcs.to_vec();
        listed.sort_unstable();
        assert_eq!(described, listed, "{service}");
    }
}

/// Tracks the log's head while the auditor and then a writer try the same call.
struct Probe<'a> {
    stack: &'a Stack,
    covered: Vec<&'static str>,
}

impl Probe<'_> {
    /// `as_auditor` must be refused PERMISSION_DENIED writing nothing; then `as_writer` (the
    /// same request with a writer's token) must succeed and write one event.
    async fn check<T, A, W>(&mut self, rpc: &'static str, as_auditor: A, as_writer: W)
    where
        T: std::fmt::Debug,
        A: Future<Output = Result<Response<T>, Status>>,
        W: Future<Output = Result<Response<T>, Status>>,
    {
        let status = self.stack.refused_without_writing(as_auditor).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{rpc}: {status:?}");
        assert!(
            status.message().contains("read-only"),
            "{rpc}: says why: {status:?}"
        );
        let before = self.stack.log.head().await.unwrap();
        as_writer
            .await
            .unwrap_or_else(|s| panic!("{rpc}: the same request from a writer: {s:?}"));
        assert_eq!(
            self.stack.log.head().await.unwrap(),
            before + 1,
            "{rpc}: the writer's call wrote one event"
        );
        self.covered.push(rpc);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_rpc_refuses_an_auditor_token_and_writes_nothing() {
    let db = TestDb::new().await;
    let log = eventlog::EventLog::from_pool(db.pool.clone());
    let stack = Stack::start(log.clone()).await;
    let processing = RunningProcessing::start(log.clone(), domain::SupplementPolicy::Restart).await;
    let mut intake = stack.intake_client().await;
    let mut processing = processing.client().await;
    let mut payment = stack.payment_client().await;
    let mut results = stack.results_client().await;
    let mut probe = Probe {
        stack: &stack,
        covered: Vec::new(),
    };
    let day = |d: u32, h: u32| local(2024, 4, d, h, 0);

    // One dossier through its whole life, one RPC at a time.
    let a = "H40-AUD-A";
    let r = receive_request(a, day(22, 9));
    probe
        .check(
            "ReceiveDossier",
            intake.clone().receive_dossier(authed(AUDITOR, r.clone())),
            intake.receive_dossier(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = pb::RecordDigitizedComponentsRequest {
        event_id: new_event_id(),
        dossier_id: a.into(),
        occurred_at: Some(ts(day(22, 10))),
        digitized: vec!["don-de-nghi".into()],
        reused: vec![],
        expected_version: None,
    };
    probe
        .check(
            "RecordDigitizedComponents",
            intake
                .clone()
                .record_digitized_components(authed(AUDITOR, r.clone())),
            intake.record_digitized_components(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = transfer(
        a,
        day(22, 11),
        PROVINCE_AGENCY,
        pb::TransferMode::Electronic,
    );
    probe
        .check(
            "Transfer",
            processing.clone().transfer(authed(AUDITOR, r.clone())),
            processing.transfer(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = request_supplement(a, day(22, 14));
    probe
        .check(
            "RequestSupplement",
            processing
                .clone()
                .request_supplement(authed(AUDITOR, r.clone())),
            processing.request_supplement(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = receive_supplement(a, day(23, 9));
    probe
        .check(
            "ReceiveSupplement",
            processing
                .clone()
                .receive_supplement(authed(AUDITOR, r.clone())),
            processing.receive_supplement(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = assess_fee(a, day(23, 10), 50_000, pb::FeeKind::Fee);
    probe
        .check(
            "AssessFee",
            payment.clone().assess_fee(authed(AUDITOR, r.clone())),
            payment.assess_fee(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = record_payment(
        a,
        day(23, 11),
        50_000,
        pb::PaymentChannel::NationalPlatform,
        "DVCQG-AUD-1",
    );
    probe
        .check(
            "RecordPayment",
            payment.clone().record_payment(authed(AUDITOR, r.clone())),
            payment.record_payment(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = issue_apology(a, day(24, 9), day(24, 9) + Duration::days(30));
    probe
        .check(
            "IssueApology",
            results.clone().issue_apology(authed(AUDITOR, r.clone())),
            results.issue_apology(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = resolve(a, day(25, 9), pb::Outcome::Approved);
    probe
        .check(
            "Resolve",
            processing.clone().resolve(authed(AUDITOR, r.clone())),
            processing.resolve(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = attach_result(a, day(25, 10));
    probe
        .check(
            "AttachResult",
            results.clone().attach_result(authed(AUDITOR, r.clone())),
            results.attach_result(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = return_result(a, day(25, 11), pb::ReturnMethod::Counter);
    probe
        .check(
            "ReturnResult",
            results.clone().return_result(authed(AUDITOR, r.clone())),
            results.return_result(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = record_rating(a, day(25, 14), pb::Rating::VerySatisfied);
    probe
        .check(
            "RecordRating",
            results.clone().record_rating(authed(AUDITOR, r.clone())),
            results.record_rating(authed(COUNTER_DISTRICT, r)),
        )
        .await;

    // The RPCs that end a dossier or never start one, each on a dossier of its own.
    let r = pb::RefuseAtCounterRequest {
        event_id: new_event_id(),
        dossier_id: "H40-AUD-B".into(),
        occurred_at: Some(ts(day(22, 9))),
        profile: Some(profile(DISTRICT_AGENCY)),
        reason: "Thiếu thành phần hồ sơ".into(),
    };
    probe
        .check(
            "RefuseAtCounter",
            intake.clone().refuse_at_counter(authed(AUDITOR, r.clone())),
            intake.refuse_at_counter(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    stack.receive("H40-AUD-C", day(22, 9), false).await;
    let r = stop_processing("H40-AUD-C", day(23, 9));
    probe
        .check(
            "StopProcessing",
            processing
                .clone()
                .stop_processing(authed(AUDITOR, r.clone())),
            processing.stop_processing(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    stack.receive("H40-AUD-D", day(22, 9), false).await;
    let r = withdraw("H40-AUD-D", day(23, 9));
    probe
        .check(
            "Withdraw",
            processing.clone().withdraw(authed(AUDITOR, r.clone())),
            processing.withdraw(authed(COUNTER_DISTRICT, r)),
        )
        .await;

    // The financial obligation (portal status 6), requested then fulfilled.
    stack.receive("H40-AUD-F", day(22, 9), false).await;
    let r = request_obligation("H40-AUD-F", day(23, 9));
    probe
        .check(
            "RequestFinancialObligation",
            processing
                .clone()
                .request_financial_obligation(authed(AUDITOR, r.clone())),
            processing.request_financial_obligation(authed(COUNTER_DISTRICT, r)),
        )
        .await;
    let r = fulfil_obligation("H40-AUD-F", day(24, 9));
    probe
        .check(
            "FulfilFinancialObligation",
            processing
                .clone()
                .fulfil_financial_obligation(authed(AUDITOR, r.clone())),
            processing.fulfil_financial_obligation(authed(COUNTER_DISTRICT, r)),
        )
        .await;

    // The history import: a valid batch, refused to the auditor, taken from an importer.
    let batch = import_batch("H40-AUD-E", day(22, 9));
    probe
        .check(
            "ImportHistory",
            import(&mut intake.clone(), AUDITOR, batch.clone()),
            import(&mut intake, IMPORTER, batch),
        )
        .await;

    // Every write RPC was covered.
    let mut covered = probe.covered.clone();
    covered.sort_unstable();
    let mut all: Vec<&str> = WRITE_RPCS
        .iter()
        .flat_map(|(_, rpcs)| rpcs.iter().copied())
        .collect();
    all.sort_unstable();
    assert_eq!(covered, all);
}

fn import_batch(dossier_id: &str, at: DateTime<Utc>) -> pb::ImportBatch {
    pb::ImportBatch {
        batch_seq: 1,
        events: vec![pb::Event {
            event_id: new_event_id(),
            dossier_id: dossier_id.to_owned(),
            occurred_at: Some(ts(at)),
            recorded_at: None,
            position: 0,
            version: 0,
            body: Some(Body::Received(pb::Received {
                procedure: None,
                profile: Some(profile(DISTRICT_AGENCY)),
                statutory_time: Some(pb::StatutoryTime {
                    unit: Some(pb::statutory_time::Unit::WorkingDays(3)),
                }),
                fee_required: false,
                components: vec!["don-de-nghi".into()],
                due_at: Some(ts(at + Duration::days(5))),
                applicant: None,
                applicant_data: 0,
                return_method: 0,
            })),
        }],
    }
}

/// Streams one batch and returns the first answer, or the status ending the stream.
async fn import(
    client: &mut api::v1::intake_service_client::IntakeServiceClient<tonic::transport::Channel>,
    token: &str,
    batch: pb::ImportBatch,
) -> Result<Response<pb::ImportBatchResult>, Status> {
    let outbound = futures::stream::iter([batch]);
    let mut inbound = client
        .import_history(authed(token, outbound))
        .await?
        .into_inner();
    match inbound.message().await? {
        Some(answer) => Ok(Response::new(answer)),
        None => Err(Status::internal("the import answered nothing")),
    }
}
