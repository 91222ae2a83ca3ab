//! The intake service: a one-stop counter receives a dossier, records its digitized
//! components, or refuses it at the counter; a migration tool imports history in bulk. It also
//! serves the procedure catalogue (`CatalogueService`), which every reception reads.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`build`] →
//! [`svc::App::run_until_stopped`]. Tests build the app on port 0 with their own database.

pub mod applicant;
pub mod catalogue;
mod import;
pub mod limiter;
pub mod openapi;
pub mod service;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use api::v1::applicant_service_server::ApplicantServiceServer;
use api::v1::catalogue_service_server::CatalogueServiceServer;
use api::v1::citizen_lookup_service_server::CitizenLookupServiceServer;
use api::v1::intake_service_server::IntakeServiceServer;
use svc::config::{ConfigError, Env, Section};
use svc::{App, Config, Listener, ServiceDeps, StartError};

pub use import::{IMPORT_BATCH_TIMEOUT, ImportItem, MAX_BATCH, batch_timeout, parse_batch};
pub use limiter::LookupLimits;
pub use service::Intake;

/// The intake service, bound and ready to run.
pub type IntakeApp = App;

/// `[intake]`: the gRPC and metrics addresses, the citizen lookup's HTTP address, and the
/// procedure catalogue file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// The gRPC address (`MOTCUA_INTAKE_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz` (`MOTCUA_INTAKE_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
    /// `POST /v1/lookup` (the citizen lookup over HTTP/JSON).
    pub lookup_http_listen: SocketAddr,
    /// The procedure catalogue file published at start (definitions identical to the stored
    /// ones change nothing); none: the catalogue changes only through `CatalogueService`.
    pub catalogue_file: Option<PathBuf>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9451)),
            lookup_http_listen: SocketAddr::from(([127, 0, 0, 1], 8051)),
            catalogue_file: None,
        }
    }
}

impl Section for IntakeConfig {
    const NAME: &'static str = "intake";

    fn apply_env(&mut self, env: &Env<'_>) -> Result<(), ConfigError> {
        if let Some(addr) = env.addr("MOTCUA_INTAKE_LISTEN")? {
            self.listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_INTAKE_METRICS_LISTEN")? {
            self.metrics_listen = addr;
        }
        if let Some(addr) = env.addr("MOTCUA_INTAKE_LOOKUP_HTTP_LISTEN")? {
            self.lookup_http_listen = addr;
        }
        Ok(())
    }
}

/// Why the intake service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("procedure catalogue: {0}")]
    Catalogue(String),
}

impl From<ConfigError> for BuildError {
    fn from(e: ConfigError) -> Self {
        BuildError::Start(e.into())
    }
}

/// Connects to PostgreSQL, applies the migrations, loads tokens, calendar, master keys and
/// the catalogue file, binds.
pub async fn build(config: &Config) -> Result<IntakeApp, BuildError> {
    let section: IntakeConfig = config.section()?;
    let deps =
        ServiceDeps::from_config(config, "intake", section.listen, section.metrics_listen).await?;
    build_with_lookup(
        deps,
        section.lookup_http_listen,
        LookupLimits::default(),
        section.catalogue_file.as_deref(),
    )
    .await
}

/// Builds from given dependencies (tests: their own database, port 0; the lookup's HTTP port
/// too), without a catalogue file.
pub async fn build_with(deps: ServiceDeps) -> Result<IntakeApp, BuildError> {
    build_with_lookup(
        deps,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        LookupLimits::default(),
        None,
    )
    .await
}

/// As [`build_with`], with the lookup's HTTP address and limits, publishing the catalogue file
/// `catalogue_file` first, if any. Without master keys (`deps.keyring` is `None`) the
/// applicant and lookup services are not served and a request carrying an applicant is
/// refused.
pub async fn build_with_lookup(
    mut deps: ServiceDeps,
    lookup_http: SocketAddr,
    limits: LookupLimits,
    catalogue_file: Option<&Path>,
) -> Result<IntakeApp, BuildError> {
    let keyring = deps.keyring.take();
    let ready = deps.prepare().await?;
    // One cached catalogue for the receives and the publications, so that a publication is
    // seen by the next receive of this process at once.
    let store = ::catalogue::Catalogue::cached(ready.write.log().pool().clone());
    store
        .migrate()
        .await
        .map_err(|e| BuildError::Catalogue(e.to_string()))?;
    if let Some(path) = catalogue_file {
        let (versions, published) = catalogue::load_file(&store, path)
            .await
            .map_err(BuildError::Catalogue)?;
        tracing::info!(file = %path.display(), definitions = versions.len(), published, "procedure catalogue file loaded");
    }
    let vault = match keyring {
        Some(keyring) => {
            let pool = ready.write.log().pool().clone();
            personal::migrate(&pool).await.map_err(StartError::from)?;
            Some(personal::Vault::new(pool, keyring))
        }
        None => None,
    };
    let (write, tokens, clock) = (
        ready.write.clone(),
        ready.tokens.clone(),
        ready.clock.clone(),
    );
    let intake_vault = vault.clone();
    let intake_catalogue = store.clone();
    let app = ready
        .into_app("intake", |w, t, c| {
            IntakeServiceServer::new(Intake::new(w, t, c, intake_catalogue, intake_vault))
                .max_decoding_message_size(domain::limits::MAX_IMPORT_MESSAGE_BYTES)
        })
        .serve(
            CatalogueServiceServer::new(catalogue::CatalogueRpc::new(
                store,
                tokens.clone(),
                clock.clone(),
            ))
            .max_decoding_message_size(domain::limits::MAX_REQUEST_MESSAGE_BYTES),
        );
    let Some(vault) = vault else {
        return Ok(app);
    };
    let lookup = applicant::Lookup::new(
        vault.clone(),
        write.clone(),
        limiter::Limiter::new(limits, clock),
    );
    Ok(app
        .serve(ApplicantServiceServer::new(applicant::Applicants::new(
            vault, tokens, write,
        )))
        .serve(CitizenLookupServiceServer::new(lookup.clone()))
        .http(
            "lookup",
            Listener::bind(lookup_http).await?,
            applicant::router(lookup),
        ))
}
