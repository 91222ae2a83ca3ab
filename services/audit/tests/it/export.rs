//! Export of a filtered slice with proofs, verified offline; any edit of the file is caught.

use std::io::Cursor;

use audit::export::{ExportFilter, export, verify_export};

use crate::support::*;

async fn exported(filter: &ExportFilter) -> (testkit::TestDb, String) {
    let (db, log) = setup().await;
    append(&log, &["A1", "B1"], 3).await;
    append(&log, &["A1"], 2).await;
    tick(&log).await;
    // Newer than the checkpoint: not exported.
    append(&log, &["A1"], 1).await;
    let mut out = Vec::new();
    let done = export(log.pool(), filter, None, &mut out).await.unwrap();
    assert_eq!(done.tree_size, 8);
    (db, String::from_utf8(out).unwrap())
}

fn check(text: &str) -> Result<audit::export::ExportReport, audit::export::ExportFinding> {
    verify_export(Cursor::new(text.as_bytes()), &verifier()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_dossier_verifies_offline() {
    let filter = ExportFilter {
        dossier: Some("A1".into()),
        ..Default::default()
    };
    let (_db, text) = exported(&filter).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 5 + 1, "{text}");
    let report = check(&text).expect("verifies");
    assert_eq!((report.events, report.tree_size), (5, 8));
    assert_eq!(report.origin, ORIGIN);
    for line in &lines[1..6] {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["dossier_id"], "A1");
    }

    // Another key: refused at the header.
    let other = merkle::Signer::from_seed(ORIGIN, [3; 32])
        .unwrap()
        .verifier();
    let finding = verify_export(Cursor::new(text.as_bytes()), &other)
        .unwrap()
        .unwrap_err();
    assert_eq!(finding.line, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_edited_line_fails() {
    let (_db, text) = exported(&ExportFilter::default()).await;
    check(&text).expect("the untouched export verifies");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 10);
    let with = |i: usize, line: String| {
        let mut l = lines.clone();
        l[i] = line;
        l.join("\n") + "\n"
    };

    // A payload changed in the canonical bytes.
    let edited = with(5, lines[5].replace("event 1", "event 7"));
    assert_ne!(edited, text);
    let f = check(&edited).unwrap_err();
    assert_eq!((f.line, f.position), (6, Some(5)));
    assert!(f.problem.contains("event_hash"), "{f}");

    // The content and its hash changed together: the proof no longer leads to the root.
    let mut v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    let canonical = v["canonical"]
        .as_str()
        .unwrap()
        .replace("event 1", "event 8");
    v["event_hash"] = hex::encode(merkle::leaf_hash(canonical.as_bytes())).into();
    v["canonical"] = canonical.into();
    let f = check(&with(2, v.to_string())).unwrap_err();
    assert_eq!((f.line, f.position), (3, Some(2)));
    assert!(f.problem.contains("inclusion proof"), "{f}");

    // A proof hash changed.
    let mut v: serde_json::Value = serde_json::from_str(&lines[6]).unwrap();
    v["proof"][0] = hex::encode([0u8; 32]).into();
    let f = check(&with(6, v.to_string())).unwrap_err();
    assert_eq!(f.position, Some(6));

    // The position claimed differs from the content's.
    let mut v: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    v["position"] = 30.into();
    assert!(check(&with(3, v.to_string())).is_err());

    // The checkpoint header's root changed.
    let mut v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    v["root_hash"] = hex::encode([1u8; 32]).into();
    assert_eq!(check(&with(0, v.to_string())).unwrap_err().line, 1);

    // An event line dropped: the end count says so.
    let mut dropped = lines.clone();
    dropped.remove(5);
    let f = check(&(dropped.join("\n") + "\n")).unwrap_err();
    assert!(f.problem.contains("end line counts 8"), "{f}");

    // Truncated.
    let truncated = lines[..9].join("\n") + "\n";
    assert!(check(&truncated).unwrap_err().problem.contains("truncated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_select_the_slice_and_an_older_checkpoint_can_be_chosen() {
    let (db, log) = setup().await;
    append(&log, &["A1", "B1"], 3).await;
    tick(&log).await;
    append(&log, &["B1", "C1"], 2).await;
    tick(&log).await;
    let run = |filter: ExportFilter, size: Option<u64>| {
        let pool = log.pool().clone();
        async move {
            let mut out = Vec::new();
            export(&pool, &filter, size, &mut out).await.unwrap();
            let text = String::from_utf8(out).unwrap();
            let report = check(&text).expect("verifies");
            (report.tree_size, report.events)
        }
    };
    assert_eq!(run(ExportFilter::default(), Some(6)).await, (6, 6));
    assert_eq!(run(ExportFilter::default(), None).await, (10, 10));
    let positions = ExportFilter {
        from_position: Some(3),
        to_position: Some(7),
        ..Default::default()
    };
    assert_eq!(run(positions, None).await, (10, 5));
    let agency = ExportFilter {
        agency: Some("agency-C".into()),
        ..Default::default()
    };
    assert_eq!(run(agency, None).await, (10, 2));
    let kind = ExportFilter {
        event_type: Some("received".into()),
        ..Default::default()
    };
    assert_eq!(run(kind, None).await, (10, 3));
    let later = ExportFilter {
        recorded_from: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        ..Default::default()
    };
    assert_eq!(run(later, None).await, (10, 0));
    let mut out = Vec::new();
    assert!(matches!(
        export(log.pool(), &ExportFilter::default(), Some(7), &mut out).await,
        Err(audit::export::ExportError::NoCheckpoint(Some(7)))
    ));
    drop(db);
}
