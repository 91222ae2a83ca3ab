//! A running server against its OpenAPI description, checked by
//! [schemathesis](https://schemathesis.readthedocs.io/): the one harness of every service's
//! conformance test. Every route, parameter and answer it generates (valid and invalid
//! requests, with and without a token) must get a documented status, media type, headers and
//! body shape. [`edited`] writes a copy of a document with one part changed: misstated, so a
//! test shows that its run fails when the document is wrong, or with an example only the test
//! knows (a lookup secret).
//!
//! Schemathesis (Python, from PyPI, pinned in `crates/testkit/schemathesis-requirements.txt`)
//! runs from a virtual environment under `target/venv`; `cargo xtask test` installs it there,
//! and so does [`binary`] when it is missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

/// The pinned schemathesis release (also what `cargo xtask test` installs).
const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/schemathesis-requirements.txt");

/// Examples generated per operation and phase: enough to reach every documented status of
/// these small APIs, few enough to keep a run within about a minute on two cores.
pub const MAX_EXAMPLES: u32 = 25;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// `target/venv/bin/schemathesis`, installed first when missing (once per test binary).
///
/// # Panics
/// When `python3 -m venv` or `pip install` fails (the message says what to install).
pub fn binary() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target_dir().join("venv");
    let binary = venv.join("bin/schemathesis");
    if binary.is_file() {
        return binary;
    }
    let run = |c: &mut Command, what: &str| {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed (on Debian: apt-get install python3-venv; `cargo xtask test` does \
             it): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv target/venv",
    );
    run(
        Command::new(venv.join("bin/pip")).args(["install", "--quiet", "-r", REQUIREMENTS]),
        "pip install schemathesis",
    );
    binary
}

/// Runs `schemathesis run` on `location` (a URL or a file) against the server at `server`:
/// every check but `positive_data_acceptance` (requests a schema cannot tell from valid ones,
/// such as `to` before `from`, are rightly refused), [`MAX_EXAMPLES`], one worker, a fixed seed,
/// then `extra` (a token header, paths to leave out…).
pub async fn run(location: &str, server: SocketAddr, extra: &[&str]) -> Output {
    let mut c = Command::new(binary());
    c.arg("run")
        .arg(location)
        .args(["--url", &format!("http://{server}")])
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--workers", "1", "--seed", "13"])
        .args(["--request-timeout", "30", "--no-color"])
        .args(extra)
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(target_dir());
    tokio::task::spawn_blocking(move || c.output().expect("schemathesis runs"))
        .await
        .expect("the schemathesis thread")
}

/// Standard output and error of a run, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts that a run passed, showing what schemathesis found if not.
///
/// # Panics
/// When it did not.
pub fn assert_conforms(out: &Output) {
    assert!(out.status.success(), "schemathesis found: {}", text(out));
}

/// Asserts that a run failed on an answer the (misstated) document does not describe.
///
/// # Panics
/// When it passed or failed for another reason.
pub fn assert_caught(out: &Output) {
    let said = text(out);
    assert!(!out.status.success(), "not caught: {said}");
    assert!(said.contains("Response violates schema"), "{said}");
}

/// A copy of an OpenAPI document with the value at a JSON pointer replaced, in a temporary
/// file removed on drop.
#[derive(Debug)]
pub struct Edited {
    dir: PathBuf,
    path: PathBuf,
}

impl Edited {
    /// The file's path, for [`run`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path as text.
    pub fn location(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for Edited {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// `document` with the value at `pointer` replaced by `value`.
///
/// # Panics
/// When the document is not JSON or `pointer` does not resolve.
pub fn edited(document: &str, pointer: &str, value: serde_json::Value) -> Edited {
    let mut doc: serde_json::Value = serde_json::from_str(document).expect("a JSON document");
    *doc.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} is not in the document")) = value;
    let dir = std::env::temp_dir().join(format!("motcua-openapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("openapi.json");
    std::fs::write(&path, doc.to_string()).expect("write the edited document");
    Edited { dir, path }
}
