//! The intake service: a one-stop counter receives a dossier, records its digitized
//! components, or refuses it at the counter; a migration tool imports history in bulk. It also
//! serves the procedure catalogue (`CatalogueService`), which every reception reads.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`build`] →
//! [`svc::App::run_until_stopped`]. Tests build the app on port 0 with their own database.

pub mod catalogue;
mod import;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;

use api::v1::catalogue_service_server::CatalogueServiceServer;
use api::v1::intake_service_server::IntakeServiceServer;
use serde::Deserialize;
use svc::config::{ConfigError, Env, Section};
use svc::{App, Config, ServiceDeps, StartError};

pub use import::{
    IMPORT_BATCH_TIMEOUT, ImportItem, MAX_BATCH, batch_timeout, decide_items, parse_batch,
};
pub use service::Intake;

/// The intake service, bound and ready to run.
pub type IntakeApp = App;

/// The `[intake]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// The gRPC address (`MOTCUA_INTAKE_LISTEN`).
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz` (`MOTCUA_INTAKE_METRICS_LISTEN`).
    pub metrics_listen: SocketAddr,
    /// The procedure catalogue file published at start (definitions identical to the stored
    /// ones change nothing); none: the catalogue changes only through `CatalogueService`.
    pub catalogue_file: Option<PathBuf>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9451)),
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

/// Connects to PostgreSQL, applies the migrations, loads tokens, calendar and the catalogue
/// file, binds.
pub async fn build(config: &Config) -> Result<IntakeApp, BuildError> {
    let section: IntakeConfig = config.section()?;
    let deps =
        ServiceDeps::from_config(config, "intake", section.listen, section.metrics_listen).await?;
    build_with_catalogue(deps, section.catalogue_file.as_deref()).await
}

/// Builds from given dependencies (tests: their own database, port 0), without a file.
pub async fn build_with(deps: ServiceDeps) -> Result<IntakeApp, BuildError> {
    build_with_catalogue(deps, None).await
}

/// Builds and publishes the catalogue file `file` first, if any.
pub async fn build_with_catalogue(
    deps: ServiceDeps,
    file: Option<&std::path::Path>,
) -> Result<IntakeApp, BuildError> {
    let ready = deps.prepare().await?;
    let store = ::catalogue::Catalogue::new(ready.write.log().pool().clone());
    store
        .migrate()
        .await
        .map_err(|e| BuildError::Catalogue(e.to_string()))?;
    if let Some(path) = file {
        let (versions, published) = catalogue::load_file(&store, path)
            .await
            .map_err(BuildError::Catalogue)?;
        tracing::info!(file = %path.display(), definitions = versions.len(), published, "procedure catalogue file loaded");
    }
    let tokens = ready.tokens.clone();
    let clock = ready.clock.clone();
    let app = ready.into_app("intake", |w, t, c| {
        IntakeServiceServer::new(Intake::new(w, t, c))
            .max_decoding_message_size(domain::limits::MAX_IMPORT_MESSAGE_BYTES)
    });
    Ok(app.serve(
        CatalogueServiceServer::new(catalogue::CatalogueRpc::new(store, tokens, clock))
            .max_decoding_message_size(domain::limits::MAX_REQUEST_MESSAGE_BYTES),
    ))
}
