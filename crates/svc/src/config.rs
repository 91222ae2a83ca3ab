//! The services' configuration: one TOML file shared by all services (each reads its sections),
//! with environment variables overriding the values an operator most often changes.
//!
//! | variable | overrides |
//! |---|---|
//! | `MOTCUA_DATABASE_URL` | `database.url` |
//! | `MOTCUA_NATS_URL` | `nats.url` |
//! | `MOTCUA_TOKENS_FILE` | `auth.tokens_file` |
//! | `MOTCUA_INTAKE_LISTEN` | `intake.listen` |
//! | `MOTCUA_PROCESSING_LISTEN` | `processing.listen` |
//! | `MOTCUA_PAYMENT_LISTEN` | `payment.listen` |
//! | `MOTCUA_RESULTS_LISTEN` | `results.listen` |
//! | `MOTCUA_PROJECTION_LISTEN` | `projection.listen` |
//! | `MOTCUA_PROJECTION_HTTP_LISTEN` | `projection.http_listen` |
//! | `MOTCUA_REPLAY_LISTEN` | `replay.listen` |
//! | `MOTCUA_AUDIT_LISTEN` | `audit.listen` |
//! | `MOTCUA_AUDIT_SIGNING_KEY_FILE` | `audit.signing_key_file` |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database: DatabaseConfig,
    #[serde(default)]
    pub nats: NatsConfig,
    pub auth: AuthConfig,
    #[serde(default)]
    pub calendar: calendar::CalendarConfig,
    #[serde(default)]
    pub intake: IntakeConfig,
    #[serde(default)]
    pub processing: ProcessingConfig,
    #[serde(default)]
    pub payment: PaymentConfig,
    #[serde(default)]
    pub results: ResultsConfig,
    #[serde(default)]
    pub projection: ProjectionConfig,
    #[serde(default)]
    pub replay: ReplayConfig,
    #[serde(default)]
    pub audit: AuditConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    16
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub replicas: usize,
    pub duplicate_window_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "DOSSIER_EVENTS".to_owned(),
            subject_prefix: "dossier".to_owned(),
            replicas: 1,
            duplicate_window_secs: 7200,
        }
    }
}

impl NatsConfig {
    pub fn duplicate_window(&self) -> Duration {
        Duration::from_secs(self.duplicate_window_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The tokens file (`[[token]]` entries with SHA-256 hashes, see `auth`). Relative paths are
    /// taken from the working directory.
    pub tokens_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessingConfig {
    pub listen: SocketAddr,
    pub supplement_policy: domain::SupplementPolicy,
    /// How often the deadline watcher looks for dossiers that fell due.
    pub watcher_interval_secs: u64,
}

impl Default for ProcessingConfig {
    fn default() -> Self {
        ProcessingConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            supplement_policy: domain::SupplementPolicy::default(),
            watcher_interval_secs: 30,
        }
    }
}

/// A section that holds only a service's listen address, with its default port.
macro_rules! listen_section {
    ($name:ident, $port:expr) => {
        #[derive(Debug, Clone, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            pub listen: SocketAddr,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    listen: SocketAddr::from(([127, 0, 0, 1], $port)),
                }
            }
        }
    };
}

listen_section!(IntakeConfig, 50051);
listen_section!(PaymentConfig, 50053);
listen_section!(ResultsConfig, 50054);
listen_section!(ReplayConfig, 50056);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProjectionConfig {
    /// Where the statistics queries (`StatsService`) are served.
    pub listen: SocketAddr,
    /// Where the same queries are served over HTTP/JSON and CSV (dashboards, BI tools).
    pub http_listen: SocketAddr,
    /// The durable JetStream consumer the projection instances share.
    pub consumer: String,
    /// S14: the target of each rate, in percent (defaults: Resolution 76/NQ-CP).
    pub targets: stats::Targets,
    /// What one statistics query may cost (`[projection.limits]`).
    pub limits: QueryLimits,
}

/// The bounds of the statistics queries (gRPC and HTTP alike), `[projection.limits]`. A query
/// beyond a bound is refused with a status naming it, never cut silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimits {
    /// The longest period `[from, to)`, in days (INVALID_ARGUMENT on `to`).
    pub max_period_days: u32,
    /// The most grouping dimensions in one query (INVALID_ARGUMENT on `group_by`).
    pub max_group_by: u32,
    /// The most groups (rows) in one answer (INVALID_ARGUMENT, reason `too_many_groups`).
    pub max_groups: u32,
    /// How long one query may run, in seconds (PostgreSQL `statement_timeout` and the
    /// service's own timer; DEADLINE_EXCEEDED, reason `query_timeout`).
    pub query_timeout_secs: u32,
    /// Queries on the live aggregates (and dossier statuses) running at once; one more is
    /// refused at once (RESOURCE_EXHAUSTED, reason `too_many_queries`, RetryInfo).
    pub max_live_queries: u32,
    /// `as_recorded_at` queries (a scan of the log) running at once; same refusal.
    pub max_as_recorded_queries: u32,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_period_days: 366 * 20,
            max_group_by: 3,
            max_groups: 2000,
            query_timeout_secs: 15,
            max_live_queries: 8,
            max_as_recorded_queries: 2,
        }
    }
}

impl Default for ProjectionConfig {
    fn default() -> Self {
        ProjectionConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50055)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8055)),
            consumer: "projection".to_owned(),
            targets: stats::Targets::default(),
            limits: QueryLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Where the checkpoint and proof queries are served.
    pub listen: SocketAddr,
    /// How often a signed checkpoint of the log is made (when the log grew).
    pub checkpoint_interval_secs: u64,
    /// The Ed25519 signing key of the checkpoints (created on first start when missing).
    pub signing_key_file: PathBuf,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50057)),
            checkpoint_interval_secs: 60,
            signing_key_file: PathBuf::from("deploy/config/checkpoint.dev.key"),
        }
    }
}

/// Why the configuration could not be loaded; the message names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value in environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

impl Config {
    /// Reads the file, then applies the environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies overrides from `lookup` (the environment in production, a map in tests).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(url) = lookup("MOTCUA_DATABASE_URL") {
            self.database.url = url;
        }
        if let Some(url) = lookup("MOTCUA_NATS_URL") {
            self.nats.url = url;
        }
        if let Some(file) = lookup("MOTCUA_TOKENS_FILE") {
            self.auth.tokens_file = PathBuf::from(file);
        }
        let listen = |name: &'static str| -> Result<Option<SocketAddr>, ConfigError> {
            lookup(name)
                .map(|v| {
                    v.parse()
                        .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                            name,
                            message: e.to_string(),
                        })
                })
                .transpose()
        };
        if let Some(addr) = listen("MOTCUA_INTAKE_LISTEN")? {
            self.intake.listen = addr;
        }
        if let Some(addr) = listen("MOTCUA_PROCESSING_LISTEN")? {
            self.processing.listen = addr;
        }
        if let Some(addr) = listen("MOTCUA_PAYMENT_LISTEN")? {
            self.payment.listen = addr;
        }
        if let Some(addr) = listen("MOTCUA_RESULTS_LISTEN")? {
            self.results.listen = addr;
        }
        if let Some(addr) = listen("MOTCUA_PROJECTION_LISTEN")? {
            self.projection.listen = addr;
        }
        if let Some(addr) = listen("MOTCUA_PROJECTION_HTTP_LISTEN")? {
            self.projection.http_listen = addr;
        }
        if let Some(addr) = listen("MOTCUA_REPLAY_LISTEN")? {
            self.replay.listen = addr;
        }
        if let Some(addr) = listen("MOTCUA_AUDIT_LISTEN")? {
            self.audit.listen = addr;
        }
        if let Some(file) = lookup("MOTCUA_AUDIT_SIGNING_KEY_FILE") {
            self.audit.signing_key_file = PathBuf::from(file);
        }
        Ok(())
    }
}

/// The `--config PATH` argument, else `MOTCUA_CONFIG`, else `deploy/config/local.toml`.
pub fn config_path_from_args() -> PathBuf {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--config" {
            if let Some(path) = args.next() {
                return PathBuf::from(path);
            }
        } else if let Some(path) = arg.strip_prefix("--config=") {
            return PathBuf::from(path);
        }
    }
    std::env::var_os("MOTCUA_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("deploy/config/local.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
        [database]
        url = "postgres://u@h/db"
        [auth]
        tokens_file = "tokens.toml"
        [intake]
        listen = "0.0.0.0:7000"
        [processing]
        supplement_policy = "extend"
    "#;

    #[test]
    fn parses_and_defaults() {
        let c = Config::parse(SAMPLE).unwrap();
        assert_eq!(c.database.max_connections, 16);
        assert_eq!(c.nats.stream, "DOSSIER_EVENTS");
        assert_eq!(c.intake.listen.port(), 7000);
        assert_eq!(
            c.processing.supplement_policy,
            domain::SupplementPolicy::Extend
        );
    }

    #[test]
    fn the_shipped_local_config_parses() {
        let c = Config::parse(include_str!("../../../deploy/config/local.toml")).unwrap();
        assert_eq!(c.intake.listen.port(), 50051);
        calendar::Calendar::new(&c.calendar).unwrap();
        let tokens =
            crate::Tokens::parse(include_str!("../../../deploy/config/tokens.dev.toml")).unwrap();
        let mut meta = tonic::metadata::MetadataMap::new();
        meta.insert(
            "authorization",
            "Bearer dev-counter-district".parse().unwrap(),
        );
        let p = tokens.authenticate(&meta).unwrap();
        assert_eq!(p.agency.unwrap().as_str(), "000.00.12.H40");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse(&format!("{SAMPLE}\n[database2]\nurl=\"x\"")).unwrap_err();
        assert!(err.contains("database2"), "{err}");
    }

    #[test]
    fn environment_overrides() {
        let mut c = Config::parse(SAMPLE).unwrap();
        c.apply_env(|k| match k {
            "MOTCUA_DATABASE_URL" => Some("postgres://other/db".into()),
            "MOTCUA_INTAKE_LISTEN" => Some("127.0.0.1:9".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.database.url, "postgres://other/db");
        assert_eq!(c.intake.listen.port(), 9);
        let err = c
            .apply_env(|k| (k == "MOTCUA_INTAKE_LISTEN").then(|| "nope".into()))
            .unwrap_err();
        assert!(err.to_string().contains("MOTCUA_INTAKE_LISTEN"));
    }
}
