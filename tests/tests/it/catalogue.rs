//! The procedure catalogue through real gRPC, against real PostgreSQL: the administrator's
//! `CatalogueService` (who may publish, all-or-nothing validation, idempotent republication,
//! versions by effective date), reception with only the procedure code and the
//! `catalogue_mismatch` refusal, the supplement limit, the financial obligation pausing the
//! clock or not, and the deadline watcher's automatic closing (exactly once with two watchers,
//! across the 2024 Reunification/Labour Day break, never once the supplement arrived).
//! Watchers tick on a clock the test sets, so nothing sleeps.

use std::collections::BTreeSet;

use api::v1 as pb;
use api::v1::catalogue_service_client::CatalogueServiceClient;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::{DossierEvent, ProcedureRules, Refusal, StopCause, SupplementPolicy};
use eventlog::{EventLog, StoredEvent};
use processing::CLOSE_NAMESPACE;
use testkit::TestDb;
use tests::processing::{
    ManualClock, RunningProcessing, fulfil_obligation, receive_supplement, request_obligation,
    request_supplement, resolve, watcher,
};
use tests::{
    ADMIN, AUDITOR, COUNTER_DISTRICT, RunningIntake, authed, local, new_event_id, receive_request,
    ts,
};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// One test's world: a fresh database, intake (with the catalogue) and processing over it.
struct Env {
    log: EventLog,
    intake: RunningIntake,
    processing: RunningProcessing,
    db: TestDb,
}

async fn env() -> Env {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let processing = RunningProcessing::start(log.clone(), SupplementPolicy::Restart).await;
    Env {
        log,
        intake,
        processing,
        db,
    }
}

impl Env {
    async fn catalogue(&self) -> CatalogueServiceClient<Channel> {
        self.intake.catalogue_client().await
    }

    async fn head(&self) -> i64 {
        self.log.head().await.expect("head")
    }

    async fn events(&self, dossier_id: &str) -> Vec<StoredEvent> {
        self.log.load_dossier(dossier_id).await.expect("load")
    }

    /// Publishes `definitions` as the administrator; returns their versions.
    async fn publish(&self, definitions: Vec<pb::ProcedureDefinition>) -> Vec<u64> {
        self.catalogue()
            .await
            .publish_procedures(authed(
                ADMIN,
                pb::PublishProceduresRequest {
                    procedures: definitions,
                },
            ))
            .await
            .expect("publish")
            .into_inner()
            .versions
    }

    /// Receives `dossier_id` at the district counter stating only the procedure code.
    async fn receive_by_code(
        &self,
        dossier_id: &str,
        code: &str,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, Status> {
        let answer = self
            .intake
            .client()
            .await
            .receive_dossier(authed(COUNTER_DISTRICT, by_code(dossier_id, code, at)))
            .await?
            .into_inner();
        Ok(utc(answer.due_at.as_ref()))
    }

    /// Checks that `call` failed with `code` (and the ErrorInfo `reason`) and wrote nothing
    /// since `before`.
    async fn refused(
        &self,
        call: Result<impl std::fmt::Debug, Status>,
        before: i64,
        code: Code,
        reason: Option<&str>,
    ) -> Status {
        let status = call.expect_err("must be refused");
        tests::assert_details_agree(&status);
        assert_eq!(status.code(), code, "{status:?}");
        if let Some(reason) = reason {
            let info = status
                .get_details_error_info()
                .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
            assert_eq!(info.reason, reason, "{}", status.message());
            assert_eq!(info.domain, "dossier.v1");
        }
        assert_eq!(
            self.head().await,
            before,
            "refused but something was written"
        );
        status
    }
}

fn utc(t: Option<&api::Timestamp>) -> DateTime<Utc> {
    svc::status::timestamp("t", t).expect("a valid timestamp")
}

fn body(event: &StoredEvent) -> DossierEvent {
    DossierEvent::from_parts(&event.event_type, &event.payload).expect("decodes")
}

fn of_type<'a>(events: &'a [StoredEvent], event_type: &str) -> Vec<&'a StoredEvent> {
    events
        .iter()
        .filter(|e| e.event_type == event_type)
        .collect()
}

fn days(n: u32) -> Option<pb::StatutoryTime> {
    Some(pb::StatutoryTime {
        unit: Some(pb::statutory_time::Unit::WorkingDays(n)),
    })
}

/// A land procedure: 3 working days, partially online, with a fee, `restart`, unlimited
/// supplements, nothing automatic; in force from 1 January 2024.
fn definition(code: &str) -> pb::ProcedureDefinition {
    pb::ProcedureDefinition {
        code: code.to_owned(),
        name: "Đăng ký biến động đất đai".to_owned(),
        sector_code: "land".to_owned(),
        statutory_time: days(3),
        online_level: pb::OnlineServiceLevel::PartialOnline as i32,
        fee_required: true,
        supplement_policy: pb::SupplementPolicy::Restart as i32,
        max_supplement_requests: None,
        close_after_working_days: None,
        same_day_cutoff: String::new(),
        obligation_pauses_clock: false,
        effective_from: Some(ts(local(2024, 1, 1, 0, 0))),
    }
}

/// A reception stating only the procedure code (and who, how, what was submitted).
fn by_code(dossier_id: &str, code: &str, at: DateTime<Utc>) -> pb::ReceiveDossierRequest {
    let mut request = receive_request(dossier_id, at);
    let profile = request.profile.as_mut().expect("profile");
    profile.procedure_code = code.to_owned();
    profile.online_level = pb::OnlineServiceLevel::Unspecified as i32;
    profile.sector_code = String::new();
    request.statutory_time = None;
    request.fee_required = false;
    request
}

fn rules_of(events: &[StoredEvent]) -> Option<ProcedureRules> {
    match body(&events[0]) {
        DossierEvent::Received { procedure, .. } => procedure,
        other => panic!("not a reception: {other:?}"),
    }
}

// --- the administrator's catalogue --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_publish_a_whole_valid_catalogue_and_versions_apply_from_their_date() {
    let env = env().await;
    let mut client = env.catalogue().await;
    let publish = |definitions: Vec<pb::ProcedureDefinition>| pb::PublishProceduresRequest {
        procedures: definitions,
    };
    let get = |code: &str, at: DateTime<Utc>| pb::GetProcedureRequest {
        code: code.to_owned(),
        at: Some(ts(at)),
    };
    let v1 = definition("1.000001");

    // Who may publish: administrators only.
    let status = client
        .publish_procedures(tonic::Request::new(publish(vec![v1.clone()])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    for token in [COUNTER_DISTRICT, AUDITOR] {
        let status = client
            .publish_procedures(authed(token, publish(vec![v1.clone()])))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{token}");
    }
    // An administrator token writes no dossier.
    let status = env
        .intake
        .client()
        .await
        .receive_dossier(authed(
            ADMIN,
            by_code("HS-ADMIN", "1.000001", local(2024, 4, 22, 9, 0)),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // One invalid definition refuses the whole request, naming it; nothing is stored.
    let mut bad = definition("1.000002");
    bad.statutory_time = days(0);
    let status = client
        .publish_procedures(authed(ADMIN, publish(vec![v1.clone(), bad])))
        .await
        .unwrap_err();
    tests::assert_details_agree(&status);
    assert_eq!(status.code(), Code::InvalidArgument);
    let violation = &status
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations[0];
    assert_eq!(violation.field, "procedures[1].statutory_time.working_days");
    let mut cutoff = definition("1.000003");
    cutoff.same_day_cutoff = "15:00".to_owned();
    let status = client
        .publish_procedures(authed(ADMIN, publish(vec![cutoff])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations[0]
            .field,
        "procedures[0].same_day_cutoff",
        "a cut-off only for same-day procedures"
    );
    let status = client
        .publish_procedures(authed(ADMIN, publish(vec![])))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .get_procedure(authed(AUDITOR, get("1.000001", local(2024, 6, 1, 0, 0))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.get_details_error_info().expect("ErrorInfo").reason,
        "unknown_procedure"
    );

    // Published; the same definition again writes nothing and answers the same version.
    let first = client
        .publish_procedures(authed(ADMIN, publish(vec![v1.clone()])))
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(first.published, 1);
    let again = client
        .publish_procedures(authed(ADMIN, publish(vec![v1.clone()])))
        .await
        .expect("publish again")
        .into_inner();
    assert_eq!((again.published, &again.versions), (0, &first.versions));

    // A new rule from 1 May 2024: 5 working days, at most two supplement requests.
    let mut v2 = definition("1.000001");
    v2.statutory_time = days(5);
    v2.max_supplement_requests = Some(2);
    v2.effective_from = Some(ts(local(2024, 5, 1, 0, 0)));
    let second = client
        .publish_procedures(authed(ADMIN, publish(vec![v2.clone()])))
        .await
        .expect("publish v2")
        .into_inner();
    assert_eq!(second.published, 1);
    assert!(second.versions[0] > first.versions[0]);

    // Each instant sees the version in force then; who published it is recorded.
    for (at, version, definition) in [
        (local(2024, 4, 30, 23, 59), first.versions[0], &v1),
        (local(2024, 5, 1, 0, 0), second.versions[0], &v2),
    ] {
        let answer = client
            .get_procedure(authed(AUDITOR, get("1.000001", at)))
            .await
            .expect("in force")
            .into_inner();
        assert_eq!(answer.version, version, "{at}");
        assert_eq!(answer.definition.as_ref(), Some(definition), "{at}");
        assert_eq!(answer.recorded_by, "catalogue admin");
    }
    let status = client
        .get_procedure(authed(
            AUDITOR,
            get("1.000001", local(2023, 12, 31, 23, 59)),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::NotFound,
        "nothing in force before 2024"
    );

    // Receptions on either side of the change keep the version they were received under.
    let due = env
        .receive_by_code("HS-V1", "1.000001", local(2024, 4, 22, 9, 0))
        .await
        .expect("received under v1");
    assert_eq!(due, local(2024, 4, 25, 9, 0), "3 working days");
    let due = env
        .receive_by_code("HS-V2", "1.000001", local(2024, 5, 6, 9, 0))
        .await
        .expect("received under v2");
    assert_eq!(due, local(2024, 5, 13, 9, 0), "5 working days");
    assert_eq!(
        rules_of(&env.events("HS-V1").await).map(|r| r.catalogue_version),
        Some(first.versions[0])
    );
    let rules = rules_of(&env.events("HS-V2").await).expect("catalogued");
    assert_eq!(rules.catalogue_version, second.versions[0]);
    assert_eq!(rules.max_supplement_requests, Some(2));
}

/// How long a test waits for another intake to hear of a publication.
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Receives `dossier_id` through `intake` stating only the procedure code (as
/// [`Env::receive_by_code`], for another intake than the environment's).
async fn receive_code_through(
    intake: &RunningIntake,
    dossier_id: &str,
    code: &str,
    at: DateTime<Utc>,
) -> Result<(), Status> {
    intake
        .client()
        .await
        .receive_dossier(authed(COUNTER_DISTRICT, by_code(dossier_id, code, at)))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_reaches_the_next_reception_of_its_intake_at_once_and_another_intake_soon() {
    let env = env().await;
    // A second intake over the same database: another process of the same installation.
    let other = RunningIntake::start(EventLog::from_pool(env.db.pool.clone())).await;
    let at = local(2024, 4, 22, 9, 0);
    // Not catalogued yet: a reception stating only the code is refused by both, and both now
    // hold "no version" for the code in their catalogue caches.
    for (intake, id) in [(&env.intake, "HS-N1"), (&other, "HS-N2")] {
        let before = env.head().await;
        let call = receive_code_through(intake, id, "1.000001", at).await;
        env.refused(call, before, Code::InvalidArgument, None).await;
    }
    // Published through the first intake: its very next reception is completed from it.
    let versions = env.publish(vec![definition("1.000001")]).await;
    receive_code_through(&env.intake, "HS-PUBLISHER", "1.000001", at)
        .await
        .expect("the publishing intake sees its publication at once");
    // The other intake learns of it from the table's notification.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let id = format!("HS-OTHER-{attempt}");
        match receive_code_through(&other, &id, "1.000001", at).await {
            Ok(()) => {
                let rules = rules_of(&env.events(&id).await).expect("catalogued");
                assert_eq!(rules.catalogue_version, versions[0]);
                break;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the other intake did not see the publication within {WAIT:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

// --- reception --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reception_by_procedure_code_is_completed_from_the_catalogue_and_checked_against_it() {
    let env = env().await;
    let mut free = definition("1.000010");
    free.fee_required = false;
    let versions = env.publish(vec![definition("1.000001"), free]).await;
    let at = local(2024, 4, 22, 9, 0);

    // Only the code: everything else from the catalogue.
    let due = env
        .receive_by_code("HS-CODE", "1.000001", at)
        .await
        .expect("received");
    assert_eq!(due, local(2024, 4, 25, 9, 0));
    let events = env.events("HS-CODE").await;
    let DossierEvent::Received {
        profile,
        statutory_time,
        fee_required,
        procedure,
        ..
    } = body(&events[0])
    else {
        panic!("not a reception");
    };
    assert_eq!(profile.sector.as_str(), "land");
    assert_eq!(
        profile.online_level,
        domain::OnlineServiceLevel::PartialOnline
    );
    assert_eq!(statutory_time, calendar::StatutoryTime::Days(3));
    assert!(fee_required);
    assert_eq!(
        procedure,
        Some(ProcedureRules {
            catalogue_version: versions[0],
            supplement_policy: SupplementPolicy::Restart,
            max_supplement_requests: None,
            close_after_working_days: None,
            same_day_cutoff: None,
            obligation_pauses_clock: false,
        })
    );

    // The full profile, agreeing with the catalogue, as existing clients send it.
    let mut full = receive_request("HS-FULL", at);
    full.profile.as_mut().unwrap().procedure_code = "1.000001".to_owned();
    full.profile.as_mut().unwrap().online_level = pb::OnlineServiceLevel::PartialOnline as i32;
    env.intake
        .client()
        .await
        .receive_dossier(authed(COUNTER_DISTRICT, full.clone()))
        .await
        .expect("the agreeing full profile");
    assert_eq!(
        rules_of(&env.events("HS-FULL").await).map(|r| r.catalogue_version),
        Some(versions[0])
    );

    // Disagreements: FAILED_PRECONDITION `catalogue_mismatch`, naming the field and version.
    let mismatches: Vec<(&str, u64, pb::ReceiveDossierRequest)> = vec![
        ("profile.sector_code", versions[0], {
            let mut r = by_code("HS-X1", "1.000001", at);
            r.profile.as_mut().unwrap().sector_code = "tax".to_owned();
            r
        }),
        ("profile.online_level", versions[0], {
            let mut r = by_code("HS-X2", "1.000001", at);
            r.profile.as_mut().unwrap().online_level = pb::OnlineServiceLevel::FullOnline as i32;
            r
        }),
        ("statutory_time", versions[0], {
            let mut r = by_code("HS-X3", "1.000001", at);
            r.statutory_time = days(4);
            r
        }),
        ("fee_required", versions[1], {
            let mut r = by_code("HS-X4", "1.000010", at);
            r.fee_required = true;
            r
        }),
        ("fee_required", versions[0], {
            // A full profile states `fee_required: false`, which the catalogue contradicts.
            let mut r = full.clone();
            r.dossier_id = "HS-X5".to_owned();
            r.event_id = new_event_id();
            r.fee_required = false;
            r
        }),
    ];
    for (field, version, request) in mismatches {
        let before = env.head().await;
        let call = env
            .intake
            .client()
            .await
            .receive_dossier(authed(COUNTER_DISTRICT, request))
            .await;
        let status = env
            .refused(
                call,
                before,
                Code::FailedPrecondition,
                Some("catalogue_mismatch"),
            )
            .await;
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.metadata["field"], field, "{}", status.message());
        assert_eq!(info.metadata["catalogue_version"], version.to_string());
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // A procedure outside the catalogue: the full profile is accepted as before (no rules
    // recorded), a partial one is INVALID_ARGUMENT naming the first missing field.
    let before = env.head().await;
    let call = env.receive_by_code("HS-UNKNOWN", "9.999999", at).await;
    let status = env.refused(call, before, Code::InvalidArgument, None).await;
    assert_eq!(
        status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations[0]
            .field,
        "profile.online_level"
    );
    let mut unknown = receive_request("HS-UNKNOWN", at);
    unknown.profile.as_mut().unwrap().procedure_code = "9.999999".to_owned();
    env.intake
        .client()
        .await
        .receive_dossier(authed(COUNTER_DISTRICT, unknown))
        .await
        .expect("an uncatalogued procedure with the full profile");
    assert_eq!(rules_of(&env.events("HS-UNKNOWN").await), None);
    // Before the procedure's first version it is not in the catalogue either.
    let before = env.head().await;
    let call = env
        .receive_by_code("HS-EARLY", "1.000001", local(2023, 12, 29, 9, 0))
        .await;
    env.refused(call, before, Code::InvalidArgument, None).await;
}

// --- supplements by the procedure's rules -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplement_request_beyond_the_procedures_maximum_is_refused_with_its_reason() {
    let env = env().await;
    let mut limited = definition("1.000020");
    limited.max_supplement_requests = Some(2);
    limited.supplement_policy = pb::SupplementPolicy::Extend as i32;
    let version = env.publish(vec![limited]).await[0];
    let at = local(2024, 4, 22, 9, 0);
    env.receive_by_code("HS-LIMIT", "1.000020", at)
        .await
        .expect("received");
    let mut client = env.processing.client().await;
    // The procedure's `extend` overrides the service's `restart`: each hour waited moves the
    // due time (Thu 25 Apr 09:00) one working hour later (restart would give Fri 26 11:00).
    for (k, due) in [local(2024, 4, 25, 10, 0), local(2024, 4, 25, 11, 0)]
        .into_iter()
        .enumerate()
    {
        let k = i64::try_from(k).unwrap();
        let asked = at + chrono::Duration::hours(1 + 24 * k);
        client
            .request_supplement(authed(
                COUNTER_DISTRICT,
                request_supplement("HS-LIMIT", asked),
            ))
            .await
            .expect("within the limit");
        let answer = client
            .receive_supplement(authed(
                COUNTER_DISTRICT,
                receive_supplement("HS-LIMIT", asked + chrono::Duration::hours(1)),
            ))
            .await
            .expect("received")
            .into_inner();
        assert_eq!(answer.paused_minutes, 60);
        assert_eq!(utc(answer.due_at.as_ref()), due);
    }
    let before = env.head().await;
    let call = client
        .request_supplement(authed(
            COUNTER_DISTRICT,
            request_supplement("HS-LIMIT", local(2024, 4, 24, 15, 0)),
        ))
        .await;
    let refusal = Refusal::SupplementLimitReached {
        max: 2,
        catalogue_version: version,
    };
    let status = env
        .refused(call, before, Code::FailedPrecondition, Some(refusal.code()))
        .await;
    assert_eq!(status.message(), refusal.to_string());
}

// --- the financial obligation (portal status 6) -----------------------------------------------
//
// Received Mon 22 Apr 2024 09:00 with 3 working days: due Thu 25 Apr 09:00. The obligation is
// requested Wed 24 Apr 10:00 and fulfilled Mon 6 May 10:00: Wed 5 h + Thu 8 h + Fri 8 h, then
// Sat 27 Apr – Wed 1 May off, Thu 2 May 8 h + Fri 3 May 8 h + Sat 4 May (worked that year) 8 h
// + Mon 3 h = 48 working hours. Where it pauses the clock, the due time moves 48 working hours
// later: Thu 25 Apr 09:00 + 6 h + 8 h (Fri) + 8 h (2 May) + 8 h (3 May) + 8 h (4 May) + 8 h
// (Mon 6) + 2 h = Tue 7 May 09:00.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_financial_obligation_pauses_the_clock_where_the_procedure_says_so() {
    let env = env().await;
    let mut pausing = definition("1.000030");
    pausing.obligation_pauses_clock = true;
    env.publish(vec![pausing, definition("1.000031")]).await;
    let received = local(2024, 4, 22, 9, 0);
    let requested = local(2024, 4, 24, 10, 0);
    let fulfilled = local(2024, 5, 6, 10, 0);
    let mut client = env.processing.client().await;
    for (id, code) in [("HS-PAUSES", "1.000030"), ("HS-RUNS", "1.000031")] {
        let due = env
            .receive_by_code(id, code, received)
            .await
            .expect("received");
        assert_eq!(due, local(2024, 4, 25, 9, 0));
        // Nothing to fulfil yet.
        let before = env.head().await;
        let call = client
            .fulfil_financial_obligation(authed(COUNTER_DISTRICT, fulfil_obligation(id, requested)))
            .await;
        env.refused(
            call,
            before,
            Code::FailedPrecondition,
            Some("no_financial_obligation_pending"),
        )
        .await;
        client
            .request_financial_obligation(authed(
                COUNTER_DISTRICT,
                request_obligation(id, requested),
            ))
            .await
            .expect("obligation requested");
        // While it is pending: no second one, no supplement request, no resolution.
        let before = env.head().await;
        let call = client
            .request_financial_obligation(authed(
                COUNTER_DISTRICT,
                request_obligation(id, requested),
            ))
            .await;
        env.refused(
            call,
            before,
            Code::FailedPrecondition,
            Some("financial_obligation_already_pending"),
        )
        .await;
        let call = client
            .request_supplement(authed(COUNTER_DISTRICT, request_supplement(id, requested)))
            .await;
        env.refused(
            call,
            before,
            Code::FailedPrecondition,
            Some("awaiting_financial_obligation"),
        )
        .await;
        let call = client
            .resolve(authed(
                COUNTER_DISTRICT,
                resolve(id, requested, pb::Outcome::Approved),
            ))
            .await;
        env.refused(
            call,
            before,
            Code::FailedPrecondition,
            Some("awaiting_financial_obligation"),
        )
        .await;
        let pauses = match body(of_type(&env.events(id).await, "financial_obligation_requested")[0])
        {
            DossierEvent::FinancialObligationRequested { pauses_clock, .. } => pauses_clock,
            other => panic!("{other:?}"),
        };
        assert_eq!(pauses, id == "HS-PAUSES", "{id}");
    }

    // The deadline passes while both wait: only the dossier whose clock runs is late.
    let clock = ManualClock::new(local(2024, 4, 26, 9, 0));
    let watcher = watcher(&env.log, clock.clone()).await;
    let report = watcher.tick().await.expect("tick");
    assert_eq!(report.marked, ["HS-RUNS"]);

    let answer = client
        .fulfil_financial_obligation(authed(
            COUNTER_DISTRICT,
            fulfil_obligation("HS-PAUSES", fulfilled),
        ))
        .await
        .expect("fulfilled")
        .into_inner();
    assert_eq!(answer.paused_minutes, 48 * 60);
    assert_eq!(utc(answer.due_at.as_ref()), local(2024, 5, 7, 9, 0));
    let answer = client
        .fulfil_financial_obligation(authed(
            COUNTER_DISTRICT,
            fulfil_obligation("HS-RUNS", fulfilled),
        ))
        .await
        .expect("fulfilled")
        .into_inner();
    assert_eq!(answer.paused_minutes, 0);
    assert_eq!(utc(answer.due_at.as_ref()), local(2024, 4, 25, 9, 0));

    // The moved due time is the one the watcher and the resolution go by.
    clock.set(local(2024, 5, 7, 9, 0));
    assert!(watcher.tick().await.expect("tick").marked.is_empty());
    let resolved = client
        .resolve(authed(
            COUNTER_DISTRICT,
            resolve("HS-PAUSES", local(2024, 5, 7, 8, 0), pb::Outcome::Approved),
        ))
        .await
        .expect("resolved")
        .into_inner();
    assert_eq!(resolved.timeliness, pb::Timeliness::OnTime as i32);
}

// --- automatic closing by the deadline watcher -----------------------------------------------
//
// The procedure closes a dossier 2 working days after an unanswered supplement request. Asked
// Fri 26 Apr 2024 10:00: Fri 5 h, then Sat 27 Apr – Wed 1 May off, Thu 2 May 8 h, Fri 3 May
// 3 h: it closes Fri 3 May 10:00.

fn close_key(dossier_id: &str, closes_at: DateTime<Utc>) -> String {
    format!(
        "{dossier_id}@{}",
        closes_at.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_watcher_closes_an_unanswered_supplement_request_exactly_once_after_n_working_days() {
    let env = env().await;
    let mut closing = definition("1.000040");
    closing.statutory_time = days(5);
    closing.close_after_working_days = Some(2);
    env.publish(vec![closing]).await;
    let received = local(2024, 4, 22, 9, 0);
    let asked = local(2024, 4, 26, 10, 0);
    let closes_at = local(2024, 5, 3, 10, 0);
    let closing_ids = ["HS-CLOSE-1", "HS-CLOSE-2", "HS-ANSWERED", "HS-TOO-LATE"];
    for id in closing_ids {
        env.receive_by_code(id, "1.000040", received)
            .await
            .expect("received");
    }
    // An uncatalogued procedure never closes by itself.
    let mut uncatalogued = receive_request("HS-FREE", received);
    uncatalogued.statutory_time = days(5);
    env.intake
        .client()
        .await
        .receive_dossier(authed(COUNTER_DISTRICT, uncatalogued))
        .await
        .expect("received");
    let mut client = env.processing.client().await;
    for id in closing_ids.iter().chain(&["HS-FREE"]) {
        client
            .request_supplement(authed(COUNTER_DISTRICT, request_supplement(id, asked)))
            .await
            .expect("supplement requested");
        let events = env.events(id).await;
        let expected = (*id != "HS-FREE").then_some(closes_at);
        assert_eq!(
            body(of_type(&events, "supplement_requested")[0]),
            DossierEvent::SupplementRequested {
                reason: domain::Text::parse("Thiếu bản sao giấy chứng nhận quyền sử dụng đất")
                    .unwrap(),
                closes_at: expected,
            },
            "{id}"
        );
    }
    // Answered in time: the clock runs again (restart: 5 working days from Thu 2 May 10:00).
    client
        .receive_supplement(authed(
            COUNTER_DISTRICT,
            receive_supplement("HS-ANSWERED", local(2024, 5, 2, 10, 0)),
        ))
        .await
        .expect("answered in time");
    // Answered a minute too late, before any watcher ran: refused, the closing stands.
    let before = env.head().await;
    let call = client
        .receive_supplement(authed(
            COUNTER_DISTRICT,
            receive_supplement("HS-TOO-LATE", closes_at + chrono::Duration::minutes(1)),
        ))
        .await;
    let status = env
        .refused(
            call,
            before,
            Code::FailedPrecondition,
            Some("supplement_deadline_passed"),
        )
        .await;
    assert_eq!(
        status.message(),
        Refusal::SupplementDeadlinePassed { closes_at }.to_string()
    );

    // Two watcher instances with their own pools, as two processes.
    let clock = ManualClock::new(closes_at);
    let other_log = EventLog::connect(&env.db.url, 4).await.expect("connect");
    let first = watcher(&env.log, clock.clone()).await;
    let second = watcher(&other_log, clock.clone()).await;
    // At the deadline itself nothing closes.
    let (a, b) = tokio::join!(first.tick(), second.tick());
    let (a, b) = (a.expect("tick"), b.expect("tick"));
    assert!(a.closed.is_empty() && b.closed.is_empty(), "{a:?} {b:?}");
    for id in closing_ids {
        assert!(of_type(&env.events(id).await, "stopped").is_empty(), "{id}");
    }

    clock.set(closes_at + chrono::Duration::seconds(1));
    let (a, b) = tokio::join!(first.tick(), second.tick());
    let (a, b) = (a.expect("tick"), b.expect("tick"));
    assert!(a.failed.is_empty() && b.failed.is_empty(), "{a:?} {b:?}");
    let closed: BTreeSet<&str> = a
        .closed
        .iter()
        .chain(&b.closed)
        .map(String::as_str)
        .collect();
    assert_eq!(
        a.closed.len() + b.closed.len(),
        3,
        "each dossier closed by exactly one watcher: {a:?} {b:?}"
    );
    assert_eq!(
        closed,
        BTreeSet::from(["HS-CLOSE-1", "HS-CLOSE-2", "HS-TOO-LATE"])
    );
    for id in ["HS-CLOSE-1", "HS-CLOSE-2", "HS-TOO-LATE"] {
        let events = env.events(id).await;
        let stopped = of_type(&events, "stopped");
        assert_eq!(stopped.len(), 1, "{id}");
        // Dated at the deadline, whenever a watcher noticed; the same id from every watcher.
        assert_eq!(stopped[0].occurred_at, closes_at, "{id}");
        assert_eq!(
            stopped[0].event_id,
            uuid::Uuid::new_v5(&CLOSE_NAMESPACE, close_key(id, closes_at).as_bytes())
        );
        let DossierEvent::Stopped { cause, .. } = body(stopped[0]) else {
            unreachable!()
        };
        assert_eq!(
            cause,
            Some(StopCause::SupplementNotReceived {
                requested_at: asked,
                closes_at,
            }),
            "{id}"
        );
        assert!(of_type(&events, "late").is_empty(), "{id}");
    }
    for id in ["HS-ANSWERED", "HS-FREE"] {
        assert!(of_type(&env.events(id).await, "stopped").is_empty(), "{id}");
    }

    // Later ticks, by either watcher or a fresh one, write nothing more.
    let head = env.head().await;
    clock.advance(chrono::Duration::days(3));
    let (a, b) = tokio::join!(first.tick(), second.tick());
    assert!(a.expect("tick").closed.is_empty() && b.expect("tick").closed.is_empty());
    let fresh = watcher(&env.log, clock.clone()).await;
    assert!(fresh.tick().await.expect("tick").closed.is_empty());
    // HS-ANSWERED's restarted time (due Wed 8 May 10:00) has not passed yet either.
    assert_eq!(env.head().await, head);
    // A closed dossier takes no more supplements.
    let before = env.head().await;
    let call = client
        .receive_supplement(authed(
            COUNTER_DISTRICT,
            receive_supplement("HS-CLOSE-1", local(2024, 5, 6, 9, 0)),
        ))
        .await;
    env.refused(call, before, Code::FailedPrecondition, None)
        .await;
}
