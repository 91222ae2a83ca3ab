//! The early warning, end to end: dossiers received, paused, resumed, apologised for, resolved
//! and transferred through the real services; a deadline watcher on a clock the test sets, across
//! the weekend and the 2024 Reunification / Labour Day break (Sat 27 Apr – Wed 1 May, Monday 29
//! swapped with Saturday 4 May); the list over gRPC and HTTP (equal, per token, paged), and the
//! changes as a NATS subscriber sees them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use api::v1 as pb;
use chrono::{DateTime, Utc};
use domain::SupplementPolicy;
use eventlog::EventLog;
use futures::StreamExt;
use processing::WarningChange;
use testkit::{TestDb, TestNats};
use tests::lifecycle::{RunningService, issue_apology};
use tests::processing::{
    COUNTER_COMMUNE, ManualClock, RunningProcessing, receive_days, receive_supplement,
    request_supplement, resolve, transfer, warning_publisher, watcher,
};
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, DISTRICT_AGENCY, IMPORTER, PROVINCE_AGENCY,
    RunningIntake, authed, local,
};
use tonic::Code;

const DASHBOARD: &str = "http://127.0.0.1:8055";

/// A raw HTTP/1.1 request ([`tests::http::request`]): status, headers (lower-case names), body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, BTreeMap<String, String>, String) {
    let answer = tests::http::request(addr, method, path, headers, None).await;
    let text = answer.text();
    (answer.status, answer.headers.into_iter().collect(), text)
}

struct World {
    log: EventLog,
    intake: RunningIntake,
    processing: RunningProcessing,
    results: RunningService,
    _db: TestDb,
}

impl World {
    async fn receive(&self, id: &str, at: DateTime<Utc>) -> DateTime<Utc> {
        let answer = self
            .intake
            .client()
            .await
            .receive_dossier(authed(COUNTER_DISTRICT, receive_days(id, at, 3)))
            .await
            .expect("receive")
            .into_inner();
        let t = answer.due_at.expect("due time");
        DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("valid")
    }

    /// The whole list over gRPC for `token`, page by page (`page_size` each).
    async fn grpc_list(
        &self,
        token: &str,
        agency: &str,
        page_size: u32,
    ) -> pb::ListDueSoonResponse {
        let mut client = self.processing.client().await;
        let mut all = pb::ListDueSoonResponse::default();
        let mut page_token = String::new();
        loop {
            let page = client
                .list_due_soon(authed(
                    token,
                    pb::ListDueSoonRequest {
                        agency_code: agency.to_owned(),
                        page_size,
                        page_token: page_token.clone(),
                    },
                ))
                .await
                .expect("ListDueSoon")
                .into_inner();
            all.warnings.extend(page.warnings);
            if page.next_page_token.is_empty() {
                return all;
            }
            page_token = page.next_page_token;
        }
    }

    /// One page over HTTP.
    async fn http_list(&self, token: &str, query: &str) -> pb::ListDueSoonResponse {
        let auth = format!("Bearer {token}");
        let (status, _, body) = http(
            self.processing.http_addr.expect("HTTP route"),
            "GET",
            &format!("/v1/warnings{query}"),
            &[("Authorization", &auth)],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("JSON answer")
    }

    /// The dossier ids listed for an auditor, most urgent first; gRPC (paged by one and whole)
    /// and HTTP agree exactly.
    async fn listed(&self) -> Vec<String> {
        let whole = self.grpc_list(AUDITOR, "", 0).await;
        assert_eq!(self.grpc_list(AUDITOR, "", 1).await, whole, "paging by one");
        assert_eq!(self.http_list(AUDITOR, "").await, whole);
        whole.warnings.into_iter().map(|w| w.dossier_id).collect()
    }
}

fn ids(report: &[String]) -> Vec<&str> {
    report.iter().map(String::as_str).collect()
}

fn withdrawn<'a>(report: &'a [(String, &'static str)]) -> Vec<(&'a str, &'static str)> {
    report.iter().map(|(id, r)| (id.as_str(), *r)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_early_warning_list_is_exact_across_holidays_supplements_apologies_and_transfers() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let world = World {
        intake: RunningIntake::start(log.clone()).await,
        processing: RunningProcessing::start_with_http(
            log.clone(),
            SupplementPolicy::Restart,
            &[DASHBOARD],
        )
        .await,
        results: RunningService::results(log.clone()).await,
        log,
        _db: db,
    };
    let nats = TestNats::new().await;
    let mut subscriber = nats
        .client
        .subscribe(format!("{}-warnings.>", nats.prefix))
        .await
        .expect("subscribe");
    let mut held_by_province = nats
        .client
        .subscribe(format!(
            "{}-warnings.*.{}",
            nats.prefix,
            PROVINCE_AGENCY.replace('.', "_")
        ))
        .await
        .expect("subscribe");
    let mut client = world.processing.client().await;

    // Monday 22 April 2024 09:00, three working days: due Thursday 25 April 09:00; an apology is
    // on time until Wednesday 24 April 09:00, which is also when the warning starts.
    let monday = local(2024, 4, 22, 9, 0);
    for id in ["HS-A", "HS-C", "HS-D", "HS-E", "HS-F"] {
        assert_eq!(world.receive(id, monday).await, local(2024, 4, 25, 9, 0));
    }
    client
        .request_supplement(authed(
            COUNTER_DISTRICT,
            request_supplement("HS-C", local(2024, 4, 23, 10, 0)),
        ))
        .await
        .expect("request supplement");
    // Wednesday 24 April 09:00: due across the weekend and the break, Thursday 2 May 09:00
    // (6 h Wed, 8 h Thu, 8 h Fri, 2 h Thu 2 May); its apology deadline is Friday 26 April 09:00
    // (2 h on 2 May, 6 h on Friday).
    assert_eq!(
        world.receive("HS-B", local(2024, 4, 24, 9, 0)).await,
        local(2024, 5, 2, 9, 0)
    );
    assert_eq!(
        domain::apology_deadline(
            &calendar::Calendar::vietnam_default(),
            domain::NoticeUnit::WorkingDay,
            local(2024, 5, 2, 9, 0)
        ),
        local(2024, 4, 26, 9, 0)
    );

    let clock = ManualClock::new(local(2024, 4, 24, 8, 59));
    let first = watcher(&world.log, clock.clone())
        .await
        .with_publisher(warning_publisher(&nats));
    let report = first.tick().await.expect("tick");
    assert!(report.raised.is_empty(), "{report:?}");
    assert!(world.listed().await.is_empty());

    // At the apology deadline: every running dossier due Thursday, not the paused one.
    clock.set(local(2024, 4, 24, 9, 0));
    let report = first.tick().await.expect("tick");
    assert_eq!(ids(&report.raised), ["HS-A", "HS-D", "HS-E", "HS-F"]);
    assert_eq!(report.published, 4);
    assert_eq!(world.listed().await, ["HS-A", "HS-D", "HS-E", "HS-F"]);
    let listed = world.grpc_list(AUDITOR, "", 0).await;
    let a = &listed.warnings[0];
    assert_eq!(
        (a.agency_code.as_str(), a.holding_agency_code.as_str()),
        (DISTRICT_AGENCY, DISTRICT_AGENCY)
    );
    assert_eq!(a.due_at, Some(tests::ts(local(2024, 4, 25, 9, 0))));
    assert_eq!(
        a.apology_deadline,
        Some(tests::ts(local(2024, 4, 24, 9, 0)))
    );
    assert_eq!(a.raised_at, Some(tests::ts(local(2024, 4, 24, 9, 0))));

    // Who sees what: the district's counter its dossiers, the province's none (not asking for
    // another agency's), importers nothing.
    assert_eq!(world.grpc_list(COUNTER_DISTRICT, "", 0).await, listed);
    assert!(
        world
            .grpc_list(COUNTER_PROVINCE, "", 0)
            .await
            .warnings
            .is_empty()
    );
    let denied = client
        .list_due_soon(authed(
            COUNTER_PROVINCE,
            pb::ListDueSoonRequest {
                agency_code: DISTRICT_AGENCY.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("another agency's list");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = client
        .list_due_soon(authed(IMPORTER, pb::ListDueSoonRequest::default()))
        .await
        .expect_err("importer");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let invalid = client
        .list_due_soon(authed(
            AUDITOR,
            pb::ListDueSoonRequest {
                page_size: 1001,
                ..Default::default()
            },
        ))
        .await
        .expect_err("page too large");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().starts_with("page_size"), "{invalid:?}");

    // An apology, a resolution and a transfer withdraw three; the transferred one is raised again
    // under its new holder.
    apologise(&world.results, "HS-D", local(2024, 4, 24, 9, 30)).await;
    client
        .resolve(authed(
            COUNTER_DISTRICT,
            resolve("HS-E", local(2024, 4, 24, 10, 0), pb::Outcome::Approved),
        ))
        .await
        .expect("resolve");
    client
        .transfer(authed(
            COUNTER_DISTRICT,
            transfer(
                "HS-F",
                local(2024, 4, 24, 10, 0),
                PROVINCE_AGENCY,
                pb::TransferMode::Electronic,
            ),
        ))
        .await
        .expect("transfer");
    // A restarted watcher continues exactly: nothing to recompute, nothing raised twice.
    let watcher = watcher(&world.log, clock.clone())
        .await
        .with_publisher(warning_publisher(&nats));
    clock.set(local(2024, 4, 24, 10, 0));
    let report = watcher.tick().await.expect("tick");
    assert_eq!(
        withdrawn(&report.withdrawn),
        [
            ("HS-D", "apologised"),
            ("HS-E", "closed"),
            ("HS-F", "transferred")
        ]
    );
    assert_eq!(ids(&report.raised), ["HS-F"]);
    assert_eq!(world.listed().await, ["HS-A", "HS-F"]);
    let province = world.grpc_list(COUNTER_PROVINCE, "", 0).await;
    assert_eq!(province.warnings.len(), 1);
    assert_eq!(province.warnings[0].dossier_id, "HS-F");
    assert_eq!(province.warnings[0].holding_agency_code, PROVINCE_AGENCY);
    assert_eq!(world.http_list(COUNTER_PROVINCE, "").await, province);
    assert!(
        world
            .grpc_list(COUNTER_COMMUNE, "", 0)
            .await
            .warnings
            .is_empty()
    );

    // Past the due time: marked late (HS-D too: an apology does not resolve it), the two without
    // an apology still listed; no warning changes.
    clock.set(local(2024, 4, 25, 9, 1));
    let report = watcher.tick().await.expect("tick");
    assert_eq!(ids(&report.marked), ["HS-A", "HS-D", "HS-F"]);
    assert!(
        report.raised.is_empty() && report.withdrawn.is_empty(),
        "{report:?}"
    );
    assert_eq!(world.listed().await, ["HS-A", "HS-F"]);

    // HS-B across the break: not a minute before Friday 09:00, then listed after the overdue.
    clock.set(local(2024, 4, 26, 8, 59));
    assert!(watcher.tick().await.expect("tick").raised.is_empty());
    clock.set(local(2024, 4, 26, 9, 0));
    assert_eq!(ids(&watcher.tick().await.expect("tick").raised), ["HS-B"]);
    assert_eq!(world.listed().await, ["HS-A", "HS-F", "HS-B"]);
    // Paused for a supplement: withdrawn.
    client
        .request_supplement(authed(
            COUNTER_DISTRICT,
            request_supplement("HS-B", local(2024, 4, 26, 10, 0)),
        ))
        .await
        .expect("request supplement");
    clock.set(local(2024, 4, 26, 10, 0));
    let report = watcher.tick().await.expect("tick");
    assert_eq!(withdrawn(&report.withdrawn), [("HS-B", "paused")]);
    assert_eq!(world.listed().await, ["HS-A", "HS-F"]);

    // HS-C resumes Thursday 2 May 09:00: due again three working days later, Monday 6 May 09:00
    // (Saturday 4 May is a working day); its warning starts Saturday 4 May 09:00.
    let answer = client
        .receive_supplement(authed(
            COUNTER_DISTRICT,
            receive_supplement("HS-C", local(2024, 5, 2, 9, 0)),
        ))
        .await
        .expect("receive supplement")
        .into_inner();
    assert_eq!(answer.due_at, Some(tests::ts(local(2024, 5, 6, 9, 0))));
    clock.set(local(2024, 5, 2, 9, 0));
    assert!(watcher.tick().await.expect("tick").raised.is_empty());
    clock.set(local(2024, 5, 4, 8, 59));
    assert!(watcher.tick().await.expect("tick").raised.is_empty());
    clock.set(local(2024, 5, 4, 9, 0));
    assert_eq!(ids(&watcher.tick().await.expect("tick").raised), ["HS-C"]);
    assert_eq!(world.listed().await, ["HS-A", "HS-F", "HS-C"]);
    let c = world.grpc_list(AUDITOR, "", 0).await.warnings[2].clone();
    assert_eq!(c.apology_deadline, Some(tests::ts(local(2024, 5, 4, 9, 0))));
    assert_eq!(c.due_at, Some(tests::ts(local(2024, 5, 6, 9, 0))));

    // The subscriber saw every change once, in order, as the watcher made them.
    let expected = [
        ("raised", "HS-A", None),
        ("raised", "HS-D", None),
        ("raised", "HS-E", None),
        ("raised", "HS-F", None),
        ("withdrawn", "HS-D", Some("apologised")),
        ("withdrawn", "HS-E", Some("closed")),
        ("withdrawn", "HS-F", Some("transferred")),
        ("raised", "HS-F", None),
        ("raised", "HS-B", None),
        ("withdrawn", "HS-B", Some("paused")),
        ("raised", "HS-C", None),
    ];
    let mut seen = Vec::new();
    let mut last_seq = 0;
    let mut moved = false;
    for _ in 0..expected.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
            .await
            .expect("a warning message within 10 s")
            .expect("subscription open");
        let change: WarningChange =
            serde_json::from_slice(&message.payload).expect("documented JSON");
        assert!(change.seq > last_seq, "seq increases");
        last_seq = change.seq;
        let headers = message.headers.expect("headers");
        assert_eq!(
            headers.get("Warning-Seq").map(|v| v.as_str().to_owned()),
            Some(change.seq.to_string())
        );
        // HS-F is held by the province from its withdrawal as `transferred` on.
        let holder = if change.dossier_id == "HS-F" && moved {
            PROVINCE_AGENCY
        } else {
            DISTRICT_AGENCY
        };
        moved |= change.reason.as_deref() == Some("transferred");
        assert_eq!(change.holding_agency, holder, "{change:?}");
        assert_eq!(
            message.subject.as_str(),
            format!(
                "{}-warnings.{}.{}",
                nats.prefix,
                DISTRICT_AGENCY.replace('.', "_"),
                holder.replace('.', "_")
            )
        );
        seen.push((
            change.kind.clone(),
            change.dossier_id.clone(),
            change.reason.clone(),
        ));
    }
    let expected: Vec<_> = expected
        .iter()
        .map(|(k, d, r)| ((*k).to_owned(), (*d).to_owned(), r.map(str::to_owned)))
        .collect();
    assert_eq!(seen, expected);
    // A subscriber to what the province holds saw only HS-F raised under it.
    let message = tokio::time::timeout(Duration::from_secs(10), held_by_province.next())
        .await
        .expect("the province's message")
        .expect("subscription open");
    let change: WarningChange = serde_json::from_slice(&message.payload).expect("JSON");
    assert_eq!(
        (change.kind.as_str(), change.dossier_id.as_str()),
        ("raised", "HS-F")
    );
    // The stream kept the same changes, and the outbox is empty.
    let js = nats.jetstream();
    let stream_name = processing::publish::stream_name(&nats.stream);
    let mut stream = js.get_stream(&stream_name).await.expect("warnings stream");
    assert_eq!(
        stream.info().await.expect("info").state.messages,
        expected.len() as u64
    );
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM deadline_warning_outbox")
        .fetch_one(world.log.pool())
        .await
        .expect("outbox count");
    assert_eq!(outbox, 0);
    js.delete_stream(&stream_name).await.expect("delete stream");
}

/// Issues an apology through the results service.
async fn apologise(results: &RunningService, dossier_id: &str, at: DateTime<Utc>) {
    api::v1::results_service_client::ResultsServiceClient::new(results.channel().await)
        .issue_apology(authed(
            COUNTER_DISTRICT,
            issue_apology(dossier_id, at, at + chrono::Duration::days(10)),
        ))
        .await
        .expect("issue apology");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_route_checks_its_parameters_and_answers_cors_for_configured_origins_only() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let processing =
        RunningProcessing::start_with_http(log.clone(), SupplementPolicy::Restart, &[DASHBOARD])
            .await;
    let addr = processing.http_addr.expect("HTTP route");
    let auth = format!("Bearer {AUDITOR}");

    let (status, headers, _) = http(
        addr,
        "OPTIONS",
        "/v1/warnings",
        &[
            ("Origin", DASHBOARD),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some(DASHBOARD)
    );
    assert!(
        headers
            .get("access-control-allow-headers")
            .is_some_and(|h| h.to_ascii_lowercase().contains("authorization")),
        "{headers:?}"
    );
    let (status, headers, body) = http(
        addr,
        "GET",
        "/v1/warnings",
        &[("Origin", DASHBOARD), ("Authorization", &auth)],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some(DASHBOARD)
    );
    assert_eq!(body, r#"{"warnings":[],"nextPageToken":""}"#);
    let (_, headers, _) = http(
        addr,
        "GET",
        "/v1/warnings",
        &[("Origin", "http://evil.example"), ("Authorization", &auth)],
    )
    .await;
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "{headers:?}"
    );

    for (query, token, status, field) in [
        ("", None, 401, None),
        ("?page_size=x", Some(AUDITOR), 400, Some("page_size")),
        ("?page_size=1001", Some(AUDITOR), 400, Some("page_size")),
        (
            "?pageSize=1&page_size=2",
            Some(AUDITOR),
            400,
            Some("page_size"),
        ),
        (
            "?agency_code=a%20b",
            Some(AUDITOR),
            400,
            Some("agency_code"),
        ),
        ("?page_token=nope", Some(AUDITOR), 400, Some("page_token")),
        ("?colour=red", Some(AUDITOR), 400, Some("colour")),
        (
            "?agency_code=000.00.12.H40",
            Some(COUNTER_PROVINCE),
            403,
            None,
        ),
        ("", Some(IMPORTER), 403, None),
    ] {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let (got, _, body) = http(addr, "GET", &format!("/v1/warnings{query}"), &headers).await;
        assert_eq!(got, status, "{query}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(
            json.get("field").and_then(|f| f.as_str()),
            field,
            "{query}: {body}"
        );
    }
    let (status, _, _) = http(addr, "GET", "/v1/nothing", &[("Authorization", &auth)]).await;
    assert_eq!(status, 404);
    let (status, _, _) = http(addr, "POST", "/v1/warnings", &[("Authorization", &auth)]).await;
    assert_eq!(status, 405);
    processing.stop().await;
}

/// A watcher with `horizon` over `log` (schemas applied by [`watcher`] first).
async fn watcher_with(
    log: &EventLog,
    clock: std::sync::Arc<ManualClock>,
    horizon: domain::WarningHorizon,
) -> processing::Watcher {
    watcher_with_notice(log, clock, horizon, domain::NoticeUnit::WorkingDay).await
}

/// A watcher with `horizon` whose write path counts the apology notice in `notice`.
async fn watcher_with_notice(
    log: &EventLog,
    clock: std::sync::Arc<ManualClock>,
    horizon: domain::WarningHorizon,
    notice: domain::NoticeUnit,
) -> processing::Watcher {
    drop(watcher(log, clock.clone()).await);
    let write = writepath::WritePath::new(
        log.clone(),
        std::sync::Arc::new(calendar::Calendar::vietnam_default()),
        SupplementPolicy::Restart,
    )
    .with_apology_notice(notice);
    processing::Watcher::new(
        write,
        clock,
        processing::WatcherConfig {
            horizon,
            ..processing::WatcherConfig::default()
        },
    )
}

async fn outbox(log: &EventLog) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as("SELECT kind, dossier_id, reason FROM deadline_warning_outbox ORDER BY seq")
        .fetch_all(log.pool())
        .await
        .expect("outbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_watchers_raise_each_warning_once_and_a_changed_horizon_is_applied_at_start() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let mut intake_client = intake.client().await;
    let ids: Vec<String> = (0..30).map(|i| format!("HS-TWO-{i:02}")).collect();
    for id in &ids {
        intake_client
            .receive_dossier(authed(
                COUNTER_DISTRICT,
                receive_days(id, local(2024, 4, 22, 9, 0), 3),
            ))
            .await
            .expect("receive");
    }
    // Two working days ahead: from Tuesday 23 April 09:00 (due Thursday 25 09:00).
    let two_days = domain::WarningHorizon::Working(calendar::WorkingDuration::from_minutes(960));
    let clock = ManualClock::new(local(2024, 4, 23, 9, 0));
    let (a, b) = (
        watcher_with(&log, clock.clone(), two_days).await,
        watcher_with(&log, clock.clone(), two_days).await,
    );
    let (ra, rb) = tokio::join!(a.tick(), b.tick());
    let (ra, rb) = (ra.expect("tick"), rb.expect("tick"));
    let mut raised: Vec<String> = ra.raised.into_iter().chain(rb.raised).collect();
    raised.sort();
    assert_eq!(raised, ids, "each raised once, by one of them");
    let changes = outbox(&log).await;
    assert_eq!(changes.len(), ids.len());
    assert!(changes.iter().all(|(kind, _, _)| kind == "raised"));

    // Restarted with the default horizon (from Wednesday 09:00): at its first tick the stored
    // deadlines are recomputed and every warning is withdrawn, not raised again before then.
    let default = watcher_with(&log, clock.clone(), domain::WarningHorizon::default()).await;
    let report = default.tick().await.expect("tick");
    assert_eq!(report.withdrawn.len(), ids.len());
    assert!(
        report
            .withdrawn
            .iter()
            .all(|(_, r)| *r == "deadline_changed")
    );
    assert!(report.raised.is_empty());
    clock.set(local(2024, 4, 24, 9, 0));
    assert_eq!(default.tick().await.expect("tick").raised, ids);
    assert_eq!(outbox(&log).await.len(), 3 * ids.len());
}

/// The stored apology deadline, `warn_from` and late mark of `dossier` in the watcher's model.
async fn watched(log: &EventLog, dossier: &str) -> (DateTime<Utc>, DateTime<Utc>, bool) {
    sqlx::query_as(
        "SELECT apology_deadline, warn_from, late_marked FROM deadline_watch WHERE dossier_id = $1",
    )
    .bind(dossier)
    .fetch_one(log.pool())
    .await
    .expect("watched row")
}

/// `[processing] apology_notice` moves the watcher's apology deadline and default warning (one
/// rule with `decide`); a restart with the other unit recomputes them. An offline counter's
/// resolution dated before the due time, arriving after the watcher's `late`, withdraws the
/// mark (`late_withdrawn`, folded: `late_marked` false again) and the warning (`closed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_apology_notice_unit_moves_the_warning_and_an_offline_resolution_withdraws_it() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let processing = RunningProcessing::start(log.clone(), SupplementPolicy::Restart).await;
    // Wednesday 24 April 2024 09:00, three working days: due Thursday 2 May 09:00 across the
    // weekend and the 27 April–1 May break. Apology deadline: Friday 26 April 09:00 in working
    // days, Wednesday 1 May 09:00 (a day off) in calendar days.
    let answer = intake
        .client()
        .await
        .receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_days("HS-UNIT", local(2024, 4, 24, 9, 0), 3),
        ))
        .await
        .expect("receive")
        .into_inner();
    assert_eq!(answer.due_at, Some(tests::ts(local(2024, 5, 2, 9, 0))));

    let clock = ManualClock::new(local(2024, 4, 26, 9, 0));
    let working = watcher_with(&log, clock.clone(), domain::WarningHorizon::default()).await;
    assert_eq!(
        ids(&working.tick().await.expect("tick").raised),
        ["HS-UNIT"]
    );
    assert_eq!(
        watched(&log, "HS-UNIT").await,
        (local(2024, 4, 26, 9, 0), local(2024, 4, 26, 9, 0), false)
    );

    // Restarted with calendar days: recomputed, so not due soon before Wednesday 09:00.
    let calendar_days = watcher_with_notice(
        &log,
        clock.clone(),
        domain::WarningHorizon::default(),
        domain::NoticeUnit::CalendarDay,
    )
    .await;
    let report = calendar_days.tick().await.expect("tick");
    assert_eq!(
        withdrawn(&report.withdrawn),
        [("HS-UNIT", "deadline_changed")]
    );
    assert!(report.raised.is_empty(), "{report:?}");
    assert_eq!(
        watched(&log, "HS-UNIT").await,
        (local(2024, 5, 1, 9, 0), local(2024, 5, 1, 9, 0), false)
    );
    clock.set(local(2024, 5, 1, 8, 59));
    assert!(calendar_days.tick().await.expect("tick").raised.is_empty());
    clock.set(local(2024, 5, 1, 9, 0));
    assert_eq!(
        ids(&calendar_days.tick().await.expect("tick").raised),
        ["HS-UNIT"]
    );

    // Past the due time: marked late; the warning stays (an overdue dossier is listed).
    clock.set(local(2024, 5, 2, 10, 0));
    let report = calendar_days.tick().await.expect("tick");
    assert_eq!(ids(&report.marked), ["HS-UNIT"]);
    assert!(report.withdrawn.is_empty(), "{report:?}");
    // The next tick folds the `late` it wrote.
    let report = calendar_days.tick().await.expect("tick");
    assert!(
        report.marked.is_empty() && report.withdrawn.is_empty(),
        "{report:?}"
    );
    assert!(watched(&log, "HS-UNIT").await.2);

    // The offline counter's resolution, dated 08:00 before the due time, arrives now.
    let answer = processing
        .client()
        .await
        .resolve(authed(
            COUNTER_DISTRICT,
            resolve("HS-UNIT", local(2024, 5, 2, 8, 0), pb::Outcome::Approved),
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert!(answer.late_withdrawn);
    let report = calendar_days.tick().await.expect("tick");
    assert_eq!(withdrawn(&report.withdrawn), [("HS-UNIT", "closed")]);
    assert!(
        report.marked.is_empty() && report.raised.is_empty(),
        "{report:?}"
    );
    assert!(
        !watched(&log, "HS-UNIT").await.2,
        "the late mark no longer stands"
    );
    processing.stop().await;
}

/// `motcua_warning_outbox_rows` and `…_oldest_seconds` on processing's `/metrics`: 0 while every
/// change reaches NATS; while publication fails (another stream holds the warnings' subjects, so
/// the warnings' stream cannot be made) the raised warning waits in the outbox, counted, and its
/// age follows the service's clock at each scrape; once publication works again, 0 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_warnings_outbox_backlog_is_exported_while_publication_fails() {
    use async_nats::jetstream::stream;
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let blocker = format!("{}_BLOCKS_WARNINGS", nats.stream);
    js.create_stream(stream::Config {
        name: blocker.clone(),
        subjects: vec![format!("{}-warnings.>", nats.prefix)],
        ..Default::default()
    })
    .await
    .expect("the blocking stream");
    let clock = ManualClock::new(local(2024, 4, 22, 9, 0));
    let mut deps = svc::ServiceDeps::for_tests(log.clone(), tests::processing::processing_tokens());
    deps.clock = clock.clone();
    let app = processing::ProcessingApp::build_parts(
        deps,
        processing::Parts {
            watcher: Some(processing::WatcherConfig {
                interval: Duration::from_millis(100),
                ..processing::WatcherConfig::default()
            }),
            publisher: Some(warning_publisher(&nats)),
            http: None,
        },
    )
    .await
    .expect("processing builds")
    .metrics(
        svc::Listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind"),
    );
    let metrics = app.metrics_addr().expect("metrics");
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    let backlog = || async move {
        let (status, text) = testkit::http::get(metrics, "/metrics")
            .await
            .expect("scrape");
        assert_eq!(status, 200, "{text}");
        let read = |name| testkit::http::sample(&text, name, "").unwrap_or(-1.0);
        (
            read("motcua_warning_outbox_rows"),
            read("motcua_warning_outbox_oldest_seconds"),
        )
    };
    let wait_for = |want: (f64, f64), what: &'static str| async move {
        tests::eventually_some(what, Duration::from_secs(30), || async {
            (backlog().await == want).then_some(())
        })
        .await;
    };

    // Received Monday 09:00 with three working days: warned from Wednesday 09:00.
    intake
        .client()
        .await
        .receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_days("HS-OB-1", local(2024, 4, 22, 9, 0), 3),
        ))
        .await
        .expect("receive");
    wait_for((0.0, 0.0), "an empty outbox").await;

    // Wednesday 09:00: the warning is raised and cannot be published.
    clock.set(local(2024, 4, 24, 9, 0));
    wait_for((1.0, 0.0), "one change waiting").await;
    let (code, health) = testkit::http::get(metrics, "/healthz")
        .await
        .expect("health");
    assert_eq!(code, 503, "{health}");
    assert!(health.contains("publishing early warnings"), "{health}");
    // Ten minutes later by the service's clock: the change is ten minutes old.
    clock.advance(chrono::Duration::minutes(10));
    wait_for((1.0, 600.0), "a ten-minute-old change").await;

    // The subjects freed: the next tick publishes it and the outbox is empty again.
    js.delete_stream(&blocker).await.expect("drop the blocker");
    wait_for((0.0, 0.0), "the change published").await;
    let (code, _) = testkit::http::get(metrics, "/healthz")
        .await
        .expect("health");
    assert_eq!(code, 200);
    stop.cancel();
    task.await.expect("join").expect("processing stops");
    js.delete_stream(processing::publish::stream_name(&nats.stream))
        .await
        .ok();
    intake.stop().await;
}
