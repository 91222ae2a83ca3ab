//! A private PostgreSQL cluster (`initdb` + `postgres`), for tests that stop or crash the
//! database under load.
//!
//! The machine's PostgreSQL is shared by every test at once, so a test that takes the database
//! away must never touch it. [`PgCluster`] initializes its own cluster in a private directory of
//! [`std::env::temp_dir`] (`data/`, the unix socket in `sock/`, `postgres.log`) and runs
//! `postgres` on a free loopback port, trust authentication, user `postgres`:
//!
//! - [`PgCluster::stop`] with [`StopMode::Fast`] (SIGINT: sessions are ended, a checkpoint is
//!   written) or [`StopMode::Immediate`] (SIGQUIT: every process exits at once, no checkpoint;
//!   the next start runs crash recovery — a crash of the database server);
//! - [`PgCluster::start_again`] starts the stopped server on the same port and data;
//! - [`PgCluster::restart`] is both.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI does), every PostgreSQL
//! program runs as the `postgres` system user (uid and gid from `/etc/passwd`) and the
//! directory is given to that user; otherwise they run as the current user.
//!
//! The binaries are those of `PG_BIN_DIR` if set, else of the newest
//! `/usr/lib/postgresql/<version>/bin` (Debian's layout). `fsync` is off: a stop, even
//! immediate, is a crash of the server processes, not of the machine, and the kernel keeps what
//! they wrote; the durability of a commit across a power loss is PostgreSQL's, not under test.
//!
//! The server is stopped (immediately) and the directory removed when the value is dropped.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::nats_server::{free_port, read_log};

/// How long a start (including crash recovery) may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop may take before the postmaster is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How [`PgCluster::stop`] stops the server (`pg_ctl stop -m …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// SIGINT: roll back open transactions, end every session, checkpoint, exit.
    Fast,
    /// SIGQUIT: every process exits at once, without a checkpoint; the next start recovers
    /// from the WAL. This is how a crash looks to the clients and to the data.
    Immediate,
}

/// A private PostgreSQL server owned by one test.
#[derive(Debug)]
pub struct PgCluster {
    bin: PathBuf,
    /// Private directory: `data/`, `sock/`, `postgres.log`.
    dir: PathBuf,
    port: u16,
    /// `(uid, gid)` of the `postgres` user when running as root.
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
}

impl PgCluster {
    /// Initializes a new cluster and starts it; returns once it accepts connections. Panics,
    /// with the server's log, if it does not.
    pub async fn start() -> Self {
        let bin = find_bin_dir();
        let dir = std::env::temp_dir().join(format!("testkit-pg-{}", crate::unique_suffix()));
        std::fs::create_dir_all(dir.join("sock")).expect("create the PostgreSQL directory");
        let run_as = postgres_user_if_root();
        if let Some((uid, gid)) = run_as {
            for path in [dir.clone(), dir.join("sock")] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("give {} to postgres: {e}", path.display()));
            }
        }
        let mut cluster = PgCluster {
            bin,
            dir,
            port: free_port(),
            run_as,
            child: None,
        };
        let initdb = cluster
            .command("initdb")
            .arg("-D")
            .arg(cluster.data_dir())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed ({}):\n{}\n{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        // The port was free a moment ago; retry on another one if it was taken meanwhile.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match cluster.spawn().await {
                Ok(()) => return cluster,
                Err(failure) => failures.push(failure),
            }
            cluster.port = free_port();
        }
        panic!("PostgreSQL did not start:\n{}", failures.join("\n---\n"));
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `database` on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server runs (started and not stopped).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the server in `mode` and waits until the postmaster has exited (then no process
    /// of the cluster is left and the port is closed). Does nothing if it is not running.
    pub async fn stop(&mut self, mode: StopMode) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let signal = match mode {
            StopMode::Fast => "INT",
            StopMode::Immediate => "QUIT",
        };
        // `pg_ctl kill` sends the signal as the cluster's owner (root may not run pg_ctl).
        let sent = self
            .command("pg_ctl")
            .args(["kill", signal, &child.id().to_string()])
            .output();
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if tokio::time::Instant::now() >= deadline
                || !matches!(&sent, Ok(o) if o.status.success())
            {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "PostgreSQL did not stop ({mode:?}, signal sent: {sent:?}); log:\n{}",
                    read_log(&self.log_path())
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Starts the stopped server again on the same port and data (after an immediate stop it
    /// first recovers from the WAL); returns once it accepts connections.
    pub async fn start_again(&mut self) {
        if let Err(failure) = self.spawn().await {
            panic!("PostgreSQL did not start again: {failure}");
        }
    }

    /// [`stop`](Self::stop) in `mode`, then [`start_again`](Self::start_again).
    pub async fn restart(&mut self, mode: StopMode) {
        self.stop(mode).await;
        self.start_again().await;
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        read_log(&self.log_path())
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A PostgreSQL program of the cluster's version, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    async fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "PostgreSQL already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the PostgreSQL log");
        let log_err = log.try_clone().expect("clone the PostgreSQL log handle");
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.dir.join("sock"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "shared_buffers=32MB"])
            .args(["-c", "max_connections=100"])
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| format!("spawn postgres: {e}"))?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Polls a connection until the server accepts it (it refuses while starting up or
    /// recovering), within [`START_TIMEOUT`].
    async fn wait_ready(&mut self) -> Result<(), String> {
        let options: PgConnectOptions = self
            .url()
            .parse()
            .map_err(|e| format!("parse the URL: {e}"))?;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut last_error = String::new();
        while tokio::time::Instant::now() < deadline {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "postgres exited during start ({status}); log:\n{}",
                    read_log(&self.log_path())
                ));
            }
            match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "connection attempt timed out".to_owned(),
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let _ = self.child.as_mut().map(Child::kill);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        Err(format!(
            "PostgreSQL did not accept connections on port {} within {START_TIMEOUT:?} \
             (last error: {last_error}); log:\n{}",
            self.port,
            read_log(&self.log_path())
        ))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT through pg_ctl so that the postmaster takes its backends with it; SIGKILL
            // if that cannot be sent.
            let sent = self
                .command("pg_ctl")
                .args(["kill", "QUIT", &child.id().to_string()])
                .output();
            if !matches!(sent, Ok(o) if o.status.success()) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PG_BIN_DIR`, else the newest `/usr/lib/postgresql/<major>/bin` that has `postgres`.
fn find_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server binaries under /usr/lib/postgresql/<version>/bin \
             (apt-get install postgresql) and PG_BIN_DIR is not set"
        ),
    }
}

/// When this process runs as root: the `postgres` user's uid and gid (from `/etc/passwd`).
fn postgres_user_if_root() -> Option<(u32, u32)> {
    // /proc/self belongs to the process's effective user.
    let euid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    if euid != 0 {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let ids = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.as_slice() {
            ["postgres", _, uid, gid, ..] => Some((uid.parse().ok()?, gid.parse().ok()?)),
            _ => None,
        }
    });
    Some(ids.expect(
        "running as root, and PostgreSQL refuses root: a `postgres` user is needed \
         (apt-get install postgresql creates it)",
    ))
}
