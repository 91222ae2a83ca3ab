//! The intake service: a one-stop counter receives a dossier, records its digitized
//! components, or refuses it at the counter; a migration tool imports history in bulk.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`build`] →
//! [`svc::App::run_until_stopped`]. Tests build the app on port 0 with their own database.

mod import;
pub mod service;

use api::v1::intake_service_server::IntakeServiceServer;
use svc::{App, Config, ServiceDeps, StartError};

pub use import::{
    IMPORT_BATCH_TIMEOUT, ImportItem, MAX_BATCH, batch_timeout, decide_items, parse_batch,
};
pub use service::Intake;

/// The intake service, bound and ready to run.
pub type IntakeApp = App;

svc::listen_section!(IntakeConfig, "intake", 50051, 9451, "MOTCUA_INTAKE");

/// Connects to PostgreSQL, applies the migrations, loads tokens and calendar, binds.
pub async fn build(config: &Config) -> Result<IntakeApp, StartError> {
    let section: IntakeConfig = config.section()?;
    build_with(
        ServiceDeps::from_config(config, "intake", section.listen, section.metrics_listen).await?,
    )
    .await
}

/// Builds from given dependencies (tests: their own database, port 0).
pub async fn build_with(deps: ServiceDeps) -> Result<IntakeApp, StartError> {
    let ready = deps.prepare().await?;
    Ok(ready.into_app("intake", |w, t, c| {
        IntakeServiceServer::new(Intake::new(w, t, c))
            .max_decoding_message_size(domain::limits::MAX_IMPORT_MESSAGE_BYTES)
    }))
}
