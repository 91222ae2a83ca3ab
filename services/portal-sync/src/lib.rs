//! portal-sync: keeps the national public-service portal (DVCQG) up to date with every dossier —
//! one record per dossier (`DongBoHoSoMC`, created then updated) and its progress log
//! (`CapNhatTienDoHoSoMC`, 10 entries per request).
//!
//! - [`consumer`]: the feed, a durable JetStream pull consumer noting "dossier D has version V"
//!   in `portal_sync` ([`store`], migrations 50001+);
//! - [`sender`]: takes due dossiers, reads them from the log, POSTs them ([`client`]) in the
//!   portal's shapes ([`shapes`], the one module an operator adjusts), records what the portal
//!   acknowledged or refused, retries with a capped backoff;
//! - [`applicant`]: the seam where the applicant's personal data enters the records;
//! - [`http`]: the reconciliation figures, the refusals, a dossier's state.
//!
//! Must never: write to the log; log, count or answer personal data or the credentials; send a
//! version at or below one the portal acknowledged (except once after a crash between its
//! answer and our record); let one dossier hold the others back.

pub mod applicant;
pub mod client;
pub mod consumer;
pub mod http;
pub mod openapi;
pub mod sender;
pub mod shapes;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use eventlog::EventLog;
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::{App, Config, Listener, RunError, StartError, Tokens};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use writepath::{Clock, SystemClock};

pub use client::{Credentials, Outcome, PortalClient};
pub use sender::{Sender, SenderConfig, SenderStats};

/// The `[portal]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalConfig {
    /// The portal's URL (`http://` or `https://`), required (`MOTCUA_PORTAL_ENDPOINT`).
    pub endpoint: String,
    /// A file holding the portal's credentials (sent as `Authorization: Bearer`); the
    /// environment variable `MOTCUA_PORTAL_CREDENTIALS` overrides it. Never logged.
    pub credentials_file: Option<PathBuf>,
    /// The reconciliation routes (`MOTCUA_PORTAL_HTTP_LISTEN`).
    pub http_listen: SocketAddr,
    /// `/metrics` and `/healthz` (`MOTCUA_PORTAL_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
    /// The durable JetStream consumer the instances share.
    pub consumer: String,
    pub connect_timeout_ms: u64,
    /// One request's bound, answer included.
    pub request_timeout_ms: u64,
    /// The first retry delay of a dossier; doubled per failed attempt up to `max_retry_ms`.
    pub first_retry_ms: u64,
    pub max_retry_ms: u64,
    /// Dossiers claimed per round, and worked on at once.
    pub batch_size: u32,
    pub concurrency: u32,
    /// Progress requests (of 10 entries) per dossier per turn.
    pub max_chunks_per_turn: u32,
    /// `error_code`s of a 2xx answer that mean "try again later" (others are refusals).
    pub retry_error_codes: Vec<i64>,
    /// Health is NOT_SERVING after this many failed requests in a row.
    pub unhealthy_after_failures: u64,
    /// A dossier is synchronised late when the portal acknowledged a change more than this
    /// after it was recorded (or has not yet, this long after it was announced).
    pub late_after_secs: u64,
    /// How often the table is looked at when the feed announced nothing.
    pub poll_interval_ms: u64,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            endpoint: String::new(),
            credentials_file: None,
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8059)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9459)),
            consumer: "portal-sync".to_owned(),
            connect_timeout_ms: 5_000,
            request_timeout_ms: 15_000,
            first_retry_ms: 1_000,
            max_retry_ms: 300_000,
            batch_size: 32,
            concurrency: 4,
            max_chunks_per_turn: 10,
            retry_error_codes: Vec::new(),
            unhealthy_after_failures: 5,
            late_after_secs: 86_400,
            poll_interval_ms: 1_000,
        }
    }
}

impl Section for PortalConfig {
    const NAME: &'static str = "portal";

    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(url) = env.string("MOTCUA_PORTAL_ENDPOINT") {
            self.endpoint = url;
        }
        if let Some(addr) = env.addr("MOTCUA_PORTAL_HTTP_LISTEN")? {
            self.http_listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_PORTAL_METRICS_LISTEN")? {
            self.metrics_listen = addr;
        }
        Ok(())
    }
}

impl PortalConfig {
    /// Why the section cannot be used, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint.is_empty() {
            return Err("endpoint is required (or MOTCUA_PORTAL_ENDPOINT)".to_owned());
        }
        let positive = [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("first_retry_ms", self.first_retry_ms),
            ("poll_interval_ms", self.poll_interval_ms),
            ("unhealthy_after_failures", self.unhealthy_after_failures),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_retry_ms < self.first_retry_ms {
            return Err("max_retry_ms must be at least first_retry_ms".to_owned());
        }
        for (name, value, max) in [
            ("batch_size", self.batch_size, 1000),
            ("concurrency", self.concurrency, 64),
            ("max_chunks_per_turn", self.max_chunks_per_turn, 100),
        ] {
            if !(1..=max).contains(&value) {
                return Err(format!("{name} must be between 1 and {max}, not {value}"));
            }
        }
        Ok(())
    }

    /// The sender's settings.
    pub fn sender(&self) -> SenderConfig {
        SenderConfig {
            batch_size: i64::from(self.batch_size),
            concurrency: usize::try_from(self.concurrency).unwrap_or(1),
            max_chunks_per_turn: usize::try_from(self.max_chunks_per_turn).unwrap_or(1),
            first_retry: Duration::from_millis(self.first_retry_ms),
            max_retry: Duration::from_millis(self.max_retry_ms),
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            late_after: Duration::from_secs(self.late_after_secs),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }

    /// The client of the configured endpoint.
    pub fn client(&self, credentials: Credentials) -> Result<PortalClient, client::ClientError> {
        PortalClient::new(
            &self.endpoint,
            credentials,
            Duration::from_millis(self.connect_timeout_ms),
            Duration::from_millis(self.request_timeout_ms),
            self.retry_error_codes.clone(),
        )
    }

    /// The credentials: `MOTCUA_PORTAL_CREDENTIALS`, else the file, else none.
    pub fn credentials(&self) -> Result<Credentials, PortalStartError> {
        if let Ok(secret) = std::env::var("MOTCUA_PORTAL_CREDENTIALS") {
            return Ok(Credentials::new(secret));
        }
        match &self.credentials_file {
            Some(path) => std::fs::read_to_string(path)
                .map(Credentials::new)
                .map_err(|e| PortalStartError::Credentials(path.clone(), e)),
            None => Ok(Credentials::default()),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum PortalStartError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("portal-sync migrations refused: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot connect to NATS: {0}")]
    Nats(#[from] async_nats::ConnectError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("cannot read portal.credentials_file {0}: {1}")]
    Credentials(PathBuf, std::io::Error),
    #[error("master keys: {0}")]
    Keyring(#[from] personal::KeyringError),
    #[error("personal data migrations refused: {0}")]
    PersonalMigrate(sqlx::migrate::MigrateError),
}

impl From<ConfigError> for PortalStartError {
    fn from(e: ConfigError) -> Self {
        PortalStartError::Start(e.into())
    }
}

/// What the app is built from (tests build it on port 0 with their own parts).
#[derive(Debug)]
pub struct Parts {
    pub log: EventLog,
    pub tokens: Tokens,
    pub jetstream: jetstream::Context,
    pub feed: consumer::FeedConfig,
    pub client: PortalClient,
    pub sender: SenderConfig,
    pub clock: Arc<dyn Clock>,
    pub http_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub unhealthy_after_failures: u64,
    /// The master keys that open the applicants' data (`None`: a sealed applicant is an
    /// error, retried).
    pub keyring: Option<personal::Keyring>,
}

/// The service bound to its listeners.
#[derive(Debug)]
pub struct PortalSyncApp {
    app: App,
    stats: Arc<SenderStats>,
}

impl PortalSyncApp {
    /// From the configuration: connects to PostgreSQL (migrating) and NATS, loads tokens and
    /// credentials, binds.
    pub async fn build(config: &Config) -> Result<PortalSyncApp, PortalStartError> {
        let section: PortalConfig = config.section()?;
        section.validate().map_err(|message| ConfigError::Section {
            section: "portal",
            message,
        })?;
        let client = section.client(section.credentials()?)?;
        let log = config
            .database
            .connect("portal")
            .await
            .map_err(StartError::from)?;
        let tokens = Tokens::load(&config.auth.tokens_file).map_err(StartError::from)?;
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(&config.nats.url)
            .await?;
        let feed = consumer::FeedConfig {
            stream: config.nats.stream.clone(),
            subject_prefix: config.nats.subject_prefix.clone(),
            durable: section.consumer.clone(),
            ack_wait: Duration::from_secs(30),
            max_batch: 256,
        };
        Self::build_with(Parts {
            log,
            tokens,
            jetstream: jetstream::new(nats),
            feed,
            client,
            sender: section.sender(),
            clock: Arc::new(SystemClock),
            http_listen: section.http_listen,
            metrics_listen: Some(section.metrics_listen),
            unhealthy_after_failures: section.unhealthy_after_failures,
            keyring: config.keyring()?,
        })
        .await
    }

    /// From parts.
    pub async fn build_with(parts: Parts) -> Result<PortalSyncApp, PortalStartError> {
        parts.log.migrate().await.map_err(StartError::from)?;
        store::migrate(parts.log.pool()).await?;
        personal::migrate(parts.log.pool())
            .await
            .map_err(PortalStartError::PersonalMigrate)?;
        let vault = parts
            .keyring
            .map(|keyring| personal::Vault::new(parts.log.pool().clone(), keyring));
        let http_listener = Listener::bind(parts.http_listen).await?;
        let mut app = App::new("portal-sync");
        if let Some(addr) = parts.metrics_listen {
            app = app.metrics(Listener::bind(addr).await?);
        }
        app.telemetry().pool(parts.log.pool());
        let stats = Arc::new(SenderStats::default());
        let position = Arc::new(AtomicI64::new(0));
        register(
            app.telemetry(),
            &stats,
            &position,
            parts.unhealthy_after_failures,
        );
        let wake = Arc::new(Notify::new());
        let sender = Sender {
            log: parts.log.clone(),
            client: parts.client,
            applicant: applicant::ApplicantReader::new(vault),
            clock: parts.clock.clone(),
            config: parts.sender.clone(),
            stats: stats.clone(),
            wake: wake.clone(),
        };
        let router = http::router(
            parts.log.pool().clone(),
            Arc::new(parts.tokens),
            parts.clock.clone(),
            parts.sender.late_after,
            app.telemetry().clone(),
        );
        let (log, js, feed, clock) = (parts.log, parts.jetstream, parts.feed, parts.clock);
        let app = app
            .http("portal", http_listener, router)
            .task("feed", move |stop| async move {
                consumer::run(log, js, feed, clock, wake, position, stop).await;
                Ok::<(), std::convert::Infallible>(())
            })
            .task("sender", move |stop| async move {
                sender.run(stop).await;
                Ok::<(), std::convert::Infallible>(())
            });
        Ok(PortalSyncApp { app, stats })
    }

    /// The sender's counters.
    pub fn stats(&self) -> Arc<SenderStats> {
        self.stats.clone()
    }

    /// The reconciliation routes' address.
    pub fn http_addr(&self) -> SocketAddr {
        self.app
            .http_addr("portal")
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.app.metrics_addr()
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), RunError> {
        self.app.run_until_stopped(shutdown).await
    }
}

/// The metrics (`motcua_portal_*`) and the health check: NOT_SERVING after
/// `unhealthy_after` failed requests in a row (reset by any acknowledged request).
fn register(
    telemetry: &svc::Telemetry,
    stats: &Arc<SenderStats>,
    position: &Arc<AtomicI64>,
    unhealthy_after: u64,
) {
    let s = stats.clone();
    telemetry.counter_fn_by(
        "motcua_portal_requests",
        "requests to the national portal, by outcome (accepted, transient, refused)",
        "outcome",
        move || {
            vec![
                ("accepted".to_owned(), s.accepted.load(Ordering::Relaxed)),
                ("transient".to_owned(), s.transient.load(Ordering::Relaxed)),
                ("refused".to_owned(), s.refused.load(Ordering::Relaxed)),
            ]
        },
    );
    use svc::metrics::{Sample, gauge_of};
    telemetry.sampled(
        stats.clone(),
        &[
            Sample::gauge(
                "motcua_portal_consecutive_failures",
                "requests to the portal that failed in a row (0 after any acknowledged one)",
                |s| gauge_of(s.consecutive_failures.load(Ordering::Relaxed)),
            ),
            Sample::gauge(
                "motcua_portal_pending_dossiers",
                "dossiers the portal does not hold at their latest announced version",
                |s| s.pending.load(Ordering::Relaxed),
            ),
            Sample::gauge(
                "motcua_portal_refused_dossiers",
                "dossiers whose latest version the portal refused (see GET /v1/refusals)",
                |s| s.refused_dossiers.load(Ordering::Relaxed),
            ),
            Sample::gauge(
                "motcua_portal_oldest_pending_seconds",
                "age of the oldest change not yet acknowledged by the portal",
                |s| s.oldest_pending_secs.load(Ordering::Relaxed),
            ),
            Sample::counter(
                "motcua_portal_synced_turns",
                "turns that brought a dossier up to date on the portal",
                |s| s.synced.load(Ordering::Relaxed),
            ),
            Sample::counter(
                "motcua_portal_late_turns",
                "turns acknowledged later than portal.late_after_secs after their oldest event",
                |s| s.late.load(Ordering::Relaxed),
            ),
        ],
    );
    telemetry.sampled(
        position.clone(),
        &[Sample::gauge(
            "motcua_portal_stream_position",
            "the highest log position the feed noted",
            |p| p.load(Ordering::Relaxed),
        )],
    );
    let s = stats.clone();
    telemetry.health_check("portal", move || {
        let failures = s.consecutive_failures.load(Ordering::Relaxed);
        if failures < unhealthy_after {
            Ok(())
        } else {
            Err(format!(
                "{failures} requests to the national portal failed in a row (see motcua_portal_requests_total and the log)"
            ))
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str =
        "[database]\nurl = \"postgres://u@h/db\"\n[auth]\ntokens_file = \"t.toml\"\n";

    #[test]
    fn the_portal_section_is_read_checked_and_overridden() {
        let config = Config::parse(&format!(
            "{BASE}[portal]\nendpoint = \"https://dichvucong.example/api\"\nfirst_retry_ms = 500\nretry_error_codes = [3]\n"
        ))
        .unwrap();
        let section: PortalConfig = config.section().unwrap();
        assert_eq!(section.endpoint, "https://dichvucong.example/api");
        assert_eq!(section.sender().first_retry, Duration::from_millis(500));
        assert_eq!(section.retry_error_codes, [3]);
        assert_eq!(section.metrics_listen.port(), 9459);
        section.validate().unwrap();

        let missing: PortalConfig = Config::parse(BASE).unwrap().section().unwrap();
        assert!(missing.validate().unwrap_err().contains("endpoint"));
        let overridden: PortalConfig = Config::parse(BASE)
            .unwrap()
            .with_env(&[("MOTCUA_PORTAL_ENDPOINT", "http://127.0.0.1:1/x")])
            .section()
            .unwrap();
        overridden.validate().unwrap();
        let mut bad = overridden.clone();
        bad.concurrency = 0;
        assert!(bad.validate().unwrap_err().contains("concurrency"));
        bad = overridden;
        bad.max_retry_ms = 1;
        assert!(bad.validate().unwrap_err().contains("max_retry_ms"));
        assert!(
            Config::parse(&format!("{BASE}[portal]\nendpont = \"x\"\n"))
                .unwrap()
                .section::<PortalConfig>()
                .is_err(),
            "a misspelt key is refused"
        );
    }

    #[test]
    fn an_endpoint_that_is_not_http_is_refused() {
        let mut section = PortalConfig {
            endpoint: "ftp://portal/x".to_owned(),
            ..PortalConfig::default()
        };
        assert!(section.client(Credentials::default()).is_err());
        section.endpoint = "http://127.0.0.1:9/x".to_owned();
        assert!(section.client(Credentials::default()).is_ok());
    }
}
