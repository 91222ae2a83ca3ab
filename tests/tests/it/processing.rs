//! The processing service through real gRPC and its deadline watcher, against real PostgreSQL
//! (and NATS for publication): supplements under both policies across the April 2024 holidays,
//! transfers and who may act, resolution timeliness at its edges, withdrawal and stop, every
//! refusal with its exact status and reason and nothing written, concurrency, retries, JetStream
//! subjects; the watcher's exactly-once `late`, with two watchers at once and across restarts.
//! Every test has its own database and servers, so they run in parallel; watchers tick on a
//! clock the test sets, so nothing sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use api::v1 as pb;
use api::v1::processing_service_client::ProcessingServiceClient;
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use domain::{AgencyCode, DossierEvent, Outcome, Phase, Refusal, SupplementPolicy, TransferMode};
use eventlog::{EventLog, StoredEvent};
use processing::{WatcherConfig, mark_late_event_id};
use testkit::{TestDb, TestNats};
use tests::processing::{
    COMMUNE_AGENCY, COUNTER_COMMUNE, ManualClock, RunningProcessing, processing_tokens,
    receive_days, receive_supplement, request_supplement, resolve, stop_processing, transfer,
    wait_for_head, watcher, withdraw,
};
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, DISTRICT_AGENCY, IMPORTER, PROVINCE_AGENCY,
    RunningIntake, RunningRelay, authed, local, new_event_id, profile, ts,
};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

type Client = ProcessingServiceClient<Channel>;

/// One test's world: a fresh database, its log, intake and processing servers over it.
struct Env {
    log: EventLog,
    intake: RunningIntake,
    processing: RunningProcessing,
    db: TestDb,
}

async fn env(policy: SupplementPolicy) -> Env {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let processing = RunningProcessing::start(log.clone(), policy).await;
    Env {
        log,
        intake,
        processing,
        db,
    }
}

impl Env {
    async fn client(&self) -> Client {
        self.processing.client().await
    }

    /// Receives a dossier at the district counter; returns its due time.
    async fn receive(&self, dossier_id: &str, at: DateTime<Utc>, days: u32) -> DateTime<Utc> {
        let answer = self
            .intake
            .client()
            .await
            .receive_dossier(authed(COUNTER_DISTRICT, receive_days(dossier_id, at, days)))
            .await
            .expect("receive")
            .into_inner();
        utc(answer.due_at.as_ref())
    }

    async fn head(&self) -> i64 {
        self.log.head().await.expect("head")
    }

    async fn events(&self, dossier_id: &str) -> Vec<StoredEvent> {
        self.log.load_dossier(dossier_id).await.expect("load")
    }

    async fn late_events(&self, dossier_id: &str) -> Vec<StoredEvent> {
        self.events(dossier_id)
            .await
            .into_iter()
            .filter(|e| e.event_type == "late")
            .collect()
    }
}

fn utc(t: Option<&api::Timestamp>) -> DateTime<Utc> {
    let t = t.expect("timestamp present");
    DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32).expect("valid timestamp")
}

fn body(event: &StoredEvent) -> DossierEvent {
    DossierEvent::from_parts(&event.event_type, &event.payload).expect("stored event decodes")
}

fn types(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

fn agency(code: &str) -> AgencyCode {
    AgencyCode::parse(code).expect("valid agency code")
}

/// Every RPC of the service, so that tables of cases can call any of them.
#[derive(Debug, Clone)]
enum Call {
    Transfer(pb::TransferRequest),
    RequestSupplement(pb::RequestSupplementRequest),
    ReceiveSupplement(pb::ReceiveSupplementRequest),
    Resolve(pb::ResolveRequest),
    Stop(pb::StopProcessingRequest),
    Withdraw(pb::WithdrawRequest),
}

/// An RPC's whole answer.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Write(pb::WriteResponse),
    Supplement(pb::ReceiveSupplementResponse),
    Resolve(pb::ResolveResponse),
}

impl Answer {
    fn event(&self) -> &pb::RecordedEvent {
        match self {
            Answer::Write(a) => a.event.as_ref(),
            Answer::Supplement(a) => a.event.as_ref(),
            Answer::Resolve(a) => a.event.as_ref(),
        }
        .expect("answer carries the recorded event")
    }

    /// The same answer with `duplicate` cleared, to compare a retry with the original.
    fn as_original(&self) -> Answer {
        let mut a = self.clone();
        let event = match &mut a {
            Answer::Write(a) => a.event.as_mut(),
            Answer::Supplement(a) => a.event.as_mut(),
            Answer::Resolve(a) => a.event.as_mut(),
        };
        event.expect("event").duplicate = false;
        a
    }
}

impl Call {
    fn name(&self) -> &'static str {
        match self {
            Call::Transfer(_) => "Transfer",
            Call::RequestSupplement(_) => "RequestSupplement",
            Call::ReceiveSupplement(_) => "ReceiveSupplement",
            Call::Resolve(_) => "Resolve",
            Call::Stop(_) => "StopProcessing",
            Call::Withdraw(_) => "Withdraw",
        }
    }

    fn event_id(&self) -> &str {
        match self {
            Call::Transfer(r) => &r.event_id,
            Call::RequestSupplement(r) => &r.event_id,
            Call::ReceiveSupplement(r) => &r.event_id,
            Call::Resolve(r) => &r.event_id,
            Call::Stop(r) => &r.event_id,
            Call::Withdraw(r) => &r.event_id,
        }
    }

    /// Every RPC on `dossier_id` at `at`, each otherwise valid.
    fn all(dossier_id: &str, at: DateTime<Utc>) -> Vec<Call> {
        vec![
            Call::Transfer(transfer(
                dossier_id,
                at,
                PROVINCE_AGENCY,
                pb::TransferMode::Electronic,
            )),
            Call::RequestSupplement(request_supplement(dossier_id, at)),
            Call::ReceiveSupplement(receive_supplement(dossier_id, at)),
            Call::Resolve(resolve(dossier_id, at, pb::Outcome::Approved)),
            Call::Stop(stop_processing(dossier_id, at)),
            Call::Withdraw(withdraw(dossier_id, at)),
        ]
    }

    async fn send(&self, client: &mut Client, token: Option<&str>) -> Result<Answer, Status> {
        fn request<T>(token: Option<&str>, message: T) -> Request<T> {
            match token {
                Some(token) => authed(token, message),
                None => Request::new(message),
            }
        }
        Ok(match self.clone() {
            Call::Transfer(r) => {
                Answer::Write(client.transfer(request(token, r)).await?.into_inner())
            }
            Call::RequestSupplement(r) => Answer::Write(
                client
                    .request_supplement(request(token, r))
                    .await?
                    .into_inner(),
            ),
            Call::ReceiveSupplement(r) => Answer::Supplement(
                client
                    .receive_supplement(request(token, r))
                    .await?
                    .into_inner(),
            ),
            Call::Resolve(r) => {
                Answer::Resolve(client.resolve(request(token, r)).await?.into_inner())
            }
            Call::Stop(r) => Answer::Write(
                client
                    .stop_processing(request(token, r))
                    .await?
                    .into_inner(),
            ),
            Call::Withdraw(r) => {
                Answer::Write(client.withdraw(request(token, r)).await?.into_inner())
            }
        })
    }
}

/// Sends `call` and checks it fails with `code` and, when given, the `google.rpc.ErrorInfo`
/// reason, and that the log did not move.
async fn refused(
    env: &Env,
    client: &mut Client,
    token: Option<&str>,
    call: &Call,
    code: Code,
    reason: Option<&str>,
) -> Status {
    let before = env.head().await;
    let status = call
        .send(client, token)
        .await
        .expect_err(&format!("{} must be refused", call.name()));
    tests::assert_details_agree(&status);
    assert_eq!(status.code(), code, "{}: {}", call.name(), status.message());
    if let Some(reason) = reason {
        let info = status
            .get_details_error_info()
            .unwrap_or_else(|| panic!("{}: no ErrorInfo in {status:?}", call.name()));
        assert_eq!(info.reason, reason, "{}: {}", call.name(), status.message());
        assert_eq!(info.domain, "dossier.v1");
    }
    assert_eq!(
        env.head().await,
        before,
        "{} refused but something was written",
        call.name()
    );
    status
}

/// Checks a refusal by the rules: its gRPC code from the refusal's kind, its reason code and
/// its message exactly as the domain words them.
async fn refused_by_rule(
    env: &Env,
    client: &mut Client,
    token: &str,
    call: &Call,
    refusal: Refusal,
) {
    let code = match refusal.kind() {
        domain::RefusalKind::NotFound => Code::NotFound,
        domain::RefusalKind::AlreadyExists => Code::AlreadyExists,
        domain::RefusalKind::InvalidArgument => Code::InvalidArgument,
        domain::RefusalKind::FailedPrecondition => Code::FailedPrecondition,
    };
    let status = refused(env, client, Some(token), call, code, Some(refusal.code())).await;
    assert_eq!(status.message(), refusal.to_string(), "{}", call.name());
}

/// The field an INVALID_ARGUMENT names.
fn bad_field(status: &Status) -> String {
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations[0]
        .field
        .clone()
}

async fn ok(call: Call, client: &mut Client, token: &str) -> Answer {
    call.send(client, Some(token))
        .await
        .unwrap_or_else(|s| panic!("{} failed: {s:?}", call.name()))
}

// --- supplements under each policy, across the 2024 Reunification/Labour Day break ----------
//
// Received Wed 24 Apr 2024 09:00 with 3 working days (24 working hours): Wed 6 h, Thu 8 h,
// Fri 8 h, then Sat 27 Apr – Wed 1 May are off (Monday 29 Apr swapped with Saturday 4 May),
// so it is due Thu 2 May 09:00. The supplement is requested Fri 26 Apr 10:00 and received
// Mon 6 May 10:00: the dossier waited Fri 5 h + Thu 2 May 8 h + Fri 3 May 8 h + Sat 4 May
// (a working day that year) 8 h + Mon 3 h = 32 working hours.

const HOLIDAY_DOSSIER: &str = "HS-2024-HOLIDAY";

async fn supplement_across_the_holidays(env: &Env) -> pb::ReceiveSupplementResponse {
    let mut client = env.client().await;
    let due = env
        .receive(HOLIDAY_DOSSIER, local(2024, 4, 24, 9, 0), 3)
        .await;
    assert_eq!(due, local(2024, 5, 2, 9, 0));

    let asked = ok(
        Call::RequestSupplement(request_supplement(
            HOLIDAY_DOSSIER,
            local(2024, 4, 26, 10, 0),
        )),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    assert_eq!(asked.event().event_type, "supplement_requested");
    assert_eq!(asked.event().version, 2);

    // While it waits, it cannot be resolved.
    refused_by_rule(
        env,
        &mut client,
        COUNTER_DISTRICT,
        &Call::Resolve(resolve(
            HOLIDAY_DOSSIER,
            local(2024, 5, 3, 9, 0),
            pb::Outcome::Approved,
        )),
        Refusal::AwaitingSupplement,
    )
    .await;

    let received = client
        .receive_supplement(authed(
            COUNTER_DISTRICT,
            receive_supplement(HOLIDAY_DOSSIER, local(2024, 5, 6, 10, 0)),
        ))
        .await
        .expect("receive supplement")
        .into_inner();
    assert_eq!(received.paused_minutes, 32 * 60);
    let event = received.event.as_ref().expect("event");
    assert_eq!(event.event_type, "supplement_received");
    assert_eq!(event.version, 3);
    assert!(!event.duplicate);
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_counts_the_full_time_again_from_the_supplement_across_the_holidays() {
    let env = env(SupplementPolicy::Restart).await;
    let received = supplement_across_the_holidays(&env).await;
    // 24 working hours again from Mon 6 May 10:00: Mon 5 h, Tue 8 h, Wed 8 h, Thu 3 h.
    let new_due = local(2024, 5, 9, 10, 0);
    assert_eq!(utc(received.due_at.as_ref()), new_due);

    // Resolved Wed 8 May: early under `restart` (it would be late under `extend`).
    let mut client = env.client().await;
    let answer = client
        .resolve(authed(
            COUNTER_DISTRICT,
            resolve(
                HOLIDAY_DOSSIER,
                local(2024, 5, 8, 10, 0),
                pb::Outcome::Approved,
            ),
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(answer.timeliness, pb::Timeliness::Early as i32);
    assert_eq!(utc(answer.due_at.as_ref()), new_due);

    let events = env.events(HOLIDAY_DOSSIER).await;
    assert_eq!(
        types(&events),
        [
            "received",
            "supplement_requested",
            "supplement_received",
            "resolved"
        ]
    );
    assert_eq!(
        body(&events[2]),
        DossierEvent::SupplementReceived {
            due_at: new_due,
            paused: calendar::WorkingDuration::from_hours(32),
        }
    );
    assert_eq!(
        body(&events[3]),
        DossierEvent::Resolved {
            outcome: Outcome::Approved,
            deciding_agency: agency(DISTRICT_AGENCY),
            due_at: new_due,
            timeliness: calendar::Timeliness::Early,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_policy_moves_the_due_time_by_the_working_time_paused_across_the_holidays() {
    let env = env(SupplementPolicy::Extend).await;
    let received = supplement_across_the_holidays(&env).await;
    // Thu 2 May 09:00 + 32 working hours: Thu 6 h, Fri 8 h, Sat 4 May 8 h, Mon 8 h, Tue 2 h.
    // (Equivalently: the 7 hours that were left when it paused, counted from Mon 6 May 10:00.)
    let new_due = local(2024, 5, 7, 9, 0);
    assert_eq!(utc(received.due_at.as_ref()), new_due);

    // Resolved Wed 8 May: late under `extend`.
    let mut client = env.client().await;
    let answer = client
        .resolve(authed(
            COUNTER_DISTRICT,
            resolve(
                HOLIDAY_DOSSIER,
                local(2024, 5, 8, 10, 0),
                pb::Outcome::Approved,
            ),
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(answer.timeliness, pb::Timeliness::Late as i32);
    assert_eq!(utc(answer.due_at.as_ref()), new_due);

    let events = env.events(HOLIDAY_DOSSIER).await;
    assert_eq!(
        body(&events[2]),
        DossierEvent::SupplementReceived {
            due_at: new_due,
            paused: calendar::WorkingDuration::from_hours(32),
        }
    );
    assert_eq!(
        body(&events[3]),
        DossierEvent::Resolved {
            outcome: Outcome::Approved,
            deciding_agency: agency(DISTRICT_AGENCY),
            due_at: new_due,
            timeliness: calendar::Timeliness::Late,
        }
    );
}

// --- transfers ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_change_the_agency_that_must_act() {
    let env = env(SupplementPolicy::Restart).await;
    let mut client = env.client().await;
    let id = "HS-TRANSFER-1";
    let monday = local(2024, 4, 22, 9, 0);
    env.receive(id, monday, 10).await;
    let at = |h, m| local(2024, 4, 22, h, m);

    // The district sends it electronically to a provincial agency…
    let sent = ok(
        Call::Transfer(transfer(
            id,
            at(10, 0),
            PROVINCE_AGENCY,
            pb::TransferMode::Electronic,
        )),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    assert_eq!(sent.event().event_type, "transferred");
    // …whose counter may now act,
    ok(
        Call::RequestSupplement(request_supplement(id, at(11, 0))),
        &mut client,
        COUNTER_PROVINCE,
    )
    .await;
    // while the receiving district keeps its rights.
    ok(
        Call::ReceiveSupplement(receive_supplement(id, at(14, 0))),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    // The province sends it on, on paper, to a commune.
    ok(
        Call::Transfer(transfer(
            id,
            at(15, 0),
            COMMUNE_AGENCY,
            pb::TransferMode::Paper,
        )),
        &mut client,
        COUNTER_PROVINCE,
    )
    .await;

    // The province is now neither the receiver nor the holder: refused, nothing written.
    let status = refused(
        &env,
        &mut client,
        Some(COUNTER_PROVINCE),
        &Call::RequestSupplement(request_supplement(id, at(16, 0))),
        Code::PermissionDenied,
        None,
    )
    .await;
    assert!(status.message().contains(PROVINCE_AGENCY), "{status:?}");
    for call in Call::all(id, at(16, 0)) {
        refused(
            &env,
            &mut client,
            Some(COUNTER_PROVINCE),
            &call,
            Code::PermissionDenied,
            None,
        )
        .await;
    }

    // A transfer to the agency holding it is refused.
    refused_by_rule(
        &env,
        &mut client,
        COUNTER_COMMUNE,
        &Call::Transfer(transfer(
            id,
            at(16, 0),
            COMMUNE_AGENCY,
            pb::TransferMode::Electronic,
        )),
        Refusal::TransferToSameAgency {
            agency: agency(COMMUNE_AGENCY),
        },
    )
    .await;

    // The commune decides, in its own name only.
    let mut as_district = resolve(id, at(16, 30), pb::Outcome::Approved);
    as_district.deciding_agency = DISTRICT_AGENCY.to_owned();
    refused(
        &env,
        &mut client,
        Some(COUNTER_COMMUNE),
        &Call::Resolve(as_district),
        Code::PermissionDenied,
        None,
    )
    .await;
    let mut decision = resolve(id, at(16, 30), pb::Outcome::Approved);
    decision.deciding_agency = COMMUNE_AGENCY.to_owned();
    ok(Call::Resolve(decision), &mut client, COUNTER_COMMUNE).await;

    // After the resolution no transfer is possible, by the holder or the receiver.
    for (token, to) in [
        (COUNTER_COMMUNE, PROVINCE_AGENCY),
        (COUNTER_DISTRICT, PROVINCE_AGENCY),
        (COUNTER_COMMUNE, COMMUNE_AGENCY),
    ] {
        refused_by_rule(
            &env,
            &mut client,
            token,
            &Call::Transfer(transfer(id, at(16, 45), to, pb::TransferMode::Electronic)),
            Refusal::AlreadyResolved,
        )
        .await;
    }

    let events = env.events(id).await;
    assert_eq!(
        types(&events),
        [
            "received",
            "transferred",
            "supplement_requested",
            "supplement_received",
            "transferred",
            "resolved"
        ]
    );
    assert_eq!(
        body(&events[1]),
        DossierEvent::Transferred {
            from_agency: agency(DISTRICT_AGENCY),
            to_agency: agency(PROVINCE_AGENCY),
            mode: TransferMode::Electronic,
        }
    );
    assert_eq!(
        body(&events[4]),
        DossierEvent::Transferred {
            from_agency: agency(PROVINCE_AGENCY),
            to_agency: agency(COMMUNE_AGENCY),
            mode: TransferMode::Paper,
        }
    );
    let DossierEvent::Resolved {
        deciding_agency, ..
    } = body(&events[5])
    else {
        panic!("not a resolution");
    };
    assert_eq!(deciding_agency, agency(COMMUNE_AGENCY));
    // Routing never changes: the dossier is still sliced by the agency that received it.
    assert!(events.iter().all(|e| e.routing.agency == DISTRICT_AGENCY));
}

// --- resolution timeliness -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolutions_are_judged_early_on_time_or_late_against_the_due_time() {
    let env = env(SupplementPolicy::Restart).await;
    let mut client = env.client().await;
    // Received Mon 22 Apr 2024 09:00 with 3 working days: due Thu 25 Apr 09:00 (local).
    let due = local(2024, 4, 25, 9, 0);
    let seconds = chrono::Duration::seconds;
    let cases = [
        (
            "HS-T-EARLY",
            local(2024, 4, 24, 16, 59),
            pb::Outcome::Approved,
            pb::Timeliness::Early,
        ),
        // 23:59:59 local on Wednesday is still an earlier local date…
        (
            "HS-T-EVE",
            local(2024, 4, 24, 23, 59) + seconds(59),
            pb::Outcome::Approved,
            pb::Timeliness::Early,
        ),
        // …midnight local is the due date (while UTC still says Wednesday).
        (
            "HS-T-MIDNIGHT",
            local(2024, 4, 25, 0, 0),
            pb::Outcome::Refused,
            pb::Timeliness::OnTime,
        ),
        (
            "HS-T-MORNING",
            local(2024, 4, 25, 7, 0),
            pb::Outcome::Approved,
            pb::Timeliness::OnTime,
        ),
        // Exactly at the due time is on time, refused on decision is still resolved…
        (
            "HS-T-EXACT",
            due,
            pb::Outcome::Refused,
            pb::Timeliness::OnTime,
        ),
        // …one second later is late.
        (
            "HS-T-LATE",
            due + seconds(1),
            pb::Outcome::Approved,
            pb::Timeliness::Late,
        ),
        (
            "HS-T-NEXT-DAY",
            local(2024, 4, 26, 8, 0),
            pb::Outcome::Refused,
            pb::Timeliness::Late,
        ),
    ];
    for (id, at, outcome, timeliness) in cases {
        assert_eq!(env.receive(id, local(2024, 4, 22, 9, 0), 3).await, due);
        let answer = client
            .resolve(authed(COUNTER_DISTRICT, resolve(id, at, outcome)))
            .await
            .expect("resolve")
            .into_inner();
        assert_eq!(answer.timeliness, timeliness as i32, "{id}");
        assert_eq!(utc(answer.due_at.as_ref()), due, "{id}");
        let event = answer.event.expect("event");
        assert_eq!(event.event_type, "resolved");
        assert_eq!(utc(event.occurred_at.as_ref()), at);
        let stored = env.events(id).await;
        let DossierEvent::Resolved {
            outcome: stored_outcome,
            timeliness: stored_timeliness,
            due_at,
            ..
        } = body(&stored[1])
        else {
            panic!("{id}: not a resolution");
        };
        assert_eq!(due_at, due);
        assert_eq!(
            stored_outcome,
            if outcome == pb::Outcome::Approved {
                Outcome::Approved
            } else {
                Outcome::Refused
            }
        );
        assert_eq!(convert_timeliness(stored_timeliness), timeliness, "{id}");
    }
}

fn convert_timeliness(t: calendar::Timeliness) -> pb::Timeliness {
    svc::convert::pb_timeliness(t)
}

// --- withdrawal and stop ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdrawal_and_stop_end_the_dossier() {
    let env = env(SupplementPolicy::Restart).await;
    let mut client = env.client().await;
    let received = local(2024, 4, 22, 9, 0);
    let later = local(2024, 4, 23, 10, 0);
    let after = local(2024, 4, 23, 11, 0);

    env.receive("HS-WITHDRAWN", received, 3).await;
    let w = ok(
        Call::Withdraw(withdraw("HS-WITHDRAWN", later)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    assert_eq!(w.event().event_type, "withdrawn");
    for call in Call::all("HS-WITHDRAWN", after) {
        refused_by_rule(
            &env,
            &mut client,
            COUNTER_DISTRICT,
            &call,
            Refusal::Ended {
                phase: Phase::Withdrawn,
            },
        )
        .await;
    }

    // Stopped while waiting for a supplement.
    env.receive("HS-STOPPED", received, 3).await;
    ok(
        Call::RequestSupplement(request_supplement("HS-STOPPED", later)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    let s = ok(
        Call::Stop(stop_processing("HS-STOPPED", later)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    assert_eq!(s.event().event_type, "stopped");
    for call in Call::all("HS-STOPPED", after) {
        refused_by_rule(
            &env,
            &mut client,
            COUNTER_DISTRICT,
            &call,
            Refusal::Ended {
                phase: Phase::Stopped,
            },
        )
        .await;
    }

    // A resolved dossier can be neither withdrawn nor stopped.
    env.receive("HS-RESOLVED", received, 3).await;
    ok(
        Call::Resolve(resolve("HS-RESOLVED", later, pb::Outcome::Approved)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    for call in [
        Call::Withdraw(withdraw("HS-RESOLVED", after)),
        Call::Stop(stop_processing("HS-RESOLVED", after)),
    ] {
        refused_by_rule(
            &env,
            &mut client,
            COUNTER_DISTRICT,
            &call,
            Refusal::AlreadyResolved,
        )
        .await;
    }

    assert_eq!(
        types(&env.events("HS-WITHDRAWN").await),
        ["received", "withdrawn"]
    );
    assert_eq!(
        types(&env.events("HS-STOPPED").await),
        ["received", "supplement_requested", "stopped"]
    );
    assert_eq!(
        types(&env.events("HS-RESOLVED").await),
        ["received", "resolved"]
    );
}

// --- every refusal: exact code, exact reason, nothing written --------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_transitions_are_refused_with_their_code_and_reason_and_write_nothing() {
    let env = env(SupplementPolicy::Restart).await;
    let mut client = env.client().await;
    let received = local(2024, 4, 22, 9, 0);
    let t = |d, h, m| local(2024, 4, d, h, m);

    // Events on an unknown dossier.
    for call in Call::all("HS-NEVER-RECEIVED", t(22, 10, 0)) {
        refused_by_rule(
            &env,
            &mut client,
            COUNTER_DISTRICT,
            &call,
            Refusal::UnknownDossier,
        )
        .await;
    }

    // An occurred_at before reception.
    env.receive("HS-R1", received, 3).await;
    for call in Call::all("HS-R1", t(22, 8, 59)) {
        refused_by_rule(
            &env,
            &mut client,
            COUNTER_DISTRICT,
            &call,
            Refusal::BeforeReception {
                received_at: received,
            },
        )
        .await;
    }

    // No supplement pending.
    refused_by_rule(
        &env,
        &mut client,
        COUNTER_DISTRICT,
        &Call::ReceiveSupplement(receive_supplement("HS-R1", t(22, 10, 0))),
        Refusal::NoSupplementPending,
    )
    .await;

    // A second request while one is pending; a receipt dated before the request; resolving
    // while waiting.
    ok(
        Call::RequestSupplement(request_supplement("HS-R1", t(22, 10, 0))),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    refused_by_rule(
        &env,
        &mut client,
        COUNTER_DISTRICT,
        &Call::RequestSupplement(request_supplement("HS-R1", t(22, 11, 0))),
        Refusal::SupplementAlreadyPending,
    )
    .await;
    refused_by_rule(
        &env,
        &mut client,
        COUNTER_DISTRICT,
        &Call::ReceiveSupplement(receive_supplement("HS-R1", t(22, 9, 30))),
        Refusal::BeforePreviousStep {
            step: "the supplement request",
            at: t(22, 10, 0),
        },
    )
    .await;
    refused_by_rule(
        &env,
        &mut client,
        COUNTER_DISTRICT,
        &Call::Resolve(resolve("HS-R1", t(22, 11, 0), pb::Outcome::Approved)),
        Refusal::AwaitingSupplement,
    )
    .await;

    // Resolving twice, and every other step after the resolution.
    ok(
        Call::ReceiveSupplement(receive_supplement("HS-R1", t(23, 9, 0))),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    ok(
        Call::Resolve(resolve("HS-R1", t(23, 10, 0), pb::Outcome::Approved)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    for call in Call::all("HS-R1", t(23, 11, 0)) {
        refused_by_rule(
            &env,
            &mut client,
            COUNTER_DISTRICT,
            &call,
            Refusal::AlreadyResolved,
        )
        .await;
    }

    // A dossier refused at the counter was never accepted: nothing can follow.
    env.intake
        .client()
        .await
        .refuse_at_counter(authed(
            COUNTER_DISTRICT,
            pb::RefuseAtCounterRequest {
                event_id: new_event_id(),
                dossier_id: "HS-REFUSED".to_owned(),
                occurred_at: Some(ts(received)),
                profile: Some(profile(DISTRICT_AGENCY)),
                reason: "Hồ sơ không đủ thành phần".to_owned(),
            },
        ))
        .await
        .expect("refuse at counter");
    for call in Call::all("HS-REFUSED", t(22, 10, 0)) {
        refused_by_rule(
            &env,
            &mut client,
            COUNTER_DISTRICT,
            &call,
            Refusal::Ended {
                phase: Phase::RefusedAtIntake,
            },
        )
        .await;
    }

    // Malformed requests: INVALID_ARGUMENT naming the field.
    env.receive("HS-R2", received, 3).await;
    let at = t(22, 10, 0);
    let future = Utc::now() + chrono::Duration::hours(1);
    let mut cases: Vec<(Call, &str)> = Vec::new();
    for call in Call::all("HS-R2", at) {
        let mut bad_id = call.clone();
        let mut no_dossier = call.clone();
        let mut no_time = call.clone();
        let mut in_future = call.clone();
        macro_rules! each {
            ($c:expr, $r:ident => $body:expr) => {
                match &mut $c {
                    Call::Transfer($r) => $body,
                    Call::RequestSupplement($r) => $body,
                    Call::ReceiveSupplement($r) => $body,
                    Call::Resolve($r) => $body,
                    Call::Stop($r) => $body,
                    Call::Withdraw($r) => $body,
                }
            };
        }
        each!(bad_id, r => r.event_id = "not-a-uuid".to_owned());
        each!(no_dossier, r => r.dossier_id = String::new());
        each!(no_time, r => r.occurred_at = None);
        each!(in_future, r => r.occurred_at = Some(ts(future)));
        cases.extend([
            (bad_id, "event_id"),
            (no_dossier, "dossier_id"),
            (no_time, "occurred_at"),
            (in_future, "occurred_at"),
        ]);
    }
    let mut t1 = transfer("HS-R2", at, "bad_agency", pb::TransferMode::Electronic);
    cases.push((Call::Transfer(t1.clone()), "to_agency"));
    t1.to_agency = PROVINCE_AGENCY.to_owned();
    t1.mode = pb::TransferMode::Unspecified as i32;
    cases.push((Call::Transfer(t1), "mode"));
    let mut rs = request_supplement("HS-R2", at);
    rs.reason = "   ".to_owned();
    cases.push((Call::RequestSupplement(rs), "reason"));
    let mut r1 = resolve("HS-R2", at, pb::Outcome::Unspecified);
    cases.push((Call::Resolve(r1.clone()), "outcome"));
    r1.outcome = 42;
    cases.push((Call::Resolve(r1.clone()), "outcome"));
    r1.outcome = pb::Outcome::Approved as i32;
    r1.deciding_agency = String::new();
    cases.push((Call::Resolve(r1), "deciding_agency"));
    let mut st = stop_processing("HS-R2", at);
    st.reason = String::new();
    cases.push((Call::Stop(st), "reason"));
    let mut wd = withdraw("HS-R2", at);
    wd.reason = "a\u{7}b".to_owned();
    cases.push((Call::Withdraw(wd), "reason"));
    for (call, field) in cases {
        let status = refused(
            &env,
            &mut client,
            Some(COUNTER_DISTRICT),
            &call,
            Code::InvalidArgument,
            None,
        )
        .await;
        assert_eq!(bad_field(&status), field, "{}: {status:?}", call.name());
    }

    // Who may call: no token, a token nobody issued, auditors, importers, other agencies.
    for call in Call::all("HS-R2", at) {
        refused(&env, &mut client, None, &call, Code::Unauthenticated, None).await;
        refused(
            &env,
            &mut client,
            Some("forged"),
            &call,
            Code::Unauthenticated,
            None,
        )
        .await;
        for token in [AUDITOR, IMPORTER, COUNTER_PROVINCE, COUNTER_COMMUNE] {
            refused(
                &env,
                &mut client,
                Some(token),
                &call,
                Code::PermissionDenied,
                None,
            )
            .await;
        }
    }

    // A stale expected_version: ABORTED, whichever RPC.
    for mut call in Call::all("HS-R2", at) {
        match &mut call {
            Call::Transfer(r) => r.expected_version = Some(2),
            Call::RequestSupplement(r) => r.expected_version = Some(2),
            Call::ReceiveSupplement(r) => r.expected_version = Some(2),
            Call::Resolve(r) => r.expected_version = Some(2),
            Call::Stop(r) => r.expected_version = Some(2),
            Call::Withdraw(r) => r.expected_version = Some(2),
        }
        let status = refused(
            &env,
            &mut client,
            Some(COUNTER_DISTRICT),
            &call,
            Code::Aborted,
            Some("version_conflict"),
        )
        .await;
        assert!(status.message().contains("version 1"), "{status:?}");
    }
    // The right expected_version is accepted.
    let mut current = request_supplement("HS-R2", at);
    current.expected_version = Some(1);
    let answer = ok(
        Call::RequestSupplement(current.clone()),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    assert_eq!(answer.event().version, 2);

    // An event id reused for another request.
    let mut reuse = stop_processing("HS-R2", at);
    reuse.event_id = current.event_id.clone();
    refused(
        &env,
        &mut client,
        Some(COUNTER_DISTRICT),
        &Call::Stop(reuse),
        Code::AlreadyExists,
        Some("event_id_reused"),
    )
    .await;
    let mut other_reason = current.clone();
    other_reason.reason = "Another reason".to_owned();
    refused(
        &env,
        &mut client,
        Some(COUNTER_DISTRICT),
        &Call::RequestSupplement(other_reason),
        Code::AlreadyExists,
        Some("event_id_reused"),
    )
    .await;

    assert_eq!(
        types(&env.events("HS-R1").await),
        [
            "received",
            "supplement_requested",
            "supplement_received",
            "resolved"
        ]
    );
    assert_eq!(
        types(&env.events("HS-R2").await),
        ["received", "supplement_requested"]
    );
    assert!(env.events("HS-NEVER-RECEIVED").await.is_empty());
}

// --- concurrency and retries -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_clients_resolving_at_once_exactly_one_wins() {
    let env = env(SupplementPolicy::Restart).await;
    let mut a = env.client().await;
    let mut b = env.client().await;
    let received = local(2024, 4, 22, 9, 0);
    for i in 0..10 {
        let id = format!("HS-RACE-{i}");
        env.receive(&id, received, 3).await;
        let at = local(2024, 4, 23, 10, 0);
        let (first, second) = tokio::join!(
            a.resolve(authed(
                COUNTER_DISTRICT,
                resolve(&id, at, pb::Outcome::Approved)
            )),
            b.resolve(authed(
                COUNTER_DISTRICT,
                resolve(&id, at, pb::Outcome::Refused)
            )),
        );
        let (winner, loser) = match (first, second) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner(), l),
            other => panic!("{id}: exactly one must succeed, got {other:?}"),
        };
        assert_eq!(loser.code(), Code::FailedPrecondition, "{loser:?}");
        assert_eq!(
            loser.get_details_error_info().expect("ErrorInfo").reason,
            Refusal::AlreadyResolved.code()
        );
        let events = env.events(&id).await;
        assert_eq!(types(&events), ["received", "resolved"], "{id}");
        assert_eq!(
            events[1].event_id.to_string(),
            winner.event.expect("event").event_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_rpc_retried_with_the_same_event_id_gives_the_same_answer_and_stores_one_event() {
    let env = env(SupplementPolicy::Extend).await;
    let mut client = env.client().await;
    let received = local(2024, 4, 22, 9, 0);
    let t = |d, h| local(2024, 4, d, h, 0);
    for id in ["HS-RETRY-1", "HS-RETRY-2", "HS-RETRY-3"] {
        env.receive(id, received, 3).await;
    }
    let calls = [
        Call::Transfer(transfer(
            "HS-RETRY-1",
            t(22, 10),
            PROVINCE_AGENCY,
            pb::TransferMode::Electronic,
        )),
        Call::RequestSupplement(request_supplement("HS-RETRY-1", t(22, 11))),
        Call::ReceiveSupplement(receive_supplement("HS-RETRY-1", t(23, 11))),
        Call::Resolve(resolve("HS-RETRY-1", t(24, 10), pb::Outcome::Approved)),
        Call::Withdraw(withdraw("HS-RETRY-2", t(22, 10))),
        Call::Stop(stop_processing("HS-RETRY-3", t(22, 10))),
    ];
    let mut originals = Vec::new();
    for call in &calls {
        let before = env.head().await;
        let first = ok(call.clone(), &mut client, COUNTER_DISTRICT).await;
        assert!(!first.event().duplicate);
        assert_eq!(env.head().await, before + 1, "{}", call.name());
        let again = ok(call.clone(), &mut client, COUNTER_DISTRICT).await;
        assert!(again.event().duplicate, "{}", call.name());
        assert_eq!(again.as_original(), first, "{}", call.name());
        assert_eq!(env.head().await, before + 1, "{}: retry wrote", call.name());
        originals.push(first);
    }
    // Retried after the dossier moved on, every RPC still gets its original answer.
    let head = env.head().await;
    for (call, first) in calls.iter().zip(&originals) {
        let again = ok(call.clone(), &mut client, COUNTER_DISTRICT).await;
        assert_eq!(again.as_original(), *first, "{}", call.name());
    }
    assert_eq!(env.head().await, head);
    let Answer::Supplement(s) = &originals[2] else {
        panic!("not a supplement answer");
    };
    assert_eq!(s.paused_minutes, 8 * 60);
    let Answer::Resolve(r) = &originals[3] else {
        panic!("not a resolve answer");
    };
    // Extend: due Thu 25 Apr 09:00 + 8 h paused = Fri 26 Apr 09:00; resolved Wed 24: early.
    assert_eq!(utc(r.due_at.as_ref()), local(2024, 4, 26, 9, 0));
    assert_eq!(r.timeliness, pb::Timeliness::Early as i32);

    // Identical requests racing each other: one event, both told the same.
    env.receive("HS-RETRY-4", received, 3).await;
    let call = Call::Resolve(resolve("HS-RETRY-4", t(23, 10), pb::Outcome::Approved));
    let mut other = env.client().await;
    let (x, y) = tokio::join!(
        call.send(&mut client, Some(COUNTER_DISTRICT)),
        call.send(&mut other, Some(COUNTER_DISTRICT))
    );
    let (x, y) = (x.expect("first"), y.expect("second"));
    assert_eq!(x.as_original(), y.as_original());
    assert!(x.event().duplicate != y.event().duplicate);
    assert_eq!(
        types(&env.events("HS-RETRY-4").await),
        ["received", "resolved"]
    );
    for (call, first) in calls.iter().zip(&originals) {
        assert_eq!(call.event_id(), first.event().event_id);
    }
}

// --- publication ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processing_events_arrive_on_their_documented_subjects() {
    let env = env(SupplementPolicy::Restart).await;
    let nats = TestNats::new().await;
    let mut relay =
        RunningRelay::start(env.log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let mut client = env.client().await;
    let received = local(2024, 4, 22, 9, 0);
    let t = |d, h| local(2024, 4, d, h, 0);
    for id in ["HS-PUB-1", "HS-PUB-2", "HS-PUB-3", "HS-PUB-4"] {
        env.receive(id, received, 3).await;
    }
    let calls = [
        Call::Transfer(transfer(
            "HS-PUB-1",
            t(22, 10),
            PROVINCE_AGENCY,
            pb::TransferMode::Electronic,
        )),
        Call::RequestSupplement(request_supplement("HS-PUB-1", t(22, 11))),
        Call::ReceiveSupplement(receive_supplement("HS-PUB-1", t(23, 11))),
        Call::Resolve(resolve("HS-PUB-1", t(24, 10), pb::Outcome::Approved)),
        Call::Withdraw(withdraw("HS-PUB-2", t(22, 10))),
        Call::Stop(stop_processing("HS-PUB-3", t(22, 10))),
    ];
    let mut expected = BTreeMap::new();
    for call in calls {
        let answer = ok(call, &mut client, COUNTER_DISTRICT).await;
        let event = answer.event();
        expected.insert(event.event_id.clone(), event.event_type.clone());
    }
    // HS-PUB-4 falls due Thu 25 Apr 09:00; the watcher records it late.
    let clock = ManualClock::new(local(2024, 4, 25, 9, 1));
    let report = watcher(&env.log, clock).await.tick().await.expect("tick");
    assert_eq!(report.marked, ["HS-PUB-4"]);
    let late = env.late_events("HS-PUB-4").await;
    expected.insert(late[0].event_id.to_string(), "late".to_owned());

    let head = env.head().await;
    relay.wait_published(head, Duration::from_secs(60)).await;
    let js = jetstream::new(nats.client.clone());
    let stream = js.get_stream(&nats.stream).await.expect("stream");
    let state = stream.cached_info().state.clone();
    let mut seen = BTreeMap::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let id = message
            .headers
            .get_last("Nats-Msg-Id")
            .expect("Nats-Msg-Id")
            .as_str()
            .to_owned();
        seen.insert(id, message.subject.to_string());
    }
    for (id, event_type) in &expected {
        // The agency token is the receiving district's, whoever holds the dossier now.
        assert_eq!(
            seen.get(id),
            Some(&format!(
                "{}.district.000_00_12_H40.land.{event_type}",
                nats.prefix
            )),
            "{event_type}"
        );
    }
    assert_eq!(seen.len() as i64, head, "every event exactly once");
    relay.stop().await;
}

// --- the deadline watcher --------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_marks_a_dossier_late_exactly_once_at_its_due_time() {
    let env = env(SupplementPolicy::Restart).await;
    let due = env.receive("HS-LATE-1", local(2024, 4, 22, 9, 0), 3).await;
    assert_eq!(due, local(2024, 4, 25, 9, 0));
    let clock = ManualClock::new(due - chrono::Duration::minutes(1));
    let watcher = watcher(&env.log, clock.clone()).await;

    let report = watcher.tick().await.expect("tick");
    assert_eq!(report.applied, 1);
    assert!(report.marked.is_empty());
    // At the due time itself it is not late yet.
    clock.set(due);
    assert!(watcher.tick().await.expect("tick").marked.is_empty());
    assert!(env.late_events("HS-LATE-1").await.is_empty());

    clock.advance(chrono::Duration::seconds(1));
    let report = watcher.tick().await.expect("tick");
    assert_eq!(report.marked, ["HS-LATE-1"]);
    let late = env.late_events("HS-LATE-1").await;
    assert_eq!(late.len(), 1);
    // Its business time is the due time itself; recorded when noticed.
    assert_eq!(late[0].occurred_at, due);
    assert_eq!(body(&late[0]), DossierEvent::Late { due_at: due });
    assert_eq!(late[0].event_id, mark_late_event_id("HS-LATE-1", due));
    let head = env.head().await;

    // Ticking again, later, writes nothing.
    clock.advance(chrono::Duration::days(3));
    let report = watcher.tick().await.expect("tick");
    assert!(report.marked.is_empty());
    assert!(watcher.tick().await.expect("tick").marked.is_empty());
    assert_eq!(env.head().await, head);
    assert_eq!(env.late_events("HS-LATE-1").await.len(), 1);

    // A late dossier can still be resolved, and is judged late.
    let answer = env
        .client()
        .await
        .resolve(authed(
            COUNTER_DISTRICT,
            resolve(
                "HS-LATE-1",
                local(2024, 4, 26, 10, 0),
                pb::Outcome::Approved,
            ),
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(answer.timeliness, pb::Timeliness::Late as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_counters_resolution_withdraws_the_watchers_late_mark_once() {
    let env = env(SupplementPolicy::Restart).await;
    let due = env
        .receive("HS-OFFLINE-1", local(2024, 4, 22, 9, 0), 3)
        .await;
    // The counter resolved it on Wed 24 Apr, offline; the watcher marks it late after the due
    // time, before the resolution reaches the server.
    let clock = ManualClock::new(due + chrono::Duration::minutes(5));
    let watcher = watcher(&env.log, clock.clone()).await;
    assert_eq!(watcher.tick().await.expect("tick").marked, ["HS-OFFLINE-1"]);
    let mut client = env.client().await;
    let request = resolve(
        "HS-OFFLINE-1",
        local(2024, 4, 24, 15, 0),
        pb::Outcome::Approved,
    );
    let answer = client
        .resolve(authed(COUNTER_DISTRICT, request.clone()))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(answer.timeliness, pb::Timeliness::Early as i32);
    assert!(answer.late_withdrawn);
    let events = env.events("HS-OFFLINE-1").await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["received", "late", "resolved", "late_withdrawn"]);
    assert_eq!(
        body(&events[3]),
        DossierEvent::LateWithdrawn {
            due_at: due,
            timeliness: calendar::Timeliness::Early,
        }
    );
    assert_eq!(events[3].occurred_at, local(2024, 4, 24, 15, 0));
    let head = env.head().await;

    // The counter retries (it never saw the answer): the same events, nothing new; the
    // watcher, ticking later, writes nothing either.
    let again = client
        .resolve(authed(COUNTER_DISTRICT, request))
        .await
        .expect("retry")
        .into_inner();
    assert!(again.event.expect("event").duplicate);
    assert!(again.late_withdrawn);
    clock.advance(chrono::Duration::days(2));
    let report = watcher.tick().await.expect("tick");
    assert!(
        report.marked.is_empty() && report.refused.is_empty(),
        "{report:?}"
    );
    assert_eq!(env.head().await, head);

    // The status every reader folds: not marked late, resolved early.
    let state = domain::Dossier::from_events(events.iter().map(|e| domain::Event {
        occurred_at: e.occurred_at,
        body: body(e),
    }));
    assert!(!state.late_marked && state.late_withdrawn);
    assert_eq!(
        state.resolution.map(|r| r.timeliness),
        Some(calendar::Timeliness::Early)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_leaves_paused_resolved_and_ended_dossiers_alone() {
    let env = env(SupplementPolicy::Restart).await;
    let mut client = env.client().await;
    let received = local(2024, 4, 22, 9, 0);
    let before_due = local(2024, 4, 24, 10, 0);
    for id in ["HS-PAUSED", "HS-DONE", "HS-GONE", "HS-HALTED"] {
        env.receive(id, received, 3).await;
    }
    ok(
        Call::RequestSupplement(request_supplement("HS-PAUSED", before_due)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    ok(
        Call::Resolve(resolve("HS-DONE", before_due, pb::Outcome::Approved)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    ok(
        Call::Withdraw(withdraw("HS-GONE", before_due)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;
    ok(
        Call::Stop(stop_processing("HS-HALTED", before_due)),
        &mut client,
        COUNTER_DISTRICT,
    )
    .await;

    // Long past every due time: nothing to mark.
    let clock = ManualClock::new(local(2024, 5, 20, 9, 0));
    let watcher = watcher(&env.log, clock.clone()).await;
    let head = env.head().await;
    let report = watcher.tick().await.expect("tick");
    assert!(report.marked.is_empty(), "{report:?}");
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(env.head().await, head);

    // The supplement arrives Mon 20 May 09:00: 3 working days again, due Thu 23 May 09:00.
    let answer = client
        .receive_supplement(authed(
            COUNTER_DISTRICT,
            receive_supplement("HS-PAUSED", local(2024, 5, 20, 9, 0)),
        ))
        .await
        .expect("receive supplement")
        .into_inner();
    let new_due = utc(answer.due_at.as_ref());
    assert_eq!(new_due, local(2024, 5, 23, 9, 0));
    clock.set(new_due);
    assert!(watcher.tick().await.expect("tick").marked.is_empty());
    clock.set(new_due + chrono::Duration::minutes(1));
    let report = watcher.tick().await.expect("tick");
    assert_eq!(report.marked, ["HS-PAUSED"]);
    let late = env.late_events("HS-PAUSED").await;
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].occurred_at, new_due);
    for id in ["HS-DONE", "HS-GONE", "HS-HALTED"] {
        assert!(env.late_events(id).await.is_empty(), "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_watchers_ticking_at_once_record_one_late_per_dossier() {
    let env = env(SupplementPolicy::Restart).await;
    let received = local(2024, 4, 22, 9, 0);
    let ids: Vec<String> = (0..25).map(|i| format!("HS-TWO-{i:02}")).collect();
    for id in &ids {
        env.receive(id, received, 3).await;
    }
    let clock = ManualClock::new(local(2024, 4, 26, 9, 0));
    // Two instances, each with its own connection pool, as two processes would have.
    let other_log = EventLog::connect(&env.db.url, 4).await.expect("connect");
    let first = watcher(&env.log, clock.clone()).await;
    let second = watcher(&other_log, clock.clone()).await;

    let (a, b) = tokio::join!(first.tick(), second.tick());
    let (a, b) = (a.expect("first tick"), b.expect("second tick"));
    let marked: BTreeSet<&String> = a.marked.iter().chain(&b.marked).collect();
    assert_eq!(
        a.marked.len() + b.marked.len(),
        ids.len(),
        "each dossier marked by exactly one watcher: {a:?} {b:?}"
    );
    assert_eq!(marked, ids.iter().collect());
    // Whatever one watcher wrote, the other was told was done (duplicate or already late).
    assert!(a.failed.is_empty() && b.failed.is_empty());
    for id in &ids {
        let late = env.late_events(id).await;
        assert_eq!(late.len(), 1, "{id}");
        assert_eq!(late[0].occurred_at, local(2024, 4, 25, 9, 0));
    }
    // They share one read model: together they applied each position of the log exactly once
    // (the receptions, and whichever `late` events one wrote before the other caught up).
    assert!(a.applied + b.applied >= ids.len() as u64);
    assert_eq!(
        a.applied + b.applied,
        a.position.max(b.position) as u64,
        "{a:?} {b:?}"
    );

    // And again, concurrently: nothing more.
    let head = env.head().await;
    let (a, b) = tokio::join!(first.tick(), second.tick());
    assert!(a.expect("tick").marked.is_empty() && b.expect("tick").marked.is_empty());
    assert_eq!(env.head().await, head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dossier_that_fell_due_while_no_watcher_ran_is_marked_late_on_the_first_tick() {
    let env = env(SupplementPolicy::Restart).await;
    let received = local(2024, 4, 22, 9, 0);
    env.receive("HS-DOWN-1", received, 3).await;

    // A watcher runs before the due time, then goes away.
    let before = watcher(&env.log, ManualClock::new(local(2024, 4, 24, 9, 0))).await;
    let report = before.tick().await.expect("tick");
    assert_eq!((report.applied, report.marked.len()), (1, 0));
    drop(before);

    // While none runs, another dossier is received and both fall due.
    env.receive("HS-DOWN-2", received, 2).await;

    // A new instance, started with the clock past both due times, marks both on its first
    // tick, continuing the read model from where the last one stopped.
    let after = watcher(&env.log, ManualClock::new(local(2024, 5, 2, 9, 0))).await;
    let report = after.tick().await.expect("tick");
    assert_eq!(
        report.applied, 1,
        "only the event appended while it was down"
    );
    assert_eq!(
        report.marked,
        ["HS-DOWN-2", "HS-DOWN-1"],
        "in due-time order"
    );
    assert_eq!(
        env.late_events("HS-DOWN-1").await[0].occurred_at,
        local(2024, 4, 25, 9, 0)
    );
    assert_eq!(
        env.late_events("HS-DOWN-2").await[0].occurred_at,
        local(2024, 4, 24, 9, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_the_watcher_next_to_grpc_and_marks_on_start() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let due = {
        let answer = intake
            .client()
            .await
            .receive_dossier(authed(
                COUNTER_DISTRICT,
                receive_days("HS-APP-1", local(2024, 4, 22, 9, 0), 3),
            ))
            .await
            .expect("receive")
            .into_inner();
        utc(answer.due_at.as_ref())
    };

    // The service starts after the due time (the clock says so): its watcher catches up and
    // records `late` at once, without waiting an interval.
    let mut deps = svc::ServiceDeps::for_tests(log.clone(), processing_tokens());
    deps.clock = ManualClock::new(local(2024, 4, 26, 9, 0)) as Arc<dyn writepath::Clock>;
    let service = RunningProcessing::start_with(
        deps,
        Some(WatcherConfig {
            interval: Duration::from_secs(3600),
            ..WatcherConfig::default()
        }),
    )
    .await;
    wait_for_head(&log, 2, Duration::from_secs(30)).await;
    let events = log.load_dossier("HS-APP-1").await.expect("load");
    assert_eq!(types(&events), ["received", "late"]);
    assert_eq!(events[1].occurred_at, due);

    // gRPC is served by the same process, and it stops cleanly with its watcher.
    let answer = service
        .client()
        .await
        .resolve(authed(
            COUNTER_DISTRICT,
            resolve("HS-APP-1", local(2024, 4, 26, 8, 0), pb::Outcome::Approved),
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(answer.timeliness, pb::Timeliness::Late as i32);
    service.stop().await;
    intake.stop().await;
}
