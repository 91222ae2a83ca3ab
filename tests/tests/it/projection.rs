//! The projection end to end: dossiers received through intake, relayed to a private stream,
//! consumed by the projection; `GetIndicators` must equal what `stats` computes from the raw
//! events, whatever the redeliveries and restarts.

use std::time::Duration;

use api::v1 as pb;
use chrono::NaiveDate;
use eventlog::EventLog;
use testkit::{TestDb, TestNats};
use tests::projection::{RunningProjection, expected_indicators, http_get, http_get_bytes};
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, PROVINCE_AGENCY, RunningIntake, RunningRelay,
    authed, local, new_event_id, profile, receive_request, ts,
};

const WAIT: Duration = Duration::from_secs(60);

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

/// Receives `HS-P-{n}` dossiers on several days and channels, and refuses one at the counter.
async fn receive_some(intake: &RunningIntake, first: usize, count: usize) {
    let mut client = intake.client().await;
    for n in first..first + count {
        let dossier_id = format!("HS-P-{n:04}");
        let at = local(2024, 4, 22 + (n % 3) as u32, 9, (n % 50) as u32);
        let mut request = receive_request(&dossier_id, at);
        let mut token = COUNTER_DISTRICT;
        if n % 2 == 0 {
            request.profile = Some(pb::Profile {
                channel: pb::Channel::Direct as i32,
                ..profile(PROVINCE_AGENCY)
            });
            token = COUNTER_PROVINCE;
        }
        client
            .receive_dossier(authed(token, request))
            .await
            .expect("receive");
    }
    let refused = pb::RefuseAtCounterRequest {
        event_id: new_event_id(),
        dossier_id: format!("HS-P-R{first:04}"),
        occurred_at: Some(ts(local(2024, 4, 23, 10, 0))),
        profile: Some(profile(tests::DISTRICT_AGENCY)),
        reason: "thiếu giấy tờ".to_owned(),
    };
    client
        .refuse_at_counter(authed(COUNTER_DISTRICT, refused))
        .await
        .expect("refuse at counter");
}

async fn head(log: &EventLog) -> i64 {
    log.head().await.expect("log head")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn indicators_equal_the_statistics_of_the_raw_events_across_redelivery_and_restart() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let nats = TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let projection =
        RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "proj").await;

    receive_some(&intake, 1, 6).await;
    relay.wait_published(head(&log).await, WAIT).await;
    projection.wait_caught_up(WAIT).await;

    let (from, to) = (day(2024, 4, 1), day(2024, 5, 1));
    let answer = projection.indicators(from, to).await;
    assert_eq!(answer, expected_indicators(&log, from, to).await);
    assert_eq!(answer.received, 6);
    assert_eq!(answer.received_online, 3);
    assert_eq!(answer.received_direct, 3);
    assert_eq!(answer.refused_at_intake, 1);
    assert_eq!(answer.pending.expect("pending").total, 6);
    let online = answer.online.expect("online rate");
    assert_eq!((online.numerator, online.denominator), (3, 6));
    assert_eq!(online.percent, Some(50.0));
    // Nothing resolved: the on-time rate is absent, not 0% or 100%.
    let on_time = answer.on_time_rate.expect("on-time rate");
    assert_eq!((on_time.denominator, on_time.percent), (0, None));

    // A single day inside the period; the days before count as carried over.
    let (d_from, d_to) = (day(2024, 4, 23), day(2024, 4, 24));
    let one_day = projection.indicators(d_from, d_to).await;
    assert_eq!(one_day, expected_indicators(&log, d_from, d_to).await);
    assert_eq!(one_day.carried_over, 2);

    // A redelivered message: applying a dossier again changes nothing, whether the stored
    // version says it is up to date or not (forgotten, it is recomputed from the log).
    let applied = projection::store::apply_and_commit(&log, "HS-P-0001")
        .await
        .expect("apply again");
    assert_eq!(applied, projection::Applied::UpToDate { version: 1 });
    sqlx::query("UPDATE projection_contributions SET version = 0 WHERE dossier_id = 'HS-P-0002'")
        .execute(log.pool())
        .await
        .expect("forget the applied version");
    let applied = projection::store::apply_and_commit(&log, "HS-P-0002")
        .await
        .expect("apply again");
    assert_eq!(
        applied,
        projection::Applied::Updated {
            version: 1,
            cells: 0
        }
    );
    assert_eq!(projection.indicators(from, to).await, answer);

    // Stopped, more dossiers arrive; a new instance on the same durable consumer resumes
    // where the first stopped, without counting anything twice.
    projection.stop().await;
    receive_some(&intake, 7, 4).await;
    relay.wait_published(head(&log).await, WAIT).await;
    let behind = tests::projection::behind(&log).await;
    assert_eq!(
        behind.len(),
        5,
        "the stopped projection applied nothing: {behind:?}"
    );
    let projection =
        RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "proj").await;
    projection.wait_caught_up(WAIT).await;
    let answer = projection.indicators(from, to).await;
    assert_eq!(answer, expected_indicators(&log, from, to).await);
    assert_eq!(answer.received, 10);
    assert_eq!(answer.refused_at_intake, 2);

    // Every message was acknowledged: nothing is left pending on the durable consumer.
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = nats
        .jetstream()
        .get_stream(&nats.stream)
        .await
        .expect("stream")
        .get_consumer("proj")
        .await
        .expect("durable consumer");
    let info = consumer.info().await.expect("consumer info");
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut info = info.clone();
    while info.num_ack_pending > 0 || info.num_pending > 0 {
        assert!(tokio::time::Instant::now() < deadline, "unacked: {info:?}");
        tick.tick().await;
        info = consumer.info().await.expect("consumer info").clone();
    }
    projection.stop().await;
    relay.stop().await;
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_durable_consumer_count_each_dossier_once() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let nats = TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let a = RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "shared")
        .await;
    let b = RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "shared")
        .await;

    receive_some(&intake, 1, 12).await;
    relay.wait_published(head(&log).await, WAIT).await;
    a.wait_caught_up(WAIT).await;

    let (from, to) = (day(2024, 4, 1), day(2024, 5, 1));
    let expected = expected_indicators(&log, from, to).await;
    assert_eq!(expected.received, 12);
    assert_eq!(a.indicators(from, to).await, expected);
    assert_eq!(b.indicators(from, to).await, expected);
    a.stop().await;
    b.stop().await;
    relay.stop().await;
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_need_a_token_and_valid_dates() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let nats = TestNats::new().await;
    let projection =
        RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "proj").await;
    let mut client = projection.client().await;
    let request = tests::projection::indicators_request(day(2024, 1, 1), day(2024, 2, 1));

    let err = client
        .get_indicators(request.clone())
        .await
        .expect_err("no token");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    for token in [AUDITOR, COUNTER_DISTRICT, tests::IMPORTER] {
        let empty = client
            .get_indicators(authed(token, request.clone()))
            .await
            .expect("any valid token may read")
            .into_inner()
            .total
            .expect("a total");
        assert_eq!(empty.received, 0);
        assert_eq!(empty.online.expect("rate").percent, None);
    }

    let bad = pb::GetIndicatorsRequest {
        from: "2024-13-01".to_owned(),
        ..request.clone()
    };
    let err = client
        .get_indicators(authed(AUDITOR, bad))
        .await
        .expect_err("bad date");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let backwards = tests::projection::indicators_request(day(2024, 2, 1), day(2024, 1, 1));
    let err = client
        .get_indicators(authed(AUDITOR, backwards))
        .await
        .expect_err("to before from");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    projection.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn whole_lifecycles_count_in_every_indicator_and_filters_select_slices() {
    use domain::{
        Action, AgencyCode, FeeKind, Outcome, PaymentChannel, Rating, ReturnMethod, Text,
        TransactionId,
    };
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let stack = tests::lifecycle::Stack::start(log.clone()).await;
    let nats = TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let projection =
        RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "proj").await;
    let resolve = || Action::Resolve {
        outcome: Outcome::Approved,
        deciding_agency: AgencyCode::parse(tests::DISTRICT_AGENCY).expect("agency"),
    };

    // Resolved early, with a fee paid online, a digitized result and a rating.
    stack
        .receive("HS-L-1", local(2024, 4, 22, 9, 0), true)
        .await;
    stack
        .append(
            "HS-L-1",
            local(2024, 4, 22, 10, 0),
            Action::AssessFee {
                amount_vnd: 50_000,
                kind: FeeKind::Fee,
            },
        )
        .await;
    stack
        .append(
            "HS-L-1",
            local(2024, 4, 22, 11, 0),
            Action::RecordPayment {
                amount_vnd: 50_000,
                channel: PaymentChannel::NationalPlatform,
                transaction_id: TransactionId::parse("TX-1").expect("transaction id"),
            },
        )
        .await;
    stack
        .append("HS-L-1", local(2024, 4, 23, 9, 0), resolve())
        .await;
    stack
        .append(
            "HS-L-1",
            local(2024, 4, 23, 10, 0),
            Action::AttachResult {
                document_ref: Text::parse("kq/HS-L-1.pdf").expect("text"),
                sha256: tests::lifecycle::RESULT_SHA256.to_owned(),
            },
        )
        .await;
    stack
        .append(
            "HS-L-1",
            local(2024, 4, 23, 11, 0),
            Action::ReturnResult {
                method: ReturnMethod::Counter,
            },
        )
        .await;
    stack
        .append(
            "HS-L-1",
            local(2024, 4, 23, 14, 0),
            Action::Rate {
                rating: Rating::VerySatisfied,
            },
        )
        .await;
    // Resolved late (due after 3 working days).
    stack
        .receive("HS-L-2", local(2024, 4, 22, 9, 0), false)
        .await;
    stack
        .append("HS-L-2", local(2024, 5, 6, 9, 0), resolve())
        .await;
    // Withdrawn.
    stack
        .receive("HS-L-3", local(2024, 4, 22, 9, 0), false)
        .await;
    stack
        .append(
            "HS-L-3",
            local(2024, 4, 24, 9, 0),
            Action::Withdraw {
                reason: Text::parse("rút hồ sơ").expect("text"),
            },
        )
        .await;
    // Still pending, and overdue by May.
    stack
        .receive("HS-L-4", local(2024, 4, 22, 9, 0), false)
        .await;

    relay.wait_published(head(&log).await, WAIT).await;
    projection.wait_caught_up(WAIT).await;

    for (from, to) in [
        (day(2024, 4, 1), day(2024, 5, 1)),
        (day(2024, 4, 1), day(2024, 6, 1)),
        (day(2024, 4, 23), day(2024, 4, 24)),
        (day(2024, 5, 1), day(2024, 6, 1)),
    ] {
        assert_eq!(
            projection.indicators(from, to).await,
            expected_indicators(&log, from, to).await,
            "[{from}, {to})"
        );
    }
    let may = projection
        .indicators(day(2024, 4, 1), day(2024, 6, 1))
        .await;
    assert_eq!((may.received, may.resolved, may.withdrawn), (4, 2, 1));
    assert_eq!((may.resolved_early, may.resolved_late), (1, 1));
    assert_eq!(may.pending.expect("pending").total, 1);
    assert_eq!(may.payment_amount_vnd, 50_000);
    assert_eq!(may.rated_very_satisfied, 1);
    let on_time = may.on_time_rate.expect("on-time rate");
    assert_eq!((on_time.numerator, on_time.denominator), (1, 2));
    let paid = may.online_payment.expect("online payment");
    assert_eq!((paid.numerator, paid.denominator), (1, 1));

    // Filters: every dossier here is the district agency's; none is the province's.
    let (from, to) = (day(2024, 4, 1), day(2024, 6, 1));
    let mut client = projection.client().await;
    for (agency, level, domain_level, expected_received) in [
        (
            tests::DISTRICT_AGENCY,
            pb::Level::District,
            Some(domain::Level::District),
            4,
        ),
        (PROVINCE_AGENCY, pb::Level::Unspecified, None, 0),
        ("", pb::Level::Province, Some(domain::Level::Province), 0),
    ] {
        let request = pb::GetIndicatorsRequest {
            agency_code: agency.to_owned(),
            level: level as i32,
            sector_code: "land".to_owned(),
            ..tests::projection::indicators_request(from, to)
        };
        let answer = client
            .get_indicators(authed(AUDITOR, request))
            .await
            .expect("filtered query")
            .into_inner()
            .total
            .expect("a total");
        let expected =
            tests::projection::expected_indicators_where(&log, from, to, |s: &stats::Slice| {
                (agency.is_empty() || s.agency.as_str() == agency)
                    && domain_level.is_none_or(|l| s.level == l)
                    && s.sector.as_str() == "land"
            })
            .await;
        assert_eq!(answer, expected, "agency {agency:?}, level {level:?}");
        assert_eq!(answer.received, expected_received);
    }
    projection.stop().await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_of_one_dossier_count_it_once() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let nats = TestNats::new().await;
    // No relay: nothing reaches the consumer; the applies below are the only ones.
    let projection =
        RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "proj").await;
    receive_some(&intake, 1, 4).await;
    assert_eq!(tests::projection::behind(&log).await.len(), 5);

    let ids: Vec<String> = (1..=4)
        .map(|n| format!("HS-P-{n:04}"))
        .chain(["HS-P-R0001".to_owned()])
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        for id in &ids {
            let (log, id) = (log.clone(), id.clone());
            tasks.spawn(async move { projection::store::apply_and_commit(&log, &id).await });
        }
    }
    let mut updated = 0;
    while let Some(result) = tasks.join_next().await {
        match result.expect("task").expect("apply") {
            projection::Applied::Updated { .. } => updated += 1,
            projection::Applied::UpToDate { .. } => {}
        }
    }
    assert_eq!(updated, ids.len(), "each dossier is applied exactly once");
    assert!(tests::projection::behind(&log).await.is_empty());

    let (from, to) = (day(2024, 4, 1), day(2024, 5, 1));
    let answer = projection.indicators(from, to).await;
    assert_eq!(answer, expected_indicators(&log, from, to).await);
    assert_eq!((answer.received, answer.refused_at_intake), (4, 1));
    projection.stop().await;
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_json_csv_reports_and_dossier_status_agree_with_grpc() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let nats = TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let projection =
        RunningProjection::start(log.clone(), &nats.url, &nats.stream, &nats.prefix, "http").await;
    receive_some(&intake, 1, 6).await;
    relay.wait_published(head(&log).await, WAIT).await;
    projection.wait_caught_up(WAIT).await;
    let http = projection.http_addr;
    let period = "from=2024-04-01&to=2024-05-01";

    // JSON indicators: the same figures as gRPC, per level too, with S14 and S5.
    let mut client = projection.client().await;
    let grpc = client
        .get_indicators(authed(
            AUDITOR,
            pb::GetIndicatorsRequest {
                group_by: vec![pb::Dimension::Level as i32],
                ..tests::projection::indicators_request(day(2024, 4, 1), day(2024, 5, 1))
            },
        ))
        .await
        .expect("GetIndicators")
        .into_inner();
    let (status, _, body) = http_get(
        http,
        &format!("/v1/indicators?{period}&group_by=level"),
        Some(AUDITOR),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The HTTP answer is the gRPC message in its proto3 JSON mapping: it parses back into the
    // very message gRPC answered.
    let parsed: pb::GetIndicatorsResponse = serde_json::from_str(&body).expect("proto3 JSON");
    assert_eq!(parsed, grpc);
    // The mapping's shape: lowerCamelCase, 64-bit integers as strings, enums by name, an
    // absent optional (a rate's percent without a denominator) left out, defaults emitted.
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let total = grpc.total.as_ref().expect("total");
    assert_eq!(json["total"]["received"], total.received.to_string());
    assert_eq!(json["total"]["receivedOnline"], "3");
    assert_eq!(
        json["total"]["pending"]["total"],
        total.pending.as_ref().unwrap().total.to_string()
    );
    assert_eq!(json["total"]["online"]["percent"], 50.0);
    assert!(
        json["total"]["onTimeRate"].get("percent").is_none(),
        "{body}"
    );
    assert_eq!(json["total"]["onTimeRate"]["denominator"], "0");
    assert_eq!(json["dossiersNotCounted"], "0");
    assert!(json.get("asRecordedAt").is_none(), "{body}");
    assert_eq!(
        json["targets"].as_array().expect("S14").len(),
        grpc.targets.len()
    );
    let groups = json["groups"].as_array().expect("groups");
    assert_eq!(groups.len(), grpc.groups.len());
    for (g, p) in groups.iter().zip(&grpc.groups) {
        assert_eq!(g["key"][0]["dimension"], "DIMENSION_LEVEL");
        assert_eq!(g["key"][0]["value"], p.key[0].value.as_str());
        assert_eq!(
            g["indicators"]["received"],
            p.indicators.as_ref().unwrap().received.to_string()
        );
    }

    // Every form as JSON and CSV; the CSV's last II.06a row is the total.
    for form in [
        "ii06a",
        "bieu-mau-3-section-3",
        "bieu-mau-7-section-6",
        "scorecard-766",
    ] {
        let (status, _, body) =
            http_get(http, &format!("/v1/reports/{form}?{period}"), Some(AUDITOR)).await;
        assert_eq!(status, 200, "{form}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let parsed: pb::Report = serde_json::from_str(&body).expect("proto3 JSON");
        let form_pb = match form {
            "ii06a" => pb::ReportForm::Ii06a,
            "bieu-mau-3-section-3" => pb::ReportForm::BieuMau3Section3,
            "bieu-mau-7-section-6" => pb::ReportForm::BieuMau7Section6,
            _ => pb::ReportForm::Scorecard766,
        };
        assert_eq!(json["form"], form_pb.as_str_name());
        let grpc = client
            .get_report(authed(
                AUDITOR,
                pb::GetReportRequest {
                    form: form_pb as i32,
                    from: "2024-04-01".to_owned(),
                    to: "2024-05-01".to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .expect("GetReport")
            .into_inner();
        assert_eq!(parsed, grpc, "{form}");
        let (status, headers, csv) = http_get(
            http,
            &format!("/v1/reports/{form}.csv?{period}"),
            Some(AUDITOR),
        )
        .await;
        assert_eq!(status, 200, "{form}: {csv}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "content-type" && v.starts_with("text/csv")),
            "{headers:?}"
        );
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines.len(),
            1 + json["rows"].as_array().unwrap().len(),
            "{form}: a header line and a line per row"
        );
    }
    let (_, _, csv) = http_get(
        http,
        &format!("/v1/reports/ii06a.csv?{period}"),
        Some(AUDITOR),
    )
    .await;
    let lines: Vec<&str> = csv.lines().collect();
    assert!(
        lines[0].starts_with("sector,received_total,received_online,"),
        "{csv}"
    );
    assert!(lines.last().unwrap().starts_with("total,6,3,3,0,"), "{csv}");
    // The same form as CSV for Excel in Vietnamese (a BOM, the forms' headings).
    let (_, _, csv) = http_get(
        http,
        &format!("/v1/reports/ii06a.csv?{period}&bom=true&headings=vi"),
        Some(AUDITOR),
    )
    .await;
    assert!(
        csv.starts_with("\u{feff}Lĩnh vực,Số hồ sơ nhận giải quyết — "),
        "{csv}"
    );
    assert!(
        csv.lines()
            .last()
            .unwrap()
            .starts_with("Tổng cộng,6,3,3,0,"),
        "{csv}"
    );

    // The same form as .xlsx: read back, its cells are the JSON answer's, the total row sums.
    let (_, _, body) = http_get(http, &format!("/v1/reports/ii06a?{period}"), Some(AUDITOR)).await;
    let json: pb::Report = serde_json::from_str(&body).expect("proto3 JSON");
    let (status, headers, xlsx) = http_get_bytes(
        http,
        &format!("/v1/reports/ii06a.xlsx?{period}"),
        Some(AUDITOR),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers.iter().any(|(k, v)| k == "content-disposition"
            && v == "attachment; filename=\"ii06a_2024-04-01_2024-05-01.xlsx\""),
        "{headers:?}"
    );
    let sheet = testkit::xlsx::read(&xlsx, "ii06a");
    // Title block, grouped headings, then the numbers (1)…(13): data from row 8 (0-based).
    assert_eq!(sheet.text(5, 1), "Lĩnh vực");
    tests::projection::assert_ii06a_workbook(&xlsx, &json);
    // The indicator table per level: the gRPC figures, rates as fractions.
    let (status, _, xlsx) = http_get_bytes(
        http,
        &format!("/v1/indicators.xlsx?{period}&group_by=level"),
        Some(AUDITOR),
    )
    .await;
    assert_eq!(status, 200);
    let sheet = testkit::xlsx::read(&xlsx, "chi-so");
    assert_eq!(sheet.text(6, 2), "Tổng số");
    for (r, g) in grpc.groups.iter().enumerate() {
        let at = 8 + r as u32;
        let i = g.indicators.as_ref().unwrap();
        assert_eq!(sheet.text(at, 1), g.key[0].value);
        assert_eq!(sheet.number(at, 2), i.received as f64);
        let online = i.online.as_ref().unwrap();
        match online.percent {
            Some(p) => assert!((sheet.number(at, 22) * 100.0 - p).abs() < 1e-9),
            None => assert!(sheet.is_empty(at, 22)),
        }
    }

    let report = client
        .get_report(authed(
            COUNTER_DISTRICT,
            pb::GetReportRequest {
                form: pb::ReportForm::Ii06a as i32,
                from: "2024-04-01".to_owned(),
                to: "2024-05-01".to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("GetReport")
        .into_inner();
    assert_eq!(report.columns[0].id, "sector");
    assert_eq!(
        report.rows.last().unwrap().cells[1].value,
        Some(pb::cell::Value::Count(6))
    );

    // Errors: each names what is wrong.
    for (path, token, expected, field) in [
        (format!("/v1/indicators?{period}"), None, 401, None),
        (format!("/v1/indicators?{period}"), Some("nope"), 401, None),
        (
            "/v1/indicators?from=2024-02-30&to=2024-05-01".to_owned(),
            Some(AUDITOR),
            400,
            Some("from"),
        ),
        (
            format!("/v1/indicators?{period}&group_by=sector,colour"),
            Some(AUDITOR),
            400,
            Some("group_by[1]"),
        ),
        (
            format!("/v1/indicators?{period}&level=galaxy"),
            Some(AUDITOR),
            400,
            Some("level"),
        ),
        (
            format!("/v1/indicators?{period}&colour=red"),
            Some(AUDITOR),
            400,
            Some("colour"),
        ),
        (
            format!("/v1/reports/bieu-mau-7-section-6?{period}&group_by=sector"),
            Some(AUDITOR),
            400,
            Some("group_by"),
        ),
        (
            format!("/v1/reports/scorecard-766?{period}&structure_at=2025-13-01"),
            Some(AUDITOR),
            400,
            Some("structure_at"),
        ),
        (
            format!("/v1/reports/ii06a?{period}&format=xls"),
            Some(AUDITOR),
            400,
            Some("format"),
        ),
        (
            format!("/v1/reports/form-99?{period}"),
            Some(AUDITOR),
            404,
            None,
        ),
        (
            "/v1/dossiers/HS-NOPE/status".to_owned(),
            Some(AUDITOR),
            404,
            None,
        ),
    ] {
        let (status, _, body) = http_get(http, &path, token).await;
        assert_eq!(status, expected, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
        assert_eq!(json["field"].as_str(), field, "{path}: {body}");
    }
    let err = client
        .get_report(authed(AUDITOR, pb::GetReportRequest::default()))
        .await
        .expect_err("no form");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A dossier's status, by gRPC and HTTP: received, national portal code 2.
    let status = client
        .get_dossier_status(authed(
            AUDITOR,
            pb::GetDossierStatusRequest {
                dossier_id: "HS-P-0001".to_owned(),
            },
        ))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (
            status.phase.as_str(),
            status.portal_status_code,
            status.version
        ),
        ("open", 2, 1)
    );
    assert!(status.due_at.is_some() && status.profile.is_some());
    let (code, _, body) = http_get(http, "/v1/dossiers/HS-P-0001/status", Some(AUDITOR)).await;
    assert_eq!(code, 200, "{body}");
    let parsed: pb::DossierStatus = serde_json::from_str(&body).expect("proto3 JSON");
    assert_eq!(parsed, status);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["portalStatusCode"], 2);
    assert_eq!(json["version"], 1);
    assert_eq!(json["outstandingVnd"], "0");
    assert_eq!(json["timeliness"], "TIMELINESS_UNSPECIFIED");
    assert!(json.get("resolvedAt").is_none(), "{body}");
    assert!(
        json["dueAt"]
            .as_str()
            .is_some_and(|t| t.starts_with("2024-")),
        "{body}"
    );
    let refused = client
        .get_dossier_status(authed(
            AUDITOR,
            pb::GetDossierStatusRequest {
                dossier_id: "HS-P-R0001".to_owned(),
            },
        ))
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (refused.phase.as_str(), refused.portal_status_code),
        ("refused_at_intake", 3)
    );
    for (id, code) in [
        ("HS-NOPE", tonic::Code::NotFound),
        ("", tonic::Code::InvalidArgument),
    ] {
        let err = client
            .get_dossier_status(authed(
                AUDITOR,
                pb::GetDossierStatusRequest {
                    dossier_id: id.to_owned(),
                },
            ))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), code, "{id:?}");
    }
    projection.stop().await;
    relay.stop().await;
}
