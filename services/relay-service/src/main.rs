//! `relay-service [run|recover-log|reset-stream] [--config FILE]`: publishes the event log to
//! JetStream, or runs an operator command (see `relay_service::USAGE`).

use std::process::ExitCode;

use anyhow::Context;
use relay_service::Command;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", relay_service::USAGE);
        return ExitCode::SUCCESS;
    }
    let command = match relay_service::parse(&args) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("relay-service: {e:#}\n\n{}", relay_service::USAGE);
            return ExitCode::from(2);
        }
    };
    svc::server::init_tracing();
    match run(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("relay-service: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let path = svc::config::config_path_from_args();
    let config = svc::Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    match command {
        Command::Run => {
            let app = relay_service::app::build(&config).await?;
            app.run_until_stopped(svc::server::shutdown_on_signal())
                .await?;
            Ok(())
        }
        command => {
            print!("{}", relay_service::operate(&config, &command).await?);
            Ok(())
        }
    }
}
