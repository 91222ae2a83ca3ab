//! The payment service: a dossier's fees, charges and taxes are assessed, and payments against
//! them are recorded — typed at the counter or called back, possibly several times, by the
//! national payment platform or a provincial gateway.
//!
//! The binary is wiring only (`main.rs`): config → tracing → [`PaymentApp::build`] →
//! [`PaymentApp::run_until_stopped`]. Tests build the app on port 0 with their own database.
//! Stateless: any number of instances may serve the same event log.

mod service;

use std::net::SocketAddr;
use std::time::Duration;

use api::v1::payment_service_server::PaymentServiceServer;
use svc::handler::Desk;
use svc::{Config, ServiceDeps, StartError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use service::Payment;

/// How long in-flight calls may finish after a stop signal.
pub const DRAIN: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct PaymentApp {
    listener: TcpListener,
    local_addr: SocketAddr,
    payment: Payment,
}

impl PaymentApp {
    /// Connects to PostgreSQL, applies the migrations, loads tokens and calendar, binds.
    pub async fn build(config: &Config) -> Result<PaymentApp, StartError> {
        Self::build_with(ServiceDeps::from_config(config, config.payment.listen).await?).await
    }

    pub async fn build_with(deps: ServiceDeps) -> Result<PaymentApp, StartError> {
        let ready = deps.prepare().await?;
        Ok(PaymentApp {
            listener: ready.listener,
            local_addr: ready.local_addr,
            payment: Payment::new(Desk::new(ready.write, ready.tokens, ready.clock)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        tracing::info!(addr = %self.local_addr, "payment service listening");
        svc::server::serve(
            PaymentServiceServer::new(self.payment),
            self.listener,
            shutdown,
            DRAIN,
        )
        .await
    }
}
