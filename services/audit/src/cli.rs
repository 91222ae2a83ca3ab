//! The `audit` command line: parsing (pure, tested) and running each subcommand.

use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgPoolOptions;

use crate::export::{self, ExportFilter};
use crate::verify::{self, Outcome};
use crate::{AuditApp, keys, proofs, store};

pub const USAGE: &str = "\
usage:
  audit serve  [--config FILE] [--origin NAME]     (also: audit --config FILE)
      checkpointer + gRPC AuditService; NAME names a newly created signing key (default motcua/dossier-log)
  audit verify [--config FILE] [--database-url URL] [--public-key KEY|FILE]
      recompute the whole log from the database; prints the first position that does not match
  audit verify --export FILE --public-key KEY|FILE
      verify an export offline (no database)
  audit export [--config FILE] [--database-url URL] [--tree-size N] [--output FILE]
               [--dossier ID] [--agency CODE] [--event-type TYPE]
               [--from-position N] [--to-position N] [--recorded-from T] [--recorded-to T]
      NDJSON with the signed checkpoint (latest, or of size N) and each event's inclusion proof
  audit prove  [--config FILE] [--database-url URL] (--event-id UUID | --position N) [--tree-size N]
      an inclusion proof as JSON
  audit public-key [--config FILE]
      the verifier key of the signing key file, to hand to auditors

KEY is the verifier key text <name>+<key id>+<base64>. T is RFC 3339 (2024-01-31T17:00:00Z).
Exit status: 0 verified, 1 verification failed, 2 usage or operational error.
The database URL is --database-url, else MOTCUA_DATABASE_URL, else the config's database.url.";

/// Where the database URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    pub url: Option<String>,
    pub config: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProveTarget {
    Position(u64),
    EventId(uuid::Uuid),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve {
        config: PathBuf,
        origin: String,
    },
    Verify {
        database: Database,
        public_key: Option<String>,
    },
    VerifyExport {
        file: PathBuf,
        public_key: String,
    },
    Export {
        database: Database,
        filter: ExportFilter,
        tree_size: Option<u64>,
        output: Option<PathBuf>,
    },
    Prove {
        database: Database,
        target: ProveTarget,
        tree_size: Option<u64>,
    },
    PublicKey {
        config: PathBuf,
    },
    Help,
}

/// A command line that cannot be run; the message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}\n\n{USAGE}")]
pub struct UsageError(String);

fn usage(message: impl Into<String>) -> UsageError {
    UsageError(message.into())
}

/// The configuration file when `--config` is not given: `MOTCUA_CONFIG`, else
/// `deploy/config/local.toml` (as every service).
pub fn default_config() -> PathBuf {
    std::env::var_os("MOTCUA_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("deploy/config/local.toml"))
}

/// Parses the arguments after the program name.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    default_config: PathBuf,
) -> Result<Command, UsageError> {
    let mut args = args.into_iter().peekable();
    // `audit --config FILE` is `audit serve --config FILE`: how `cargo xtask run`, the systemd
    // units and operators start every service.
    let sub = match args.peek() {
        Some(first) if first.starts_with("--config") => "serve".to_owned(),
        _ => match args.next() {
            Some(sub) => sub,
            None => return Err(usage("a subcommand is required")),
        },
    };
    if matches!(sub.as_str(), "help" | "--help" | "-h") {
        return Ok(Command::Help);
    }
    let mut options: Vec<(String, String)> = Vec::new();
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--") else {
            return Err(usage(format!("unexpected argument {arg:?}")));
        };
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None => {
                let value = args
                    .next()
                    .ok_or_else(|| usage(format!("--{name} needs a value")))?;
                (name.to_owned(), value)
            }
        };
        if options.iter().any(|(n, _)| *n == name) {
            return Err(usage(format!("--{name} is given twice")));
        }
        options.push((name, value));
    }
    let mut take = |name: &str| -> Option<String> {
        let i = options.iter().position(|(n, _)| n == name)?;
        Some(options.remove(i).1)
    };
    let config = take("config").map_or(default_config, PathBuf::from);
    // Positions and tree sizes: 0 to `Position::MAX` (a larger value would not fit the
    // database's BIGINT and must not become another number on the way).
    let number = |name: &str, v: Option<String>| -> Result<Option<u64>, UsageError> {
        v.map(|v| {
            v.parse::<eventlog::Position>()
                .map(eventlog::Position::get)
                .map_err(|e| {
                    usage(format!(
                        "--{name} must be an integer from 0 to {}: {e}",
                        eventlog::Position::MAX
                    ))
                })
        })
        .transpose()
    };
    let time = |name: &str, v: Option<String>| -> Result<Option<DateTime<Utc>>, UsageError> {
        v.map(|v| {
            let t = DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| usage(format!("--{name} must be an RFC 3339 time")))?;
            let years = svc::status::SUPPORTED_YEARS;
            if !years.contains(&chrono::Datelike::year(&t)) {
                return Err(usage(format!(
                    "--{name} must lie in the years {} to {} (UTC)",
                    years.start(),
                    years.end()
                )));
            }
            Ok(t)
        })
        .transpose()
    };
    let command = match sub.as_str() {
        "serve" => Command::Serve {
            config,
            origin: take("origin").unwrap_or_else(|| keys::DEFAULT_ORIGIN.to_owned()),
        },
        "verify" => match take("export") {
            Some(file) => Command::VerifyExport {
                file: PathBuf::from(file),
                public_key: take("public-key").ok_or_else(|| {
                    usage("verifying an export needs --public-key (the log's verifier key)")
                })?,
            },
            None => Command::Verify {
                database: Database {
                    url: take("database-url"),
                    config,
                },
                public_key: take("public-key"),
            },
        },
        "export" => {
            let filter = ExportFilter {
                dossier: take("dossier"),
                agency: take("agency"),
                event_type: take("event-type")
                    .map(|t| {
                        t.parse::<domain::EventType>()
                            .map(|t| t.as_str().to_owned())
                            .map_err(|e| usage(format!("--event-type: {e}")))
                    })
                    .transpose()?,
                from_position: number("from-position", take("from-position"))?,
                to_position: number("to-position", take("to-position"))?,
                recorded_from: time("recorded-from", take("recorded-from"))?,
                recorded_to: time("recorded-to", take("recorded-to"))?,
            };
            Command::Export {
                database: Database {
                    url: take("database-url"),
                    config,
                },
                filter,
                tree_size: number("tree-size", take("tree-size"))?,
                output: take("output").map(PathBuf::from),
            }
        }
        "prove" => {
            let target = match (take("event-id"), number("position", take("position"))?) {
                (Some(id), None) => ProveTarget::EventId(
                    uuid::Uuid::parse_str(&id).map_err(|_| usage("--event-id must be a UUID"))?,
                ),
                (None, Some(0)) => return Err(usage("--position starts at 1")),
                (None, Some(p)) => ProveTarget::Position(p),
                _ => return Err(usage("give exactly one of --event-id and --position")),
            };
            Command::Prove {
                database: Database {
                    url: take("database-url"),
                    config,
                },
                target,
                tree_size: number("tree-size", take("tree-size"))?,
            }
        }
        "public-key" => Command::PublicKey { config },
        other => return Err(usage(format!("unknown subcommand {other:?}"))),
    };
    if let Some((name, _)) = options.first() {
        return Err(usage(format!("--{name} is not an option of {sub}")));
    }
    Ok(command)
}

async fn connect(database: &Database) -> anyhow::Result<sqlx::PgPool> {
    let url = match (&database.url, std::env::var("MOTCUA_DATABASE_URL")) {
        (Some(url), _) => url.clone(),
        (None, Ok(url)) => url,
        (None, Err(_)) => {
            svc::Config::load(&database.config)
                .with_context(|| format!("loading {}", database.config.display()))?
                .database
                .url
        }
    };
    PgPoolOptions::new()
        .max_connections(3)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .context("connecting to PostgreSQL")
}

/// Runs a parsed command. Verification failures are reported on stdout and give exit status 1;
/// operational errors are returned (the binary prints them and exits with 2).
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config, origin } => {
            let config = svc::Config::load(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            let app = AuditApp::build(&config, &origin)
                .await
                .context("starting the audit service")?;
            app.run_until_stopped(svc::server::shutdown_on_signal())
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::PublicKey { config } => {
            let config = svc::Config::load(&config)
                .with_context(|| format!("loading {}", config.display()))?;
            let section: crate::AuditConfig = config.section()?;
            let text = std::fs::read_to_string(&section.signing_key_file)
                .with_context(|| format!("reading {}", section.signing_key_file.display()))?;
            let signer = merkle::Signer::parse(&text).context("reading the signing key")?;
            println!("{}", signer.verifier().to_text());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            database,
            public_key,
        } => {
            let key = public_key.as_deref().map(keys::read_verifier).transpose()?;
            let pool = connect(&database).await?;
            match verify::verify_database(&pool, key.as_ref()).await? {
                Outcome::Intact(report) => {
                    println!(
                        "OK: {} events, hash chain intact, {} checkpoints reproduced{}",
                        report.events,
                        report.checkpoints,
                        if report.signatures_checked {
                            " and their signatures verified"
                        } else {
                            " (signatures NOT checked: give --public-key)"
                        }
                    );
                    if let Some((size, root)) = report.latest {
                        println!("latest checkpoint: size {size} root {}", hex::encode(root));
                    }
                    println!("root of the whole log: {}", hex::encode(report.root));
                    Ok(ExitCode::SUCCESS)
                }
                Outcome::Tampered(finding) => {
                    println!("FAILED at {finding}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::VerifyExport { file, public_key } => {
            let key = keys::read_verifier(&public_key)?;
            let input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            match export::verify_export(BufReader::new(input), &key)? {
                Ok(report) => {
                    println!(
                        "OK: {} events proven included in the checkpoint of {} (size {}, root {}, signed {})",
                        report.events,
                        report.origin,
                        report.tree_size,
                        hex::encode(report.root),
                        merkle::checkpoint::format_timestamp(&report.signed_at)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(finding) => {
                    println!("FAILED at {finding}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Export {
            database,
            filter,
            tree_size,
            output,
        } => {
            let pool = connect(&database).await?;
            let exported = match output {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    let mut out = BufWriter::new(file);
                    let exported = export::export(&pool, &filter, tree_size, &mut out).await?;
                    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
                    exported
                }
                None => {
                    let mut out = BufWriter::new(std::io::stdout().lock());
                    let exported = export::export(&pool, &filter, tree_size, &mut out).await?;
                    out.flush()?;
                    exported
                }
            };
            eprintln!(
                "exported {} events proven against the checkpoint of size {}",
                exported.events, exported.tree_size
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Prove {
            database,
            target,
            tree_size,
        } => {
            let pool = connect(&database).await?;
            let mut conn = pool.acquire().await?;
            let position = match target {
                ProveTarget::Position(p) => p,
                ProveTarget::EventId(id) => store::position_of(&mut conn, id)
                    .await?
                    .with_context(|| format!("no event {id}"))?,
            };
            let checkpoint = match tree_size {
                Some(size) => store::checkpoint_at(&mut conn, size).await?,
                None => store::latest_checkpoint(&mut conn).await?,
            }
            .context("no such checkpoint")?;
            let proof = proofs::inclusion(&mut conn, position, checkpoint.tree_size).await?;
            let json = serde_json::json!({
                "position": position,
                "leaf_index": position - 1,
                "leaf_hash": hex::encode(proof.leaf_hash),
                "tree_size": checkpoint.tree_size,
                "root_hash": hex::encode(checkpoint.root),
                "proof": proof.hashes.iter().map(hex::encode).collect::<Vec<_>>(),
                "note": checkpoint.note,
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(
            args.iter().map(|s| (*s).to_owned()),
            PathBuf::from("default.toml"),
        )
    }

    #[test]
    fn subcommands_and_options() {
        assert_eq!(
            p(&["serve"]).unwrap(),
            Command::Serve {
                config: "default.toml".into(),
                origin: keys::DEFAULT_ORIGIN.into()
            }
        );
        // How the supervisor and the systemd units start every service.
        for args in [&["--config", "c.toml"][..], &["--config=c.toml"][..]] {
            assert_eq!(
                p(args).unwrap(),
                Command::Serve {
                    config: "c.toml".into(),
                    origin: keys::DEFAULT_ORIGIN.into()
                }
            );
        }
        assert_eq!(
            p(&[
                "verify",
                "--database-url=postgres://x/y",
                "--public-key",
                "k"
            ])
            .unwrap(),
            Command::Verify {
                database: Database {
                    url: Some("postgres://x/y".into()),
                    config: "default.toml".into()
                },
                public_key: Some("k".into())
            }
        );
        assert_eq!(
            p(&["verify", "--export", "f.ndjson", "--public-key", "k"]).unwrap(),
            Command::VerifyExport {
                file: "f.ndjson".into(),
                public_key: "k".into()
            }
        );
        let Command::Export {
            filter, tree_size, ..
        } = p(&[
            "export",
            "--dossier",
            "D1",
            "--from-position",
            "5",
            "--recorded-to",
            "2024-01-31T17:00:00+07:00",
            "--tree-size",
            "9",
        ])
        .unwrap()
        else {
            panic!("not an export");
        };
        assert_eq!(filter.dossier.as_deref(), Some("D1"));
        assert_eq!(filter.from_position, Some(5));
        assert_eq!(
            filter.recorded_to.unwrap().to_rfc3339(),
            "2024-01-31T10:00:00+00:00"
        );
        assert_eq!(tree_size, Some(9));
        assert!(matches!(
            p(&["prove", "--position", "3"]).unwrap(),
            Command::Prove {
                target: ProveTarget::Position(3),
                ..
            }
        ));
    }

    #[test]
    fn mistakes_are_named() {
        for (args, says) in [
            (&["frobnicate"][..], "unknown subcommand"),
            (&["verify", "--export", "f"][..], "--public-key"),
            (
                &["verify", "--dossier", "x"][..],
                "--dossier is not an option of verify",
            ),
            (&["prove"][..], "exactly one"),
            (&["prove", "--position", "0"][..], "starts at 1"),
            (
                &["prove", "--position", "1", "--event-id", "x"][..],
                "exactly one",
            ),
            (&["prove", "--event-id", "x"][..], "UUID"),
            (&["export", "--to-position", "-1"][..], "--to-position"),
            // Once bound as -1: an empty export that looked complete.
            (
                &["export", "--to-position", "18446744073709551615"][..],
                "--to-position must be an integer from 0 to 9223372036854775807",
            ),
            // Once bound as i64::MIN: an export of everything.
            (
                &["export", "--from-position", "9223372036854775808"][..],
                "--from-position",
            ),
            (
                &["prove", "--tree-size", "+3", "--position", "1"][..],
                "--tree-size",
            ),
            // Once an empty export that looked complete.
            (
                &["export", "--event-type", "recieved"][..],
                "--event-type: unknown event type \"recieved\"",
            ),
            (&["export", "--recorded-from", "yesterday"][..], "RFC 3339"),
            (
                &["export", "--recorded-to", "0001-01-01T00:00:00Z"][..],
                "1990 to 2100",
            ),
            (
                &["export", "--recorded-from", "9999-12-31T23:59:59Z"][..],
                "1990 to 2100",
            ),
            (&["export", "--agency"][..], "needs a value"),
            (&["export", "--agency", "a", "--agency", "b"][..], "twice"),
            (&["serve", "stray"][..], "unexpected argument"),
            (&[][..], "subcommand is required"),
        ] {
            let err = p(args).unwrap_err().to_string();
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }
}
