//! What every gRPC service of the system shares: configuration, bearer-token authentication,
//! the mapping of errors to gRPC statuses with field details (the write path's among them: the
//! write path itself is the `writepath` crate), and serving with health, reflection and
//! graceful shutdown.
//!
//! The rules themselves live in `domain`; storage in `eventlog`. Services are thin: they parse
//! requests into domain commands, call `writepath::WritePath::execute` (through [`handler::Desk`]), and answer.

pub mod app;
pub mod auth;
pub mod config;
pub mod convert;
pub mod handler;
pub mod metrics;
pub mod server;
pub mod status;
pub mod write;

pub use app::{App, GrpcService, Listener, Prepared, RunError, ServiceDeps, StartError};
pub use auth::{Principal, Role, Scope, Tokens};
pub use config::Config;
pub use metrics::{Component, Telemetry};

/// The server's answer for one stored event; INTERNAL if its position or version is out of
/// range (never for an event the log returned, which checks them).
pub fn recorded_event(
    stored: &eventlog::StoredEvent,
    duplicate: bool,
) -> Result<api::v1::RecordedEvent, tonic::Status> {
    let (position, version) = stored.place().map_err(status::internal)?;
    Ok(api::v1::RecordedEvent {
        event_id: stored.event_id.to_string(),
        dossier_id: stored.dossier_id.clone(),
        position: position.get(),
        version: version.get(),
        event_type: stored.event_type.clone(),
        occurred_at: Some(status::to_timestamp(stored.occurred_at)),
        recorded_at: Some(status::to_timestamp(stored.recorded_at)),
        duplicate,
        event_hash: stored.event_hash.to_vec(),
    })
}
