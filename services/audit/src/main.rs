//! `audit serve | verify | export | prove | public-key` (see `audit help`).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    svc::server::init_tracing();
    let command = match audit::cli::parse(std::env::args().skip(1), audit::cli::default_config()) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match audit::cli::run(command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
