//! The payment service: a dossier's fees, charges and taxes are assessed, and payments against
//! them are recorded — typed at the counter or called back, possibly several times, by the
//! national payment platform or a provincial gateway.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`build`] →
//! [`svc::App::run_until_stopped`]. Tests build the app on port 0 with their own database.
//! Stateless: any number of instances may serve the same event log.

pub mod service;

use api::v1::payment_service_server::PaymentServiceServer;
pub use service::Payment;
use svc::handler::Desk;
use svc::{App, Config, ServiceDeps, StartError};

/// The payment service, bound and ready to run.
pub type PaymentApp = App;

svc::listen_section!(PaymentConfig, "payment", 50053, 9453, "MOTCUA_PAYMENT");

/// Connects to PostgreSQL, applies the migrations, loads tokens and calendar, binds.
pub async fn build(config: &Config) -> Result<PaymentApp, StartError> {
    let section: PaymentConfig = config.section()?;
    build_with(
        ServiceDeps::from_config(config, "payment", section.listen, section.metrics_listen).await?,
    )
    .await
}

/// Builds from given dependencies (tests: their own database, port 0).
pub async fn build_with(deps: ServiceDeps) -> Result<PaymentApp, StartError> {
    let ready = deps.prepare().await?;
    Ok(ready.into_app("payment", |w, t, c| {
        PaymentServiceServer::new(Payment::new(Desk::new(w, t, c)))
            .max_decoding_message_size(domain::limits::MAX_REQUEST_MESSAGE_BYTES)
    }))
}
