//! The `audit` binary: exit codes and what it prints, as an auditor sees them.

use std::process::Command;

use crate::support::*;

fn audit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_audit"))
        .args(args)
        .env_remove("MOTCUA_DATABASE_URL")
        .output()
        .expect("run audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_export_and_prove_from_the_command_line() {
    let (db, log) = setup().await;
    let events = append(&log, &["A1", "B1"], 3).await;
    tick(&log).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("log.pub");
    std::fs::write(&key_file, verifier().to_text()).unwrap();
    let key = key_file.to_str().unwrap();

    let (code, out, err) = audit(&["verify", "--database-url", &db.url, "--public-key", key]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK: 6 events"), "{out}");

    let export = dir.path().join("a1.ndjson");
    let (code, _, err) = audit(&[
        "export",
        "--database-url",
        &db.url,
        "--dossier",
        "A1",
        "--output",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = audit(&[
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--public-key",
        key,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 3 events"), "{out}");
    let text = std::fs::read_to_string(&export).unwrap();
    std::fs::write(&export, text.replacen("event 2", "event 5", 1)).unwrap();
    let (code, out, _) = audit(&[
        "verify",
        "--export",
        export.to_str().unwrap(),
        "--public-key",
        key,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED at line 4 (position 3)"), "{out}");

    let id = events[4].event_id.to_string();
    let (code, out, err) = audit(&["prove", "--database-url", &db.url, "--event-id", &id]);
    assert_eq!(code, 0, "{err}");
    let proof: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(proof["position"], 5);
    assert_eq!(proof["tree_size"], 6);

    tamper(
        &db,
        &["UPDATE events SET dossier_id = 'Z9' WHERE position = 2"],
    )
    .await;
    let (code, out, _) = audit(&["verify", "--database-url", &db.url, "--public-key", key]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAILED at position 2:"), "{out}");

    let (code, _, err) = audit(&["verify", "--no-such-option", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("usage"), "{err}");
}
