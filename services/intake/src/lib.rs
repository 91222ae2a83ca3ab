//! The intake service: a one-stop counter receives a dossier, records its digitized
//! components, or refuses it at the counter; a migration tool imports history in bulk.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`build`] →
//! [`svc::App::run_until_stopped`]. Tests build the app on port 0 with their own database.

pub mod applicant;
mod import;
pub mod limiter;
pub mod service;

use std::net::SocketAddr;

use api::v1::applicant_service_server::ApplicantServiceServer;
use api::v1::citizen_lookup_service_server::CitizenLookupServiceServer;
use api::v1::intake_service_server::IntakeServiceServer;
use svc::{App, Config, Listener, ServiceDeps, StartError};

pub use import::{
    IMPORT_BATCH_TIMEOUT, ImportItem, MAX_BATCH, batch_timeout, decide_items, parse_batch,
};
pub use limiter::LookupLimits;
pub use service::Intake;

/// The intake service, bound and ready to run.
pub type IntakeApp = App;

/// `[intake]`: the gRPC and metrics addresses, and the citizen lookup's HTTP address.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    /// `POST /v1/lookup` (the citizen lookup over HTTP/JSON).
    pub lookup_http_listen: SocketAddr,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9451)),
            lookup_http_listen: SocketAddr::from(([127, 0, 0, 1], 8051)),
        }
    }
}

impl svc::config::Section for IntakeConfig {
    const NAME: &'static str = "intake";

    fn apply_env(&mut self, env: &svc::config::Env<'_>) -> Result<(), svc::config::ConfigError> {
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

/// Connects to PostgreSQL, applies the migrations, loads tokens, calendar and master keys,
/// binds.
pub async fn build(config: &Config) -> Result<IntakeApp, StartError> {
    let section: IntakeConfig = config.section()?;
    let deps =
        ServiceDeps::from_config(config, "intake", section.listen, section.metrics_listen).await?;
    build_with_lookup(deps, section.lookup_http_listen, LookupLimits::default()).await
}

/// Builds from given dependencies (tests: their own database, port 0; the lookup's HTTP port
/// too).
pub async fn build_with(deps: ServiceDeps) -> Result<IntakeApp, StartError> {
    build_with_lookup(
        deps,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        LookupLimits::default(),
    )
    .await
}

/// As [`build_with`], with the lookup's HTTP address and limits. Without master keys
/// (`deps.keyring` is `None`) the applicant and lookup services are not served and a request
/// carrying an applicant is refused.
pub async fn build_with_lookup(
    mut deps: ServiceDeps,
    lookup_http: SocketAddr,
    limits: LookupLimits,
) -> Result<IntakeApp, StartError> {
    let keyring = deps.keyring.take();
    let ready = deps.prepare().await?;
    let vault = match keyring {
        Some(keyring) => {
            let pool = ready.write.log().pool().clone();
            personal::migrate(&pool).await?;
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
    let app = ready.into_app("intake", |w, t, c| {
        IntakeServiceServer::new(Intake::new(w, t, c, intake_vault))
            .max_decoding_message_size(domain::limits::MAX_IMPORT_MESSAGE_BYTES)
    });
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
