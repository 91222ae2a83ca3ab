//! A local stand-in for the national portal (the real one is not reachable from here): an HTTP
//! receiver started by the test that checks every request against the documented shape
//! (README "National portal synchronisation", `services/portal-sync/src/shapes.rs`) —
//! envelope, credentials, required fields and their types, no unknown field, dates
//! `yyyyMMddHHmmss`, code ranges, chunk sizes — and answers as the test scripts it: accept,
//! fail with an HTTP status, refuse with an `error_code`, answer late, or take the request and
//! never answer (the answer lost). A request that breaks the shape is recorded as a violation
//! and refused (`error_code` [`SHAPE_VIOLATION`]); tests assert there was none.
//!
//! The checker is written from the documentation, independently of the service's serde
//! structs, so a drift between the two shows here.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The `error_code` answered to a request that breaks the shape.
pub const SHAPE_VIOLATION: i64 = 99;

/// How the receiver answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `error_code` 0.
    Accept,
    /// Accept, after a delay.
    Slow(Duration),
    /// This HTTP status, empty body.
    Status(u16),
    /// HTTP 200 with this `error_code`.
    ErrorCode(i64),
    /// The request is taken (as accepted) and the answer never sent: what a crash of the
    /// sender between the portal's processing and its answer looks like.
    AcceptAndHang,
}

/// What happened to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    Accepted,
    /// Taken, but the answer was never sent.
    Lost,
    Failed(u16),
    ErrorCode(i64),
}

impl Answered {
    /// Whether the portal took the content (the sender may not know it).
    pub fn taken(&self) -> bool {
        matches!(self, Answered::Accepted | Answered::Lost)
    }
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub items: Vec<Value>,
    pub answered: Answered,
}

#[derive(Debug, Default)]
struct Inner {
    script: VecDeque<Reply>,
    refuse: BTreeMap<String, i64>,
    received: Vec<Received>,
    violations: Vec<String>,
}

#[derive(Debug, Clone)]
struct Shared {
    credentials: String,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
}

/// The receiver; stopped when dropped.
#[derive(Debug)]
pub struct PortalReceiver {
    pub addr: SocketAddr,
    shared: Shared,
    stop: CancellationToken,
}

impl Drop for PortalReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PortalReceiver {
    /// Listens on 127.0.0.1:0; expects `Authorization: Bearer <credentials>`.
    pub async fn start(credentials: &str) -> PortalReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("address");
        let shared = Shared {
            credentials: credentials.to_owned(),
            inner: Arc::default(),
            arrived: Arc::new(Notify::new()),
        };
        let router = axum::Router::new()
            .route("/dvcqg", axum::routing::post(handle))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
                .ok();
        });
        PortalReceiver { addr, shared, stop }
    }

    /// The endpoint to configure.
    pub fn url(&self) -> String {
        format!("http://{}/dvcqg", self.addr)
    }

    /// The next requests are answered with these replies, in order; then `Accept`.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Every request naming this dossier is refused with `error_code`.
    pub fn refuse_dossier(&self, dossier_id: &str, error_code: i64) {
        self.lock().refuse.insert(dossier_id.to_owned(), error_code);
    }

    /// Stops refusing the dossier.
    pub fn clear_refusal(&self, dossier_id: &str) {
        self.lock().refuse.remove(dossier_id);
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Every shape violation so far.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// The dossier records of `dossier_id` the portal took, in arrival order.
    pub fn records(&self, dossier_id: &str) -> Vec<Value> {
        self.taken("DongBoHoSoMC", dossier_id)
    }

    /// The progress entries of `dossier_id` the portal took, in arrival order.
    pub fn progress(&self, dossier_id: &str) -> Vec<Value> {
        self.taken("CapNhatTienDoHoSoMC", dossier_id)
    }

    fn taken(&self, service: &str, dossier_id: &str) -> Vec<Value> {
        self.lock()
            .received
            .iter()
            .filter(|r| r.service == service && r.answered.taken())
            .flat_map(|r| r.items.iter())
            .filter(|item| item["MaHoSo"] == dossier_id)
            .cloned()
            .collect()
    }

    /// Waits (at most `timeout`) until `done` holds for the receiver, checking after every
    /// request and every 50 ms.
    pub async fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(self) {
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the receiver did not see {what} within {timeout:?}; received: {:#?}",
                    self.received()
                );
            }
            tokio::select! {
                () = self.shared.arrived.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("receiver state")
    }
}

async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let expected = format!("Bearer {}", shared.credentials);
    let authorised = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let reply = {
        let mut inner = shared.inner.lock().expect("receiver state");
        let value = parsed.unwrap_or(Value::Null);
        let service = value["service"].as_str().unwrap_or_default().to_owned();
        let items = value["data"].as_array().cloned().unwrap_or_default();
        let violations = if authorised {
            check_request(&value)
        } else {
            vec!["missing or wrong Authorization: Bearer credentials".to_owned()]
        };
        let refused = items
            .iter()
            .filter_map(|i| i["MaHoSo"].as_str())
            .find_map(|id| inner.refuse.get(id).copied());
        let reply = if !violations.is_empty() {
            inner.violations.extend(violations);
            Reply::ErrorCode(SHAPE_VIOLATION)
        } else if let Some(code) = refused {
            Reply::ErrorCode(code)
        } else {
            inner.script.pop_front().unwrap_or(Reply::Accept)
        };
        let answered = match &reply {
            Reply::Accept | Reply::Slow(_) => Answered::Accepted,
            Reply::AcceptAndHang => Answered::Lost,
            Reply::Status(s) => Answered::Failed(*s),
            Reply::ErrorCode(c) => Answered::ErrorCode(*c),
        };
        inner.received.push(Received {
            service,
            items,
            answered,
        });
        reply
    };
    shared.arrived.notify_waiters();
    match reply {
        Reply::Accept => ok(0),
        Reply::Slow(delay) => {
            tokio::time::sleep(delay).await;
            ok(0)
        }
        Reply::Status(status) => StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response(),
        Reply::ErrorCode(code) => ok(code),
        Reply::AcceptAndHang => {
            std::future::pending::<()>().await;
            ok(0)
        }
    }
}

fn ok(code: i64) -> Response {
    axum::Json(
        json!({"error_code": code, "message": if code == 0 { "thành công" } else { "từ chối" }}),
    )
    .into_response()
}

/// A field's expected kind.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A non-empty string.
    Text,
    /// `yyyyMMddHHmmss`, a valid local date and time in 1990–2100.
    Date,
    /// An integer in the range.
    Code(i64, i64),
    /// An integer ≥ 0.
    Amount,
    /// An array of objects of these fields.
    List(&'static [Field]),
}

/// `(name, kind, required)`.
type Field = (&'static str, Kind, bool);

const COMPONENT: &[Field] = &[
    ("MaThanhPhanHoSo", Kind::Text, true),
    ("DuocSoHoa", Kind::Code(0, 1), true),
    ("DuocTaiSuDung", Kind::Code(0, 1), true),
    ("DuocLayTuKhoDMQG", Kind::Code(0, 1), true),
];
const FEE: &[Field] = &[
    ("TenPhiLePhi", Kind::Text, true),
    ("MaPhiLePhi", Kind::Text, true),
    ("HinhThucThu", Kind::Code(0, 3), true),
    ("Gia", Kind::Amount, true),
];
const SUPPLEMENT: &[Field] = &[
    ("NgayYeuCauBoSung", Kind::Date, true),
    ("NoiDungBoSung", Kind::Text, true),
    ("NgayTiepNhanBoSung", Kind::Date, false),
    ("NgayHenTraTruoc", Kind::Date, true),
    ("NgayHenTraMoi", Kind::Date, false),
];
const RESULT: &[Field] = &[
    ("TenGiayTo", Kind::Text, true),
    ("MaBamSHA256", Kind::Text, true),
];
const IDENTITY: &[Field] = &[
    ("LoaiDinhDanh", Kind::Code(1, 2), true),
    ("SoDinhDanh", Kind::Text, true),
];

/// `DongBoHoSoMC`'s record.
const RECORD: &[Field] = &[
    ("MaHoSo", Kind::Text, true),
    ("MaTTHC", Kind::Text, true),
    ("TenTTHC", Kind::Text, true),
    ("MaLinhVuc", Kind::Text, true),
    ("TenLinhVuc", Kind::Text, true),
    ("KenhThucHien", Kind::Code(1, 3), true),
    ("ChuHoSo", Kind::Text, false),
    ("SoGiayToChuHoSo", Kind::Text, false),
    ("LoaiDoiTuong", Kind::Code(1, 4), true),
    ("Email", Kind::Text, false),
    ("SoDienThoai", Kind::Text, false),
    ("TrichYeuHoSo", Kind::Text, true),
    ("NgayTiepNhan", Kind::Date, true),
    ("NgayHenTra", Kind::Date, false),
    ("TrangThaiHoSo", Kind::Code(1, 10), true),
    ("NgayTra", Kind::Date, false),
    ("HinhThuc", Kind::Code(1, 3), false),
    ("NgayKetThucXuLy", Kind::Date, false),
    ("DonViXuLy", Kind::Text, true),
    ("TaiLieuNop", Kind::List(COMPONENT), true),
    ("DanhSachLePhi", Kind::List(FEE), true),
    ("DanhSachHoSoBoSung", Kind::List(SUPPLEMENT), true),
    ("DanhSachGiayToKetQua", Kind::List(RESULT), true),
    ("DuocThanhToanTrucTuyen", Kind::Code(0, 1), true),
    ("DinhDanhCHS", Kind::List(IDENTITY), true),
];

/// `CapNhatTienDoHoSoMC`'s entry.
const PROGRESS: &[Field] = &[
    ("MaHoSo", Kind::Text, true),
    ("NguoiXuLy", Kind::Text, true),
    ("ChucDanh", Kind::Text, true),
    ("ThoiDiemXuLy", Kind::Date, true),
    ("PhongBanXuLy", Kind::Text, true),
    ("NoiDungXuLy", Kind::Text, true),
    ("TrangThai", Kind::Code(1, 10), true),
    ("NgayBatDau", Kind::Date, true),
    ("NgayKetThucTheoQuyDinh", Kind::Date, false),
];

/// Every way `request` breaks the documented shape (empty: none).
pub fn check_request(request: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(object) = request.as_object() else {
        return vec!["the body is not a JSON object".to_owned()];
    };
    for key in object.keys() {
        if key != "service" && key != "data" {
            out.push(format!("unknown envelope field {key:?}"));
        }
    }
    let Some(items) = request["data"].as_array() else {
        out.push("data is not an array".to_owned());
        return out;
    };
    let (fields, min, max) = match request["service"].as_str() {
        Some("DongBoHoSoMC") => (RECORD, 1, 1),
        Some("CapNhatTienDoHoSoMC") => (PROGRESS, 1, 10),
        other => {
            out.push(format!("unknown service {other:?}"));
            return out;
        }
    };
    if !(min..=max).contains(&items.len()) {
        out.push(format!(
            "{} items in one request (expected {min} to {max})",
            items.len()
        ));
    }
    for (i, item) in items.iter().enumerate() {
        check_object(item, fields, &format!("data[{i}]"), &mut out);
        if fields.len() == RECORD.len() {
            // A returned result has its date; a decided or ended dossier its end date.
            if item["TrangThaiHoSo"] == 10 && item.get("NgayTra").is_none() {
                out.push(format!("data[{i}]: status 10 without NgayTra"));
            }
            if matches!(item["TrangThaiHoSo"].as_i64(), Some(3 | 7 | 8 | 9 | 10))
                && item.get("NgayKetThucXuLy").is_none()
            {
                out.push(format!(
                    "data[{i}]: an ended dossier without NgayKetThucXuLy"
                ));
            }
        } else if let (Some(start), Some(at)) =
            (item["NgayBatDau"].as_str(), item["ThoiDiemXuLy"].as_str())
        {
            if start > at {
                out.push(format!("data[{i}]: NgayBatDau after ThoiDiemXuLy"));
            }
        }
    }
    out
}

fn check_object(value: &Value, fields: &[Field], path: &str, out: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        out.push(format!("{path} is not an object"));
        return;
    };
    for key in object.keys() {
        if !fields.iter().any(|(name, _, _)| name == key) {
            out.push(format!("{path}.{key}: not a documented field"));
        }
    }
    for (name, kind, required) in fields {
        let at = format!("{path}.{name}");
        match object.get(*name) {
            None if *required => out.push(format!("{at}: required")),
            None => {}
            Some(v) => check_value(v, *kind, &at, out),
        }
    }
}

fn check_value(v: &Value, kind: Kind, at: &str, out: &mut Vec<String>) {
    match kind {
        Kind::Text => {
            if v.as_str().is_none_or(|s| s.trim().is_empty()) {
                out.push(format!("{at}: a non-empty string expected, got {v}"));
            }
        }
        Kind::Date => {
            let valid = v.as_str().is_some_and(|s| {
                s.len() == 14
                    && s.bytes().all(|b| b.is_ascii_digit())
                    && chrono::NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
                        .is_ok_and(|d| (1990..=2100).contains(&chrono::Datelike::year(&d)))
            });
            if !valid {
                out.push(format!("{at}: a date yyyyMMddHHmmss expected, got {v}"));
            }
        }
        Kind::Code(lo, hi) => {
            if !v.as_i64().is_some_and(|n| (lo..=hi).contains(&n)) {
                out.push(format!("{at}: an integer in {lo}..={hi} expected, got {v}"));
            }
        }
        Kind::Amount => {
            if v.as_i64().is_none_or(|n| n < 0) {
                out.push(format!("{at}: an amount ≥ 0 expected, got {v}"));
            }
        }
        Kind::List(fields) => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    check_object(item, fields, &format!("{at}[{i}]"), out);
                }
            }
            None => out.push(format!("{at}: an array expected, got {v}")),
        },
    }
}

/// How the harness configures the sync.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub database_url: String,
    pub nats_url: String,
    pub stream: String,
    pub prefix: String,
    pub endpoint: String,
    pub credentials: String,
    pub first_retry: Duration,
    pub request_timeout: Duration,
    pub unhealthy_after_failures: u64,
    /// A change acknowledged later than this after it was recorded is late.
    pub late_after: Duration,
    /// The sync's clock (the system's by default).
    pub clock: Arc<dyn writepath::Clock>,
    /// The master keys, as a keyring file's text (`None`: none configured).
    pub keyring: Option<String>,
}

impl SyncSettings {
    /// For the test's database, JetStream namespace and receiver: retries from 50 ms (capped at
    /// 400 ms), requests bounded by 2 s (a killed instance's dossiers are free 5 s later), unhealthy after 3 failures in a row.
    pub fn new(
        db: &testkit::TestDb,
        nats: &testkit::TestNats,
        receiver: &PortalReceiver,
    ) -> SyncSettings {
        SyncSettings {
            database_url: db.url.clone(),
            nats_url: nats.url.clone(),
            stream: nats.stream.clone(),
            prefix: nats.prefix.clone(),
            endpoint: receiver.url(),
            credentials: receiver.shared.credentials.clone(),
            first_retry: Duration::from_millis(50),
            request_timeout: Duration::from_secs(2),
            unhealthy_after_failures: 3,
            late_after: Duration::from_secs(86_400),
            clock: Arc::new(writepath::SystemClock),
            keyring: None,
        }
    }
}

/// portal-sync running on a runtime of its own (its pool and NATS client too), so that a test
/// can kill it: [`RunningPortalSync::kill`] drops the runtime with every task where it stands
/// (a request in flight included), as `kill -9` would, without the drain.
#[derive(Debug)]
pub struct RunningPortalSync {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub stats: Arc<portal_sync::SenderStats>,
    stop: Option<tokio::sync::oneshot::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningPortalSync {
    pub async fn start(settings: SyncSettings) -> RunningPortalSync {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<bool>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = build(&settings).await;
                ready_tx
                    .send((
                        app.http_addr(),
                        app.metrics_addr().expect("metrics"),
                        app.stats(),
                    ))
                    .ok();
                let shutdown = CancellationToken::new();
                let running = app.run_until_stopped(shutdown.clone());
                tokio::pin!(running);
                tokio::select! {
                    result = &mut running => result.expect("portal-sync runs"),
                    graceful = stop_rx => {
                        if graceful.unwrap_or(true) {
                            shutdown.cancel();
                            running.await.expect("portal-sync stops");
                        }
                    }
                }
            });
            // Every task still there is dropped where it stands.
            runtime.shutdown_background();
        });
        let (http_addr, metrics_addr, stats) = ready_rx.await.expect("portal-sync starts");
        RunningPortalSync {
            http_addr,
            metrics_addr,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Drops everything at once, requests in flight included.
    pub async fn kill(mut self) {
        self.end(false).await;
    }

    /// Stops gracefully (drain).
    pub async fn stop(mut self) {
        self.end(true).await;
    }

    async fn end(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            stop.send(graceful).ok();
        }
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().expect("portal-sync thread"))
                .await
                .expect("join");
        }
    }
}

impl Drop for RunningPortalSync {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(false).ok();
        }
    }
}

async fn build(settings: &SyncSettings) -> portal_sync::PortalSyncApp {
    let log = eventlog::EventLog::connect(&settings.database_url, 4)
        .await
        .expect("connect");
    let nats = async_nats::connect(&settings.nats_url).await.expect("nats");
    let client = portal_sync::PortalClient::new(
        &settings.endpoint,
        portal_sync::Credentials::new(&settings.credentials),
        Duration::from_secs(2),
        settings.request_timeout,
        Vec::new(),
    )
    .expect("client");
    portal_sync::PortalSyncApp::build_with(portal_sync::Parts {
        log,
        tokens: crate::test_tokens(),
        jetstream: async_nats::jetstream::new(nats),
        feed: portal_sync::consumer::FeedConfig {
            stream: settings.stream.clone(),
            subject_prefix: settings.prefix.clone(),
            durable: "portal-sync".to_owned(),
            ack_wait: Duration::from_secs(30),
            max_batch: 64,
        },
        client,
        sender: portal_sync::SenderConfig {
            batch_size: 16,
            concurrency: 4,
            max_chunks_per_turn: 10,
            first_retry: settings.first_retry,
            max_retry: settings.first_retry * 8,
            poll_interval: Duration::from_millis(100),
            late_after: settings.late_after,
            request_timeout: settings.request_timeout,
        },
        clock: settings.clock.clone(),
        http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        unhealthy_after_failures: settings.unhealthy_after_failures,
        keyring: settings
            .keyring
            .as_deref()
            .map(|text| personal::Keyring::parse(text).expect("keyring")),
    })
    .await
    .expect("portal-sync builds")
}
