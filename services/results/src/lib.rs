//! The results service: the end of a dossier at the one-stop counter — the decision attached as
//! a signed electronic file, the result returned to the applicant, the written apology with a
//! new appointment for a late dossier, and the applicant's satisfaction rating.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`build`] →
//! [`svc::App::run_until_stopped`]. Tests build the app on port 0 with their own database.
//! Stateless: any number of instances may serve the same event log.

pub mod service;

use api::v1::results_service_server::ResultsServiceServer;
pub use service::Results;
use svc::handler::Desk;
use svc::{App, Config, ServiceDeps, StartError};

/// The results service, bound and ready to run.
pub type ResultsApp = App;

svc::listen_section!(ResultsConfig, "results", 50054, 9454, "MOTCUA_RESULTS");

/// Connects to PostgreSQL, applies the migrations, loads tokens and calendar, binds.
pub async fn build(config: &Config) -> Result<ResultsApp, StartError> {
    let section: ResultsConfig = config.section()?;
    build_with(
        ServiceDeps::from_config(config, "results", section.listen, section.metrics_listen).await?,
    )
    .await
}

/// Builds from given dependencies (tests: their own database, port 0).
pub async fn build_with(deps: ServiceDeps) -> Result<ResultsApp, StartError> {
    let ready = deps.prepare().await?;
    Ok(ready.into_app("results", |w, t, c| {
        ResultsServiceServer::new(Results::new(Desk::new(w, t, c)))
            .max_decoding_message_size(domain::limits::MAX_REQUEST_MESSAGE_BYTES)
    }))
}
