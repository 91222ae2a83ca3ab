//! The configuration: one TOML file shared by all services. `svc` owns what they share —
//! `[database]` (with the whole installation's connection budget), `[nats]`, `[auth]`,
//! `[calendar]` — and each service crate owns its own section (`[intake]`, `[processing]`…) as
//! a [`Section`], read with [`Config::section`]. Environment variables override the values an
//! operator most often changes:
//!
//! | variable | overrides |
//! |---|---|
//! | `MOTCUA_DATABASE_URL` | `database.url` |
//! | `MOTCUA_NATS_URL` | `nats.url` |
//! | `MOTCUA_TOKENS_FILE` | `auth.tokens_file` |
//! | `MOTCUA_MASTER_KEYS_FILE` | `auth.master_keys_file` |
//! | `MOTCUA_MASTER_KEYS` | the master keys themselves (the file's text; wins over the file) |
//! | `MOTCUA_<SERVICE>_LISTEN`, `MOTCUA_<SERVICE>_METRICS_LISTEN`… | the service's section (its crate says which) |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The sections services own (each in its crate): a top-level table of another name is refused
/// as a typo.
pub const SERVICE_SECTIONS: [&str; 9] = [
    "intake",
    "processing",
    "payment",
    "results",
    "projection",
    "replay",
    "audit",
    "relay",
    "portal",
];

/// What every service shares, and the services' own sections unparsed (see [`Config::section`]).
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
    intake: Option<toml::Table>,
    #[serde(default)]
    processing: Option<toml::Table>,
    #[serde(default)]
    payment: Option<toml::Table>,
    #[serde(default)]
    results: Option<toml::Table>,
    #[serde(default)]
    projection: Option<toml::Table>,
    #[serde(default)]
    replay: Option<toml::Table>,
    #[serde(default)]
    audit: Option<toml::Table>,
    #[serde(default)]
    relay: Option<toml::Table>,
    #[serde(default)]
    portal: Option<toml::Table>,
    /// The environment the overrides were read from (a map in tests).
    #[serde(skip)]
    env: EnvVars,
}

/// The `MOTCUA_*` environment as read at load. `Debug` shows only the names: values include
/// secrets (`MOTCUA_MASTER_KEYS`, a database URL's password).
#[derive(Clone, Default)]
struct EnvVars(Vec<(String, String)>);

impl std::fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl EnvVars {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The connection budget of the whole installation: each service's pool opens at most its
/// entry of `pools` (or `max_connections` for all, when given), opens none before it needs one,
/// and closes those idle for `idle_timeout_secs`. A call that waits `acquire_timeout_secs` for a
/// connection is answered UNAVAILABLE (retry).
///
/// The defaults (with every service's connections outside its pool: the LISTEN connections of
/// relay and replay, and `projection rebuild`/`verify`) sum to [`default_budget`], half of
/// PostgreSQL's default `max_connections` (100): room for `psql`, replication, backups and a
/// second instance of a service. README "Connection budget" has the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    /// One size for every service's pool, overriding `pools` (the setting before pools had
    /// their own sizes; 8 services × this value must fit the server's `max_connections`).
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Pool size by service (missing services: their default in [`DEFAULT_POOLS`]).
    #[serde(default)]
    pub pools: std::collections::BTreeMap<String, u32>,
    /// Connections a pool keeps open even when idle (0: release all).
    #[serde(default)]
    pub min_connections: u32,
    /// An idle connection is closed after this long.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// How long a call waits for a free connection before it is answered UNAVAILABLE.
    #[serde(default = "default_acquire_timeout_secs")]
    pub acquire_timeout_secs: u64,
}

/// Each service's default pool size. With one instance of each they sum to 37.
pub const DEFAULT_POOLS: [(&str, u32); 9] = [
    ("intake", 8),
    ("processing", 6),
    ("payment", 4),
    ("results", 4),
    ("projection", 3),
    ("replay", 4),
    ("audit", 3),
    ("relay", 3),
    ("portal", 2),
];

/// Connections a service opens outside its pool, by service: the relay's and the replay's
/// `LISTEN eventlog` connection (one per instance however many followers), and for projection
/// `rebuild`/`verify` (a pool of their own, [`PROJECTION_TOOL_CONNECTIONS`], and the rebuild
/// lock's direct connection, and the statistics queries' own connections,
/// [`PROJECTION_QUERY_CONNECTIONS`]).
pub const EXTRA_CONNECTIONS: [(&str, u32); 3] = [
    ("relay", 1),
    ("replay", 1),
    (
        "projection",
        PROJECTION_TOOL_CONNECTIONS + 1 + PROJECTION_QUERY_CONNECTIONS,
    ),
];

/// The projection's statistics queries run on connections of their own, at most one per query
/// admitted at once: `[projection.limits]` `max_live_queries` + `max_as_recorded_queries` (4 + 1
/// by default). Raising those limits raises the budget by as much.
pub const PROJECTION_QUERY_CONNECTIONS: u32 = 5;

/// The pool size of `projection rebuild` and `projection verify` (each holds two at once).
pub const PROJECTION_TOOL_CONNECTIONS: u32 = 3;

/// The connections the whole installation opens at most with the defaults and one instance of
/// each service (pools + [`EXTRA_CONNECTIONS`]).
pub const fn default_budget() -> u32 {
    let mut total = 0;
    let mut i = 0;
    while i < DEFAULT_POOLS.len() {
        total += DEFAULT_POOLS[i].1;
        i += 1;
    }
    let mut j = 0;
    while j < EXTRA_CONNECTIONS.len() {
        total += EXTRA_CONNECTIONS[j].1;
        j += 1;
    }
    total
}

fn default_idle_timeout_secs() -> u64 {
    60
}

fn default_acquire_timeout_secs() -> u64 {
    10
}

/// A pooled connection idle at least this long is pinged before it is used.
pub const PING_AFTER_IDLE: Duration = Duration::from_secs(1);

/// `options` with sqlx's ping on every checkout replaced by a ping after [`PING_AFTER_IDLE`]
/// idle. sqlx's default pings every connection taken from the pool: one more round trip (and a
/// wake-up of both processes) per checkout, i.e. per call of a write service and per query.
/// A connection used within the last second is trusted instead; if the server went away since,
/// the one statement sent on it fails (the caller answers UNAVAILABLE, and a retry is safe:
/// appends are idempotent by event id) and sqlx closes that connection. (sqlx also pings each
/// connection as it is released, in a task of its own, off the caller's path.)
pub fn ping_after_idle(options: sqlx::postgres::PgPoolOptions) -> sqlx::postgres::PgPoolOptions {
    options
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

impl DatabaseConfig {
    /// The settings of a `[database]` section that gives only `url`: every other value its
    /// default (the benchmarks and tests open pools exactly as a deployment with defaults does).
    pub fn with_url(url: impl Into<String>) -> DatabaseConfig {
        DatabaseConfig {
            url: url.into(),
            max_connections: None,
            pools: Default::default(),
            min_connections: 0,
            idle_timeout_secs: default_idle_timeout_secs(),
            acquire_timeout_secs: default_acquire_timeout_secs(),
        }
    }

    /// The pool size of `service`.
    pub fn max_connections_for(&self, service: &str) -> u32 {
        self.max_connections
            .or_else(|| self.pools.get(service).copied())
            .or_else(|| {
                DEFAULT_POOLS
                    .iter()
                    .find(|(name, _)| *name == service)
                    .map(|(_, n)| *n)
            })
            .unwrap_or(2)
            .max(1)
    }

    /// The most connections the installation opens with one instance of each service
    /// ([`SERVICE_SECTIONS`]), counting those outside the pools.
    pub fn budget(&self) -> u32 {
        let pools: u32 = SERVICE_SECTIONS
            .iter()
            .map(|s| self.max_connections_for(s))
            .sum();
        pools + EXTRA_CONNECTIONS.iter().map(|(_, n)| n).sum::<u32>()
    }

    /// The pool options of `service` (size from [`max_connections_for`](Self::max_connections_for)).
    pub fn pool_options(&self, service: &str) -> sqlx::postgres::PgPoolOptions {
        self.pool_options_sized(self.max_connections_for(service))
    }

    /// The pool options with `max` connections and this section's timeouts; a connection is
    /// pinged before use only after [`PING_AFTER_IDLE`] idle ([`ping_after_idle`]).
    pub fn pool_options_sized(&self, max: u32) -> sqlx::postgres::PgPoolOptions {
        ping_after_idle(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(max.max(1))
                .min_connections(self.min_connections.min(max))
                .idle_timeout(Some(Duration::from_secs(self.idle_timeout_secs.max(1))))
                .acquire_timeout(Duration::from_secs(self.acquire_timeout_secs.max(1))),
        )
    }

    /// Connects `service`'s pool (it does not migrate).
    pub async fn connect(
        &self,
        service: &str,
    ) -> Result<eventlog::EventLog, eventlog::ConnectError> {
        self.connect_sized(self.max_connections_for(service)).await
    }

    /// Connects a pool of `max` connections (the command-line tools).
    pub async fn connect_sized(
        &self,
        max: u32,
    ) -> Result<eventlog::EventLog, eventlog::ConnectError> {
        let pool = self
            .pool_options_sized(max)
            .connect(&self.url)
            .await
            .map_err(|e| match e {
                sqlx::Error::Configuration(_) => eventlog::ConnectError::Invalid(e),
                e => eventlog::ConnectError::Unavailable(e),
            })?;
        Ok(eventlog::EventLog::from_pool(pool))
    }
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
    /// The master keys that wrap the applicants' data keys (`personal::Keyring`'s TOML: `active`
    /// and `[[key]]` `id`, `hex`). Without it (and without `MOTCUA_MASTER_KEYS`) a service that
    /// handles personal data refuses requests that carry some.
    #[serde(default)]
    pub master_keys_file: Option<PathBuf>,
}

/// The rules every write service applies, read from `[processing]` (where they have always
/// been set; the processing crate owns the rest of that section).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Rules {
    #[serde(default)]
    pub supplement_policy: domain::SupplementPolicy,
    /// The unit of the apology's "at least one day before the due time" (`apology_notice`).
    #[serde(default)]
    pub apology_notice: domain::NoticeUnit,
}

/// A service's own section of the file, defined in the service's crate.
pub trait Section: DeserializeOwned + Default {
    /// The table's name, one of [`SERVICE_SECTIONS`].
    const NAME: &'static str;

    /// Applies the section's environment overrides.
    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError>;
}

/// The environment overrides as a [`Section`] sees them.
pub struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env<'_> {
    pub fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
    }

    /// A socket address (`127.0.0.1:50051`), if set.
    pub fn addr(&self, name: &'static str) -> Result<Option<SocketAddr>, ConfigError> {
        self.string(name)
            .map(|v| {
                v.parse()
                    .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                        name,
                        message: e.to_string(),
                    })
            })
            .transpose()
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
    #[error("invalid [{section}] section: {message}")]
    Section {
        section: &'static str,
        message: String,
    },
    #[error("invalid value in environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

impl Config {
    /// Reads the file, then applies the environment overrides (now for the shared sections,
    /// when a service reads its section for the others).
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
        config.env = EnvVars(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("MOTCUA_"))
                .collect(),
        );
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies overrides of the shared sections from `lookup` (the environment in production,
    /// a map in tests), and keeps them for [`section`](Self::section).
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
        if let Some(file) = lookup("MOTCUA_MASTER_KEYS_FILE") {
            self.auth.master_keys_file = Some(PathBuf::from(file));
        }
        Ok(())
    }

    /// Sets the environment the sections' overrides are read from (tests).
    pub fn with_env(mut self, vars: &[(&str, &str)]) -> Config {
        self.env = EnvVars(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }

    fn raw(&self, name: &str) -> Option<&toml::Table> {
        match name {
            "intake" => self.intake.as_ref(),
            "processing" => self.processing.as_ref(),
            "payment" => self.payment.as_ref(),
            "results" => self.results.as_ref(),
            "projection" => self.projection.as_ref(),
            "replay" => self.replay.as_ref(),
            "audit" => self.audit.as_ref(),
            "relay" => self.relay.as_ref(),
            "portal" => self.portal.as_ref(),
            _ => None,
        }
    }

    /// The service section `S` (its defaults when the file has none), with its environment
    /// overrides applied.
    pub fn section<S: Section>(&self) -> Result<S, ConfigError> {
        let mut section = match self.raw(S::NAME) {
            Some(table) => S::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
                ConfigError::Section {
                    section: S::NAME,
                    message: e.to_string(),
                }
            })?,
            None => S::default(),
        };
        let lookup = |name: &str| self.env.get(name).map(str::to_owned);
        section.apply_env(&Env { lookup: &lookup })?;
        Ok(section)
    }

    /// The master keys: `MOTCUA_MASTER_KEYS` (the keyring's text, e.g. from a secret
    /// manager), else `auth.master_keys_file`, else none. Errors never show a key.
    pub fn keyring(&self) -> Result<Option<personal::Keyring>, personal::KeyringError> {
        if let Some(text) = self.env.get("MOTCUA_MASTER_KEYS") {
            return personal::Keyring::parse(text).map(Some);
        }
        self.auth
            .master_keys_file
            .as_deref()
            .map(personal::Keyring::load)
            .transpose()
    }

    /// The rules every write service applies (`[processing] supplement_policy` and
    /// `apology_notice`).
    pub fn rules(&self) -> Result<Rules, ConfigError> {
        let Some(table) = self.raw("processing") else {
            return Ok(Rules::default());
        };
        fn key<T: DeserializeOwned + Default>(
            table: &toml::Table,
            name: &str,
        ) -> Result<T, ConfigError> {
            match table.get(name) {
                Some(value) => T::deserialize(value.clone()).map_err(|e| ConfigError::Section {
                    section: "processing",
                    message: format!("{name}: {e}"),
                }),
                None => Ok(T::default()),
            }
        }
        Ok(Rules {
            supplement_policy: key(table, "supplement_policy")?,
            apology_notice: key(table, "apology_notice")?,
        })
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

/// Defines, in a service's crate, a section holding only the service's gRPC and metrics
/// addresses: `listen_section!(IntakeConfig, "intake", 50051, 9451, "MOTCUA_INTAKE")` reads
/// `[intake] listen`, `metrics_listen` (defaults 127.0.0.1:50051 and :9451), overridden by
/// `MOTCUA_INTAKE_LISTEN` and `MOTCUA_INTAKE_METRICS_LISTEN`.
#[macro_export]
macro_rules! listen_section {
    ($name:ident, $section:literal, $port:expr, $metrics_port:expr, $env:literal) => {
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// The gRPC address.
            pub listen: std::net::SocketAddr,
            /// Where `/metrics` and `/healthz` are served.
            pub metrics_listen: std::net::SocketAddr,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    listen: std::net::SocketAddr::from(([127, 0, 0, 1], $port)),
                    metrics_listen: std::net::SocketAddr::from(([127, 0, 0, 1], $metrics_port)),
                }
            }
        }

        impl $crate::config::Section for $name {
            const NAME: &'static str = $section;

            fn apply_env(
                &mut self,
                env: &$crate::config::Env<'_>,
            ) -> Result<(), $crate::config::ConfigError> {
                if let Some(addr) = env.addr(concat!($env, "_LISTEN"))? {
                    self.listen = addr;
                }
                if let Some(addr) = env.addr(concat!($env, "_METRICS_LISTEN"))? {
                    self.metrics_listen = addr;
                }
                Ok(())
            }
        }
    };
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
        apology_notice = "calendar_day"
    "#;

    /// A section as a service crate defines one.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Intake {
        listen: SocketAddr,
        metrics_listen: Option<SocketAddr>,
        lookup_http_listen: Option<SocketAddr>,
    }

    impl Default for Intake {
        fn default() -> Self {
            Intake {
                listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
                metrics_listen: None,
                lookup_http_listen: None,
            }
        }
    }

    impl Section for Intake {
        const NAME: &'static str = "intake";
        fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
            if let Some(addr) = env.addr("MOTCUA_INTAKE_LISTEN")? {
                self.listen = addr;
            }
            Ok(())
        }
    }

    #[test]
    fn parses_and_defaults() {
        let c = Config::parse(SAMPLE).unwrap();
        assert_eq!(c.database.max_connections, None);
        assert_eq!(c.database.max_connections_for("intake"), 8);
        assert_eq!(c.database.min_connections, 0);
        assert_eq!(c.nats.stream, "DOSSIER_EVENTS");
        assert_eq!(c.section::<Intake>().unwrap().listen.port(), 7000);
        assert_eq!(
            c.rules().unwrap().supplement_policy,
            domain::SupplementPolicy::Extend
        );
        assert_eq!(
            c.rules().unwrap().apology_notice,
            domain::NoticeUnit::CalendarDay
        );
        // Left out: one working day; an unknown unit is refused, naming the key.
        let default =
            Config::parse(&SAMPLE.replace("apology_notice = \"calendar_day\"", "")).unwrap();
        assert_eq!(
            default.rules().unwrap().apology_notice,
            domain::NoticeUnit::WorkingDay
        );
        let bad = Config::parse(&SAMPLE.replace("calendar_day", "fortnight")).unwrap();
        assert!(
            bad.rules()
                .unwrap_err()
                .to_string()
                .contains("apology_notice")
        );
    }

    #[test]
    fn the_default_budget_fits_half_of_postgresqls_default() {
        let c = Config::parse(SAMPLE).unwrap();
        assert_eq!(c.database.budget(), default_budget());
        assert!(default_budget() <= 50, "{}", default_budget());
        // The legacy single size applies to every service.
        let legacy = Config::parse(&SAMPLE.replace(
            "url = \"postgres://u@h/db\"",
            "url = \"postgres://u@h/db\"\nmax_connections = 16",
        ))
        .unwrap();
        assert_eq!(legacy.database.max_connections_for("audit"), 16);
        let sized =
            Config::parse(&SAMPLE.replace("[auth]", "[database.pools]\nintake = 20\n[auth]"))
                .unwrap();
        assert_eq!(sized.database.max_connections_for("intake"), 20);
        assert_eq!(sized.database.max_connections_for("payment"), 4);
    }

    #[test]
    fn the_shipped_local_config_parses() {
        // `catalogue_file` is intake's own key (`intake::IntakeConfig`); this test's stand-in
        // section knows only the addresses.
        let text = include_str!("../../../deploy/config/local.toml")
            .lines()
            .filter(|l| !l.starts_with("catalogue_file"))
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&text).unwrap();
        let intake = c.section::<Intake>().unwrap();
        assert_eq!(intake.listen.port(), 50051);
        assert_eq!(intake.metrics_listen.map(|a| a.port()), Some(9451));
        assert!(c.database.budget() <= 50, "{}", c.database.budget());
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
        meta.insert(
            "authorization",
            "Bearer dev-privacy-officer".parse().unwrap(),
        );
        let officer = tokens.authenticate(&meta).unwrap();
        assert!(officer.has_scope(crate::Scope::PersonalData));
        assert!(officer.has_scope(crate::Scope::Erasure));
        assert_eq!(
            intake.lookup_http_listen.map(|a| a.port()),
            Some(8051),
            "[intake] lookup_http_listen"
        );
        let keys = c.auth.master_keys_file.as_deref().unwrap();
        assert_eq!(keys, Path::new("deploy/config/master-keys.dev.toml"));
        personal::Keyring::parse(include_str!("../../../deploy/config/master-keys.dev.toml"))
            .unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse(&format!("{SAMPLE}\n[database2]\nurl=\"x\"")).unwrap_err();
        assert!(err.contains("database2"), "{err}");
        let c = Config::parse(&SAMPLE.replace("listen = \"0.0.0.0:7000\"", "lisen = 1")).unwrap();
        let err = c.section::<Intake>().unwrap_err().to_string();
        assert!(err.contains("[intake]") && err.contains("lisen"), "{err}");
    }

    #[test]
    fn environment_overrides() {
        let mut c = Config::parse(SAMPLE)
            .unwrap()
            .with_env(&[("MOTCUA_INTAKE_LISTEN", "127.0.0.1:9")]);
        c.apply_env(|k| match k {
            "MOTCUA_DATABASE_URL" => Some("postgres://other/db".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.database.url, "postgres://other/db");
        assert_eq!(c.section::<Intake>().unwrap().listen.port(), 9);
        let err = c
            .with_env(&[("MOTCUA_INTAKE_LISTEN", "nope")])
            .section::<Intake>()
            .unwrap_err();
        assert!(err.to_string().contains("MOTCUA_INTAKE_LISTEN"));
    }
}
