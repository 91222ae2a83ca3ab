//! The agency structure of a chosen date against PostgreSQL: entries published append-only with
//! who and when; statistics asked with `structure_at` relabelled at query time from the live
//! rollups (and from the log as recorded at T) — the province totals equal, the agency rows
//! follow the merge; Biểu mẫu 3 without an abolished empty level; the 766 scorecard in points
//! per agency.

use chrono::NaiveDate;
use domain::{AgencyCode, Level};
use eventlog::EventLog;
use projection::forms::{Cell, CsvOptions, Form};
use projection::read::Reader;
use projection::scope::Source;
use projection::structure::{self, StructureStoreError};
use projection::xlsx::Heading;
use stats::{Dimension, Query, SliceFilter, StructureFile};

use crate::support::migrated_db;

const A1: &str = "000.31.12.H40";
const A2: &str = "000.32.12.H40";
const MERGED: &str = "000.40.12.H40";
const DISTRICT: &str = "000.00.12.H40";
const PROVINCE: &str = "000.00.01.H40";

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn file(extra: &str) -> StructureFile {
    toml::from_str(&format!(
        r#"
        [[agency]]
        code = "{A1}"
        name = "A1"
        level = "commune"
        [[agency]]
        code = "{A2}"
        name = "A2"
        level = "commune"
        [[agency]]
        code = "{MERGED}"
        name = "A merged"
        level = "commune"
        [[agency]]
        code = "{DISTRICT}"
        name = "district"
        level = "district"
        [[change]]
        agency = "{A1}"
        from = "2025-07-01"
        kind = "merged"
        successor = "{MERGED}"
        [[change]]
        agency = "{A2}"
        from = "2025-07-01"
        kind = "merged"
        successor = "{MERGED}"
        [[level_abolished]]
        level = "district"
        from = "2025-07-01"
        {extra}
        "#
    ))
    .expect("parses")
}

/// 09:00 local on `day`.
fn nine(day: NaiveDate) -> chrono::DateTime<chrono::Utc> {
    day.and_hms_opt(2, 0, 0).unwrap().and_utc()
}

fn event(body: domain::DossierEvent, at: chrono::DateTime<chrono::Utc>) -> eventlog::NewEvent {
    let (event_type, payload) = body.into_parts();
    let event_id = uuid::Uuid::new_v4();
    let mut fingerprint = [0u8; 32];
    fingerprint[..16].copy_from_slice(event_id.as_bytes());
    eventlog::NewEvent {
        event_id,
        event_type: event_type.to_owned(),
        occurred_at: at,
        payload,
        fingerprint,
    }
}

/// A dossier received by `agency` at `level` on `received`, resolved on `resolved` (early:
/// due ten days later), applied to the projection.
async fn dossier(
    log: &EventLog,
    id: &str,
    agency: &str,
    level: Level,
    received: NaiveDate,
    resolved: Option<NaiveDate>,
) {
    let profile = domain::Profile {
        procedure: domain::ProcedureCode::parse("1.001").unwrap(),
        online_level: domain::OnlineServiceLevel::FullOnline,
        sector: domain::SectorCode::parse("land").unwrap(),
        agency: AgencyCode::parse(agency).unwrap(),
        level,
        channel: domain::Channel::Online,
        applicant_type: domain::ApplicantType::Citizen,
    };
    let due = nine(received + chrono::Days::new(10));
    let mut events = vec![event(
        domain::DossierEvent::Received {
            profile: profile.clone(),
            statutory_time: calendar::StatutoryTime::Days(8),
            fee_required: false,
            components: vec![domain::ComponentCode::parse("don").unwrap()],
            due_at: due,
            procedure: None,
            applicant: None,
            return_method: None,
        },
        nine(received),
    )];
    if let Some(day) = resolved {
        events.push(event(
            domain::DossierEvent::Resolved {
                outcome: domain::Outcome::Approved,
                deciding_agency: profile.agency.clone(),
                due_at: due,
                timeliness: calendar::Timeliness::Early,
            },
            nine(day),
        ));
    }
    log.append(vec![eventlog::DossierAppend {
        dossier_id: id.to_owned(),
        expected_version: eventlog::ExpectedVersion::NoStream,
        routing: eventlog::Routing {
            level: level.as_str().to_owned(),
            agency: agency.to_owned(),
            sector: "land".to_owned(),
        },
        events,
    }])
    .await
    .expect("append");
    let mut tx = log.pool().begin().await.unwrap();
    projection::store::apply_dossier(&mut tx, id).await.unwrap();
    tx.commit().await.unwrap();
}

async fn lives(log: &EventLog) {
    let march = |d| date(2025, 3, d);
    dossier(log, "d1", A1, Level::Commune, march(3), Some(march(4))).await;
    dossier(log, "d2", A1, Level::Commune, march(5), Some(march(6))).await;
    dossier(log, "d3", A2, Level::Commune, march(5), None).await;
    dossier(
        log,
        "d4",
        DISTRICT,
        Level::District,
        march(6),
        Some(march(7)),
    )
    .await;
    dossier(
        log,
        "d5",
        MERGED,
        Level::Commune,
        date(2025, 8, 4),
        Some(date(2025, 8, 5)),
    )
    .await;
    dossier(log, "d6", PROVINCE, Level::Province, date(2025, 9, 1), None).await;
}

fn year(group_by: Vec<Dimension>) -> Query {
    Query {
        from: date(2025, 1, 1),
        to: date(2026, 1, 1),
        filter: SliceFilter::default(),
        group_by,
    }
}

#[tokio::test]
async fn entries_are_appended_with_who_and_when_and_never_rewritten() {
    let (_db, log) = migrated_db().await;
    let pool = log.pool();
    let first = structure::publish(pool, &file(""), "Nguyễn Văn A")
        .await
        .unwrap();
    assert_eq!((first.added, first.unchanged), (7, 0));
    // The same file again adds nothing.
    let again = structure::publish(pool, &file(""), "config:x.toml")
        .await
        .unwrap();
    assert_eq!((again.added, again.unchanged), (0, 7));
    // A later change is added by its author.
    let more = format!(
        "[[change]]\nagency = \"{DISTRICT}\"\nfrom = \"2025-07-01\"\nkind = \"dissolved\"\nsuccessor = \"{MERGED}\"\n"
    );
    let added = structure::publish(pool, &file(&more), "Trần Thị B")
        .await
        .unwrap();
    assert_eq!(added.added, 1);
    let rows = structure::recorded(pool).await.unwrap();
    assert_eq!(rows.len(), 8);
    assert_eq!(rows[0].2, "Nguyễn Văn A");
    assert_eq!(rows[7].2, "Trần Thị B");
    assert!(rows[7].3 >= rows[0].3);

    // Contradicting a recorded entry, or an invalid structure: refused, nothing added.
    let mut contradicting = file("");
    contradicting.change[0].successor = Some(AgencyCode::parse(A2).unwrap());
    let e = structure::publish(pool, &contradicting, "x")
        .await
        .unwrap_err();
    assert!(matches!(e, StructureStoreError::Invalid(_)), "{e}");
    let cycle = format!(
        "[[change]]\nagency = \"{MERGED}\"\nfrom = \"2025-08-01\"\nkind = \"renamed\"\nsuccessor = \"{A1}\"\n\
         [[agency]]\ncode = \"000.99.12.H40\"\nname = \"new\"\nlevel = \"commune\"\n"
    );
    let e = structure::publish(pool, &file(&cycle), "x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("in a circle"), "{e}");
    assert_eq!(structure::recorded(pool).await.unwrap().len(), 8);
    // And the rows themselves cannot be emptied by name.
    let blank = structure::publish(pool, &file(&more), "").await;
    assert!(blank.is_ok(), "nothing new to add: no row written");
}

#[tokio::test]
async fn structure_at_relabels_live_and_recorded_figures_with_equal_totals() {
    let (_db, log) = migrated_db().await;
    let more = format!(
        "[[change]]\nagency = \"{DISTRICT}\"\nfrom = \"2025-07-01\"\nkind = \"dissolved\"\nsuccessor = \"{MERGED}\"\n"
    );
    structure::publish(log.pool(), &file(&more), "test")
        .await
        .unwrap();
    lives(&log).await;
    let reader = Reader::new(
        log.pool(),
        projection::QueryLimits::default(),
        stats::Targets::default(),
    );
    let after = Some(date(2025, 7, 1));
    let received = |a: &projection::answers::IndicatorsAnswer| -> Vec<(String, i64)> {
        a.groups
            .iter()
            .map(|g| (g.key[0].1.clone(), g.indicators.received.total))
            .collect()
    };
    for source in [Source::Live, Source::AsRecordedAt(chrono::Utc::now())] {
        let by_agency = year(vec![Dimension::Agency]);
        let then = reader.indicators(&by_agency, source, None).await.unwrap();
        let now = reader.indicators(&by_agency, source, after).await.unwrap();
        assert_eq!(then.total, now.total, "{source:?}: same province totals");
        assert_eq!(
            received(&then),
            vec![
                (PROVINCE.to_owned(), 1),
                (DISTRICT.to_owned(), 1),
                (A1.to_owned(), 2),
                (A2.to_owned(), 1),
                (MERGED.to_owned(), 1)
            ]
        );
        assert_eq!(
            received(&now),
            vec![(PROVINCE.to_owned(), 1), (MERGED.to_owned(), 5)]
        );
        // A filter on the successor counts its predecessors.
        let merged = Query {
            filter: SliceFilter {
                agency: Some(AgencyCode::parse(MERGED).unwrap()),
                ..SliceFilter::default()
            },
            ..year(vec![])
        };
        let a = reader.indicators(&merged, source, after).await.unwrap();
        assert_eq!(a.total.received.total, 5);
        assert_eq!(a.total.resolved.total, 4);
        let a = reader.indicators(&merged, source, None).await.unwrap();
        assert_eq!(a.total.received.total, 1);
    }
}

#[tokio::test]
async fn forms_follow_the_structure() {
    let (_db, log) = migrated_db().await;
    structure::publish(log.pool(), &file(""), "test")
        .await
        .unwrap();
    lives(&log).await;
    let reader = Reader::new(
        log.pool(),
        projection::QueryLimits::default(),
        stats::Targets::default(),
    );
    let codes = |t: &projection::forms::Table| -> Vec<Cell> {
        t.rows.iter().map(|r| r[0].clone()).collect()
    };
    let text = |s: &str| Cell::Text(s.to_owned());
    // The second half of 2025: no district figure and the level abolished — no 3.2 row.
    let h2 = Query {
        from: date(2025, 7, 1),
        ..year(vec![])
    };
    let t = reader
        .report(Form::BieuMau3Section3, &h2, Source::Live, None)
        .await
        .unwrap();
    assert_eq!(codes(&t), vec![text("3.1"), text("3.3")]);
    // The whole year holds the district's March dossier: its row stays, unless the year is
    // asked in the structure after the reform... where the district (not merged in this file)
    // keeps its own code and level, so its row stays too.
    let t = reader
        .report(Form::BieuMau3Section3, &year(vec![]), Source::Live, None)
        .await
        .unwrap();
    assert_eq!(codes(&t), vec![text("3.1"), text("3.2"), text("3.3")]);
    // Before the reform, every level is in use.
    let h1 = Query {
        to: date(2025, 7, 1),
        filter: SliceFilter {
            level: Some(Level::Commune),
            ..SliceFilter::default()
        },
        ..year(vec![])
    };
    let t = reader
        .report(Form::BieuMau3Section3, &h1, Source::Live, None)
        .await
        .unwrap();
    assert_eq!(codes(&t), vec![text("3.1"), text("3.2"), text("3.3")]);

    // The 766 scorecard per agency in today's structure: a row per agency and the total; the
    // transparency column not computed (never 0), progress in points.
    let by_agency = year(vec![Dimension::Agency]);
    let t = reader
        .report(
            Form::Scorecard766,
            &by_agency,
            Source::Live,
            Some(date(2026, 1, 1)),
        )
        .await
        .unwrap();
    assert_eq!(
        codes(&t),
        vec![text(PROVINCE), text(DISTRICT), text(MERGED), text("total")]
    );
    let column = |id: &str| t.columns.iter().position(|c| c.id == id).unwrap();
    let merged = &t.rows[2];
    assert!(matches!(merged[column("ckmb")], Cell::NotComputed(_)));
    // MERGED: A1's 2 resolved early + MERGED's 1, and A2's still pending past its due time
    // (15 March): 3/4 → 20 × 3/4 = 15 points.
    assert_eq!(
        merged[column("tdgq")],
        Cell::Points {
            hundredths: 1500,
            max_hundredths: 2000
        }
    );
    assert_eq!(
        merged[column("tdgq_progress_rate")],
        Cell::Rate(stats::Rate::new(3, 4))
    );
    // One day from reception to resolution each: 24 hours on average.
    assert_eq!(
        merged[column("avg_processing_hours")],
        Cell::Mean {
            count: 3,
            mean: Some(24.0),
            unit: "hours"
        }
    );
    let csv = projection::forms::to_csv(&t, CsvOptions::default());
    assert!(
        csv.lines().next().unwrap().contains("tdgq_points,tdgq_max"),
        "{csv}"
    );
    assert!(csv.contains("not computed: needs"), "{csv}");
    let vi = projection::forms::to_csv(
        &t,
        CsvOptions {
            bom: false,
            vietnamese: true,
        },
    );
    let header = vi.lines().next().unwrap();
    assert!(header.starts_with("\"Cơ quan, đơn vị\","), "{header}");
    // Each sub-indicator's rate named with it, not a bare repeated "Tỷ lệ".
    assert!(!header.contains(",Tỷ lệ"), "{header}");
    assert!(header.contains(" — tỷ lệ (tử số),"), "{header}");
    assert!(header.contains(" (điểm),"), "{header}");
    assert!(header.contains(" (điểm tối đa),"), "{header}");
    assert!(
        header.contains("Thời gian giải quyết trung bình (giờ) (số hồ sơ)"),
        "{header}"
    );
    assert!(vi.lines().last().unwrap().starts_with("Tổng cộng,"), "{vi}");

    // The workbook: points and means as numbers, not computed as text, the total named.
    let heading = Heading::new(&by_agency, Source::Live, Some(date(2026, 1, 1)));
    let bytes = projection::xlsx::to_xlsx(&t, &heading).unwrap();
    let sheet = testkit::xlsx::read(&bytes, "scorecard-766");
    assert!(
        sheet
            .text(2, 0)
            .ends_with("theo cơ cấu tổ chức ngày 01/01/2026"),
        "{}",
        sheet.text(2, 0)
    );
    // Title, unit, period, unit line, blank, headings, numbers: data from row 7; STT first.
    let first = 7;
    let col = |id: &str| 1 + column(id) as u32;
    assert_eq!(sheet.text(first + 2, col("agency")), MERGED);
    assert_eq!(sheet.number(first + 2, col("tdgq")), 15.0);
    assert_eq!(sheet.number(first + 2, col("avg_processing_hours")), 24.0);
    assert!(
        sheet
            .text(first + 2, col("ckmb"))
            .starts_with("not computed:")
    );
    assert_eq!(sheet.text(first + 3, col("agency")), "Tổng cộng");
    assert!(
        sheet.formula(first + 3, col("tdgq")).is_empty(),
        "points are not summed"
    );
}

/// The CLI publishes through the same code as the administrator's RPC: entries recorded with
/// `--by`, the same file twice adds nothing, and a refused file exits 1 naming the entry and
/// field at fault, adding nothing.
#[tokio::test]
async fn the_cli_publishes_through_the_same_code_and_names_the_fault() {
    let (db, _log) = migrated_db().await;
    let dir = std::env::temp_dir().join(format!(
        "projection-agencies-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let tokens = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/config/tokens.dev.toml");
    let config = dir.join("projection.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = {:?}\nmax_connections = 4\n\n\
             [nats]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"UNUSED\"\nsubject_prefix = \"unused\"\n\n\
             [auth]\ntokens_file = {:?}\n\n[projection]\n",
            db.url,
            tokens.to_str().unwrap()
        ),
    )
    .unwrap();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!(
            "[[agency]]\ncode = \"{A1}\"\nname = \"A1\"\nlevel = \"commune\"\n\
             [[agency]]\ncode = \"{MERGED}\"\nname = \"M\"\nlevel = \"commune\"\n\
             [[change]]\nagency = \"{A1}\"\nfrom = \"2025-07-01\"\nkind = \"merged\"\nsuccessor = \"{MERGED}\"\n"
        ),
    )
    .unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[[change]]\nagency = \"{A2}\"\nfrom = \"2025-07-01\"\nkind = \"merged\"\nsuccessor = \"000.99.99.H40\"\n"
        ),
    )
    .unwrap();
    let run = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_projection"))
            .args(["agencies", "publish"])
            .arg(file)
            .args(["--by", "Nguyễn Quản Trị", "--config"])
            .arg(&config)
            .output()
            .expect("projection runs")
    };
    let first = run(&good);
    assert!(first.status.success(), "{first:?}");
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("3 entries added"),
        "{first:?}"
    );
    let again = run(&good);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 entries added"),
        "{again:?}"
    );
    let refused = run(&bad);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains(&format!("change of {A2} from 2025-07-01, successor")),
        "{said}"
    );
    let recorded = structure::recorded_entries(&db.pool).await.unwrap();
    assert_eq!(recorded.len(), 3, "nothing of the refused file");
    assert!(recorded.iter().all(|r| r.recorded_by == "Nguyễn Quản Trị"));
    std::fs::remove_dir_all(&dir).ok();
}
