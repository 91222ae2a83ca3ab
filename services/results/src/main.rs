//! `results --config deploy/config/local.toml`: the results gRPC service.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    svc::server::init_tracing();
    let path = svc::config::config_path_from_args();
    let config = svc::Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let app = results::build(&config)
        .await
        .context("starting the results service")?;
    app.run_until_stopped(svc::server::shutdown_on_signal())
        .await?;
    Ok(())
}
