//! The projection in-process: its consumer on a private JetStream namespace and its
//! `StatsService`, plus what the tests compare it with (the statistics computed by `stats`
//! straight from the raw events of the log).

use std::net::SocketAddr;
use std::time::Duration;

use api::v1 as pb;
use api::v1::stats_service_client::StatsServiceClient;
use chrono::NaiveDate;
use eventlog::EventLog;
use projection::{ConsumerConfig, Endpoints, ProjectionApp};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::{AUDITOR, authed, test_tokens};

/// A running projection (consumer and queries); stopped when dropped.
#[derive(Debug)]
pub struct RunningProjection {
    pub addr: SocketAddr,
    /// The HTTP/JSON and CSV endpoint.
    pub http_addr: SocketAddr,
    pub log: EventLog,
    /// The consumer's status (positions, failed applies, batch fallbacks).
    pub status: tokio::sync::watch::Receiver<projection::ConsumerStatus>,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl RunningProjection {
    /// Starts the projection on 127.0.0.1:0 over `log`, consuming `stream` (subjects
    /// `{prefix}.>`) through the durable consumer `durable`.
    pub async fn start(
        log: EventLog,
        nats_url: &str,
        stream: &str,
        prefix: &str,
        durable: &str,
    ) -> RunningProjection {
        Self::start_with_dashboard(
            log,
            nats_url,
            stream,
            prefix,
            durable,
            projection::dashboard::DashboardConfig::default(),
        )
        .await
    }

    /// [`RunningProjection::start`] with the `[projection.dashboard]` section `dashboard`.
    pub async fn start_with_dashboard(
        log: EventLog,
        nats_url: &str,
        stream: &str,
        prefix: &str,
        durable: &str,
        dashboard: projection::dashboard::DashboardConfig,
    ) -> RunningProjection {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(nats_url)
            .await
            .expect("nats client");
        let mut consumer = ConsumerConfig::new(stream, prefix, durable);
        consumer.max_backoff = Duration::from_millis(500);
        let app = ProjectionApp::build_with(
            log.clone(),
            test_tokens(),
            Endpoints {
                grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
                http: SocketAddr::from(([127, 0, 0, 1], 0)),
                targets: stats::Targets::default(),
                limits: projection::QueryLimits::default(),
                dashboard,
            },
            async_nats::jetstream::new(client),
            consumer,
        )
        .await
        .expect("projection starts");
        let addr = app.local_addr();
        let http_addr = app.http_addr();
        let status = app.status();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            app.run_until_stopped(token)
                .await
                .expect("projection serves");
        });
        RunningProjection {
            addr,
            http_addr,
            log,
            status,
            shutdown,
            handle: Some(handle),
        }
    }

    pub async fn client(&self) -> StatsServiceClient<Channel> {
        StatsServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to projection")
    }

    /// The agency structure's administration, served on the same port.
    pub async fn structure_client(
        &self,
    ) -> api::v1::agency_structure_service_client::AgencyStructureServiceClient<Channel> {
        api::v1::agency_structure_service_client::AgencyStructureServiceClient::connect(format!(
            "http://{}",
            self.addr
        ))
        .await
        .expect("connect to the agency structure")
    }

    /// `GetIndicators` for `[from, to)` with an auditor token and no filter: the total.
    pub async fn indicators(&self, from: NaiveDate, to: NaiveDate) -> pb::Indicators {
        self.client()
            .await
            .get_indicators(authed(AUDITOR, indicators_request(from, to)))
            .await
            .expect("GetIndicators")
            .into_inner()
            .total
            .expect("a total")
    }

    /// Waits (bounded by `timeout`) until the aggregates reflect every dossier in the log up to
    /// its latest version.
    pub async fn wait_caught_up(&self, timeout: Duration) {
        wait_caught_up(&self.log, timeout).await;
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(handle) = self.handle.take() {
            handle.await.expect("projection task");
        }
    }
}

impl Drop for RunningProjection {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The dossiers whose applied version is behind the log (empty when caught up).
pub async fn behind(log: &EventLog) -> Vec<String> {
    let mut rows: Vec<(String, i32)> = sqlx_rows(
        log,
        "SELECT dossier_id, MAX(version) FROM events GROUP BY dossier_id",
    )
    .await;
    let mut behind = Vec::new();
    for (dossier_id, version) in rows.drain(..) {
        let applied = projection::applied_version(log.pool(), &dossier_id)
            .await
            .expect("read applied version");
        if applied < version {
            behind.push(dossier_id);
        }
    }
    behind
}

async fn sqlx_rows(log: &EventLog, sql: &'static str) -> Vec<(String, i32)> {
    sqlx::query_as(sql)
        .fetch_all(log.pool())
        .await
        .expect("query the test database")
}

/// Polls the applied versions until none is behind the log; panics after `timeout`.
pub async fn wait_caught_up(log: &EventLog, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let behind = behind(log).await;
        if behind.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "projection did not catch up within {timeout:?}; behind: {behind:?}"
        );
    }
}

pub fn indicators_request(from: NaiveDate, to: NaiveDate) -> pb::GetIndicatorsRequest {
    pb::GetIndicatorsRequest {
        from: from.format("%Y-%m-%d").to_string(),
        to: to.format("%Y-%m-%d").to_string(),
        ..Default::default()
    }
}

/// What `GetIndicators` must answer for `[from, to)` without filter, computed by `stats` from
/// every dossier's raw events in the log.
pub async fn expected_indicators(log: &EventLog, from: NaiveDate, to: NaiveDate) -> pb::Indicators {
    expected_indicators_where(log, from, to, |_| true).await
}

/// Like [`expected_indicators`], over the slices `filter` keeps.
pub async fn expected_indicators_where(
    log: &EventLog,
    from: NaiveDate,
    to: NaiveDate,
    filter: impl Fn(&stats::Slice) -> bool,
) -> pb::Indicators {
    let ids: Vec<String> = sqlx_rows(
        log,
        "SELECT dossier_id, MAX(version) FROM events GROUP BY dossier_id",
    )
    .await
    .into_iter()
    .map(|(id, _)| id)
    .collect();
    let dossiers = log.load_dossiers(&ids).await.expect("load dossiers");
    let mut aggregates = stats::Aggregates::new();
    for events in dossiers.values() {
        let decoded: Vec<domain::Event> = events
            .iter()
            .map(|e| writepath::decode(e).expect("stored events decode"))
            .collect();
        if let Some(c) = stats::contribution(&decoded) {
            aggregates.add_contribution(&c);
        }
    }
    let totals = aggregates.totals(from, to, filter);
    projection::service::indicators_pb(&stats::indicators(&totals)).expect("amounts fit in int64")
}

/// [`http_get_bytes`] of a text answer.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, String) {
    let (status, headers, body) = http_get_bytes(addr, path, token).await;
    (
        status,
        headers,
        String::from_utf8(body).expect("utf-8 body"),
    )
}

/// A plain HTTP/1.1 GET ([`crate::http::get`]): status, headers (lower-case names), body.
pub async fn http_get_bytes(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let answer = crate::http::get(addr, path, token).await;
    (answer.status, answer.headers, answer.body)
}

/// Checks an II.06a workbook (`.xlsx`) cell by cell against the same query's JSON answer: the
/// key and count cells in place (the title block, grouped headings and column numbers above:
/// data from row 8, after the STT column), the total row named `Tổng cộng` and summing the rows
/// above with `SUM` formulas.
pub fn assert_ii06a_workbook(xlsx: &[u8], report: &pb::Report) {
    let sheet = testkit::xlsx::read(xlsx, "ii06a");
    assert_eq!(sheet.text(7, 12), "(13)");
    let first = 8;
    for (r, row) in report.rows.iter().enumerate() {
        let at = first + r as u32;
        let total = r + 1 == report.rows.len();
        for (c, cell) in row.cells.iter().enumerate() {
            let col = 1 + c as u32;
            match &cell.value {
                Some(pb::cell::Value::Count(n)) => {
                    assert_eq!(sheet.number(at, col), *n as f64, "row {r} column {c}");
                    if total && r > 0 {
                        assert!(sheet.formula(at, col).starts_with("SUM("), "{r} {c}");
                    }
                }
                Some(pb::cell::Value::Text(t)) if total && c == 0 => {
                    assert_eq!(sheet.text(at, col), "Tổng cộng", "{t}")
                }
                Some(pb::cell::Value::Text(t)) => assert_eq!(&sheet.text(at, col), t),
                other => panic!("II.06a has no {other:?}"),
            }
        }
    }
    assert!(
        sheet.is_empty(first + report.rows.len() as u32, 1),
        "no row after the total"
    );
}
