//! The catalogue: the shipped file, the append-only store, the reception's check.

mod cache;

use calendar::StatutoryTime;
use catalogue::{Catalogue, ResolveError, Stated, resolve};
use chrono::{DateTime, Utc};
use domain::{OnlineServiceLevel, ProcedureCode, SectorCode, SupplementPolicy};
use testkit::TestDb;

const FILE: &str = include_str!("../../../../deploy/config/catalogue.toml");

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn the_shipped_catalogue_parses() {
    let procedures = catalogue::parse_file(FILE).expect("deploy/config/catalogue.toml");
    assert_eq!(procedures.len(), 3);
    let land = &procedures[0];
    assert_eq!(land.max_supplement_requests, Some(1));
    assert_eq!(land.close_after_working_days, Some(15));
    assert!(land.obligation_pauses_clock);
    assert_eq!(land.effective_from, t("2025-06-30T17:00:00Z"));
}

#[test]
fn invalid_definitions_name_their_field() {
    let base = FILE.split("\n[[procedure]]").nth(1).unwrap();
    // (replace, by, field)
    let table = [
        (
            "statutory_days = 30",
            "statutory_days = 0",
            "statutory_time",
        ),
        ("statutory_days = 30", "", "statutory_days"),
        (
            "max_supplement_requests = 1",
            "max_supplement_requests = 0",
            "max_supplement_requests",
        ),
        (
            "close_after_working_days = 15",
            "close_after_working_days = 400",
            "close_after_working_days",
        ),
        (
            "online_level = \"partial_online\"",
            "online_level = \"online\"",
            "online_level",
        ),
        (
            "obligation_pauses_clock = true",
            "obligation_pauses_clock = true\nsame_day_cutoff = \"15:00\"",
            "same_day_cutoff",
        ),
        ("sector = \"land\"", "sector = \"\"", "sector"),
    ];
    for (from, to, field) in table {
        let text = format!("[[procedure]]{}", base.replace(from, to));
        match catalogue::parse_file(&text) {
            Err(catalogue::FileError::Invalid { error, .. }) => {
                assert_eq!(error.field, field, "{to}")
            }
            other => panic!("{to}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn versions_are_appended_and_resolved_by_effective_date() {
    let db = TestDb::new().await;
    let store = Catalogue::new(db.pool.clone());
    store.migrate().await.unwrap();
    let procedures = catalogue::parse_file(FILE).unwrap();
    let (v1, published) = store
        .publish(&procedures, "file:catalogue.toml")
        .await
        .unwrap();
    assert_eq!(published, 3);
    // The same file again changes nothing.
    let (again, published) = store
        .publish(&procedures, "file:catalogue.toml")
        .await
        .unwrap();
    assert_eq!((again.clone(), published), (v1.clone(), 0));

    // A new version from 2026: 20 working days; a correction of the 2025 version.
    let code = ProcedureCode::parse("1.004227").unwrap();
    let mut y2026 = procedures[0].clone();
    y2026.statutory_time = StatutoryTime::Days(20);
    y2026.effective_from = t("2025-12-31T17:00:00Z");
    let mut corrected = procedures[0].clone();
    corrected.supplement_policy = SupplementPolicy::Extend;
    let (v, published) = store.publish(&[y2026, corrected], "admin-1").await.unwrap();
    assert_eq!(published, 2);

    // (instant, expected version, statutory time)
    let table = [
        ("2025-06-30T16:59:59Z", None, None),
        (
            "2025-07-01T09:00:00Z",
            Some(v[1]),
            Some(StatutoryTime::Days(30)),
        ),
        (
            "2026-01-05T09:00:00Z",
            Some(v[0]),
            Some(StatutoryTime::Days(20)),
        ),
    ];
    for (at, version, statutory) in table {
        let found = store.in_force(&code, t(at)).await.unwrap();
        assert_eq!(found.as_ref().map(|f| f.version), version, "{at}");
        assert_eq!(
            found.as_ref().map(|f| f.procedure.statutory_time),
            statutory,
            "{at}"
        );
    }
    let history = store.history().await.unwrap();
    assert_eq!(history.len(), 5);
    assert_eq!(history[4].recorded_by, "admin-1");
    // Append-only: the table refuses to be rewritten.
    for sql in [
        "UPDATE procedure_versions SET recorded_by = 'x'",
        "DELETE FROM procedure_versions",
        "TRUNCATE procedure_versions",
    ] {
        assert!(sqlx::query(sql).execute(&db.pool).await.is_err(), "{sql}");
    }
}

#[tokio::test]
async fn a_reception_is_completed_and_checked() {
    let db = TestDb::new().await;
    let store = Catalogue::new(db.pool.clone());
    store.migrate().await.unwrap();
    store
        .publish(&catalogue::parse_file(FILE).unwrap(), "file")
        .await
        .unwrap();
    let code = ProcedureCode::parse("1.004227").unwrap();
    let v = store
        .in_force(&code, t("2025-08-01T02:00:00Z"))
        .await
        .unwrap();
    let bare = Stated {
        online_level: None,
        sector: None,
        statutory_time: None,
        fee_required: false,
    };
    // Only the code: everything from the catalogue, the rules with their version.
    let r = resolve(&bare, v.as_ref()).unwrap();
    assert_eq!(r.statutory_time, StatutoryTime::Days(30));
    assert!(r.fee_required);
    assert_eq!(
        r.rules.as_ref().map(|r| r.catalogue_version),
        v.as_ref().map(|v| v.version)
    );
    // The full profile, agreeing: accepted (existing clients).
    let full = Stated {
        online_level: Some(OnlineServiceLevel::PartialOnline),
        sector: Some(SectorCode::parse("land").unwrap()),
        statutory_time: Some(StatutoryTime::Days(30)),
        fee_required: true,
    };
    assert_eq!(resolve(&full, v.as_ref()).unwrap(), r);
    // (changed statement, field named)
    let table = [
        (
            Stated {
                statutory_time: Some(StatutoryTime::Days(12)),
                ..full.clone()
            },
            "statutory_time",
        ),
        (
            Stated {
                sector: Some(SectorCode::parse("justice").unwrap()),
                ..full.clone()
            },
            "profile.sector_code",
        ),
        (
            Stated {
                online_level: Some(OnlineServiceLevel::FullOnline),
                ..bare.clone()
            },
            "profile.online_level",
        ),
        (
            Stated {
                fee_required: false,
                ..full.clone()
            },
            "fee_required",
        ),
    ];
    for (stated, field) in table {
        let e = resolve(&stated, v.as_ref()).unwrap_err();
        assert!(matches!(e, ResolveError::Mismatch { .. }), "{e}");
        assert_eq!(e.field(), field);
        assert!(e.to_string().starts_with(field), "{e}");
    }
    // Not in the catalogue: the full profile is accepted as stated, without rules; a partial
    // one names the first missing field.
    let r = resolve(&full, None).unwrap();
    assert_eq!(r.rules, None);
    assert_eq!(
        resolve(&bare, None).unwrap_err().field(),
        "profile.online_level"
    );
}
