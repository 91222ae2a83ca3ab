//! A private `nats-server` process with JetStream, for tests that stop, restart or wipe NATS.
//!
//! The machine's shared NATS (port 4222) is used by every test at once, so a test that takes NATS
//! away must never touch it. [`NatsServer`] runs its own `nats-server -js` on a free loopback port
//! with its own store directory under [`std::env::temp_dir`]:
//!
//! - [`NatsServer::stop`] kills the process (SIGKILL, like a crash) and waits for it;
//! - [`NatsServer::restart`] starts it again on the same port with the same store directory, so
//!   JetStream recovers its streams as a real restart would;
//! - [`NatsServer::wipe_and_restart`] deletes the store directory first: NATS has lost its data.
//!
//! The process is killed and its directory removed when the value is dropped.
//!
//! The binary is `NATS_SERVER_BIN` if set, else `nats-server` found on `PATH`, else
//! `/usr/sbin/nats-server` (Debian's package).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a start may take before it is declared failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval between two connection attempts while waiting for the server to listen.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A `nats-server -js` process owned by one test.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    /// Private directory: `store/` (JetStream data) and `nats.log`.
    dir: PathBuf,
    child: Option<Child>,
    /// `max_payload` in bytes, when not the server's default (1 MiB).
    max_payload: Option<usize>,
}

impl NatsServer {
    /// Starts a server on a free port of 127.0.0.1 with an empty store, and returns once it
    /// accepts connections. Panics (with the server's log) if it does not come up.
    pub async fn start() -> Self {
        Self::start_with_max_payload(None).await
    }

    /// Like [`start`](Self::start), with the server's `max_payload` (the largest message it
    /// accepts, headers included) set to `max_payload` bytes when given (through a
    /// configuration file: nats-server 2.9 has no command-line flag for it). Kept on restarts.
    pub async fn start_with_max_payload(max_payload: Option<usize>) -> Self {
        let binary = find_binary();
        let dir = std::env::temp_dir().join(format!("testkit-nats-{}", crate::unique_suffix()));
        std::fs::create_dir_all(dir.join("store")).expect("create nats-server directory");
        let mut server = NatsServer {
            binary,
            port: free_port(),
            dir,
            child: None,
            max_payload,
        };
        // The port was free a moment ago; another process may take it before the server binds
        // it, so a first start that fails is retried on another port.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match server.spawn().await {
                Ok(()) => return server,
                Err(failure) => failures.push(failure),
            }
            server.port = free_port();
        }
        panic!("nats-server did not start:\n{}", failures.join("\n---\n"));
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (`-sd`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    /// Whether the process is running (started and not stopped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process (SIGKILL: no graceful shutdown, like a crash) and waits for it to exit.
    /// Does nothing if it is not running.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Reaping a killed process is immediate; no need for a blocking-thread hop.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server if it runs, then starts it again on the same port with the same store
    /// directory: streams and their messages survive, as in a real restart.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(failure) = self.spawn().await {
            panic!("nats-server did not restart: {failure}");
        }
    }

    /// Stops the server, deletes its JetStream store, and starts it again on the same port:
    /// NATS comes back with no streams and no messages, as after losing its disk.
    pub async fn wipe_and_restart(&mut self) {
        self.stop().await;
        let store = self.store_dir();
        if store.exists() {
            std::fs::remove_dir_all(&store).expect("delete nats-server store");
        }
        std::fs::create_dir_all(&store).expect("recreate nats-server store");
        if let Err(failure) = self.spawn().await {
            panic!("nats-server did not restart after the wipe: {failure}");
        }
    }

    /// Runs the process and waits until it listens; on failure the process is gone and the
    /// error carries the end of its log.
    async fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "nats-server already running");
        let log_path = self.dir.join("nats.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open nats-server log");
        let log_err = log.try_clone().expect("clone nats-server log handle");
        let mut command = Command::new(&self.binary);
        if let Some(max_payload) = self.max_payload {
            let conf = self.dir.join("nats.conf");
            std::fs::write(&conf, format!("max_payload: {max_payload}\n"))
                .expect("write nats-server configuration");
            command.arg("-c").arg(conf);
        }
        let child = command
            .arg("-js")
            .args(["-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.store_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_until_listening(&log_path).await
    }

    /// Polls a TCP connection to the port until it succeeds, within [`START_TIMEOUT`].
    /// The server opens its client port only after JetStream has recovered its streams.
    async fn wait_until_listening(&mut self, log_path: &Path) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let attempts = START_TIMEOUT.as_millis() / POLL_INTERVAL.as_millis();
        for _ in 0..attempts {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "nats-server exited during start ({status}); log:\n{}",
                    read_log(log_path)
                ));
            }
            let connect = tokio::net::TcpStream::connect(addr);
            if let Ok(Ok(_stream)) = tokio::time::timeout(POLL_INTERVAL, connect).await {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.stop().await;
        Err(format!(
            "nats-server did not accept connections on {addr} within {START_TIMEOUT:?}; log:\n{}",
            read_log(log_path)
        ))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub(crate) fn find_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(path);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let debian = PathBuf::from("/usr/sbin/nats-server");
    assert!(
        debian.is_file(),
        "nats-server not found on PATH nor at /usr/sbin/nats-server (apt-get install nats-server)"
    );
    debian
}

/// A port that was free a moment ago: bind port 0, read the port, release it.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

pub(crate) fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
