//! `projection [--config deploy/config/local.toml]`: the statistics projection and its queries.
//!
//! ```text
//! projection [serve]  [--config FILE]                     consume and answer queries
//! projection rebuild  [--config FILE] [--memory-mb N] [--spill-dir DIR]
//!                                                         rebuild the read models from the log
//! projection verify   [--config FILE] [--allow-lag] [--max-cells N]
//!                                                         recompute every figure from the log
//!                                                         and list every difference
//! projection agencies publish FILE --by NAME [--config FILE]
//!                                                         record the agency-structure entries
//!                                                         of FILE not yet recorded, as NAME
//! projection agencies show [--config FILE]                list the recorded entries
//! ```
//!
//! `verify` exits with 0 when the read models are exactly the log's, 1 when it found a
//! difference (or, without `--allow-lag`, a dossier not yet applied), 2 on a usage error.

use std::process::ExitCode;

use anyhow::{Context, bail};
use eventlog::EventLog;

const USAGE: &str = "\
Usage: projection [serve|rebuild|verify] [--config FILE] [--memory-mb N] [--spill-dir DIR]
                  [--allow-lag] [--max-cells N]

  serve      consume the stream and answer queries (the default)
  rebuild    rebuild the read models from the event log in PostgreSQL; the service keeps
             answering from the old ones until the new ones are complete
  verify     recompute every figure from the log and list each difference from the read
             models; exit 1 if there is one
  --config FILE   configuration (default: $MOTCUA_CONFIG or deploy/config/local.toml)
  --memory-mb N   rebuild: memory for summing the figures (default 1024); past it the sums
                  are spilled as sorted runs to local files and merged (slower, same result)
  --spill-dir DIR rebuild: where the spilled runs go (default: the system's temporary
                  directory, e.g. /tmp), in a directory of their own removed at the end; they
                  take about 25 bytes per spilled cell
  --allow-lag     verify: dossiers the consumer has not yet applied are not a failure
  --max-cells N   verify: list at most N differing cells (default 1000; all are counted)

Usage: projection agencies publish FILE --by NAME [--config FILE]
       projection agencies show [--config FILE]

  agencies publish  record the agency-structure entries of FILE (TOML, as
                    deploy/config/agency-structure.toml) not yet recorded, with NAME and the
                    time; all or nothing: refused when an entry contradicts a recorded one or
                    the structure is invalid (a cycle, an undeclared successor). The running
                    service uses them from its next query. Administrators may do the same
                    over gRPC: dossier.v1.AgencyStructureService/PublishAgencyStructure.
  agencies show     list the recorded entries with who recorded them and when
";

#[derive(Debug, PartialEq)]
enum Command {
    Serve,
    PublishAgencies {
        file: String,
        by: String,
    },
    ShowAgencies,
    Rebuild {
        memory_mb: usize,
        spill_dir: Option<std::path::PathBuf>,
    },
    Verify {
        allow_lag: bool,
        max_cells: usize,
    },
}

fn parse(args: &[String]) -> anyhow::Result<Command> {
    if args.first().map(String::as_str) == Some("agencies") {
        return parse_agencies(&args[1..]);
    }
    let mut command = None;
    let mut allow_lag = false;
    let mut max_cells = 1000;
    let mut memory_mb = projection::rebuild::DEFAULT_MEMORY_BYTES >> 20;
    let mut spill_dir = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => {
                it.next().context("--config needs a file")?;
            }
            a if a.starts_with("--config=") => {}
            "--allow-lag" => allow_lag = true,
            "--memory-mb" => {
                let n = it.next().context("--memory-mb needs a number")?;
                memory_mb = n.parse().with_context(|| format!("--memory-mb {n:?}"))?;
                if memory_mb == 0 {
                    bail!("--memory-mb must be at least 1");
                }
            }
            "--spill-dir" => {
                let dir = it.next().context("--spill-dir needs a directory")?;
                spill_dir = Some(std::path::PathBuf::from(dir));
            }
            "--max-cells" => {
                let n = it.next().context("--max-cells needs a number")?;
                max_cells = n.parse().with_context(|| format!("--max-cells {n:?}"))?;
            }
            "serve" | "rebuild" | "verify" if command.is_none() => command = Some(arg.clone()),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    Ok(match command.as_deref() {
        None | Some("serve") => Command::Serve,
        Some("rebuild") => Command::Rebuild {
            memory_mb,
            spill_dir,
        },
        _ => Command::Verify {
            allow_lag,
            max_cells,
        },
    })
}

fn parse_agencies(args: &[String]) -> anyhow::Result<Command> {
    let mut action = None;
    let mut file = None;
    let mut by = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => {
                it.next().context("--config needs a file")?;
            }
            a if a.starts_with("--config=") => {}
            "--by" => by = Some(it.next().context("--by needs a name")?.clone()),
            "publish" | "show" if action.is_none() => action = Some(arg.clone()),
            other if action.as_deref() == Some("publish") && file.is_none() => {
                file = Some(other.to_owned());
            }
            other => bail!("unexpected argument {other:?}"),
        }
    }
    match action.as_deref() {
        Some("publish") => {
            let file = file.context("agencies publish needs a FILE")?;
            let by = by.context("agencies publish needs --by NAME (who publishes)")?;
            if by.trim().is_empty() {
                bail!("--by needs a name");
            }
            Ok(Command::PublishAgencies { file, by })
        }
        Some("show") if by.is_none() => Ok(Command::ShowAgencies),
        _ => bail!("agencies: publish FILE --by NAME, or show"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    svc::server::command_line("projection", USAGE, parse, run).await
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let path = svc::config::config_path_from_args();
    let config = svc::Config::load(&path).with_context(|| format!("loading {}", path.display()))?;
    match command {
        Command::Serve => {
            let app = projection::ProjectionApp::build(&config)
                .await
                .context("starting the projection service")?;
            app.run_until_stopped(svc::server::shutdown_on_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild {
            memory_mb,
            spill_dir,
        } => {
            let log = connect(&config).await?;
            let options = projection::rebuild::RebuildOptions {
                memory_bytes: memory_mb.saturating_mul(1 << 20),
                spill_dir,
            };
            let report = projection::rebuild::rebuild_with(log.pool(), options, |p| {
                eprintln!("rebuild: {p}");
            })
            .await
            .context("rebuild")?;
            eprintln!(
                "rebuild: done: {} events of {} dossiers up to position {} in {:.1} s, {} cells \
                 ({} runs spilled); swapped in; {} dossiers with later events applied again",
                report.events,
                report.dossiers,
                report.position,
                report.fill.as_secs_f64(),
                report.cells,
                report.spilled_runs,
                report.reapplied
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::PublishAgencies { file, by } => {
            let log = connect(&config).await?;
            let structure = projection::structure::read_file(std::path::Path::new(&file))?;
            let published = projection::structure::publish(log.pool(), &structure, &by).await?;
            eprintln!(
                "agencies: {} entries added as {by:?}, {} already recorded",
                published.added, published.unchanged
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::ShowAgencies => {
            let log = connect(&config).await?;
            for (seq, entry, by, at) in projection::structure::recorded(log.pool()).await? {
                println!("{seq}\t{at}\t{by}\t{entry}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            allow_lag,
            max_cells,
        } => {
            let log = connect(&config).await?;
            let report = projection::verify::verify(log.pool(), max_cells)
                .await
                .context("verify")?;
            println!("{report}");
            let ok = report.passes(allow_lag);
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// The database, migrated (a rebuild or verify may run before the service ever did).
async fn connect(config: &svc::Config) -> anyhow::Result<EventLog> {
    // Rebuild and verify each hold two connections at once; counted in the connection budget.
    let log = config
        .database
        .connect_sized(svc::config::PROJECTION_TOOL_CONNECTIONS)
        .await
        .context("connecting to PostgreSQL")?;
    log.migrate().await.context("log migrations")?;
    projection::store::migrate(log.pool())
        .await
        .context("projection migrations")?;
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn subcommands_and_flags_parse() {
        assert_eq!(parse(&args(&[])).unwrap(), Command::Serve);
        assert_eq!(
            parse(&args(&["--config", "x.toml"])).unwrap(),
            Command::Serve
        );
        assert_eq!(
            parse(&args(&["rebuild", "--config=x.toml"])).unwrap(),
            Command::Rebuild {
                memory_mb: 1024,
                spill_dir: None
            }
        );
        assert_eq!(
            parse(&args(&["rebuild", "--memory-mb", "64"])).unwrap(),
            Command::Rebuild {
                memory_mb: 64,
                spill_dir: None
            }
        );
        assert!(parse(&args(&["rebuild", "--memory-mb", "0"])).is_err());
        assert_eq!(
            parse(&args(&["rebuild", "--spill-dir", "/var/tmp"])).unwrap(),
            Command::Rebuild {
                memory_mb: 1024,
                spill_dir: Some("/var/tmp".into())
            }
        );
        assert!(parse(&args(&["rebuild", "--spill-dir"])).is_err());
        assert_eq!(
            parse(&args(&["verify", "--allow-lag", "--max-cells", "5"])).unwrap(),
            Command::Verify {
                allow_lag: true,
                max_cells: 5
            }
        );
        assert!(parse(&args(&["verify", "rebuild"])).is_err());
        assert_eq!(
            parse(&args(&[
                "agencies",
                "publish",
                "a.toml",
                "--by",
                "Nguyễn Văn A"
            ]))
            .unwrap(),
            Command::PublishAgencies {
                file: "a.toml".to_owned(),
                by: "Nguyễn Văn A".to_owned()
            }
        );
        assert!(parse(&args(&["agencies", "publish", "a.toml"])).is_err());
        assert!(parse(&args(&["agencies", "publish", "--by", "x"])).is_err());
        assert_eq!(
            parse(&args(&["agencies", "show", "--config", "x.toml"])).unwrap(),
            Command::ShowAgencies
        );
        assert!(parse(&args(&["--max-cells", "x"])).is_err());
    }
}
