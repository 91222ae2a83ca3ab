//! Schemathesis, which the services' OpenAPI conformance tests run (`testkit::schemathesis`): a
//! Python virtual environment under `target/venv` with the pinned release of
//! `crates/testkit/schemathesis-requirements.txt`, from PyPI. On Debian `python3 -m venv` needs
//! the `python3-venv` package, installed with apt-get when missing.

use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use crate::cmd::{find_program, repo_root, run, target_dir};
use crate::services::apt_install;

const REQUIREMENTS: &str = "crates/testkit/schemathesis-requirements.txt";

/// Makes sure `target/venv/bin/schemathesis` is the pinned release.
pub fn ensure() -> Result<()> {
    if find_program("python3").is_none() {
        apt_install(&["python3"])?;
    }
    let venv = target_dir().join("venv");
    let pip = venv.join("bin/pip");
    if !pip.is_file() {
        // A half-made environment (venv failed for want of ensurepip) is made again.
        if venv.exists() {
            std::fs::remove_dir_all(&venv)
                .with_context(|| format!("removing {}", venv.display()))?;
        }
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running python3 -m venv")?;
        if !made.success() {
            apt_install(&["python3-venv"])?;
            if venv.exists() {
                std::fs::remove_dir_all(&venv)?;
            }
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
    }
    run(Command::new(&pip)
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(repo_root().join(REQUIREMENTS)))
}
