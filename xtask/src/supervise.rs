//! `cargo xtask run`, second half: runs the built services as child processes, prefixes their
//! output with their names, and stops them all together.
//!
//! Stopping without a signal-handling crate: the services run in our process group, so a Ctrl-C
//! in the terminal (or `kill -TERM -- -PGID`) reaches each of them directly. This process must
//! outlive that signal to keep relaying their last lines and to wait for them, so it re-executes
//! itself through `env --ignore-signal=INT,TERM` and starts the services through
//! `env --default-signal=INT,TERM` (an ignored signal stays ignored across exec). When one service
//! exits, the others are asked to stop (SIGTERM, via kill(1)), then killed after a timeout.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{display, output, repo_root};

/// The hidden command the supervisor runs as (after the re-exec).
pub const SUPERVISE_COMMAND: &str = "__supervise";

/// How long the other services get to stop on their own after one exits normally (they usually
/// got the same Ctrl-C), before they are sent SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
/// How long a service gets between SIGTERM and SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub binary: PathBuf,
}

/// Replaces this process with `xtask __supervise ...` that ignores SIGINT and SIGTERM; returns
/// only if that cannot be done, in which case the caller supervises in-process.
pub fn exec_supervisor(config: &Path, services: &[Service]) -> Result<()> {
    let supported = output(Command::new("env").args(["--ignore-signal=INT", "true"]))
        .is_ok_and(|out| out.status.success());
    if !supported {
        println!(
            "note: this `env` has no --ignore-signal (coreutils >= 8.31): on Ctrl-C the services \
             still stop, but their last output lines may be lost"
        );
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut command = Command::new("env");
    command
        .arg("--ignore-signal=INT,TERM")
        .arg(exe)
        .args([SUPERVISE_COMMAND, "--reset-signals", "--config"])
        .arg(config);
    for service in services {
        command.arg(format!("{}={}", service.name, service.binary.display()));
    }
    let err = command.exec();
    println!("note: could not re-execute through env ({err}); supervising directly");
    Ok(())
}

/// Entry point of `xtask __supervise [--reset-signals] --config FILE NAME=BINARY...`.
pub fn supervise_command(args: &[String]) -> Result<()> {
    let mut reset_signals = false;
    let mut config = None;
    let mut services = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reset-signals" => reset_signals = true,
            "--config" => config = args.next().map(PathBuf::from),
            spec => {
                let (name, binary) = spec
                    .split_once('=')
                    .with_context(|| format!("expected NAME=BINARY, got {spec:?}"))?;
                services.push(Service {
                    name: name.to_owned(),
                    binary: binary.into(),
                });
            }
        }
    }
    let config = config.context("--config is required")?;
    supervise(&config, &services, reset_signals)
}

struct Running {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    /// We had to SIGKILL it.
    killed: bool,
}

enum Phase {
    Running,
    /// One service exited: send SIGTERM to the others at this instant (at once after a failure;
    /// after a grace period after a normal exit, as they usually got the same Ctrl-C).
    TerminateAt(Instant),
    /// SIGTERM sent: SIGKILL whatever still runs at this instant.
    KillAt(Instant),
    Done,
}

/// Runs the services until one exits, then stops the rest; fails if any service failed.
pub fn supervise(config: &Path, services: &[Service], reset_signals: bool) -> Result<()> {
    let width = services.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut running: Vec<Running> = Vec::new();
    let mut relays: Vec<JoinHandle<()>> = Vec::new();

    for service in services {
        let mut command = if reset_signals {
            let mut command = Command::new("env");
            command
                .arg("--default-signal=INT,TERM")
                .arg(&service.binary);
            command
        } else {
            Command::new(&service.binary)
        };
        command
            .arg("--config")
            .arg(config)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                for other in &mut running {
                    terminate(other);
                }
                for other in &mut running {
                    other.child.wait().ok();
                }
                bail!("could not start `{}`: {err}", display(&command));
            }
        };
        let prefix = format!("{:>width$} | ", service.name);
        if let Some(out) = child.stdout.take() {
            relays.push(relay(out, prefix.clone(), false));
        }
        if let Some(err) = child.stderr.take() {
            relays.push(relay(err, prefix, true));
        }
        say(&format!("started {} (pid {})", service.name, child.id()));
        running.push(Running {
            name: service.name.clone(),
            child,
            status: None,
            killed: false,
        });
    }
    say(&format!(
        "stop with Ctrl-C, or from elsewhere `kill -TERM -- -{}` (the whole process group)",
        process_group().unwrap_or_else(|| "PGID".to_owned())
    ));

    let mut phase = Phase::Running;
    while running.iter().any(|r| r.status.is_none()) {
        for service in running.iter_mut().filter(|r| r.status.is_none()) {
            if let Some(status) = service.child.try_wait()? {
                say(&format!("{} exited: {}", service.name, describe(status)));
                service.status = Some(status);
                if matches!(phase, Phase::Running) {
                    let grace = if normal_exit(status) {
                        GRACE
                    } else {
                        Duration::ZERO
                    };
                    phase = Phase::TerminateAt(Instant::now() + grace);
                }
            }
        }
        let now = Instant::now();
        match phase {
            Phase::TerminateAt(at) if now >= at => {
                for service in running.iter_mut().filter(|r| r.status.is_none()) {
                    say(&format!("stopping {} (SIGTERM)", service.name));
                    terminate(service);
                }
                phase = Phase::KillAt(now + STOP_TIMEOUT);
            }
            Phase::KillAt(at) if now >= at => {
                for service in running.iter_mut().filter(|r| r.status.is_none()) {
                    say(&format!(
                        "{} still running {}s after SIGTERM: killing it",
                        service.name,
                        STOP_TIMEOUT.as_secs()
                    ));
                    service.child.kill().ok();
                    service.killed = true;
                }
                phase = Phase::Done;
            }
            _ => {}
        }
        sleep(Duration::from_millis(100));
    }
    for relay in relays {
        relay.join().ok();
    }

    let failed: Vec<&str> = running
        .iter()
        .filter(|r| r.killed || !r.status.is_some_and(normal_exit))
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("service(s) failed: {}", failed.join(", "));
    }
    say("all services stopped");
    Ok(())
}

/// Exited by itself with 0, or stopped by the Ctrl-C / SIGTERM meant to stop everything.
fn normal_exit(status: ExitStatus) -> bool {
    status.success() || matches!(status.signal(), Some(SIGINT | SIGTERM))
}

fn describe(status: ExitStatus) -> String {
    match status.signal() {
        Some(SIGINT) => "stopped by SIGINT".to_owned(),
        Some(SIGTERM) => "stopped by SIGTERM".to_owned(),
        _ => status.to_string(),
    }
}

/// SIGTERM through kill(1): std only has SIGKILL.
fn terminate(service: &mut Running) {
    let pid = service.child.id().to_string();
    let sent = output(Command::new("kill").args(["-TERM", &pid])).is_ok_and(|o| o.status.success());
    if !sent {
        service.child.kill().ok();
        service.killed = true;
    }
}

/// Copies `pipe` line by line to our stdout (or stderr), each line prefixed.
fn relay(pipe: impl Read + Send + 'static, prefix: String, to_stderr: bool) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    // Write errors (a closed terminal) are ignored: keep draining the pipe.
                    if to_stderr {
                        let _ = writeln!(std::io::stderr().lock(), "{prefix}{text}");
                    } else {
                        let _ = writeln!(std::io::stdout().lock(), "{prefix}{text}");
                    }
                }
            }
        }
    })
}

fn say(message: &str) {
    let _ = writeln!(std::io::stdout().lock(), "[xtask] {message}");
}

/// Our process group id, from /proc/self/stat (field 5, after the parenthesised name).
fn process_group() -> Option<String> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(2).map(str::to_owned)
}
