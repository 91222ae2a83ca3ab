//! `relay-service --config deploy/config/local.toml`: publishes the event log to JetStream.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    svc::server::init_tracing();
    let path = svc::config::config_path_from_args();
    let config = svc::Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let app = relay_service::app::build(&config).await?;
    app.run_until_stopped(svc::server::shutdown_on_signal())
        .await?;
    Ok(())
}
