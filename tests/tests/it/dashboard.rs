//! The dashboard in a real browser (headless Chromium over WebDriver) against a real projection
//! fed through intake, the relay and JetStream: sign in, the figures equal the API's for the
//! same query, drill down, a new dossier changes a figure without a reload, the early-warning
//! panel lists what processing's `GET /v1/warnings` answers, the II.06a `.xlsx` downloaded
//! through the page's button holds the API's figures, its CSV (byte-order mark, Vietnamese
//! headings) is the API's, the wall layout (`?wall`) fits 1920×1080 in larger type;
//! screenshots of both layouts.

use std::time::Duration;

use chrono::Timelike;

use api::v1 as pb;
use domain::SupplementPolicy;
use eventlog::EventLog;
use fantoccini::Locator;
use projection::dashboard::DashboardConfig;
use testkit::{TestDb, TestNats};
use tests::browser::Browser;
use tests::http::get_json;
use tests::processing::{ManualClock, RunningProcessing, watcher};
use tests::projection::RunningProjection;
use tests::{
    AUDITOR, COUNTER_DISTRICT, COUNTER_PROVINCE, DISTRICT_AGENCY, PROVINCE_AGENCY, RunningIntake,
    RunningRelay, authed, local, profile, receive_request,
};

const WAIT: Duration = Duration::from_secs(60);
/// How long the page may take to show what the API answers (a bound, not a speed check).
const SHOWN: Duration = Duration::from_secs(20);
const PERIOD: &str = "from=2024-04-01&to=2024-05-01";

/// Receives `HS-D-{n}`: even numbers at the province's counter (direct), odd ones online at
/// the district's. Returns the due time of each.
async fn receive(
    intake: &RunningIntake,
    numbers: std::ops::Range<u32>,
) -> Vec<chrono::DateTime<chrono::Utc>> {
    let mut client = intake.client().await;
    let mut due = Vec::new();
    for n in numbers {
        let mut request = receive_request(&format!("HS-D-{n:04}"), local(2024, 4, 10 + n, 9, 0));
        let mut token = COUNTER_DISTRICT;
        if n % 2 == 0 {
            request.profile = Some(pb::Profile {
                channel: pb::Channel::Direct as i32,
                ..profile(PROVINCE_AGENCY)
            });
            token = COUNTER_PROVINCE;
        }
        let answer = client
            .receive_dossier(authed(token, request))
            .await
            .expect("receive")
            .into_inner();
        let t = answer.due_at.expect("a due time");
        due.push(chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32).expect("valid"));
    }
    due
}

/// `GET /v1/indicators?{query}` as the API answers it (proto3 JSON).
async fn api_indicators(http: std::net::SocketAddr, query: &str) -> serde_json::Value {
    get_json(http, &format!("/v1/indicators?{query}"), AUDITOR).await
}

/// An int64 of the proto3 JSON mapping: a string, absent when 0.
fn int(v: &serde_json::Value) -> i64 {
    match v {
        serde_json::Value::Null => 0,
        serde_json::Value::String(s) => s.parse().expect("an int64 string"),
        other => other.as_i64().expect("an integer"),
    }
}

/// A count as the page writes it in Vietnamese (1.234.567).
fn vi_count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('.');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A rate as the page writes it: percent with a comma and at most two decimals, or a dash.
fn vi_percent(rate: &serde_json::Value) -> String {
    match rate.get("percent").and_then(serde_json::Value::as_f64) {
        None => "—".to_owned(),
        Some(p) => {
            let s = format!("{:.2}", p);
            let s = s.trim_end_matches('0').trim_end_matches('.');
            format!("{}%", s.replace('.', ","))
        }
    }
}

/// The page shows the figures of `query` as the API answers them.
async fn shows_the_api_figures(browser: &Browser, http: std::net::SocketAddr, query: &str) {
    let answer = api_indicators(http, query).await;
    let total = &answer["total"];
    for (card, want) in [
        ("S1", vi_count(int(&total["received"]))),
        ("S2", vi_count(int(&total["resolved"]))),
        ("S3", vi_percent(&total["onTimeRate"])),
        ("S4", vi_count(int(&total["pending"]["total"]))),
        ("S10", vi_percent(&total["online"])),
    ] {
        browser
            .text_when(&format!("#kpi-{card} .value"), SHOWN, |t| t == want)
            .await;
    }
    // The rate's numerator and denominator beside it.
    let online = &total["online"];
    let fraction = format!(
        "{}/{}",
        vi_count(int(&online["numerator"])),
        vi_count(int(&online["denominator"]))
    );
    browser
        .text_when("#kpi-S10 .fraction", SHOWN, |t| t == fraction)
        .await;
}

/// Where the indicator cards are and how large their type is, as the page lays them out now.
async fn layout(browser: &Browser) -> serde_json::Value {
    browser
        .eval(
            "const cards = [...document.querySelectorAll('#kpis .kpi')];
             const boxes = cards.map((c) => c.getBoundingClientRect());
             const size = (css) => parseFloat(getComputedStyle(document.querySelector(css)).fontSize);
             return {
               wall: document.body.classList.contains('wall'),
               cards: cards.length,
               bottom: Math.max(...boxes.map((b) => b.bottom)),
               right: Math.max(...boxes.map((b) => b.right)),
               scrollY: window.scrollY,
               controls: getComputedStyle(document.getElementById('controls')).display,
               valuePx: size('#kpi-S1 .value'),
               labelPx: size('#kpi-S1 .label'),
             };",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_dashboard_shows_the_apis_figures_drills_down_and_updates_live() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let nats = TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    // Processing's warning route, its address known to the page's config before it starts, and
    // the page's origin allowed by its CORS.
    let warnings_listener = svc::Listener::bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind the warnings port");
    let warnings_addr = warnings_listener.local_addr();
    let projection = RunningProjection::start_with_dashboard(
        log.clone(),
        &nats.url,
        &nats.stream,
        &nats.prefix,
        "dash",
        DashboardConfig {
            warnings_url: Some(format!("http://{warnings_addr}/v1/warnings")),
            ..DashboardConfig::default()
        },
    )
    .await;
    let http = projection.http_addr;
    let processing = RunningProcessing::start_with_http_on(
        log.clone(),
        SupplementPolicy::Restart,
        warnings_listener,
        &[&format!("http://{http}")],
    )
    .await;
    let due = receive(&intake, 1..7).await;
    relay
        .wait_published(log.head().await.expect("head"), WAIT)
        .await;
    projection.wait_caught_up(WAIT).await;
    // The deadline watcher at HS-D-0001's apology deadline (one working day before its due
    // time): it alone is due soon.
    let apology_deadline = domain::apology_deadline(
        &calendar::Calendar::vietnam_default(),
        domain::NoticeUnit::WorkingDay,
        due[0],
    );
    let clock = ManualClock::new(apology_deadline);
    let report = watcher(&log, clock).await.tick().await.expect("tick");
    assert_eq!(report.raised.len(), 1, "{report:?}");
    let browser = Browser::start().await;
    let client = &browser.client;

    // Signed out: the sign-in form; the token goes in the form, never in the URL.
    client
        .goto(&format!("http://{http}/dashboard/?{PERIOD}"))
        .await
        .expect("open the dashboard");
    let token = client
        .wait()
        .at_most(SHOWN)
        .for_element(Locator::Css("#token"))
        .await
        .expect("the sign-in form");
    token.send_keys(AUDITOR).await.expect("type the token");
    browser.click("#signin-form button[type=submit]").await;
    assert!(
        !client
            .current_url()
            .await
            .expect("url")
            .as_str()
            .contains(AUDITOR)
    );

    // The whole province: the figures of the same query over the API, in Vietnamese.
    shows_the_api_figures(&browser, http, PERIOD).await;

    // The early-warning panel: processing's list (its proto3 JSON), most urgent first, with
    // the responsible and holding agencies, the due time and the apology deadline.
    let warned: pb::ListDueSoonResponse = get_json(warnings_addr, "/v1/warnings", AUDITOR).await;
    let ids: Vec<&str> = warned
        .warnings
        .iter()
        .map(|w| w.dossier_id.as_str())
        .collect();
    assert_eq!(ids, ["HS-D-0001"]);
    let vn = |t: chrono::DateTime<chrono::Utc>| {
        t.with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).expect("UTC+7"))
            .format("%d/%m/%Y %H:%M")
            .to_string()
    };
    let row = browser
        .text_when("#warnings tr[data-dossier='HS-D-0001']", SHOWN, |t| {
            t.contains(&vn(apology_deadline))
        })
        .await;
    assert!(row.contains(DISTRICT_AGENCY), "{row}");
    assert!(row.contains(&vn(due[0])), "{row}");
    let rows = client
        .find_all(Locator::Css("#warnings tr[data-dossier]"))
        .await
        .expect("warning rows");
    assert_eq!(rows.len(), warned.warnings.len());
    browser.text_when("#drill-dim", SHOWN, |t| t == "Cấp").await;
    // The auditor gets the "as recorded at" picker.
    let picker = client
        .find(Locator::Css("#as-recorded-field"))
        .await
        .expect("picker");
    assert!(picker.is_displayed().await.expect("displayed?"));
    // A mark that a reload would lose.
    browser
        .eval("window.notReloaded = true; return null;")
        .await;

    // Drill down: the district level, then its agency.
    client
        .wait()
        .at_most(SHOWN)
        .for_element(Locator::Css(
            "#drill button.drill-link[data-value=district]",
        ))
        .await
        .expect("the district row")
        .click()
        .await
        .expect("drill into the district level");
    let district = format!("{PERIOD}&level=district");
    shows_the_api_figures(&browser, http, &district).await;
    browser
        .text_when("#drill-dim", SHOWN, |t| t == "Cơ quan")
        .await;
    client
        .wait()
        .at_most(SHOWN)
        .for_element(Locator::Css(&format!(
            "#drill button.drill-link[data-value='{DISTRICT_AGENCY}']"
        )))
        .await
        .expect("the district agency's row")
        .click()
        .await
        .expect("drill into the agency");
    let agency = format!("{district}&agency_code={DISTRICT_AGENCY}");
    shows_the_api_figures(&browser, http, &agency).await;
    let before = int(&api_indicators(http, &agency).await["total"]["received"]);
    assert_eq!(before, 3, "HS-D-0001, 3, 5");

    // A new dossier through the real write path, recorded after the whole second `past`:
    // the page shows it without reloading.
    let past = chrono::Utc::now()
        .with_nanosecond(0)
        .expect("a whole second")
        + chrono::Duration::seconds(1);
    tokio::time::sleep((past - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    receive(&intake, 7..8).await;
    browser
        .text_when("#kpi-S1 .value", WAIT, |t| t == vi_count(before + 1))
        .await;
    shows_the_api_figures(&browser, http, &agency).await;
    let kept = browser.eval("return window.notReloaded === true;").await;
    assert_eq!(kept, serde_json::Value::Bool(true), "the page was reloaded");

    // The auditor's "as recorded at" picker: the same screen as it stood at `past`, the
    // banner saying so; then live again.
    let vn = past.with_timezone(&chrono::FixedOffset::east_opt(7 * 3600).expect("UTC+7"));
    let picker = client
        .find(Locator::Css("#as-recorded"))
        .await
        .expect("the picker's input");
    picker
        .send_keys(&vn.format("%d/%m/%Y %H:%M:%S").to_string())
        .await
        .expect("type the instant");
    browser.click("#controls button[type=submit]").await;
    browser
        .text_when("#kpi-S1 .value", SHOWN, |t| t == vi_count(before))
        .await;
    let banner = browser
        .text_when("#banner", SHOWN, |t| {
            t.starts_with("Số liệu như đã ghi nhận lúc")
        })
        .await;
    assert!(
        banner.ends_with(&vn.format("%d/%m/%Y %H:%M").to_string()),
        "{banner}"
    );
    picker.clear().await.expect("clear the picker");
    browser.click("#controls button[type=submit]").await;
    browser
        .text_when("#kpi-S1 .value", SHOWN, |t| t == vi_count(before + 1))
        .await;

    // The English switch: the same figures, English words.
    browser.click("#lang").await;
    browser
        .text_when("#drill-dim", SHOWN, |t| t == "Sector")
        .await;
    browser.click("#lang").await;
    browser
        .text_when("#drill-dim", SHOWN, |t| t == "Lĩnh vực")
        .await;

    // Back to the province for the screenshot.
    browser.click("#crumbs button").await;
    shows_the_api_figures(&browser, http, PERIOD).await;

    // The report's Excel button: the II.06a workbook of the screen's query, its cells the
    // API's JSON answer for the same query.
    browser.click("#download-xlsx").await;
    let (name, xlsx) = browser.downloaded("xlsx", SHOWN).await;
    assert_eq!(name, "ii06a_2024-04-01_2024-05-01.xlsx");
    let report: pb::Report = get_json(http, &format!("/v1/reports/ii06a?{PERIOD}"), AUDITOR).await;
    tests::projection::assert_ii06a_workbook(&xlsx, &report);

    // The CSV button: the same form as a file for Excel, UTF-8 with a byte-order mark and the
    // form's Vietnamese headings (the page is in Vietnamese), byte for byte what the API
    // answers for the same query with those options.
    browser.click("#download-csv").await;
    let (name, csv) = browser.downloaded("csv", SHOWN).await;
    assert_eq!(name, "ii06a_2024-04-01_2024-05-01.csv");
    let api_csv = tests::http::get(
        http,
        &format!("/v1/reports/ii06a.csv?{PERIOD}&bom=true&headings=vi"),
        Some(AUDITOR),
    )
    .await;
    assert_eq!(api_csv.status, 200, "{}", api_csv.text());
    assert!(csv.starts_with(b"\xEF\xBB\xBF"), "no byte-order mark");
    let text = String::from_utf8(csv[3..].to_vec()).expect("UTF-8");
    assert!(text.contains("Tổng cộng"), "{text}");
    let ids = tests::http::get(
        http,
        &format!("/v1/reports/ii06a.csv?{PERIOD}"),
        Some(AUDITOR),
    )
    .await
    .text();
    assert_ne!(
        text.lines().next(),
        ids.lines().next(),
        "the ASCII column ids, not the headings"
    );
    assert_eq!(csv, api_csv.body, "the page's CSV is the API's");

    let shot = browser.screenshot("dashboard").await;
    assert!(std::fs::metadata(&shot).expect("screenshot saved").len() > 10_000);
    let laptop = layout(&browser).await;

    // The wall screen (`?wall`) at 1920×1080: the same figures; every indicator card within
    // the screen without scrolling, the controls and detail tables left out, the figures in a
    // larger type than on the laptop layout.
    browser.viewport(1920, 1080).await;
    client
        .goto(&format!("http://{http}/dashboard/?wall&{PERIOD}"))
        .await
        .expect("open the wall screen");
    shows_the_api_figures(&browser, http, PERIOD).await;
    let wall = layout(&browser).await;
    assert_eq!(wall["wall"], true, "{wall}");
    assert_eq!(wall["cards"], laptop["cards"], "{wall} {laptop}");
    assert!(wall["cards"].as_u64().expect("cards") >= 10, "{wall}");
    assert!(
        wall["bottom"].as_f64().expect("bottom") <= 1080.0
            && wall["right"].as_f64().expect("right") <= 1920.0,
        "cards beyond the screen: {wall}"
    );
    assert_eq!(wall["scrollY"], 0, "{wall}");
    assert_eq!(wall["controls"], "none", "{wall}");
    let px = |v: &serde_json::Value, key: &str| v[key].as_f64().expect("a size");
    assert!(
        px(&wall, "valuePx") >= 1.5 * px(&laptop, "valuePx")
            && px(&wall, "labelPx") > px(&laptop, "labelPx"),
        "wall {wall} vs laptop {laptop}"
    );
    let shot = browser.screenshot("dashboard-wall").await;
    assert!(std::fs::metadata(&shot).expect("screenshot saved").len() > 10_000);

    browser.close().await;
    processing.stop().await;
    projection.stop().await;
    relay.stop().await;
    intake.stop().await;
}
