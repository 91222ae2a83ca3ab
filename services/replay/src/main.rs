//! `replay --config deploy/config/local.toml`: the auditor's replay service (read-only).

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    svc::server::init_tracing();
    let path = svc::config::config_path_from_args();
    let config = svc::Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let app = replay::ReplayApp::build(&config)
        .await
        .context("starting the replay service")?;
    app.run_until_stopped(svc::server::shutdown_on_signal())
        .await?;
    Ok(())
}
