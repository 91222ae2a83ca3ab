//! `portal-sync [serve] [--config FILE]`: keeps the national portal up to date.
//!
//! ```text
//! portal-sync [serve]            [--config FILE]   follow the stream and synchronise
//! portal-sync retry DOSSIER_ID   [--config FILE]   send a refused dossier again (after the
//!                                                  cause was fixed); exit 1 if it was not refused
//! ```

use std::process::ExitCode;

use anyhow::{Context, bail};

const USAGE: &str = "\
Usage: portal-sync [serve | retry DOSSIER_ID] [--config FILE]

  serve            follow the stream and keep the national portal up to date (the default)
  retry DOSSIER_ID send a dossier the portal refused again, once its cause is fixed
  --config FILE    configuration (default: $MOTCUA_CONFIG or deploy/config/local.toml)
";

#[derive(Debug, PartialEq)]
enum Command {
    Serve,
    Retry(String),
}

fn parse(args: &[String]) -> anyhow::Result<Command> {
    let mut command = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => {
                it.next().context("--config needs a file")?;
            }
            a if a.starts_with("--config=") => {}
            "serve" if command.is_none() => command = Some(Command::Serve),
            "retry" if command.is_none() => {
                let id = it.next().context("retry needs a dossier id")?;
                command = Some(Command::Retry(id.clone()));
            }
            other => bail!("unexpected argument {other:?}"),
        }
    }
    Ok(command.unwrap_or(Command::Serve))
}

#[tokio::main]
async fn main() -> ExitCode {
    svc::server::command_line("portal-sync", USAGE, parse, run).await
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let path = svc::config::config_path_from_args();
    let config = svc::Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    match command {
        Command::Serve => {
            let app = portal_sync::PortalSyncApp::build(&config)
                .await
                .context("starting portal-sync")?;
            app.run_until_stopped(svc::server::shutdown_on_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry(id) => {
            let log = config
                .database
                .connect_sized(1)
                .await
                .context("connecting to PostgreSQL")?;
            portal_sync::store::migrate(log.pool())
                .await
                .context("portal-sync migrations")?;
            let retried = portal_sync::store::retry_refused(log.pool(), &id, chrono::Utc::now())
                .await
                .context("retry")?;
            if retried {
                println!("{id}: refusal cleared; it is sent again at the next round");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{id}: not refused (or unknown to portal-sync)");
                Ok(ExitCode::FAILURE)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subcommands_parse() {
        assert_eq!(parse(&args(&[])).unwrap(), Command::Serve);
        assert_eq!(
            parse(&args(&["retry", "HS-1", "--config", "x.toml"])).unwrap(),
            Command::Retry("HS-1".to_owned())
        );
        assert!(parse(&args(&["retry"])).is_err());
        assert!(parse(&args(&["serve", "retry", "x"])).is_err());
    }
}
