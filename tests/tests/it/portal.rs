//! portal-sync end to end: intake over gRPC and the shared write path, the relay, NATS,
//! PostgreSQL, the sync, and a local receiver standing in for the national portal that checks
//! every request against the documented shape (`tests::portal`).

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{Action, AgencyCode, FeeKind, Outcome, PaymentChannel, ReturnMethod, Text};
use eventlog::EventLog;
use serde_json::Value;
use testkit::{TestDb, TestNats};
use tests::lifecycle::Stack;
use tests::portal::{PortalReceiver, Reply, RunningPortalSync, SyncSettings, check_request};
use tests::{DISTRICT_AGENCY, RunningRelay, eventually_some, local};

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "portal-test-credentials";

struct World {
    db: TestDb,
    nats: TestNats,
    stack: Stack,
    _relay: RunningRelay,
    receiver: PortalReceiver,
}

impl World {
    async fn start() -> World {
        let db = TestDb::new().await;
        let nats = TestNats::new().await;
        let log = EventLog::from_pool(db.pool.clone());
        let stack = Stack::start(log.clone()).await;
        let relay = RunningRelay::start(log, &nats.url, &nats.stream, &nats.prefix).await;
        let receiver = PortalReceiver::start(SECRET).await;
        World {
            db,
            nats,
            stack,
            _relay: relay,
            receiver,
        }
    }

    fn settings(&self) -> SyncSettings {
        SyncSettings::new(&self.db, &self.nats, &self.receiver)
    }

    async fn act(&self, id: &str, at: DateTime<Utc>, action: Action) -> u32 {
        let event = self.stack.append(id, at, action).await;
        u32::try_from(event.version).expect("version")
    }

    /// The portal holds one progress entry per event of the dossier in the log, in order (their
    /// times as the portal writes them).
    async fn assert_progress_is_the_log(&self, id: &str) {
        let progress: Vec<String> = self
            .receiver
            .progress(id)
            .iter()
            .map(|p| p["ThoiDiemXuLy"].as_str().unwrap().to_owned())
            .collect();
        let log: Vec<String> = self
            .stack
            .log
            .load_dossier(id)
            .await
            .expect("load")
            .iter()
            .map(|e| portal_sync::shapes::portal_date(e.occurred_at))
            .collect();
        assert_eq!(progress, log, "{id}: each event once, in order");
    }

    /// Waits until the portal took one progress entry per event of the dossier.
    async fn wait_synced(&self, id: &str) {
        let events = self.stack.log.load_dossier(id).await.expect("load").len();
        self.receiver
            .wait_until(WAIT, &format!("{events} progress entries of {id}"), |r| {
                r.progress(id).len() >= events
            })
            .await;
        let row = wait_row(&self.stack.log, id, events).await;
        assert_eq!(row, (events as i32, events as i32), "{id}");
    }

    async fn get(&self, sync: &RunningPortalSync, path: &str) -> (u16, Value) {
        let answer = tests::http::get(sync.http_addr, path, Some(tests::AUDITOR)).await;
        (
            answer.status,
            serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
        )
    }
}

/// Waits until `portal_sync` holds the dossier at `version` (record and progress).
async fn wait_row(log: &EventLog, id: &str, version: usize) -> (i32, i32) {
    let what = format!("{id} recorded at version {version}");
    eventually_some(&what, WAIT, || async {
        let row = portal_sync::store::sync_row(log.pool(), id)
            .await
            .expect("row")?;
        (row.record_version as usize >= version && row.progress_version as usize >= version)
            .then_some((row.record_version, row.progress_version))
    })
    .await
}

fn text(s: &str) -> Text {
    Text::parse(s).expect("text")
}

fn agency(s: &str) -> AgencyCode {
    AgencyCode::parse(s).expect("agency")
}

/// Every version of a dossier reaches the portal once: the record of each version (acted on one
/// at a time) and one progress entry per event, in order, in the documented shape; transient
/// failures are retried; other dossiers (a supplement, a refusal at the counter, a long life in
/// two progress chunks) converge too; the reconciliation counts them.
#[tokio::test]
async fn every_dossier_version_reaches_the_portal_once_in_the_documented_shape() {
    let w = World::start().await;
    // The first requests fail (the portal is down, then answers garbage), then it recovers.
    w.receiver.script([
        Reply::Status(503),
        Reply::Status(500),
        Reply::Slow(Duration::from_millis(200)),
    ]);
    let sync = RunningPortalSync::start(w.settings()).await;

    // A: one version at a time; the portal must hold each before the next.
    let a = "HS-PORTAL-A";
    let t0 = local(2025, 3, 3, 8, 0);
    w.stack.receive(a, t0, true).await;
    w.wait_synced(a).await;
    let hour = chrono::Duration::hours(1);
    let steps = [
        Action::RecordDigitized {
            digitized: vec![domain::ComponentCode::parse("don-de-nghi").unwrap()],
            reused: vec![domain::ComponentCode::parse("ban-ve").unwrap()],
        },
        Action::AssessFee {
            amount_vnd: 150_000,
            kind: FeeKind::Charge,
        },
        Action::RecordPayment {
            amount_vnd: 150_000,
            channel: PaymentChannel::NationalPlatform,
            transaction_id: domain::TransactionId::parse("GD-0001").unwrap(),
        },
        Action::Resolve {
            outcome: Outcome::Approved,
            deciding_agency: agency(DISTRICT_AGENCY),
        },
        Action::AttachResult {
            document_ref: text("kho/quyet-dinh.pdf"),
            sha256: tests::lifecycle::RESULT_SHA256.to_owned(),
        },
        Action::ReturnResult {
            method: ReturnMethod::Post,
        },
    ];
    for (i, action) in steps.into_iter().enumerate() {
        w.act(a, t0 + hour * (i as i32 + 1), action).await;
        w.wait_synced(a).await;
    }
    let records = w.receiver.records(a);
    assert_eq!(records.len(), 7, "one record per version, exactly once");
    let statuses: Vec<i64> = records
        .iter()
        .map(|r| r["TrangThaiHoSo"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [2, 2, 6, 4, 9, 9, 10]);
    let last = records.last().unwrap();
    assert_eq!(last["NgayTiepNhan"], "20250303080000");
    assert_eq!(last["NgayTra"], "20250303140000");
    assert_eq!(last["HinhThuc"], 2);
    assert_eq!(last["KenhThucHien"], 2);
    assert_eq!(last["LoaiDoiTuong"], 1);
    assert_eq!(last["DuocThanhToanTrucTuyen"], 1);
    assert_eq!(last["DanhSachLePhi"][0]["Gia"], 150_000);
    assert_eq!(last["DanhSachLePhi"][0]["HinhThucThu"], 1);
    assert_eq!(last["TaiLieuNop"][1]["DuocTaiSuDung"], 1);
    assert_eq!(last["DanhSachGiayToKetQua"].as_array().unwrap().len(), 1);
    assert!(last.get("ChuHoSo").is_none(), "no applicant data yet");
    w.assert_progress_is_the_log(a).await;

    // B: a supplement with the old and the new appointment; C: refused at the counter;
    // D: 13 events, two progress requests (10 + 3). All at once.
    let (b, c, d) = ("HS-PORTAL-B", "HS-PORTAL-C", "HS-PORTAL-D");
    let due_b = w.stack.receive(b, t0, false).await;
    w.act(
        b,
        t0 + hour,
        Action::RequestSupplement {
            reason: text("Thiếu bản vẽ"),
        },
    )
    .await;
    w.act(b, t0 + hour * 30, Action::ReceiveSupplement).await;
    w.act(
        c,
        t0,
        Action::RefuseAtIntake {
            profile: domain::Profile {
                procedure: domain::ProcedureCode::parse("1.004227").unwrap(),
                online_level: domain::OnlineServiceLevel::FullOnline,
                sector: domain::SectorCode::parse("land").unwrap(),
                agency: agency(DISTRICT_AGENCY),
                level: domain::Level::District,
                channel: domain::Channel::Direct,
                applicant_type: domain::ApplicantType::Business,
            },
            reason: text("Sai thẩm quyền"),
        },
    )
    .await;
    w.stack.receive(d, t0, true).await;
    w.act(
        d,
        t0 + hour,
        Action::AssessFee {
            amount_vnd: 1_200_000,
            kind: FeeKind::Tax,
        },
    )
    .await;
    for i in 0..11 {
        w.act(
            d,
            t0 + hour + chrono::Duration::minutes(i64::from(i) + 1),
            Action::RecordPayment {
                amount_vnd: 100_000,
                channel: PaymentChannel::Counter,
                transaction_id: domain::TransactionId::parse(format!("GD-D-{i}")).unwrap(),
            },
        )
        .await;
    }
    for id in [b, c, d] {
        w.wait_synced(id).await;
        w.assert_progress_is_the_log(id).await;
    }
    let record_b = w.receiver.records(b).last().cloned().unwrap();
    let supplement = &record_b["DanhSachHoSoBoSung"][0];
    assert_eq!(
        supplement["NgayHenTraTruoc"],
        portal_sync::shapes::portal_date(due_b)
    );
    let due_after = w.stack.dossier(b).await.due_at.unwrap();
    assert_eq!(
        supplement["NgayHenTraMoi"],
        portal_sync::shapes::portal_date(due_after)
    );
    assert_eq!(record_b["TrangThaiHoSo"], 4);
    assert_eq!(w.receiver.records(c).last().unwrap()["TrangThaiHoSo"], 3);
    assert_eq!(w.receiver.records(c).last().unwrap()["LoaiDoiTuong"], 2);
    let chunks: Vec<usize> = w
        .receiver
        .received()
        .iter()
        .filter(|r| r.service == "CapNhatTienDoHoSoMC" && r.items[0]["MaHoSo"] == d)
        .filter(|r| r.answered.taken())
        .map(|r| r.items.len())
        .collect();
    assert!(chunks.iter().all(|n| *n <= 10), "{chunks:?}");
    assert_eq!(chunks.iter().sum::<usize>(), 13);

    assert_eq!(w.receiver.violations(), Vec::<String>::new());
    assert!(
        sync.stats
            .transient
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2,
        "the failures were met and retried"
    );
    let (status, answer) = w
        .get(&sync, "/v1/reconciliation?from=2025-03-01&to=2025-04-01")
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["total"]["should"], 4, "{answer}");
    assert_eq!(answer["total"]["synchronised"], 4, "{answer}");
    assert_eq!(answer["total"]["late"], 0, "{answer}");
    assert_eq!(answer["agencies"][0]["agency"], DISTRICT_AGENCY);
    let (status, answer) = w
        .get(&sync, "/v1/reconciliation?from=2025-04-01&to=2025-03-01")
        .await;
    assert_eq!(
        (status, &answer["field"]),
        (400, &Value::from("to")),
        "{answer}"
    );
    sync.stop().await;
}

/// The sync is killed while the portal holds its request (taken, never answered): restarted,
/// it resends that version once (the documented duplicate, an update of the same content),
/// then carries on; nothing is lost, and every progress entry arrives once.
#[tokio::test]
async fn a_sync_killed_mid_request_resumes_without_loss() {
    let w = World::start().await;
    w.receiver.script([Reply::AcceptAndHang]);
    let sync = RunningPortalSync::start(w.settings()).await;
    let (x, y) = ("HS-KILL-X", "HS-KILL-Y");
    let t0 = local(2025, 3, 4, 9, 0);
    w.stack.receive(x, t0, false).await;
    w.receiver
        .wait_until(WAIT, "the record of X in flight", |r| {
            r.records(x).len() == 1
        })
        .await;
    sync.kill().await;

    // While the sync is dead: another dossier.
    w.stack.receive(y, t0, false).await;
    let sync = RunningPortalSync::start(w.settings()).await;
    w.wait_synced(x).await;
    w.wait_synced(y).await;
    let records = w.receiver.records(x);
    assert_eq!(records.len(), 2, "the version in flight is resent once");
    assert_eq!(records[0], records[1], "the same content: an update");
    // Then it goes on with X.
    w.act(
        x,
        t0 + chrono::Duration::hours(2),
        Action::Resolve {
            outcome: Outcome::Refused,
            deciding_agency: agency(DISTRICT_AGENCY),
        },
    )
    .await;
    w.wait_synced(x).await;
    assert_eq!(w.receiver.records(x).len(), 3);
    for id in [x, y] {
        w.assert_progress_is_the_log(id).await;
    }
    assert_eq!(w.receiver.records(y).len(), 1);
    assert_eq!(w.receiver.violations(), Vec::<String>::new());
    sync.stop().await;
}

/// A dossier the portal refuses for good is recorded and listed, is not sent again, and holds
/// no other dossier back; a later version of it is sent again.
#[tokio::test]
async fn a_refused_dossier_is_recorded_and_never_holds_the_others_back() {
    let w = World::start().await;
    let (p, q, r) = ("HS-POISON-P", "HS-POISON-Q", "HS-POISON-R");
    w.receiver.refuse_dossier(p, 42);
    let sync = RunningPortalSync::start(w.settings()).await;
    let t0 = local(2025, 3, 5, 9, 0);
    w.stack.receive(p, t0, false).await;
    w.stack.receive(q, t0, false).await;
    w.stack.receive(r, t0, false).await;
    w.wait_synced(q).await;
    w.wait_synced(r).await;
    let row = eventually_some("the refusal recorded", WAIT, || async {
        let row = portal_sync::store::sync_row(w.stack.log.pool(), p)
            .await
            .unwrap()
            .unwrap();
        row.refused_version.is_some().then_some(row)
    })
    .await;
    assert_eq!(row.refused_version, Some(1));
    assert!(
        row.refusal.as_deref().unwrap().contains("error_code 42"),
        "{row:?}"
    );
    // Q and R went on; and P is not sent again (a later dossier passes after it).
    let s = "HS-POISON-S";
    w.stack.receive(s, t0, false).await;
    w.wait_synced(s).await;
    let requests_for_p = |recv: &PortalReceiver| {
        recv.received()
            .iter()
            .filter(|x| x.items.iter().any(|i| i["MaHoSo"] == p))
            .count()
    };
    assert_eq!(
        requests_for_p(&w.receiver),
        1,
        "a refused version is not sent again"
    );
    let (status, listed) = w.get(&sync, "/v1/refusals").await;
    assert_eq!(status, 200);
    assert_eq!(listed[0]["dossier_id"], p, "{listed}");
    let (status, answer) = w
        .get(&sync, "/v1/reconciliation?from=2025-03-01&to=2025-04-01")
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["total"]["should"], 4, "{answer}");
    assert_eq!(answer["total"]["synchronised"], 3, "{answer}");
    assert_eq!(answer["total"]["refused"], 1, "{answer}");
    // Refusals are not the portal failing: the service stays healthy.
    let (code, _) = testkit::http::get(sync.metrics_addr, "/healthz")
        .await
        .unwrap();
    assert_eq!(code, 200);

    // The cause fixed and a later version: sent again.
    w.receiver.clear_refusal(p);
    w.act(
        p,
        t0 + chrono::Duration::hours(1),
        Action::Withdraw {
            reason: text("Rút"),
        },
    )
    .await;
    w.wait_synced(p).await;
    assert_eq!(w.receiver.records(p).last().unwrap()["TrangThaiHoSo"], 7);
    let (_, answer) = w
        .get(&sync, "/v1/reconciliation?from=2025-03-01&to=2025-04-01")
        .await;
    assert_eq!(answer["total"]["synchronised"], 4, "{answer}");
    assert_eq!(answer["total"]["refused"], 0, "{answer}");
    let (_, listed) = w.get(&sync, "/v1/refusals").await;
    assert_eq!(listed, serde_json::json!([]));
    assert_eq!(w.receiver.violations(), Vec::<String>::new());
    sync.stop().await;
}

/// Failed requests in a row make the service NOT_SERVING (`/healthz` 503) after
/// `unhealthy_after_failures`; one acknowledged request makes it healthy again.
#[tokio::test]
async fn failures_in_a_row_make_the_service_unhealthy_until_one_succeeds() {
    let w = World::start().await;
    w.receiver.script(vec![Reply::Status(502); 6]);
    let sync = RunningPortalSync::start(w.settings()).await;
    let id = "HS-HEALTH-1";
    w.stack.receive(id, local(2025, 3, 6, 9, 0), false).await;
    let body = eventually_some("/healthz 503", WAIT, || async {
        let (code, body) = testkit::http::get(sync.metrics_addr, "/healthz")
            .await
            .unwrap();
        (code == 503).then_some(body)
    })
    .await;
    assert!(body.contains("failed in a row"), "{body}");
    w.wait_synced(id).await;
    let (code, _) = testkit::http::get(sync.metrics_addr, "/healthz")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let (_, metrics) = testkit::http::get(sync.metrics_addr, "/metrics")
        .await
        .unwrap();
    let transient = testkit::http::sample(
        &metrics,
        "motcua_portal_requests_total",
        "outcome=\"transient\"",
    );
    assert_eq!(transient, Some(6.0), "{metrics}");
    sync.stop().await;
}

/// The receiver's checker catches each kind of shape violation (so the tests above could fail):
/// a record the service builds passes; each alteration is named.
#[test]
fn the_receivers_checker_catches_shape_violations() {
    use domain::{DossierEvent, Event};
    let at = local(2025, 3, 3, 8, 0);
    let events = vec![Event {
        occurred_at: at,
        body: DossierEvent::Received {
            profile: domain::Profile {
                procedure: domain::ProcedureCode::parse("1.004227").unwrap(),
                online_level: domain::OnlineServiceLevel::FullOnline,
                sector: domain::SectorCode::parse("land").unwrap(),
                agency: agency(DISTRICT_AGENCY),
                level: domain::Level::District,
                channel: domain::Channel::Online,
                applicant_type: domain::ApplicantType::Citizen,
            },
            statutory_time: calendar::StatutoryTime::Days(3),
            fee_required: false,
            components: vec![domain::ComponentCode::parse("don").unwrap()],
            due_at: at + chrono::Duration::days(3),
            procedure: None,
            applicant: None,
            return_method: None,
        },
    }];
    let record = portal_sync::shapes::dossier_record(
        "HS-1",
        &events,
        &portal_sync::applicant::ApplicantFields::unknown(),
        None,
    )
    .unwrap();
    let progress = portal_sync::shapes::progress_entries("HS-1", &events, 0);
    let envelope =
        |service: &str, data: Value| serde_json::json!({"service": service, "data": data});
    let good = envelope("DongBoHoSoMC", serde_json::json!([record]));
    assert_eq!(check_request(&good), Vec::<String>::new());
    let entry = serde_json::to_value(&progress[0].1).unwrap();
    assert_eq!(
        check_request(&envelope("CapNhatTienDoHoSoMC", serde_json::json!([entry]))),
        Vec::<String>::new()
    );

    let altered = |change: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        change(&mut v["data"][0]);
        check_request(&v)
    };
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "date",
            altered(&|r| r["NgayTiepNhan"] = "2025-03-03 08:00".into()),
        ),
        ("status", altered(&|r| r["TrangThaiHoSo"] = 11.into())),
        ("channel", altered(&|r| r["KenhThucHien"] = 0.into())),
        (
            "missing",
            altered(&|r| {
                r.as_object_mut().unwrap().remove("MaTTHC");
            }),
        ),
        ("unknown", altered(&|r| r["Extra"] = 1.into())),
        (
            "flag",
            altered(&|r| r["TaiLieuNop"][0]["DuocSoHoa"] = 2.into()),
        ),
        ("returned", altered(&|r| r["TrangThaiHoSo"] = 10.into())),
    ];
    for (name, violations) in cases {
        assert!(!violations.is_empty(), "{name} not caught");
    }
    let eleven = serde_json::json!(vec![entry.clone(); 11]);
    assert!(!check_request(&envelope("CapNhatTienDoHoSoMC", eleven)).is_empty());
    assert!(!check_request(&envelope("Other", serde_json::json!([entry]))).is_empty());
}

/// "Late" goes by the sync's clock: a change acknowledged more than `late_after` after it was
/// recorded counts late in the reconciliation, one acknowledged within it does not.
#[tokio::test]
async fn a_change_acknowledged_after_late_after_counts_late() {
    let w = World::start().await;
    let t0 = local(2025, 3, 7, 9, 0);
    let (on_time, late) = ("HS-LATE-ON-TIME", "HS-LATE-LATE");
    let clock = tests::processing::ManualClock::new(Utc::now());
    let mut settings = w.settings();
    settings.late_after = Duration::from_secs(3600);
    settings.clock = clock.clone();
    let sync = RunningPortalSync::start(settings.clone()).await;
    w.stack.receive(on_time, t0, false).await;
    w.wait_synced(on_time).await;
    sync.stop().await;

    // Received now, acknowledged two hours later by the sync's clock.
    w.stack.receive(late, t0, false).await;
    clock.advance(chrono::Duration::hours(2));
    let sync = RunningPortalSync::start(settings).await;
    w.wait_synced(late).await;
    let (status, answer) = w
        .get(&sync, "/v1/reconciliation?from=2025-03-07&to=2025-03-08")
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["late_after_secs"], 3600);
    assert_eq!(answer["total"]["should"], 2, "{answer}");
    assert_eq!(answer["total"]["synchronised"], 2, "{answer}");
    assert_eq!(answer["total"]["late"], 1, "{answer}");
    let row = portal_sync::store::sync_row(w.stack.log.pool(), late)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.late_syncs, 1);
    sync.stop().await;
}

/// Two instances share the durable consumer and the work: every event's progress entry still
/// reaches the portal exactly once, and no dossier gets more records than it has versions.
#[tokio::test]
async fn two_instances_share_the_work_without_sending_anything_twice() {
    let w = World::start().await;
    let first = RunningPortalSync::start(w.settings()).await;
    let second = RunningPortalSync::start(w.settings()).await;
    let t0 = local(2025, 3, 10, 8, 0);
    let hour = chrono::Duration::hours(1);
    let ids: Vec<String> = (0..8).map(|i| format!("HS-TWO-{i}")).collect();
    for id in &ids {
        w.stack.receive(id, t0, true).await;
    }
    for id in &ids {
        w.act(
            id,
            t0 + hour,
            Action::AssessFee {
                amount_vnd: 50_000,
                kind: FeeKind::Fee,
            },
        )
        .await;
        w.act(
            id,
            t0 + hour * 2,
            Action::Resolve {
                outcome: Outcome::Approved,
                deciding_agency: agency(DISTRICT_AGENCY),
            },
        )
        .await;
    }
    for id in &ids {
        w.wait_synced(id).await;
        w.assert_progress_is_the_log(id).await;
        let records = w.receiver.records(id);
        assert!(
            (1..=3).contains(&records.len()),
            "{id}: {} records",
            records.len()
        );
        assert_eq!(records.last().unwrap()["TrangThaiHoSo"], 9);
    }
    let accepted =
        |s: &RunningPortalSync| s.stats.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(accepted(&first) + accepted(&second) > 0);
    assert_eq!(w.receiver.violations(), Vec::<String>::new());
    first.stop().await;
    second.stop().await;
}

/// The applicant's data, sealed in the received event, reaches the portal (read through the
/// vault, each read in the access log); once erased, the next version goes without it, and no
/// table of the sync holds it.
#[tokio::test]
async fn the_applicant_reaches_the_portal_until_erased() {
    const NAME: &str = "Trần Văn Công Dân";
    const CCCD: &str = "079188001234";
    let w = World::start().await;
    let keyring = personal::Keyring::generate("k1").unwrap();
    let keyring_text = keyring.to_file_text();
    let vault = personal::Vault::new(w.stack.log.pool().clone(), keyring);
    personal::migrate(w.stack.log.pool()).await.unwrap();
    let mut settings = w.settings();
    settings.keyring = Some(keyring_text);
    let sync = RunningPortalSync::start(settings).await;

    let id = "HS-APPLICANT-1";
    let dossier = domain::DossierId::parse(id).unwrap();
    let applicant = personal::Applicant {
        owner_name: NAME.to_owned(),
        document: personal::IdentityDocument {
            kind: personal::DocumentKind::Cccd,
            number: CCCD.to_owned(),
        },
        phone: Some("0912000111".to_owned()),
        email: Some("cong.dan@example.vn".to_owned()),
        address: None,
        representative: None,
    };
    let sealed = vault
        .dossier_key(&dossier)
        .await
        .unwrap()
        .key
        .seal(&dossier, &applicant);
    let t0 = local(2025, 3, 11, 9, 0);
    w.act(
        id,
        t0,
        Action::Receive {
            profile: domain::Profile {
                procedure: domain::ProcedureCode::parse("1.004227").unwrap(),
                online_level: domain::OnlineServiceLevel::FullOnline,
                sector: domain::SectorCode::parse("land").unwrap(),
                agency: agency(DISTRICT_AGENCY),
                level: domain::Level::District,
                channel: domain::Channel::Direct,
                applicant_type: domain::ApplicantType::Citizen,
            },
            statutory_time: calendar::StatutoryTime::Days(3),
            fee_required: false,
            components: vec![domain::ComponentCode::parse("don").unwrap()],
            due_at: None,
            procedure: None,
            applicant: Some(sealed),
            return_method: None,
        },
    )
    .await;
    w.wait_synced(id).await;
    let record = w.receiver.records(id).last().cloned().unwrap();
    assert_eq!(record["ChuHoSo"], NAME);
    assert_eq!(record["SoGiayToChuHoSo"], CCCD);
    assert_eq!(record["SoDienThoai"], "0912000111");
    assert_eq!(record["Email"], "cong.dan@example.vn");
    assert_eq!(
        record["DinhDanhCHS"],
        serde_json::json!([{"LoaiDinhDanh": 1, "SoDinhDanh": CCCD}])
    );
    let reads: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM personal_access_log
         WHERE dossier_id = $1 AND reader = 'portal-sync' AND outcome = 'read'",
    )
    .bind(id)
    .fetch_one(w.stack.log.pool())
    .await
    .unwrap();
    assert!(reads >= 1, "every read is in the access log");

    // Erased: the next version is sent without anything personal.
    vault
        .erase(
            &personal::Reader::service("test", "erasure request"),
            &dossier,
            "YC-1",
        )
        .await
        .unwrap();
    w.act(
        id,
        t0 + chrono::Duration::hours(1),
        Action::Withdraw {
            reason: text("Rút"),
        },
    )
    .await;
    w.wait_synced(id).await;
    let record = w.receiver.records(id).last().cloned().unwrap();
    assert_eq!(record["TrangThaiHoSo"], 7);
    for field in ["ChuHoSo", "SoGiayToChuHoSo", "Email", "SoDienThoai"] {
        assert!(record.get(field).is_none(), "{field} sent after erasure");
    }
    assert_eq!(record["DinhDanhCHS"], serde_json::json!([]));
    let rows: Vec<String> = sqlx::query_scalar("SELECT t::text FROM portal_sync t")
        .fetch_all(w.stack.log.pool())
        .await
        .unwrap();
    assert!(rows.iter().all(|r| !r.contains(NAME) && !r.contains(CCCD)));
    assert_eq!(w.receiver.violations(), Vec::<String>::new());
    sync.stop().await;
}

/// A sealed applicant without master keys configured is never sent without its data: the
/// dossier waits, its error recorded; the others go on.
#[tokio::test]
async fn a_sealed_applicant_without_master_keys_waits_and_says_why() {
    let w = World::start().await;
    let keyring = personal::Keyring::generate("k1").unwrap();
    let vault = personal::Vault::new(w.stack.log.pool().clone(), keyring);
    personal::migrate(w.stack.log.pool()).await.unwrap();
    let sync = RunningPortalSync::start(w.settings()).await;
    let (sealed_id, plain_id) = ("HS-NOKEYS-1", "HS-NOKEYS-2");
    let dossier = domain::DossierId::parse(sealed_id).unwrap();
    let applicant = personal::Applicant {
        owner_name: "Lê Thị Khóa".to_owned(),
        document: personal::IdentityDocument {
            kind: personal::DocumentKind::Cmnd,
            number: "079188001".to_owned(),
        },
        phone: None,
        email: None,
        address: None,
        representative: None,
    };
    let sealed = vault
        .dossier_key(&dossier)
        .await
        .unwrap()
        .key
        .seal(&dossier, &applicant);
    let t0 = local(2025, 3, 12, 9, 0);
    let profile = domain::Profile {
        procedure: domain::ProcedureCode::parse("1.004227").unwrap(),
        online_level: domain::OnlineServiceLevel::FullOnline,
        sector: domain::SectorCode::parse("land").unwrap(),
        agency: agency(DISTRICT_AGENCY),
        level: domain::Level::District,
        channel: domain::Channel::Direct,
        applicant_type: domain::ApplicantType::Citizen,
    };
    let receive = |applicant| Action::Receive {
        profile: profile.clone(),
        statutory_time: calendar::StatutoryTime::Days(3),
        fee_required: false,
        components: vec![domain::ComponentCode::parse("don").unwrap()],
        due_at: None,
        procedure: None,
        applicant,
        return_method: None,
    };
    w.act(sealed_id, t0, receive(Some(sealed))).await;
    w.act(plain_id, t0, receive(None)).await;
    w.wait_synced(plain_id).await;
    let row = eventually_some("an attempt on the sealed dossier", WAIT, || async {
        portal_sync::store::sync_row(w.stack.log.pool(), sealed_id)
            .await
            .unwrap()
            .filter(|r| r.attempts > 0)
    })
    .await;
    assert_eq!(row.record_version, 0);
    assert!(
        row.last_error
            .as_deref()
            .unwrap()
            .contains("no master keys"),
        "{row:?}"
    );
    assert!(
        w.receiver.records(sealed_id).is_empty(),
        "never sent without its applicant"
    );
    sync.stop().await;
}

/// A dossier received by its catalogued procedure code reaches the portal with the procedure's
/// name from the catalogue version it was received under (`TenTTHC`), not from today's: a
/// later version renaming the procedure changes nothing already received. A dossier received
/// outside the catalogue still carries its code.
#[tokio::test]
async fn the_procedure_name_comes_from_the_catalogue_version_of_the_reception() {
    use api::v1 as pb;
    let w = World::start().await;
    let definition = |name: &str, from: DateTime<Utc>| pb::ProcedureDefinition {
        code: "1.009001".to_owned(),
        name: name.to_owned(),
        sector_code: "land".to_owned(),
        statutory_time: Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(3)),
        }),
        online_level: pb::OnlineServiceLevel::PartialOnline as i32,
        fee_required: false,
        supplement_policy: pb::SupplementPolicy::Restart as i32,
        max_supplement_requests: None,
        close_after_working_days: None,
        same_day_cutoff: String::new(),
        obligation_pauses_clock: false,
        effective_from: Some(tests::ts(from)),
    };
    w.stack
        .intake
        .catalogue_client()
        .await
        .publish_procedures(tests::authed(
            tests::ADMIN,
            pb::PublishProceduresRequest {
                procedures: vec![
                    definition("Đăng ký đất đai lần đầu", local(2024, 1, 1, 0, 0)),
                    definition("Đăng ký đất đai (tên mới)", local(2025, 6, 1, 0, 0)),
                ],
            },
        ))
        .await
        .expect("catalogue published");
    let mut intake = w.stack.intake_client().await;
    let mut by_code = tests::receive_request("HS-NAME-1", local(2025, 3, 12, 9, 0));
    let profile = by_code.profile.as_mut().unwrap();
    profile.procedure_code = "1.009001".to_owned();
    profile.online_level = pb::OnlineServiceLevel::Unspecified as i32;
    profile.sector_code = String::new();
    by_code.statutory_time = None;
    by_code.fee_required = false;
    intake
        .receive_dossier(tests::authed(tests::COUNTER_DISTRICT, by_code))
        .await
        .expect("received by code");
    w.stack
        .receive("HS-NAME-2", local(2025, 3, 12, 9, 5), false)
        .await;
    let sync = RunningPortalSync::start(w.settings()).await;
    for id in ["HS-NAME-1", "HS-NAME-2"] {
        w.wait_synced(id).await;
    }
    let names = |id: &str| {
        let record = w.receiver.records(id).pop().expect("a record");
        (
            record["MaTTHC"].as_str().unwrap().to_owned(),
            record["TenTTHC"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(
        names("HS-NAME-1"),
        ("1.009001".to_owned(), "Đăng ký đất đai lần đầu".to_owned())
    );
    assert_eq!(
        names("HS-NAME-2"),
        ("1.004227".to_owned(), "1.004227".to_owned())
    );
    assert_eq!(w.receiver.violations(), Vec::<String>::new());
    sync.stop().await;
}
