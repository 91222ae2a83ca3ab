//! `cargo xtask run`, second half: runs the built services as child processes, prefixes their
//! output with their names, and stops them all together.
//!
//! Stopping: SIGINT and SIGTERM sent to this process (a Ctrl-C in the terminal, `kill PID`, a
//! process manager) are caught (`signal-hook`: std cannot catch a signal) and forwarded as
//! SIGTERM to every service still running; this process outlives them to relay their last lines
//! and waits for them, killing what still runs after a timeout. A Ctrl-C also reaches the
//! services directly (they are in our process group); the forwarded SIGTERM is then harmless.
//! Caught handlers are reset by exec, so the services start with the default dispositions. When
//! one service exits by itself, the others are asked to stop the same way.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle, sleep};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{display, output, repo_root};

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

/// Runs the services until one exits or this process gets SIGINT or SIGTERM, then stops the
/// rest; fails if any service failed.
pub fn supervise(config: &Path, services: &[Service]) -> Result<()> {
    // Before any service starts, so that no signal can find them unsupervised.
    let signalled = Arc::new(AtomicUsize::new(0));
    let mut handlers = Vec::new();
    for signal in [SIGINT, SIGTERM] {
        handlers.push(
            signal_hook::flag::register_usize(signal, signalled.clone(), signal as usize)
                .with_context(|| format!("catching signal {signal}"))?,
        );
    }
    let result = run(config, services, &signalled);
    for handler in handlers {
        signal_hook::low_level::unregister(handler);
    }
    result
}

/// `ETXTBSY`: the executable is open for writing somewhere, e.g. by a process forked from
/// another thread in the instant before its exec closed the inherited descriptor, or a binary
/// being replaced by a build.
const TEXT_FILE_BUSY: i32 = 26;

/// Spawns `command`, trying again up to 5 times (after 10, 20, 40, 80, 160 ms) while the
/// executable is busy (`ETXTBSY`); any other error at once.
fn spawn_retrying_busy(command: &mut Command) -> std::io::Result<Child> {
    let mut pause = Duration::from_millis(10);
    for _ in 0..5 {
        match command.spawn() {
            Err(err) if err.raw_os_error() == Some(TEXT_FILE_BUSY) => {
                sleep(pause);
                pause *= 2;
            }
            other => return other,
        }
    }
    command.spawn()
}

fn run(config: &Path, services: &[Service], signalled: &AtomicUsize) -> Result<()> {
    let width = services.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut running: Vec<Running> = Vec::new();
    let mut relays: Vec<JoinHandle<()>> = Vec::new();

    for service in services {
        let mut command = Command::new(&service.binary);
        command
            .arg("--config")
            .arg(config)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match spawn_retrying_busy(&mut command) {
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
        "stop with Ctrl-C, or from elsewhere `kill {}` (SIGTERM)",
        std::process::id()
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
        let signal = signalled.swap(0, Ordering::SeqCst);
        if signal != 0 {
            let name = if signal == SIGINT as usize {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            if matches!(phase, Phase::Running | Phase::TerminateAt(_)) {
                say(&format!("{name} received: stopping the services"));
                phase = Phase::TerminateAt(Instant::now());
            } else {
                say(&format!("{name} received: already stopping"));
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A service that announces itself on a FIFO, then runs until SIGTERM, which it records.
    /// SIGTERM goes to this test process, as `kill PID` would to `cargo xtask run`.
    #[test]
    fn sigterm_to_the_supervisor_stops_the_services_and_waits_for_them() {
        let dir = std::env::temp_dir().join(format!("xtask-supervise-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("ready");
        let stopped = dir.join("stopped");
        let _ = std::fs::remove_file(&fifo);
        let _ = std::fs::remove_file(&stopped);
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let script = dir.join("service.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ntrap 'echo TERM > \"{}\"; exit 0' TERM\necho ready > \"{}\"\n\
                 while :; do sleep 1; done\n",
                stopped.display(),
                fifo.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let services = vec![Service {
            name: "svc".to_owned(),
            binary: script,
        }];
        let supervisor = thread::spawn(move || supervise(Path::new("unused.toml"), &services));
        // Blocks until the service runs, hence after the supervisor catches signals; on its own
        // thread, so that a supervisor that ends (or a service that never starts) fails the test
        // instead of leaving it blocked on the fifo.
        let ready = {
            let fifo = fifo.clone();
            thread::spawn(move || std::fs::read_to_string(&fifo))
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !ready.is_finished() {
            let ended = supervisor.is_finished();
            let late = std::time::Instant::now() >= deadline;
            if ended || late {
                // A writer's open unblocks the reader's.
                let _ = std::fs::write(&fifo, "");
                let outcome = if ended {
                    format!("the supervisor ended: {:?}", supervisor.join())
                } else {
                    "60 s passed".to_owned()
                };
                panic!("the service never said it was ready ({outcome})");
            }
            thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(ready.join().unwrap().unwrap(), "ready\n");
        let pid = std::process::id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        supervisor
            .join()
            .unwrap()
            .expect("the services stopped normally");
        assert_eq!(std::fs::read_to_string(&stopped).unwrap(), "TERM\n");
        std::fs::remove_dir_all(&dir).ok();
    }
}
