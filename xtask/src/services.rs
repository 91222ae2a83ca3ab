//! Makes sure the machine's PostgreSQL and NATS (with JetStream) are up on their standard ports,
//! starting or installing them (Debian packages) when they are not.
//!
//! Nothing here stops a server or changes how an existing one is configured, except setting the
//! `postgres` user's password when the server rejects the test URL's password (said aloud).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, Privilege, as_postgres_user, as_root, display, find_program, output, run};

/// The admin connection the tests use (testkit's default); password `postgres`.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";
const POSTGRES_ADDR: &str = "127.0.0.1:5432";
const POSTGRES_PASSWORD: &str = "postgres";

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
const NATS_ADDR: &str = "127.0.0.1:4222";
/// Oldest nats-server the services support (JetStream, Nats-Msg-Id, Nats-Expected-Last-Sequence).
const NATS_MIN_VERSION: (u32, u32) = (2, 9);

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// Makes sure PostgreSQL answers and accepts `url` (the default test URL when `None`), and
/// returns the URL to give the tests. With a URL of the caller's own, only checks it.
pub fn ensure_postgres(url: Option<String>) -> Result<String> {
    if let Some(url) = url {
        println!(
            "TEST_DATABASE_URL is set: checking {} (nothing is started or installed for it)",
            cmd::redact_url(&url)
        );
        ensure_psql()?;
        return match psql_check(&url)? {
            PgCheck::Ok => Ok(url),
            PgCheck::AuthFailed(err) | PgCheck::Failed(err) => {
                bail!("cannot connect with TEST_DATABASE_URL: {err}")
            }
        };
    }

    let addr = resolve(POSTGRES_ADDR)?;
    let mut just_installed = false;
    if port_open(addr) {
        println!("PostgreSQL answers on {POSTGRES_ADDR}");
    } else {
        println!("nothing answers on {POSTGRES_ADDR}");
        let version = match installed_cluster_version()? {
            Some(version) => version,
            None => {
                install_postgres()?;
                just_installed = true;
                installed_cluster_version()?
                    .context("postgresql was installed but /etc/postgresql has no cluster")?
            }
        };
        // The package's post-install script may have started the cluster already.
        if !port_open(addr) {
            start_cluster(&version)?;
        }
        wait_for_port(addr, "PostgreSQL", None)?;
        println!("PostgreSQL answers on {POSTGRES_ADDR}");
    }

    ensure_psql()?;
    if just_installed {
        println!("PostgreSQL was just installed: giving the postgres user the test password");
        set_postgres_password()?;
    }
    match psql_check(DEFAULT_DATABASE_URL)? {
        PgCheck::Ok => {}
        PgCheck::AuthFailed(err) => {
            println!("PostgreSQL refused the test URL's password ({err})");
            println!(
                "setting the postgres user's password to '{POSTGRES_PASSWORD}', as the tests expect"
            );
            set_postgres_password()?;
            match psql_check(DEFAULT_DATABASE_URL)? {
                PgCheck::Ok => {}
                PgCheck::AuthFailed(err) | PgCheck::Failed(err) => bail!(
                    "still cannot connect as postgres after setting the password: {err}\n\
                     check pg_hba.conf allows password (scram-sha-256/md5) or trust \
                     authentication for host 127.0.0.1"
                ),
            }
        }
        PgCheck::Failed(err) => bail!("cannot connect to PostgreSQL on {POSTGRES_ADDR}: {err}"),
    }
    println!("connected: {}", cmd::redact_url(DEFAULT_DATABASE_URL));
    Ok(DEFAULT_DATABASE_URL.to_owned())
}

/// Creates the database `name` through the admin connection `admin_url` unless it exists.
pub fn ensure_database(admin_url: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        bail!("refusing to create a database named {name:?}: use [a-z0-9_]");
    }
    let query = format!("SELECT 1 FROM pg_database WHERE datname = '{name}'");
    let out = output(psql(admin_url).args(["-Atc", &query]))?;
    if !out.status.success() {
        bail!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if out.stdout.trim_ascii() == b"1" {
        println!("database {name} exists");
        return Ok(());
    }
    println!("creating database {name}");
    run(psql(admin_url).args(["-c", &format!("CREATE DATABASE \"{name}\"")]))
}

enum PgCheck {
    Ok,
    AuthFailed(String),
    Failed(String),
}

/// `psql -X -w` against `url` (never prompts for a password, no ~/.psqlrc).
fn psql(url: &str) -> Command {
    let program = find_program("psql").unwrap_or_else(|| PathBuf::from("psql"));
    let mut cmd = Command::new(program);
    cmd.args(["-X", "-w", "-v", "ON_ERROR_STOP=1", "--dbname", url])
        .env("PGCONNECT_TIMEOUT", "5");
    if url == DEFAULT_DATABASE_URL {
        // The URL carries it already (libpq prefers that one); PGPASSWORD says it plainly.
        cmd.env("PGPASSWORD", POSTGRES_PASSWORD);
    }
    cmd
}

fn psql_check(url: &str) -> Result<PgCheck> {
    let out = output(psql(url).args(["-Atc", "SELECT 1"]))?;
    if out.status.success() {
        return Ok(PgCheck::Ok);
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let lower = err.to_lowercase();
    if lower.contains("authentication failed") || lower.contains("no password supplied") {
        Ok(PgCheck::AuthFailed(err))
    } else {
        Ok(PgCheck::Failed(err))
    }
}

/// Debian's Chromium and its ChromeDriver for the dashboard's browser tests
/// (`tests/src/browser.rs` runs `/usr/bin/chromium` through `/usr/bin/chromedriver`),
/// installed with apt-get when missing.
pub fn ensure_chromium() -> Result<()> {
    let missing = ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        .iter()
        .any(|p| !Path::new(p).is_file());
    if missing {
        println!("chromium or chromedriver is missing (the dashboard's browser tests need them)");
        apt_install(&["chromium", "chromium-driver"])?;
    }
    Ok(())
}

fn ensure_psql() -> Result<()> {
    if find_program("psql").is_none() {
        println!("psql is missing (needed to check the connection)");
        apt_install(&["postgresql-client"])?;
    }
    Ok(())
}

/// The newest PostgreSQL version with a `main` cluster under /etc/postgresql (Debian layout).
fn installed_cluster_version() -> Result<Option<String>> {
    let dir = Path::new("/etc/postgresql");
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut versions: Vec<(Vec<u32>, String)> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("main").is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .map(|name| {
            let key = name.split('.').map(|n| n.parse().unwrap_or(0)).collect();
            (key, name)
        })
        .collect();
    versions.sort();
    Ok(versions.pop().map(|(_, name)| name))
}

fn install_postgres() -> Result<()> {
    println!("no PostgreSQL cluster installed (/etc/postgresql is empty or missing)");
    apt_install(&["postgresql"])
}

fn start_cluster(version: &str) -> Result<()> {
    let running = output(
        as_root("pg_ctlcluster", "checking the PostgreSQL cluster")?
            .args([version, "main", "status"]),
    )?;
    if running.status.success() {
        bail!(
            "PostgreSQL cluster {version}/main is running but nothing answers on \
             {POSTGRES_ADDR}: check listen_addresses and port in \
             /etc/postgresql/{version}/main/postgresql.conf"
        );
    }
    println!("starting the installed PostgreSQL cluster {version}/main");
    run(as_root("pg_ctlcluster", "starting PostgreSQL")?.args([
        "--skip-systemctl-redirect",
        version,
        "main",
        "start",
    ]))
}

fn set_postgres_password() -> Result<()> {
    let sql = format!("ALTER USER postgres PASSWORD '{POSTGRES_PASSWORD}'");
    run(&mut as_postgres_user(
        "psql",
        &["-X", "-c", &sql],
        "setting the postgres password",
    )?)
}

// ---------------------------------------------------------------------------------------------
// NATS

/// Makes sure a NATS server with JetStream answers (on `url` when given, else on the standard
/// local port, starting one when none answers) and returns the URL to give the tests.
pub fn ensure_nats(url: Option<String>) -> Result<String> {
    if let Some(url) = url {
        println!("TEST_NATS_URL is set: checking {url} (nothing is started or installed for it)");
        let hostport = url
            .strip_prefix("nats://")
            .unwrap_or(&url)
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        check_jetstream(resolve(hostport)?)?;
        return Ok(url);
    }

    let addr = resolve(NATS_ADDR)?;
    if port_open(addr) {
        println!("NATS answers on {NATS_ADDR}");
    } else {
        println!("nothing answers on {NATS_ADDR}");
        let binary = match find_program("nats-server") {
            Some(binary) => binary,
            None => {
                println!("nats-server is not installed");
                apt_install(&["nats-server"])?;
                find_program("nats-server").context("nats-server was installed but not found")?
            }
        };
        start_nats(&binary, addr)?;
    }
    check_jetstream(addr)?;
    Ok(DEFAULT_NATS_URL.to_owned())
}

/// Starts nats-server with JetStream in the background, detached from this process (own
/// process group, output to a log file), storing its data under target/xtask/.
fn start_nats(binary: &Path, addr: SocketAddr) -> Result<()> {
    let dir = cmd::target_dir().join("xtask");
    let store = dir.join("nats");
    fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
    let log_path = dir.join("nats-server.log");
    let log = File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;

    let mut command = Command::new(binary);
    command
        .args(["-a", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .arg("-js")
        .arg("-sd")
        .arg(&store)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal does not reach it.
        .process_group(0);
    println!(
        "$ {} &  (detached; log: {})",
        display(&command),
        log_path.display()
    );
    let mut child = command.spawn().context("could not start nats-server")?;
    wait_for_port(addr, "nats-server", Some((&mut child, &log_path)))?;
    println!(
        "nats-server runs in the background (pid {}) and keeps running after this command; \
         stop it with `kill {}`",
        child.id(),
        child.id()
    );
    Ok(())
}

/// Reads the INFO line a NATS server sends on connect and checks it has JetStream on.
fn check_jetstream(addr: SocketAddr) -> Result<()> {
    let info = nats_info(addr)?;
    let version = json_string(&info, "version").unwrap_or_else(|| "unknown".to_owned());
    if !info.contains("\"jetstream\":true") {
        bail!(
            "the NATS server on {addr} (version {version}) runs without JetStream, which the \
             services need. Restart it with JetStream on (`nats-server -js -sd <dir>`, or a \
             `jetstream {{ store_dir: ... }}` block in its config; see deploy/nats/nats.conf), \
             or stop it so this command can start one"
        );
    }
    if version_below(&version, NATS_MIN_VERSION) {
        bail!(
            "the NATS server on {addr} is version {version}; the services need {}.{} or newer",
            NATS_MIN_VERSION.0,
            NATS_MIN_VERSION.1
        );
    }
    println!("NATS on {addr}: version {version}, JetStream enabled");
    Ok(())
}

/// The first line the server sends (`INFO {...}`), read over a plain TCP connection.
fn nats_info(addr: SocketAddr) -> Result<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("connecting to NATS on {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024))
        .read_line(&mut line)
        .with_context(|| format!("reading the INFO line from {addr}: is it a NATS server?"))?;
    if !line.starts_with("INFO ") {
        bail!(
            "{addr} did not greet with a NATS INFO line (got {:?}): is it a NATS server?",
            line.chars().take(80).collect::<String>()
        );
    }
    Ok(line.trim_end().to_owned())
}

/// The value of `"key":"value"` in compact JSON such as the INFO line.
fn json_string(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let len = json[start..].find('"')?;
    Some(json[start..start + len].to_owned())
}

fn version_below(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(v_major), Some(v_minor)) => (v_major, v_minor) < (major, minor),
        _ => false, // unknown format: let the services find out
    }
}

// ---------------------------------------------------------------------------------------------
// Shared

static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// `apt-get install -y PACKAGES` as root (after one `apt-get update` per run).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let list = packages.join(" ");
    if find_program("apt-get").is_none() {
        bail!("{list} is needed and this machine has no apt-get: install it by hand");
    }
    if cmd::privilege() == Privilege::None {
        bail!(
            "{list} is needed; installing it needs root or password-less sudo: run \
             `apt-get install {list}` as root"
        );
    }
    println!("installing {list} with apt-get");
    let why = format!("installing {list}");
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        run(as_root("apt-get", &why)?.args(["-q", "update"]))?;
    }
    run(as_root("env", &why)?
        .args([
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-q",
            "install",
            "-y",
        ])
        .args(packages))
}

fn resolve(hostport: &str) -> Result<SocketAddr> {
    hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to no address"))
}

fn port_open(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Polls until `addr` accepts connections, for at most [`STARTUP_TIMEOUT`]. When we started the
/// server ourselves, also notices it dying early and shows the end of its log.
fn wait_for_port(
    addr: SocketAddr,
    what: &str,
    mut started: Option<(&mut Child, &Path)>,
) -> Result<()> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if port_open(addr) {
            return Ok(());
        }
        if let Some((child, log)) = started.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{what} exited ({status}) before accepting connections on {addr}; end of {}:\n{}",
                    log.display(),
                    tail(log, 20)
                );
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not accept connections on {addr} within {}s",
                STARTUP_TIMEOUT.as_secs()
            );
        }
        sleep(Duration::from_millis(200));
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = r#"INFO {"server_id":"N","server_name":"N","version":"2.9.10","proto":1,"go":"go1.19.8","host":"127.0.0.1","port":4222,"headers":true,"max_payload":1048576,"jetstream":true,"client_id":5,"client_ip":"127.0.0.1"}"#;

    #[test]
    fn reads_fields_of_the_info_line() {
        assert_eq!(json_string(INFO, "version").as_deref(), Some("2.9.10"));
        assert_eq!(json_string(INFO, "missing"), None);
        assert!(INFO.contains("\"jetstream\":true"));
    }

    #[test]
    fn compares_versions() {
        assert!(!version_below("2.9.10", (2, 9)));
        assert!(!version_below("2.10.1", (2, 9)));
        assert!(version_below("2.8.4", (2, 9)));
        assert!(!version_below("garbage", (2, 9)));
    }
}
