//! The relay service: follows the event log in PostgreSQL and publishes every event to NATS
//! JetStream, exactly once in the stream and in log order (the protocol is in `crates/relay`).
//! It starts, and keeps trying, while NATS is down: the log keeps every event meanwhile.
//!
//! Besides running the relay (the default command), the binary has the two operator commands
//! that end a divergence between the stream and the log ([`Command`], README "Operating the
//! relay").

pub mod app;

use std::time::Duration;

use anyhow::{Context, bail};
use eventlog::EventLog;
use relay::{Relay, RelayConfig};
use svc::Config;

/// `relay-service --help`.
pub const USAGE: &str = "\
Usage: relay-service [run|recover-log|reset-stream] [--config FILE] [options]

  run            publish the event log to the stream (the default)
  recover-log    put back into the event log the events the stream holds beyond it (after
                 PostgreSQL was restored from an older backup), each verified against its
                 hash headers and the log's hash chain; refuses, naming the position, on any
                 mismatch. Stop the writing services first. Run it again to continue.
    --dry-run    only verify, append nothing
  reset-stream   delete the stream and create it empty: the relay republishes the whole log.
                 Events the stream holds beyond the log are lost; consumers are deleted with
                 the stream (see the README for what to run after)
    --confirm-delete STREAM   required: the stream's name
  --config FILE  configuration (default: $MOTCUA_CONFIG or deploy/config/local.toml)
";

/// What the binary is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run,
    RecoverLog { dry_run: bool },
    ResetStream { confirm: String },
}

/// Parses the arguments after the program's name (`--config` is read by
/// [`svc::config::config_path_from_args`] and skipped here).
pub fn parse(args: &[String]) -> anyhow::Result<Command> {
    let mut command: Option<&str> = None;
    let mut dry_run = false;
    let mut confirm = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => {
                it.next().context("--config needs a file")?;
            }
            a if a.starts_with("--config=") => {}
            "--dry-run" => dry_run = true,
            "--confirm-delete" => {
                confirm = Some(
                    it.next()
                        .context("--confirm-delete needs the stream's name")?,
                );
            }
            a @ ("run" | "recover-log" | "reset-stream") if command.is_none() => command = Some(a),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let command = command.unwrap_or("run");
    if dry_run && command != "recover-log" {
        bail!("--dry-run is an option of recover-log");
    }
    if confirm.is_some() && command != "reset-stream" {
        bail!("--confirm-delete is an option of reset-stream");
    }
    Ok(match command {
        "recover-log" => Command::RecoverLog { dry_run },
        "reset-stream" => Command::ResetStream {
            confirm: confirm
                .context(
                    "reset-stream deletes the stream: confirm with --confirm-delete <its name>",
                )?
                .clone(),
        },
        _ => Command::Run,
    })
}

/// The relay's settings from the shared configuration file's `[nats]` section.
pub fn relay_config(config: &Config) -> RelayConfig {
    RelayConfig {
        stream: config.nats.stream.clone(),
        subject_prefix: config.nats.subject_prefix.clone(),
        replicas: config.nats.replicas,
        duplicate_window: config.nats.duplicate_window(),
        ..RelayConfig::default()
    }
}

/// Connects (to NATS in the background: a NATS outage at start is retried, not fatal) and
/// applies the log's migrations. The caller takes [`Relay::status`] (for health and metrics)
/// and then runs [`Relay::run`] until shutdown; its error ends the service ([`app::build`]).
pub async fn build(config: &Config) -> anyhow::Result<Relay> {
    let log: EventLog = config.database.connect("relay").await?;
    log.migrate().await?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.nats.url.as_str())
        .await?;
    Ok(Relay::new(
        log,
        async_nats::jetstream::new(client),
        relay_config(config),
    ))
}

/// Runs an operator command ([`Command::RecoverLog`], [`Command::ResetStream`]) and returns its
/// report, one line per fact, for the terminal. They connect once, without retrying.
pub async fn operate(config: &Config, command: &Command) -> anyhow::Result<String> {
    let log = EventLog::connect(&config.database.url, 2)
        .await
        .context("connecting to PostgreSQL")?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.nats.url.as_str())
        .await
        .context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client);
    let cfg = relay_config(config);
    match command {
        Command::Run => bail!("run is not an operator command"),
        Command::RecoverLog { dry_run } => {
            let r = relay::recover_log(&log, &js, &cfg, *dry_run).await?;
            let mut out = format!(
                "log head: {}\nstream {} last position: {}\n",
                r.log_head_before, cfg.stream, r.stream_position
            );
            if r.verified == 0 {
                out.push_str("nothing to recover: the stream holds nothing beyond the log\n");
            } else if r.appended {
                out.push_str(&format!(
                    "recovered positions {}..={} ({} events), each verified; log head now {}\n",
                    r.log_head_before + 1,
                    r.log_head_before + r.verified,
                    r.verified,
                    r.log_head_before + r.verified
                ));
            } else {
                out.push_str(&format!(
                    "dry run: positions {}..={} ({} events) verified; nothing appended\n",
                    r.log_head_before + 1,
                    r.log_head_before + r.verified,
                    r.verified
                ));
            }
            Ok(out)
        }
        Command::ResetStream { confirm } => {
            let r = relay::reset_stream(&log, &js, &cfg, confirm).await?;
            let mut out = format!(
                "deleted stream {} ({} messages, last position {}) and created it empty\n\
                 the relay republishes the log's {} events into it\n",
                cfg.stream, r.deleted_messages, r.deleted_position, r.log_head
            );
            if r.deleted_position > r.log_head {
                out.push_str(&format!(
                    "positions {}..={}, which the stream held beyond the log, are gone\n",
                    r.log_head + 1,
                    r.deleted_position
                ));
            }
            out.push_str(
                "the stream's consumers were deleted with it: check the projection with \
                 `projection verify` once the relay has caught up\n",
            );
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&args("")).unwrap(), Command::Run);
        assert_eq!(parse(&args("--config x.toml")).unwrap(), Command::Run);
        assert_eq!(
            parse(&args("recover-log --config x.toml --dry-run")).unwrap(),
            Command::RecoverLog { dry_run: true }
        );
        assert_eq!(
            parse(&args("reset-stream --confirm-delete S")).unwrap(),
            Command::ResetStream {
                confirm: "S".into()
            }
        );
        assert!(parse(&args("reset-stream")).is_err());
        assert!(parse(&args("run --dry-run")).is_err());
        assert!(parse(&args("recover-log reset-stream")).is_err());
        assert!(parse(&args("publish")).is_err());
    }
}
