//! `cargo xtask fuzz [TARGET…] [--seconds N] [-- LIBFUZZER_ARGS…]`: the coverage-guided fuzz targets of `fuzz/`
//! (cargo-fuzz, libFuzzer), each run for a bounded time; reports every crashing input and fails
//! if there is one. Not part of `cargo xtask test`.
//!
//! The engine: cargo-fuzz drives libFuzzer, which needs `-Z` compiler flags, i.e. a nightly
//! compiler; on the stable toolchain `RUSTC_BOOTSTRAP=1` lets it pass them (only for these
//! builds, into their own target directory `target/fuzz`). No sanitizer: the workspace forbids
//! `unsafe`, so AddressSanitizer would mostly slow the search down. cargo-fuzz is installed
//! from crates.io when missing; libFuzzer itself is compiled from the `libfuzzer-sys` crate.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::cmd::{cargo, display, output, repo_root, run, step};

/// The cargo-fuzz release `cargo xtask fuzz` installs when none is there.
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// Seconds per target unless `--seconds` says otherwise.
const DEFAULT_SECONDS: u64 = 60;
/// An input that runs longer than this is a finding (a hang or a quadratic path).
const TIMEOUT_SECONDS: u64 = 10;
/// The largest input tried: beyond `eventlog::MAX_EVENT_BYTES` (64 KiB), so that a request
/// large enough to produce an oversized event can be found.
const MAX_LEN: usize = 128 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub struct FuzzArgs {
    pub targets: Vec<String>,
    pub seconds: u64,
    /// Passed to libFuzzer after ours (e.g. `-len_control=0`).
    pub libfuzzer: Vec<String>,
}

pub fn parse(args: &[String]) -> Result<FuzzArgs> {
    let mut targets = Vec::new();
    let mut seconds = None;
    let (args, libfuzzer) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "--seconds" => Some(args.next().context("--seconds needs a value")?.as_str()),
            other => other.strip_prefix("--seconds="),
        };
        if let Some(value) = value {
            let n: u64 = value
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("--seconds takes a positive number, not {value:?}"))?;
            if seconds.replace(n).is_some() {
                bail!("--seconds given twice");
            }
        } else if arg.starts_with('-') {
            bail!("unknown argument {arg:?}");
        } else if !targets.contains(arg) {
            targets.push(arg.clone());
        }
    }
    Ok(FuzzArgs {
        targets,
        seconds: seconds.unwrap_or(DEFAULT_SECONDS),
        libfuzzer,
    })
}

/// What one run found.
struct Outcome {
    target: String,
    execs: Option<u64>,
    execs_per_second: Option<u64>,
    /// The last status line's `cov:` (edges) and `ft:` (features) and corpus size.
    coverage: Option<String>,
    crashes: Vec<PathBuf>,
    exit_ok: bool,
}

pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let root = repo_root();
    let fuzz_dir = root.join("fuzz");
    step("[1/3] cargo-fuzz");
    ensure_cargo_fuzz()?;

    let known = list_targets()?;
    let targets = if args.targets.is_empty() {
        known.clone()
    } else {
        if let Some(unknown) = args.targets.iter().find(|t| !known.contains(t)) {
            bail!("no fuzz target {unknown:?}; targets: {}", known.join(", "));
        }
        args.targets.clone()
    };

    step("[2/3] building the targets (release, instrumented)");
    if targets.len() < known.len() {
        // One target per build command: cargo-fuzz builds either one or all.
        for target in &targets {
            run(cargo_fuzz("build").arg(target))?;
        }
    } else {
        run(&mut cargo_fuzz("build"))?;
    }

    step(&format!(
        "[3/3] fuzzing {} target(s), {} s each",
        targets.len(),
        args.seconds
    ));
    let mut outcomes = Vec::new();
    for target in &targets {
        outcomes.push(fuzz_one(&fuzz_dir, target, args)?);
    }

    println!("\n| target | seconds | execs | execs/s | coverage (last status) | result |");
    println!("|---|---:|---:|---:|---|---|");
    let show = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
    for o in &outcomes {
        let result = if !o.crashes.is_empty() {
            format!("{} crash(es)", o.crashes.len())
        } else if o.exit_ok {
            "ok".to_owned()
        } else {
            "failed (see output)".to_owned()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            o.target,
            args.seconds,
            show(o.execs),
            show(o.execs_per_second),
            o.coverage.as_deref().unwrap_or("?"),
            result
        );
    }
    let crashes: Vec<_> = outcomes.iter().flat_map(|o| &o.crashes).collect();
    for path in &crashes {
        println!("crashing input: {}", path.display());
    }
    if !crashes.is_empty() {
        bail!(
            "{} crashing input(s); reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer \
             none --target-dir target/fuzz TARGET PATH`, and once fixed keep the input in \
             fuzz/regressions/TARGET/",
            crashes.len()
        );
    }
    if let Some(failed) = outcomes.iter().find(|o| !o.exit_ok) {
        bail!(
            "fuzzing {} failed without a crashing input (see its output)",
            failed.target
        );
    }
    println!("\nxtask: no crash");
    Ok(())
}

/// `cargo fuzz SUBCOMMAND` with this project's settings.
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = cargo();
    cmd.args(["fuzz", subcommand, "--sanitizer", "none", "--target-dir"])
        .arg(crate::cmd::target_dir().join("fuzz"))
        .env("RUSTC_BOOTSTRAP", "1");
    cmd
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        println!("cargo-fuzz is installed");
        return Ok(());
    }
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

fn list_targets() -> Result<Vec<String>> {
    let out = output(cargo().args(["fuzz", "list"]))?;
    if !out.status.success() {
        bail!(
            "`cargo fuzz list` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` found no target in fuzz/");
    }
    Ok(targets)
}

fn files(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Runs one target for `seconds`: the growing corpus `fuzz/corpus/TARGET` (not committed),
/// the committed seeds and the regressions (fixed findings) as further inputs.
fn fuzz_one(fuzz_dir: &Path, target: &str, args: &FuzzArgs) -> Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let before = files(&artifacts);

    let mut cmd = cargo_fuzz("run");
    cmd.arg(target).arg(&corpus);
    for extra in ["seeds", "regressions"] {
        let dir = fuzz_dir.join(extra).join(target);
        if dir.is_dir() {
            cmd.arg(dir);
        }
    }
    cmd.arg("--").args([
        format!("-max_total_time={}", args.seconds),
        format!("-timeout={TIMEOUT_SECONDS}"),
        format!("-max_len={MAX_LEN}"),
        "-print_final_stats=1".to_owned(),
    ]);
    cmd.args(&args.libfuzzer);
    println!("\n--- {target}\n$ {}", display(&cmd));
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", display(&cmd)))?;
    let mut outcome = Outcome {
        target: target.to_owned(),
        execs: None,
        execs_per_second: None,
        coverage: None,
        crashes: Vec::new(),
        exit_ok: false,
    };
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            read_status(&line, &mut outcome);
        }
    }
    outcome.exit_ok = child.wait().is_ok_and(|s| s.success());
    outcome.crashes = files(&artifacts).difference(&before).cloned().collect();
    Ok(outcome)
}

/// Picks the figures out of libFuzzer's output: status lines (`#1234 NEW cov: 56 ft: 78
/// corp: 9/100b …`) and the final `stat::` lines.
fn read_status(line: &str, outcome: &mut Outcome) {
    let number = |s: &str| s.trim().parse::<u64>().ok();
    if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
        outcome.execs = number(n);
    } else if let Some(n) = line.strip_prefix("stat::average_exec_per_sec:") {
        outcome.execs_per_second = number(n);
    } else if line.starts_with('#') && line.contains(" cov: ") {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| {
            words
                .iter()
                .position(|w| *w == key)
                .and_then(|i| words.get(i + 1))
                .copied()
        };
        if let (Some(cov), Some(ft), Some(corp)) = (after("cov:"), after("ft:"), after("corp:")) {
            outcome.coverage = Some(format!("cov {cov}, ft {ft}, corpus {corp}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_targets_and_seconds() {
        assert_eq!(
            parse(&strings(&["intake", "--seconds", "30", "replay", "intake"])).unwrap(),
            FuzzArgs {
                targets: strings(&["intake", "replay"]),
                seconds: 30,
                libfuzzer: vec![],
            }
        );
        let parsed = parse(&strings(&["intake", "--", "-len_control=0", "--seconds"])).unwrap();
        assert_eq!(parsed.targets, strings(&["intake"]));
        assert_eq!(parsed.libfuzzer, strings(&["-len_control=0", "--seconds"]));
        assert_eq!(parse(&strings(&["--seconds=5"])).unwrap().seconds, 5);
        assert_eq!(parse(&[]).unwrap().seconds, DEFAULT_SECONDS);
        assert!(parse(&strings(&["--seconds"])).is_err());
        assert!(parse(&strings(&["--seconds", "0"])).is_err());
        assert!(parse(&strings(&["--seconds", "1", "--seconds", "2"])).is_err());
        assert!(parse(&strings(&["--jobs"])).is_err());
    }

    #[test]
    fn reads_libfuzzer_figures() {
        let mut o = Outcome {
            target: "t".into(),
            execs: None,
            execs_per_second: None,
            coverage: None,
            crashes: vec![],
            exit_ok: true,
        };
        read_status(
            "#4096\tpulse  cov: 1234 ft: 5678 corp: 90/12Kb lim: 4096 exec/s: 2048 rss: 60Mb",
            &mut o,
        );
        read_status("stat::number_of_executed_units: 123456", &mut o);
        read_status("stat::average_exec_per_sec:     2057", &mut o);
        assert_eq!(
            o.coverage.as_deref(),
            Some("cov 1234, ft 5678, corpus 90/12Kb")
        );
        assert_eq!(o.execs, Some(123_456));
        assert_eq!(o.execs_per_second, Some(2057));
    }
}
