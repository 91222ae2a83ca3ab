//! Project automation: `cargo xtask <command>` (the alias is in .cargo/config.toml).
//! Only std and anyhow, so it compiles in seconds. See `usage()` for the commands.

mod cmd;
mod fuzz;
mod schemathesis;
mod services;
mod supervise;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::cmd::{cargo, repo_root, run, step, target_dir};
use crate::supervise::Service;

/// The services `cargo xtask run` builds and starts: (cargo package, binary). Add new services
/// here.
const SERVICES: &[(&str, &str)] = &[
    ("intake", "intake"),
    ("processing", "processing"),
    ("payment", "payment"),
    ("results", "results"),
    ("relay-service", "relay-service"),
    ("projection", "projection"),
    ("replay", "replay"),
    ("audit", "audit"),
    ("portal-sync", "portal-sync"),
];

/// Configuration the services get under `cargo xtask run`, relative to the repository root.
const LOCAL_CONFIG: &str = "deploy/config/local.toml";
/// The database named in LOCAL_CONFIG's `database.url`.
const LOCAL_DATABASE: &str = "motcua";

fn usage() -> String {
    format!(
        "\
Usage: cargo xtask <command> [options]

Commands:
  test [-- ARGS...]   Make sure PostgreSQL and NATS with JetStream run on this machine
                      (starting or installing them if needed), that Debian's chromium and
                      chromium-driver are installed (the dashboard's browser tests) and
                      schemathesis is in target/venv (pip, from PyPI; the OpenAPI tests),
                      then run
                      `cargo fmt --all -- --check`, `cargo clippy --workspace --all-targets
                      --locked -- -D warnings` and `cargo test --workspace --locked ARGS...` (without
                      --workspace when ARGS pick packages with -p).
                      Examples: `cargo xtask test -- -p eventlog`,
                                `cargo xtask test -- some_test -- --nocapture`.
                      Set TEST_DATABASE_URL / TEST_NATS_URL to use other servers (then they
                      are only checked).
  run                 Make sure PostgreSQL and NATS run, create the `{LOCAL_DATABASE}` database,
                      build the services in release ({}) and run them all with
                      --config {LOCAL_CONFIG}, until Ctrl-C, SIGTERM or SIGINT to this
                      process (forwarded to the services, then waited for) or one of
                      them exits.
  token --agency CODE --level province|district|commune --role counter|importer|auditor
        [--name TEXT]  (or `token --help`)
                      Print a new random API token (once) and the tokens-file entry with its
                      SHA-256.
  bench [-- ARGS...]  Make sure PostgreSQL runs, then build and run the benchmark in release:
                      `cargo run --release -p bench -- ARGS...` (e.g. `-- --quick`). It prints
                      a Markdown table of rates and ratios to same-run baselines.
  fuzz [TARGET...] [--seconds N] [-- LIBFUZZER_ARGS...]
                      Install cargo-fuzz if missing (from crates.io), build the fuzz targets of
                      fuzz/ (libFuzzer; RUSTC_BOOTSTRAP=1 on the stable toolchain) and run each
                      for N seconds (default 60; all targets when none is named). Prints execs,
                      execs/s and coverage per target, every crashing input's path, and fails
                      if there is one. Not part of `test`; run it niced on a shared machine.
                      Example: `cargo xtask fuzz intake --seconds 300 -- -len_control=0`.
  help                Show this text.
",
        SERVICES
            .iter()
            .map(|(_, binary)| *binary)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => match args[1..].split_first() {
            None => test(&[]),
            Some((dashes, rest)) if dashes == "--" => test(rest),
            Some(_) => return bad_usage("`test` takes its cargo test arguments after `--`"),
        },
        Some("bench") => match args[1..].split_first() {
            None => bench(&[]),
            Some((dashes, rest)) if dashes == "--" => bench(rest),
            Some(_) => return bad_usage("`bench` takes its arguments after `--`"),
        },
        Some("fuzz") => match fuzz::parse(&args[1..]) {
            Ok(parsed) => fuzz::fuzz(&parsed),
            Err(err) => return bad_usage(&format!("{err:#}")),
        },
        Some("run") if args.len() == 1 => run_services(),
        Some("run") => return bad_usage("`run` takes no arguments"),
        Some("token") => match token::parse(&args[1..]) {
            Ok(token::TokenCommand::New(parsed)) => token::token(&parsed),
            Ok(token::TokenCommand::Help) => {
                print!("{}", token::USAGE);
                return ExitCode::SUCCESS;
            }
            Err(err) => return bad_usage(&format!("{err:#}")),
        },
        Some("help" | "-h" | "--help") => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some(other) => return bad_usage(&format!("unknown command {other:?}")),
        None => return bad_usage("no command given"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn bad_usage(message: &str) -> ExitCode {
    eprintln!("xtask: {message}\n\n{}", usage());
    ExitCode::from(2)
}

/// `cargo xtask bench`: PostgreSQL, then the benchmark binary in release.
fn bench(bench_args: &[String]) -> Result<()> {
    step("[1/2] PostgreSQL");
    let database_url = services::ensure_postgres(std::env::var("TEST_DATABASE_URL").ok())?;
    step("[2/2] benchmark (release build)");
    run(cargo()
        .args(["run", "--release", "--locked", "-p", "bench", "--"])
        .args(bench_args)
        .env("TEST_DATABASE_URL", &database_url))
}

/// `cargo xtask test`: services, then fmt, clippy and the tests.
fn test(test_args: &[String]) -> Result<()> {
    if !repo_root().join("Cargo.lock").is_file() {
        bail!(
            "Cargo.lock is missing, and clippy and the tests run with --locked: run \
             `cargo generate-lockfile` and commit Cargo.lock"
        );
    }

    step("[1/7] PostgreSQL");
    let database_url = services::ensure_postgres(std::env::var("TEST_DATABASE_URL").ok())?;
    step("[2/7] NATS with JetStream");
    let nats_url = services::ensure_nats(std::env::var("TEST_NATS_URL").ok())?;
    step("[3/7] Chromium and ChromeDriver (the dashboard's browser tests)");
    services::ensure_chromium()?;
    step("[4/7] schemathesis (target/venv, for the OpenAPI conformance tests)");
    schemathesis::ensure()?;

    step("[5/7] formatting");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("[6/7] clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("[7/7] tests");
    println!("TEST_DATABASE_URL={}", cmd::redact_url(&database_url));
    println!("TEST_NATS_URL={nats_url}");
    let mut test = cargo();
    test.arg("test");
    // cargo ignores -p when --workspace is given: let a package selection narrow the run.
    if !selects_packages(test_args) {
        test.arg("--workspace");
    }
    run(test
        .arg("--locked")
        .args(test_args)
        .env("TEST_DATABASE_URL", &database_url)
        .env("TEST_NATS_URL", &nats_url))?;
    println!("\nxtask: all checks passed");
    Ok(())
}

/// Whether cargo test arguments (before a `--`) pick packages with `-p`/`--package`.
fn selects_packages(args: &[String]) -> bool {
    args.iter()
        .take_while(|arg| *arg != "--")
        .any(|arg| arg.starts_with("-p") || arg == "--package" || arg.starts_with("--package="))
}

/// `cargo xtask run`: services, database, release build, then the services themselves.
fn run_services() -> Result<()> {
    // The services connect to the local servers named in LOCAL_CONFIG, whatever TEST_* say.
    step("PostgreSQL");
    let admin_url = services::ensure_postgres(None)?;
    services::ensure_database(&admin_url, LOCAL_DATABASE)?;
    step("NATS with JetStream");
    services::ensure_nats(None)?;

    step("building the services (release)");
    let mut build = cargo();
    build.args(["build", "--release"]);
    for (package, _) in SERVICES {
        build.args(["-p", package]);
    }
    run(&mut build)?;

    let release = target_dir().join("release");
    let services: Vec<Service> = SERVICES
        .iter()
        .map(|(_, binary)| Service {
            name: (*binary).to_owned(),
            binary: release.join(binary),
        })
        .collect();
    if let Some(missing) = services.iter().find(|s| !s.binary.is_file()) {
        bail!("the build did not produce {}", missing.binary.display());
    }
    let config = PathBuf::from(LOCAL_CONFIG);
    if !repo_root().join(&config).is_file() {
        bail!("{LOCAL_CONFIG} is missing");
    }

    step("running the services");
    supervise::supervise(&config, &services)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn notices_package_selection() {
        assert!(selects_packages(&strings(&["-p", "eventlog"])));
        assert!(selects_packages(&strings(&["-peventlog"])));
        assert!(selects_packages(&strings(&[
            "--package=eventlog",
            "appends"
        ])));
        assert!(!selects_packages(&strings(&[])));
        assert!(!selects_packages(&strings(&["appends"])));
        assert!(!selects_packages(&strings(&["appends", "--", "-p"])));
    }
}
