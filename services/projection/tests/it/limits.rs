//! The queries' bounds over gRPC and HTTP, against the running service: every date out of range,
//! every limit of `[projection.limits]`, admission control (a query held on a lock keeps its
//! permit, the next one is shed at once), the deadline (PostgreSQL cancels a query that waits
//! past it), `as_recorded_at` for auditors only, and the JSON bodies of the router's own errors.
//! Nothing here depends on how fast the machine is: waits are on locks, never on time.

use std::net::SocketAddr;

use api::v1 as pb;
use api::v1::stats_service_client::StatsServiceClient;
use chrono::NaiveDate;
use domain::Level;
use eventlog::EventLog;
use projection::QueryLimits;
use projection::{ConsumerConfig, Endpoints, ProjectionApp, store};
use sqlx::PgPool;
use svc::{Principal, Role, Tokens};
use testkit::TestNats;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::support::{Rng, migrated_db, random_contribution};

pub const AUDITOR: &str = "test-auditor";
const COUNTER: &str = "test-counter";

pub struct Running {
    grpc: SocketAddr,
    pub http: SocketAddr,
    rejections: std::sync::Arc<projection::read::Rejections>,
    shutdown: CancellationToken,
    _nats: TestNats,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Running {
    pub async fn start(log: &EventLog, limits: QueryLimits) -> Running {
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
                agency: Some(domain::AgencyCode::parse("000.00.12.H40").unwrap()),
                level: Some(Level::District),
                role: Role::Counter,
                scopes: Vec::new(),
            },
        );
        let nats = TestNats::new().await;
        let app = ProjectionApp::build_with(
            log.clone(),
            tokens,
            Endpoints {
                grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
                http: SocketAddr::from(([127, 0, 0, 1], 0)),
                targets: stats::Targets::default(),
                limits,
                dashboard: projection::dashboard::DashboardConfig::default(),
            },
            nats.jetstream(),
            ConsumerConfig::new(&nats.stream, &nats.prefix, "limits"),
        )
        .await
        .expect("projection starts");
        let (grpc, http) = (app.local_addr(), app.http_addr());
        let rejections = app.query_rejections();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move { app.run_until_stopped(stop).await });
        Running {
            grpc,
            http,
            rejections,
            shutdown,
            _nats: nats,
        }
    }

    async fn client(&self) -> StatsServiceClient<Channel> {
        StatsServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn request(from: &str, to: &str) -> pb::GetIndicatorsRequest {
    pb::GetIndicatorsRequest {
        from: from.into(),
        to: to.into(),
        ..Default::default()
    }
}

fn violation(s: &tonic::Status) -> String {
    s.get_details_bad_request()
        .map(|b| b.field_violations[0].field.clone())
        .unwrap_or_default()
}

fn reason(s: &tonic::Status) -> String {
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

/// A raw HTTP/1.1 request line and headers; answers status, lower-case headers, body.
async fn http_raw(addr: SocketAddr, request: &[u8]) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
) -> (u16, Vec<(String, String)>, serde_json::Value) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    let (status, headers, body) = http_raw(addr, request.as_bytes()).await;
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: {status} body is not JSON ({e}): {body:?}"));
    (status, headers, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dates_out_of_range_anywhere_are_invalid_naming_the_field() {
    let (_db, log) = migrated_db().await;
    let running = Running::start(&log, QueryLimits::default()).await;
    let mut client = running.client().await;
    for (from, to, field) in [
        ("-4714-01-01", "2024-01-01", "from"),
        ("-100000-01-01", "2024-01-01", "from"),
        ("1989-12-31", "1990-02-01", "from"),
        ("2024-01-01", "2101-01-02", "to"),
        ("2024-01-01", "+200000-01-01", "to"),
    ] {
        let err = client
            .get_indicators(authed(AUDITOR, request(from, to)))
            .await
            .expect_err("out of range");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{from} {to}: {err:?}"
        );
        assert_eq!(violation(&err), field, "{from} {to}");
        let report = pb::GetReportRequest {
            form: pb::ReportForm::Scorecard766 as i32,
            from: from.into(),
            to: to.into(),
            ..Default::default()
        };
        let err = client
            .get_report(authed(AUDITOR, report))
            .await
            .expect_err("out of range");
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{from} {to}: {err:?}"
        );
        assert_eq!(violation(&err), field);
        for path in [
            "/v1/indicators",
            "/v1/reports/ii06a",
            "/v1/reports/ii06a.csv",
        ] {
            let (status, _, body) = http(
                running.http,
                "GET",
                &format!("{path}?from={from}&to={to}"),
                AUDITOR,
            )
            .await;
            assert_eq!(status, 400, "{path} {from} {to}: {body}");
            assert_eq!(body["field"], field, "{body}");
        }
    }
    for seconds in [-210_000_000_000_i64, 253_402_300_800, 0] {
        let at = pb::GetIndicatorsRequest {
            as_recorded_at: Some(api::Timestamp { seconds, nanos: 0 }),
            ..request("2024-01-01", "2024-02-01")
        };
        let err = client
            .get_indicators(authed(AUDITOR, at))
            .await
            .expect_err("out of range");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{seconds}");
        assert_eq!(violation(&err), "as_recorded_at");
    }
    for at in [
        "-4714-01-01T00:00:00Z",
        "1970-01-01T00:00:00Z",
        "2200-01-01T00:00:00Z",
    ] {
        let (status, _, body) = http(
            running.http,
            "GET",
            &format!("/v1/indicators?from=2024-01-01&to=2024-02-01&as_recorded_at={at}"),
            AUDITOR,
        )
        .await;
        assert_eq!(status, 400, "{at}: {body}");
        assert_eq!(body["field"], "as_recorded_at");
    }
    // The bounds themselves are accepted.
    client
        .get_indicators(authed(AUDITOR, request("1990-01-01", "2010-01-01")))
        .await
        .expect("1990 is supported");
    client
        .get_indicators(authed(AUDITOR, request("2090-01-01", "2101-01-01")))
        .await
        .expect("2100 is supported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_period_grouping_and_answer_size_limits_name_the_field() {
    let (db, log) = migrated_db().await;
    // 40 dossiers over three agencies.
    let mut rng = Rng::new(9);
    let mut tx = db.pool.begin().await.unwrap();
    let mut agencies = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let c = random_contribution(
            &mut rng,
            NaiveDate::from_ymd_opt(2024, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(2024, 12, 1).unwrap(),
        );
        agencies.insert(c.slice.agency.as_str().to_owned());
        store::add_diff(&mut tx, &stats::diff(None, Some(&c)))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    assert_eq!(
        agencies.len(),
        3,
        "the data must have more groups than the limit"
    );
    let running = Running::start(
        &log,
        QueryLimits {
            max_period_days: 400,
            max_group_by: 2,
            max_groups: 2,
            ..QueryLimits::default()
        },
    )
    .await;
    let mut client = running.client().await;
    let by = |dims: &[pb::Dimension]| pb::GetIndicatorsRequest {
        group_by: dims.iter().map(|d| *d as i32).collect(),
        ..request("2024-01-01", "2025-01-01")
    };

    let err = client
        .get_indicators(authed(AUDITOR, request("2024-01-01", "2025-03-01")))
        .await
        .expect_err("period too long");
    assert_eq!(
        (err.code(), violation(&err)),
        (tonic::Code::InvalidArgument, "to".to_owned())
    );

    let three = [
        pb::Dimension::Level,
        pb::Dimension::Channel,
        pb::Dimension::Sector,
    ];
    let err = client
        .get_indicators(authed(AUDITOR, by(&three)))
        .await
        .expect_err("too many dimensions");
    assert_eq!(
        (err.code(), violation(&err)),
        (tonic::Code::InvalidArgument, "group_by".to_owned())
    );

    let err = client
        .get_indicators(authed(AUDITOR, by(&[pb::Dimension::Agency])))
        .await
        .expect_err("too many groups");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(violation(&err), "group_by");
    assert_eq!(reason(&err), "too_many_groups");
    let report = pb::GetReportRequest {
        form: pb::ReportForm::Ii06a as i32,
        group_by: vec![pb::Dimension::Agency as i32],
        ..pb::GetReportRequest {
            from: "2024-01-01".into(),
            to: "2025-01-01".into(),
            ..Default::default()
        }
    };
    let err = client
        .get_report(authed(AUDITOR, report))
        .await
        .expect_err("too many rows");
    assert_eq!(reason(&err), "too_many_groups");
    // Narrowed to one agency, the same grouping answers.
    let narrowed = pb::GetIndicatorsRequest {
        agency_code: agencies.first().unwrap().clone(),
        ..by(&[pb::Dimension::Agency])
    };
    let answer = client
        .get_indicators(authed(AUDITOR, narrowed))
        .await
        .expect("within the limit")
        .into_inner();
    assert_eq!(answer.groups.len(), 1);

    let period = "from=2024-01-01&to=2025-01-01";
    for (path, field, code) in [
        (
            "/v1/indicators?from=2024-01-01&to=2025-03-01".to_owned(),
            "to",
            "invalid_argument",
        ),
        (
            format!("/v1/indicators?{period}&group_by=level,channel,sector"),
            "group_by",
            "invalid_argument",
        ),
        (
            format!("/v1/indicators?{period}&group_by=agency"),
            "group_by",
            "too_many_groups",
        ),
        (
            format!("/v1/reports/ii06a.csv?{period}&group_by=agency"),
            "group_by",
            "too_many_groups",
        ),
    ] {
        let (status, _, body) = http(running.http, "GET", &path, AUDITOR).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(
            (body["field"].as_str(), body["code"].as_str()),
            (Some(field), Some(code)),
            "{path}"
        );
    }
}

/// Holds `ACCESS EXCLUSIVE` on `table` until the returned transaction ends: queries reading it
/// wait on the lock.
async fn lock(pool: &PgPool, table: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

/// Waits until `n` statements wait for a lock on `table` (no time bound: the lock holds them).
async fn waiting_on(pool: &PgPool, table: &str, n: i64) {
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE NOT l.granted AND c.relname = $1",
        )
        .bind(table)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting >= n {
            return;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_sheds_queries_beyond_the_limits_over_both_transports() {
    let (db, log) = migrated_db().await;
    let running = Running::start(
        &log,
        QueryLimits {
            max_live_queries: 1,
            max_as_recorded_queries: 1,
            query_timeout_secs: 3600,
            ..QueryLimits::default()
        },
    )
    .await;
    let held = lock(&db.pool, "stats_cells").await;
    let mut client = running.client().await;
    let first = tokio::spawn({
        let mut client = client.clone();
        async move {
            client
                .get_indicators(authed(AUDITOR, request("2024-01-01", "2024-02-01")))
                .await
        }
    });
    waiting_on(&db.pool, "stats_cells", 1).await;

    let err = client
        .get_indicators(authed(AUDITOR, request("2024-01-01", "2024-02-01")))
        .await
        .expect_err("shed");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert_eq!(reason(&err), "too_many_queries");
    assert!(err.get_details_retry_info().unwrap().retry_delay.is_some());
    assert!(!err.message().contains("written"), "{err:?}");
    let (status, headers, body) = http(
        running.http,
        "GET",
        "/v1/reports/scorecard-766?from=2024-01-01&to=2024-02-01",
        COUNTER,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "too_many_queries");
    assert!(
        headers.iter().any(|(k, v)| k == "retry-after" && v == "1"),
        "{headers:?}"
    );

    // as_recorded_at has its own permits: it is not shed by the live query…
    let at = pb::GetIndicatorsRequest {
        as_recorded_at: Some(api::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ..request("2024-01-01", "2024-02-01")
    };
    let events = lock(&db.pool, "events").await;
    let recorded = tokio::spawn({
        let mut client = client.clone();
        let at = at.clone();
        async move { client.get_indicators(authed(AUDITOR, at)).await }
    });
    waiting_on(&db.pool, "events", 1).await;
    // …but by the one as_recorded_at query already running.
    let err = client
        .get_indicators(authed(AUDITOR, at.clone()))
        .await
        .expect_err("shed");
    assert_eq!(
        (err.code(), reason(&err)),
        (
            tonic::Code::ResourceExhausted,
            "too_many_queries".to_owned()
        )
    );

    // Released, the held queries answer, and the next ones are admitted again.
    held.rollback().await.unwrap();
    events.rollback().await.unwrap();
    first.await.unwrap().expect("the held query answers");
    recorded
        .await
        .unwrap()
        .expect("the held as_recorded_at query answers");
    client
        .get_indicators(authed(AUDITOR, request("2024-01-01", "2024-02-01")))
        .await
        .expect("admitted again");
    let counts = running.rejections.counts();
    assert_eq!(counts[0], ("too_many_queries", 3), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_past_its_deadline_is_deadline_exceeded_and_says_nothing_of_writes() {
    let (db, log) = migrated_db().await;
    let running = Running::start(
        &log,
        QueryLimits {
            query_timeout_secs: 1,
            ..QueryLimits::default()
        },
    )
    .await;
    // The lock is never released during the calls: only the deadline can end them.
    let held = lock(&db.pool, "stats_cells").await;
    let mut client = running.client().await;
    let err = client
        .get_indicators(authed(AUDITOR, request("2024-01-01", "2024-02-01")))
        .await
        .expect_err("past the deadline");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert_eq!(reason(&err), "query_timeout");
    assert!(!err.message().contains("written"), "{err:?}");
    let (status, _, body) = http(
        running.http,
        "GET",
        "/v1/indicators?from=2024-01-01&to=2024-02-01",
        AUDITOR,
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "query_timeout");
    held.rollback().await.unwrap();
    let counts = running.rejections.counts();
    assert_eq!(counts[2], ("query_timeout", 2), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_recorded_at_is_for_auditors() {
    let (_db, log) = migrated_db().await;
    let running = Running::start(&log, QueryLimits::default()).await;
    let mut client = running.client().await;
    let at = pb::GetIndicatorsRequest {
        as_recorded_at: Some(api::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        ..request("2024-01-01", "2024-02-01")
    };
    let err = client
        .get_indicators(authed(COUNTER, at.clone()))
        .await
        .expect_err("a counter may not");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(reason(&err), "as_recorded_at_auditors_only");
    client
        .get_indicators(authed(AUDITOR, at))
        .await
        .expect("an auditor may");
    client
        .get_indicators(authed(COUNTER, request("2024-01-01", "2024-02-01")))
        .await
        .expect("a counter reads live figures");
    let path = "/v1/indicators?from=2024-01-01&to=2024-02-01&as_recorded_at=2024-03-01T00:00:00Z";
    let (status, _, body) = http(running.http, "GET", path, COUNTER).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["field"], "as_recorded_at");
    let (status, _, body) = http(running.http, "GET", path, AUDITOR).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_http_error_is_a_json_body() {
    let (_db, log) = migrated_db().await;
    let running = Running::start(&log, QueryLimits::default()).await;
    let addr = running.http;

    let (status, _, body) = http(addr, "GET", "/v1/nothing", AUDITOR).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("not_found")));
    let (status, _, body) = http(addr, "POST", "/v1/indicators", AUDITOR).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    // A path segment that is not UTF-8 once decoded.
    let (status, _, body) = http(addr, "GET", "/v1/dossiers/%FF%FE/status", AUDITOR).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("id")),
        "{body}"
    );
    let (status, _, body) = http(addr, "GET", "/v1/reports/%C3%28", AUDITOR).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (400, Some("form")),
        "{body}"
    );
    // A repeated parameter is refused, naming it, rather than one value silently taken.
    for repeated in [
        "from=2024-01-01&to=2024-02-01&to=2024-03-01",
        "from=2024-01-01&to=2024-02-01&group_by=level&group_by=sector",
    ] {
        let (status, _, body) =
            http(addr, "GET", &format!("/v1/indicators?{repeated}"), AUDITOR).await;
        assert_eq!(status, 400, "{body}");
        let name = repeated
            .rsplit('&')
            .next()
            .unwrap()
            .split('=')
            .next()
            .unwrap();
        assert_eq!(body["field"], name, "{body}");
    }
}
