//! `bench`: the event log's write paths against raw PostgreSQL, in one run, on one server.
//!
//! ```text
//! cargo xtask bench [--quick] [--events N] [--receives N] [--clients N]
//!                   [--batch N] [--pipeline N] [--pool N]
//! ```
//!
//! It creates a database of its own (dropped at the end), starts intake in-process on port 0
//! (the test harness) and measures, in this order, each after a `CHECKPOINT`:
//!
//! - **A** live receive: `--receives` `ReceiveDossier` calls from `--clients` tasks, each with
//!   its own gRPC channel (as many counters would), each call a new dossier;
//! - **A0** its baseline: the same rows (read back from `events`) inserted one per autocommit
//!   statement into a plain table by as many tasks;
//! - **B** bulk import: `--events` events (8 per dossier) through one `ImportHistory` stream,
//!   batches of `--batch` events, up to `--pipeline` batches in flight;
//! - **B0**/**B1** its baselines: the same rows (read back from `events`, outside the timing)
//!   inserted with one `INSERT … SELECT FROM UNNEST` per batch of the same size into a plain
//!   table with the columns of `events` (B0: no constraint or index; B1: the same primary key
//!   and unique indexes as `events`, still no trigger, sequencer or lookup).
//!
//! The Markdown report goes to stdout, progress to stderr. Rates are comparable only within
//! one run: read the ratios, not the absolute figures.

mod import;
mod live;
mod raw;
mod report;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use eventlog::EventLog;
use sqlx::PgPool;
use testkit::TestDb;
use tests::RunningIntake;

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    /// Events to import (rounded up to whole dossiers of [`import::EVENTS_PER_DOSSIER`]).
    pub events: u64,
    pub receives: usize,
    pub clients: usize,
    /// Events per import batch (and rows per baseline statement).
    pub batch: usize,
    /// Import batches in flight on the stream.
    pub pipeline: usize,
    /// Connections of the pool intake (and the baselines) use; intake's configured default.
    pub pool: u32,
    pub quick: bool,
    /// `ANALYZE` the database before each timed phase, as autovacuum would have by then.
    pub analyze: bool,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            events: 1_000_000,
            receives: 10_000,
            clients: 64,
            batch: 8_000,
            pipeline: 2,
            pool: 16,
            quick: false,
            analyze: true,
        }
    }
}

const USAGE: &str = "\
Usage: bench [--quick] [--events N] [--receives N] [--clients N] [--batch N] [--pipeline N] [--pool N]

  --events N     events to import through ImportHistory (default 1000000; 8 per dossier)
  --receives N   ReceiveDossier calls (default 10000)
  --clients N    concurrent receive clients, each with its own channel (default 64)
  --batch N      events per import batch and rows per baseline INSERT, a multiple of 8
                 within 8..=10000 (default 8000)
  --pipeline N   import batches in flight on the stream (default 2)
  --pool N       PostgreSQL connections of intake's pool and the baselines' (default 16)
  --quick        a smoke run: 100000 events, 2000 receives (explicit flags still win)
  --no-analyze   do not ANALYZE before each phase (see BENCHMARKS.md: on a server with
                 autovacuum off, the import can then fall into a quadratic plan)

Needs PostgreSQL at TEST_DATABASE_URL (default postgres://postgres:postgres@127.0.0.1:5432/postgres);
`cargo xtask bench` makes sure it runs. Prints a Markdown report on stdout.
";

fn parse_args(raw: &[String]) -> Result<Option<Args>> {
    let mut args = Args::default();
    let mut events = None;
    let mut receives = None;
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64> {
            let text = it
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            let text = text.replace(['_', ','], "");
            text.parse::<u64>()
                .with_context(|| format!("{name}: {text:?} is not a number"))
        };
        match flag.as_str() {
            "--events" => events = Some(value("--events")?),
            "--receives" => receives = Some(value("--receives")? as usize),
            "--clients" => args.clients = value("--clients")? as usize,
            "--batch" => args.batch = value("--batch")? as usize,
            "--pipeline" => args.pipeline = value("--pipeline")? as usize,
            "--pool" => args.pool = u32::try_from(value("--pool")?)?,
            "--quick" => args.quick = true,
            "--no-analyze" => args.analyze = false,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.quick {
        args.events = 100_000;
        args.receives = 2_000;
    }
    args.events = events.unwrap_or(args.events);
    args.receives = receives.unwrap_or(args.receives);
    let per = import::EVENTS_PER_DOSSIER;
    if args.batch < per || args.batch > intake::MAX_BATCH || args.batch % per != 0 {
        bail!(
            "--batch must be a multiple of {per} within {per}..={}",
            intake::MAX_BATCH
        );
    }
    if args.events == 0 || args.receives == 0 || args.clients == 0 {
        bail!("--events, --receives and --clients must be at least 1");
    }
    if args.pipeline == 0 || args.pool == 0 {
        bail!("--pipeline and --pool must be at least 1");
    }
    Ok(Some(args))
}

fn main() -> std::process::ExitCode {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&raw) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("bench: {err:#}\n\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(bench(args)) {
        Ok(report) => {
            print!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Creates the database, runs everything, drops the database (also on error).
async fn bench(args: Args) -> Result<String> {
    let db = TestDb::with_pool_size(args.pool).await;
    eprintln!(
        "bench: database {} (dropped at the end), pool of {} connections",
        db.name, args.pool
    );
    let result = scenarios(&args, &db.pool).await;
    drop(db);
    result
}

async fn scenarios(args: &Args, pool: &PgPool) -> Result<String> {
    let machine = report::Machine::probe(pool).await?;
    let log = EventLog::from_pool(pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    raw::create_tables(pool).await?;

    settle(pool, args.analyze).await?;
    eprintln!(
        "bench: A  live receive: {} ReceiveDossier calls from {} clients",
        args.receives, args.clients
    );
    let live = live::run(&intake, args.receives, args.clients).await?;
    eprintln!("bench: A  {}", live.summary());

    let rows = raw::receive_rows(pool).await?;
    if rows.len() != args.receives {
        bail!(
            "expected {} received events in the log, found {}",
            args.receives,
            rows.len()
        );
    }
    settle(pool, args.analyze).await?;
    eprintln!("bench: A0 raw single-row inserts of the same rows");
    let live_raw = raw::single_rows(pool, raw::LIVE_TABLE, rows, args.clients).await?;
    eprintln!("bench: A0 {}", live_raw.summary());

    let before = log.head().await?;
    settle(pool, args.analyze).await?;
    eprintln!(
        "bench: B  bulk import: {} events, batches of {}, {} in flight",
        args.events, args.batch, args.pipeline
    );
    let bulk = import::run(&intake, args.events, args.batch, args.pipeline).await?;
    eprintln!("bench: B  {}", bulk.timing.summary());
    let head = log.head().await?;
    if head - before != bulk.timing.count as i64 {
        bail!(
            "the import answered {} events but the head moved by {}",
            bulk.timing.count,
            head - before
        );
    }
    intake.stop().await;

    let mut baselines = Vec::new();
    for table in [raw::BULK_TABLE, raw::BULK_INDEXED_TABLE] {
        settle(pool, args.analyze).await?;
        eprintln!("bench: raw batched inserts into {table}");
        let timing = raw::batched(pool, table, before, head, args.batch).await?;
        eprintln!("bench: {table}: {}", timing.summary());
        baselines.push(timing);
    }
    let sizes = raw::payload_sizes(pool, before).await?;

    Ok(report::render(&report::Figures {
        args: args.clone(),
        machine,
        live,
        live_raw,
        bulk,
        bulk_raw: baselines.remove(0),
        bulk_raw_indexed: baselines.remove(0),
        sizes,
        load_end: report::load_average(),
    }))
}

/// Before every timed phase: `ANALYZE` (unless `--no-analyze`), then `CHECKPOINT`, so that no
/// phase pays for the checkpoint of the one before.
///
/// `ANALYZE` does what autovacuum does on a production server within a minute of the writes of
/// the phase before. Without it (autovacuum is off on some test servers), the statistics of
/// `events` stay those of an empty table, and the cached generic plan of the event-id lookup,
/// built while the table was tiny, is a sequential scan with an unhashed `= ANY($1)`; once the
/// import's 8,000-id lookups make custom plans look expensive, PostgreSQL switches to it, and
/// every batch then scans the whole log comparing each row with every id of the batch.
async fn settle(pool: &PgPool, analyze: bool) -> Result<()> {
    if analyze {
        sqlx::query("ANALYZE")
            .execute(pool)
            .await
            .context("ANALYZE")?;
    }
    sqlx::query("CHECKPOINT")
        .execute(pool)
        .await
        .context("CHECKPOINT (the bench connects as a superuser, like the tests)")?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Count and wall time of one measured phase.
#[derive(Debug, Clone)]
pub struct Timing {
    pub count: u64,
    pub seconds: f64,
    /// Per-call latencies, sorted (empty for batched phases).
    pub latencies: Vec<Duration>,
}

impl Timing {
    pub fn new(count: u64, elapsed: Duration, mut latencies: Vec<Duration>) -> Timing {
        latencies.sort_unstable();
        Timing {
            count,
            seconds: elapsed.as_secs_f64(),
            latencies,
        }
    }

    pub fn rate(&self) -> f64 {
        self.count as f64 / self.seconds
    }

    /// The `p`-th percentile latency (nearest rank), if there are latencies.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }

    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} in {:.2} s = {:.0}/s",
            self.count,
            self.seconds,
            self.rate()
        );
        if let (Some(p50), Some(p99)) = (self.percentile(50.0), self.percentile(99.0)) {
            text += &format!(
                ", p50 {:.1} ms, p99 {:.1} ms",
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3
            );
        }
        text
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>> {
        parse_args(&args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn quick_and_explicit_flags() {
        let args = parse(&["--quick"]).unwrap().unwrap();
        assert_eq!(
            (args.events, args.receives, args.clients),
            (100_000, 2_000, 64)
        );
        let args = parse(&["--receives", "500", "--quick", "--events", "1_000"])
            .unwrap()
            .unwrap();
        assert_eq!((args.events, args.receives), (1_000, 500));
        assert!(parse(&["--batch", "12"]).is_err());
        assert!(parse(&["--batch", "10008"]).is_err());
        assert!(parse(&["--nope"]).is_err());
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn percentiles() {
        let ms = |n| Duration::from_millis(n);
        let t = Timing::new(4, ms(1000), vec![ms(4), ms(1), ms(3), ms(2)]);
        assert_eq!(t.percentile(50.0), Some(ms(2)));
        assert_eq!(t.percentile(99.0), Some(ms(4)));
        assert_eq!(t.rate(), 4.0);
    }
}
