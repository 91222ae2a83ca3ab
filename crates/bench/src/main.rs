//! `bench`: each benchmark against a baseline measured in the same run, on the same server.
//!
//! ```text
//! cargo xtask bench [-- write] [--quick] [--events N] [--receives N] [--clients N]
//!                   [--batch N] [--pipeline N] [--pool N]
//! cargo xtask bench -- projection|lag|query|rebuild [--quick] [--dossiers N] [--runs N]
//!                   [--baseline-secs N] [--rebuild-events N] [--rebuild-memory-mb N]
//!                   [--lag-secs N] [--lag-rate N]
//!                   [--writers N] [--consumers N,M] [--rollups 0,3,5] [--no-jit] [--keep]
//! cargo xtask bench -- e2e [--quick] [--counters N] [--secs N] [--sample N]
//! cargo xtask bench -- asof [--quick] [--asof-events N] [--asof-window N] [--asof-runs N]
//!                   [--asof-scans N]
//! cargo xtask bench -- migration [--quick] [--dossiers N]
//! ```
//!
//! `write` (the default) measures the event log's write paths:
//!
//! It creates a database of its own (dropped at the end), starts intake in-process on port 0
//! (the test harness) and measures, in this order, each after a `CHECKPOINT`:
//!
//! - **A1** a lone call: `--lone` `ReceiveDossier` calls one after another from one client,
//!   nothing else running (the latency of an uncontended call);
//! - **A** live receive: `--receives` `ReceiveDossier` calls from `--clients` tasks, each with
//!   its own gRPC channel (as many counters would), each call a new dossier;
//! - **A0** its baseline: the same rows (read back from `events`) inserted one per autocommit
//!   statement into a plain table by as many tasks; **A1₀** likewise for A1's rows, one task;
//! - **B** bulk import: `--events` events (8 per dossier) through one `ImportHistory` stream,
//!   batches of `--batch` events, up to `--pipeline` batches in flight;
//! - **B0**/**B1** its baselines: the same rows (read back from `events`, outside the timing)
//!   inserted with one `INSERT … SELECT FROM UNNEST` per batch of the same size into a plain
//!   table with the columns of `events` (B0: no constraint or index; B1: the same primary key
//!   and unique indexes as `events`, still no trigger, sequencer or lookup); **B1b**: as B1, but
//!   each batch written by one binary `COPY … FROM STDIN (FORMAT binary)`, the import's own
//!   insert; **B1c**: as B1, by one text-format `COPY`.
//!
//! `projection` runs the projection's three scenarios, each in a fresh database (`lag`, `query`
//! and `rebuild` run one alone): **L** the lag from append to visible figure under sustained load
//! ([`lag`]), **Q** query latency at `--dossiers` against a naive `GROUP BY` ([`query`]), **R**
//! the rebuild rate against a raw sequential read ([`rebuild`]).
//!
//! `e2e` ([`e2e`]) runs **E**: `--counters` counters drive whole dossier lives through the real
//! services for `--secs` seconds with the relay and the projection running; the sustained
//! events/s against the same rows inserted raw (E0), the append → visible-figure lag against raw
//! JetStream (L0), then checks the run was exact (`projection verify`, `GetIndicators`).
//!
//! `asof` ([`asof`]) runs **C**, **AS** and **AS0**: the "as recorded at T" checkpointer over a
//! log of `--asof-events` events, a province-year as of T from the checkpoints, and the scan of
//! the log prefix it replaces (the baseline), with the checkpoints' size.
//!
//! `migration` ([`migration`]) runs **M**: migration 30010 over an old long `stats_rollup` of
//! `--dossiers` dossiers, against the same rows rewritten raw (M0), every figure checked.
//!
//! The Markdown report goes to stdout, progress to stderr. Rates are comparable only within
//! one run: read the ratios, not the absolute figures.

mod asof;
mod e2e;
mod import;
mod lag;
mod live;
mod migration;
mod projection_report;
mod query;
mod raw;
mod rebuild;
mod report;
mod synth;
mod visible;

use std::time::Duration;

use anyhow::{Context, Result, bail};
use eventlog::EventLog;
use sqlx::PgPool;
use testkit::TestDb;
use tests::RunningIntake;

/// Which benchmarks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The event log's write paths (A, B and their baselines).
    Write,
    /// The projection's scenarios; each flag selects one.
    Projection {
        lag: bool,
        query: bool,
        rebuild: bool,
    },
    /// End to end (E and its baselines).
    E2e,
    /// "As recorded at T": the checkpointer, the fast path and the scan (C, AS, AS0).
    Asof,
    /// Migration 30010 on an existing table (M, M0).
    Migration,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    pub mode: Mode,
    /// Events to import (rounded up to whole dossiers of [`import::EVENTS_PER_DOSSIER`]).
    pub events: u64,
    pub receives: usize,
    pub clients: usize,
    /// A1: sequential calls from one client.
    pub lone: usize,
    /// Events per import batch (and rows per baseline statement).
    pub batch: usize,
    /// Import batches in flight on the stream.
    pub pipeline: usize,
    /// Connections of the pool intake (and the baselines) use; intake's configured default.
    pub pool: u32,
    pub quick: bool,
    /// `ANALYZE` the database before each timed phase, as autovacuum would have by then.
    pub analyze: bool,
    /// Q: dossiers synthesized into the aggregates and the per-dossier table.
    pub dossiers: u64,
    /// Q: runs of each question.
    pub runs: usize,
    /// Q: time the baseline may spend on one question (its runs stop there).
    pub baseline_secs: u64,
    /// R: events in the log to rebuild from.
    pub rebuild_events: u64,
    /// R: the rebuild's memory budget (`projection rebuild --memory-mb`).
    pub rebuild_memory_mb: u64,
    /// L: seconds of sustained appends, their total rate, writers, and the numbers of
    /// projection consumers to run it with (one run each).
    pub lag_secs: u64,
    pub lag_rate: u64,
    pub writers: usize,
    pub consumers: Vec<usize>,
    /// Q: the rollups loaded into `stats_cells` (default: every one apply maintains).
    pub rollups: Vec<u8>,
    /// Q: `jit = off` for the database (PostgreSQL's default is on).
    pub no_jit: bool,
    /// Q: leave the database in place (to `EXPLAIN` in `psql`).
    pub keep: bool,
    /// E: concurrent counters, seconds of load, one call in `sample` awaited in the projection.
    pub counters: usize,
    pub secs: u64,
    pub sample: u64,
    /// AS: events in the log, events per checkpoint window, rounds of the instants, instants
    /// the scan baseline is measured at.
    pub asof_events: u64,
    pub asof_window: u32,
    pub asof_runs: usize,
    pub asof_scans: usize,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            mode: Mode::Write,
            events: 1_000_000,
            receives: 10_000,
            clients: 64,
            lone: 500,
            batch: 8_000,
            pipeline: 2,
            pool: 16,
            quick: false,
            analyze: true,
            dossiers: 1_000_000,
            runs: 200,
            baseline_secs: 60,
            rebuild_events: 1_000_000,
            rebuild_memory_mb: (projection::rebuild::DEFAULT_MEMORY_BYTES >> 20) as u64,
            lag_secs: 30,
            lag_rate: 100,
            writers: 8,
            consumers: vec![1, 2],
            rollups: projection::rollup::ROLLUPS.to_vec(),
            no_jit: false,
            keep: false,
            counters: 64,
            secs: 60,
            sample: 4,
            asof_events: 1_000_000,
            asof_window: 1024,
            asof_runs: 10,
            asof_scans: 4,
        }
    }
}

const USAGE: &str = "\
Usage: bench [write] [--quick] [--events N] [--receives N] [--clients N] [--lone N] [--batch N]
                     [--pipeline N] [--pool N]
       bench projection|lag|query|rebuild [--quick] [--dossiers N] [--runs N] [--baseline-secs N]
                        [--rebuild-events N] [--rebuild-memory-mb N] [--lag-secs N] [--lag-rate N] [--writers N] [--consumers N,M]
       bench e2e [--quick] [--counters N] [--secs N] [--sample N] [--baseline-secs N]
       bench asof [--quick] [--asof-events N] [--asof-window N] [--asof-runs N] [--asof-scans N]
       bench migration [--quick] [--dossiers N]

write (default): the event log's write paths against raw inserts

  --events N     events to import through ImportHistory (default 1000000; 8 per dossier)
  --receives N   ReceiveDossier calls (default 10000)
  --clients N    concurrent receive clients, each with its own channel (default 64)
  --lone N       sequential ReceiveDossier calls from one client, for a lone call's latency
                 (default 500)
  --batch N      events per import batch and rows per baseline INSERT, a multiple of 8
                 within 8..=10000 (default 8000)
  --pipeline N   import batches in flight on the stream (default 2)
  --pool N       PostgreSQL connections of intake's pool and the baselines' (default 16)
  --quick        a smoke run: 100000 events, 2000 receives, 200 lone calls (explicit flags win)
  --no-analyze   do not ANALYZE before each phase (see BENCHMARKS.md: on a server with
                 autovacuum off, the import can then fall into a quadratic plan)

projection: lag, query and rebuild, each in a fresh database (or one of them alone)
  --dossiers N        query: dossiers in the aggregates and the per-dossier table (default 1000000)
  --runs N            query: runs of each question (default 200)
  --baseline-secs N   query: time the naive GROUP BY may take per question (default 60)
  --rebuild-events N  rebuild: events in the log (default 1000000)
  --rebuild-memory-mb N  rebuild: its memory budget, as `projection rebuild --memory-mb` (default
                      1024; below what the cells need, they spill to runs merged from local files)
  --lag-secs N        lag: seconds of sustained appends (default 30)
  --lag-rate N        lag: appends per second, all writers together (default 100)
  --writers N         lag: concurrent writers (default 8)
  --consumers N,M     lag: projection consumer instances, one run per number (default 1,2)
  --rollups 0,3,5     query: load only these rollups of stats_cells (default: all six that apply
                      maintains; the questions read 0, 3 and 5). For sizes whose full table does
                      not fit the disk; the report says which were loaded.
  --no-jit            query: ALTER DATABASE … SET jit = off before connecting
  --keep              query: leave the database in place (its name is printed), to EXPLAIN
  --quick             20000 dossiers, 50 runs, 10 s of baseline, 100000 events, 5 s of lag, 1 consumer

e2e: counters drive whole dossier lives through intake, processing, payment and results, with
the relay and the projection running; then checks the run was exact
  --counters N        concurrent counters, each with its own channel to each service (default 64)
  --secs N            seconds of load (default 60)
  --sample N          await one call in N in the projection for the lag (default 4)
  --baseline-secs N   seconds of the raw JetStream baseline (default: as --secs, at most 20)
  --quick             16 counters for 10 s, 5 s of baseline

asof: figures \"as recorded at T\" from checkpoints against the scan of the log prefix
  --asof-events N     events in the log (default 1000000)
  --asof-window N     events per checkpoint window (default 1024, as [projection.checkpoints])
  --asof-runs N       rounds of the 20 instants per question (default 10)
  --asof-scans N      instants the scan baseline is measured at, once each (default 4)
  --quick             100000 events, 5 rounds, 2 scans

migration: migration 30010 (long stats_rollup -> stats_slice + stats_cells) on an old table of
synthetic dossiers, against rewriting that table raw; every figure checked
  --dossiers N        dossiers in the old table (default 1000000)
  --quick             20000 dossiers

Needs PostgreSQL at TEST_DATABASE_URL (default postgres://postgres:postgres@127.0.0.1:5432/postgres);
`cargo xtask bench` makes sure it runs. Prints a Markdown report on stdout.
";

fn parse_args(raw: &[String]) -> Result<Option<Args>> {
    let mut args = Args::default();
    let mut events = None;
    let mut receives = None;
    let mut dossiers = None;
    let mut runs = None;
    let mut baseline_secs = None;
    let mut rebuild_events = None;
    let mut lag_secs = None;
    let mut consumers = None;
    let mut lone = None;
    let mut counters = None;
    let mut secs = None;
    let mut asof_events = None;
    let mut asof_runs = None;
    let mut asof_scans = None;
    let mut it = raw.iter().peekable();
    if let Some(first) = it.peek() {
        let all = |lag, query, rebuild| Mode::Projection {
            lag,
            query,
            rebuild,
        };
        let mode = match first.as_str() {
            "write" => Some(Mode::Write),
            "projection" => Some(all(true, true, true)),
            "lag" => Some(all(true, false, false)),
            "query" => Some(all(false, true, false)),
            "rebuild" => Some(all(false, false, true)),
            "e2e" => Some(Mode::E2e),
            "asof" => Some(Mode::Asof),
            "migration" => Some(Mode::Migration),
            _ => None,
        };
        if let Some(mode) = mode {
            args.mode = mode;
            it.next();
        }
    }
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
            "--lone" => lone = Some(value("--lone")? as usize),
            "--counters" => counters = Some(value("--counters")? as usize),
            "--secs" => secs = Some(value("--secs")?),
            "--sample" => args.sample = value("--sample")?,
            "--batch" => args.batch = value("--batch")? as usize,
            "--pipeline" => args.pipeline = value("--pipeline")? as usize,
            "--pool" => args.pool = u32::try_from(value("--pool")?)?,
            "--dossiers" => dossiers = Some(value("--dossiers")?),
            "--runs" => runs = Some(value("--runs")? as usize),
            "--baseline-secs" => baseline_secs = Some(value("--baseline-secs")?),
            "--rebuild-events" => rebuild_events = Some(value("--rebuild-events")?),
            "--rebuild-memory-mb" => args.rebuild_memory_mb = value("--rebuild-memory-mb")?,
            "--lag-secs" => lag_secs = Some(value("--lag-secs")?),
            "--lag-rate" => args.lag_rate = value("--lag-rate")?,
            "--writers" => args.writers = value("--writers")? as usize,
            "--consumers" => {
                let text = it.next().context("--consumers needs numbers, e.g. 1,2")?;
                consumers = Some(
                    text.split(',')
                        .map(|n| n.trim().parse::<usize>())
                        .collect::<Result<Vec<_>, _>>()
                        .with_context(|| {
                            format!("--consumers: {text:?} is not a list of numbers")
                        })?,
                );
            }
            "--rollups" => {
                let text = it.next().context("--rollups needs numbers, e.g. 0,3,5")?;
                args.rollups = text
                    .split(',')
                    .map(|n| n.trim().parse::<u8>())
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("--rollups: {text:?} is not a list of numbers"))?;
                if let Some(r) = args
                    .rollups
                    .iter()
                    .find(|r| !projection::rollup::ROLLUPS.contains(r))
                {
                    bail!(
                        "--rollups: {r} is not one of {:?}",
                        projection::rollup::ROLLUPS
                    );
                }
            }
            "--asof-events" => asof_events = Some(value("--asof-events")?),
            "--asof-window" => args.asof_window = u32::try_from(value("--asof-window")?)?,
            "--asof-runs" => asof_runs = Some(value("--asof-runs")? as usize),
            "--asof-scans" => asof_scans = Some(value("--asof-scans")? as usize),
            "--no-jit" => args.no_jit = true,
            "--keep" => args.keep = true,
            "--quick" => args.quick = true,
            "--no-analyze" => args.analyze = false,
            "-h" | "--help" => return Ok(None),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if args.quick {
        args.events = 100_000;
        args.receives = 2_000;
        args.dossiers = 20_000;
        args.runs = 50;
        args.baseline_secs = 10;
        args.rebuild_events = 100_000;
        args.lag_secs = 5;
        args.consumers = vec![1];
        args.lone = 200;
        args.counters = 16;
        args.secs = 10;
        args.asof_events = 100_000;
        args.asof_runs = 5;
        args.asof_scans = 2;
    }
    args.asof_events = asof_events.unwrap_or(args.asof_events);
    args.asof_runs = asof_runs.unwrap_or(args.asof_runs);
    args.asof_scans = asof_scans.unwrap_or(args.asof_scans);
    if args.asof_events == 0
        || args.asof_window == 0
        || args.asof_runs == 0
        || !(1..=20).contains(&args.asof_scans)
    {
        bail!(
            "--asof-events, --asof-window and --asof-runs must be at least 1, --asof-scans 1..=20"
        );
    }
    args.events = events.unwrap_or(args.events);
    args.receives = receives.unwrap_or(args.receives);
    args.dossiers = dossiers.unwrap_or(args.dossiers);
    args.runs = runs.unwrap_or(args.runs);
    args.baseline_secs = baseline_secs.unwrap_or(args.baseline_secs);
    args.rebuild_events = rebuild_events.unwrap_or(args.rebuild_events);
    args.lag_secs = lag_secs.unwrap_or(args.lag_secs);
    args.consumers = consumers.unwrap_or(args.consumers);
    args.lone = lone.unwrap_or(args.lone);
    args.counters = counters.unwrap_or(args.counters);
    args.secs = secs.unwrap_or(args.secs);
    if args.mode == Mode::E2e {
        // L0 at E's rate: as long as the load, within 5..=20 s, unless asked.
        args.baseline_secs = baseline_secs.unwrap_or(if args.quick {
            5
        } else {
            args.secs.clamp(5, 20)
        });
    }
    if args.lone == 0 || args.counters == 0 || args.secs == 0 || args.sample == 0 {
        bail!("--lone, --counters, --secs and --sample must be at least 1");
    }
    if args.dossiers == 0
        || args.runs == 0
        || args.rebuild_events == 0
        || args.rebuild_memory_mb == 0
    {
        bail!("--dossiers, --runs, --rebuild-events and --rebuild-memory-mb must be at least 1");
    }
    if args.lag_secs == 0 || args.lag_rate == 0 || args.writers == 0 {
        bail!("--lag-secs, --lag-rate and --writers must be at least 1");
    }
    if args.consumers.is_empty() || args.consumers.contains(&0) {
        bail!("--consumers must list numbers of at least 1");
    }
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
    let run = async {
        match args.mode {
            Mode::Write => bench(args).await,
            Mode::Projection { .. } => projection_bench(args).await,
            Mode::E2e => e2e_bench(args).await,
            Mode::Asof => asof_bench(args).await,
            Mode::Migration => migration_bench(args).await,
        }
    };
    match runtime.block_on(run) {
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
    let result = async {
        // The pool as the services open it (`svc::config`, default settings, `--pool`
        // connections): a connection used within the last second is not pinged again, for
        // intake's calls and the raw baselines alike.
        let pool = svc::config::DatabaseConfig::with_url(&db.url)
            .pool_options_sized(args.pool)
            .connect(&db.url)
            .await?;
        let result = scenarios(&args, &pool).await;
        pool.close().await;
        result
    }
    .await;
    drop(db);
    result
}

/// Scenario E in a database of its own (dropped at the end, also on error).
async fn e2e_bench(args: Args) -> Result<String> {
    let db = TestDb::with_pool_size(args.pool).await;
    eprintln!("bench: E  database {} (dropped at the end)", db.name);
    let result = async {
        let machine = report::Machine::probe(&db.pool).await?;
        let config = e2e::E2eConfig {
            counters: args.counters,
            secs: args.secs,
            sample: args.sample,
            baseline_secs: args.baseline_secs,
            analyze: args.analyze,
        };
        let figures = e2e::run(&db, config).await?;
        Ok(e2e::render(&figures, &machine, &report::load_average()))
    }
    .await;
    drop(db);
    result
}

/// Scenarios C, AS and AS0 in a database of their own (dropped at the end, also on error).
async fn asof_bench(args: Args) -> Result<String> {
    let db = TestDb::with_pool_size(args.pool).await;
    eprintln!("bench: AS database {} (dropped at the end)", db.name);
    let config = asof::AsofConfig {
        events: args.asof_events,
        window: args.asof_window,
        runs: args.asof_runs,
        scans: args.asof_scans,
        analyze: args.analyze,
    };
    let result = asof::run(&db.pool, config).await;
    drop(db);
    result
}

/// Scenario M in a database of its own (dropped at the end, also on error).
async fn migration_bench(args: Args) -> Result<String> {
    let db = TestDb::with_pool_size(args.pool).await;
    eprintln!("bench: M  database {} (dropped at the end)", db.name);
    let result = async {
        let machine = report::Machine::probe(&db.pool).await?;
        EventLog::from_pool(db.pool.clone()).migrate().await?;
        projection::store::migrate(&db.pool).await?;
        let migrated = migration::run(&db.pool, args.dossiers, args.analyze).await?;
        let mut out = migration::render(&migrated);
        machine.render(&mut out, "Machine:", &report::load_average());
        Ok(out)
    }
    .await;
    drop(db);
    result
}

/// The projection's scenarios, each in a database of its own (dropped after it).
async fn projection_bench(args: Args) -> Result<String> {
    let Mode::Projection {
        lag: run_lag,
        query: run_query,
        rebuild: run_rebuild,
    } = args.mode
    else {
        bail!("not a projection mode");
    };
    let mut figures = projection_report::Figures {
        args: args.clone(),
        machine: None,
        lag: Vec::new(),
        lag_baseline: None,
        query: None,
        rebuild: None,
        load_end: String::new(),
    };
    if run_lag {
        for consumers in args.consumers.clone() {
            let db = TestDb::with_pool_size(args.pool).await;
            eprintln!("bench: L  database {} ({consumers} consumer(s))", db.name);
            let result = async {
                if figures.machine.is_none() {
                    figures.machine = Some(report::Machine::probe(&db.pool).await?);
                }
                EventLog::from_pool(db.pool.clone()).migrate().await?;
                settle(&db.pool, args.analyze).await?;
                lag::run(
                    &db.pool,
                    lag::LagConfig {
                        secs: args.lag_secs,
                        rate: args.lag_rate,
                        writers: args.writers,
                        consumers,
                    },
                )
                .await
            }
            .await;
            drop(db);
            figures.lag.push(result?);
        }
        eprintln!("bench: L0 raw JetStream publish → receive at the same rate");
        let config = lag::LagConfig {
            secs: args.lag_secs,
            rate: args.lag_rate,
            writers: args.writers,
            consumers: 1,
        };
        figures.lag_baseline = Some(lag::raw_baseline(config).await?);
    }
    if run_query {
        let db = TestDb::with_pool_size(args.pool).await;
        eprintln!("bench: Q  database {}", db.name);
        let result = async {
            let pool = if args.no_jit {
                // For every connection of a pool opened after it.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE \"{}\" SET jit = off",
                    db.name
                )))
                .execute(&db.pool)
                .await?;
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(args.pool)
                    .connect(&db.url)
                    .await?
            } else {
                db.pool.clone()
            };
            if figures.machine.is_none() {
                figures.machine = Some(report::Machine::probe(&pool).await?);
            }
            EventLog::from_pool(pool.clone()).migrate().await?;
            projection::store::migrate(&pool).await?;
            query::run(
                &pool,
                args.dossiers,
                args.runs,
                Duration::from_secs(args.baseline_secs),
                &args.rollups,
                args.quick,
            )
            .await
        }
        .await;
        if args.keep {
            eprintln!("bench: Q  --keep: database {} left in place", db.name);
            std::mem::forget(db);
        } else {
            drop(db);
        }
        figures.query = Some(result?);
    }
    if run_rebuild {
        let db = TestDb::with_pool_size(args.pool).await;
        eprintln!("bench: R  database {}", db.name);
        let result = async {
            if figures.machine.is_none() {
                figures.machine = Some(report::Machine::probe(&db.pool).await?);
            }
            EventLog::from_pool(db.pool.clone()).migrate().await?;
            projection::store::migrate(&db.pool).await?;
            rebuild::run(&db.pool, args.rebuild_events, args.rebuild_memory_mb).await
        }
        .await;
        drop(db);
        figures.rebuild = Some(result?);
    }
    figures.load_end = report::load_average();
    Ok(projection_report::render(&figures))
}

async fn scenarios(args: &Args, pool: &PgPool) -> Result<String> {
    let machine = report::Machine::probe(pool).await?;
    let log = EventLog::from_pool(pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    raw::create_tables(pool).await?;

    settle(pool, args.analyze).await?;
    eprintln!(
        "bench: A1 lone call: {} ReceiveDossier calls one after another from one client",
        args.lone
    );
    let (lone, lone_groups) = live::lone(&intake, &log, args.lone).await?;
    eprintln!("bench: A1 {}", lone.summary());
    eprintln!("bench: A1 groups: {}", lone_groups.summary());

    settle(pool, args.analyze).await?;
    eprintln!(
        "bench: A  live receive: {} ReceiveDossier calls from {} clients",
        args.receives, args.clients
    );
    let (live, live_groups) = live::run(&intake, &log, args.receives, args.clients).await?;
    eprintln!("bench: A  {}", live.summary());
    eprintln!("bench: A  groups: {}", live_groups.summary());

    let rows = raw::receive_rows(pool, live::DOSSIER_PREFIX).await?;
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
    let rows = raw::receive_rows(pool, live::LONE_PREFIX).await?;
    settle(pool, args.analyze).await?;
    eprintln!("bench: A1₀ raw single-row inserts of the lone calls' rows, one task");
    let lone_raw = raw::single_rows(pool, raw::LIVE_TABLE, rows, 1).await?;
    eprintln!("bench: A1₀ {}", lone_raw.summary());

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
    let mut copies = Vec::new();
    for (table, format, what) in [
        (
            raw::BULK_BINARY_TABLE,
            raw::CopyFormat::Binary,
            "binary COPY",
        ),
        (raw::BULK_COPY_TABLE, raw::CopyFormat::Text, "COPY"),
    ] {
        settle(pool, args.analyze).await?;
        eprintln!("bench: raw {what} into {table}");
        let timing = raw::copied(pool, table, before, head, args.batch, format).await?;
        eprintln!("bench: {table}: {}", timing.summary());
        copies.push(timing);
    }
    let [binary, copied]: [Timing; 2] = copies.try_into().expect("two COPY baselines");
    let sizes = raw::payload_sizes(pool, before).await?;

    Ok(report::render(&report::Figures {
        args: args.clone(),
        machine,
        live,
        live_groups,
        live_raw,
        lone,
        lone_groups,
        lone_raw,
        bulk,
        bulk_raw: baselines.remove(0),
        bulk_raw_indexed: baselines.remove(0),
        bulk_raw_copy: copied,
        bulk_raw_binary: binary,
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
        let args = parse(&["--quick", "--lone", "50"]).unwrap().unwrap();
        assert_eq!(args.lone, 50);
    }

    #[test]
    fn e2e_flags() {
        let args = parse(&["e2e", "--quick"]).unwrap().unwrap();
        assert_eq!(args.mode, Mode::E2e);
        assert_eq!(
            (args.counters, args.secs, args.baseline_secs, args.sample),
            (16, 10, 5, 4)
        );
        let args = parse(&["e2e", "--counters", "8", "--secs", "90"])
            .unwrap()
            .unwrap();
        assert_eq!((args.counters, args.secs, args.baseline_secs), (8, 90, 20));
        assert!(parse(&["e2e", "--counters", "0"]).is_err());
        assert!(parse(&["e2e", "--sample", "0"]).is_err());
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
