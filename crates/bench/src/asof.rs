//! Scenario AS: figures "as recorded at T" from checkpoints (`projection::asof`) against the
//! scan of the log prefix they replace, in the same database and run.
//!
//! The log is filled with synthetic dossiers ([`crate::synth`]) in business-time order — each
//! event appended when it happens, so a dossier's events lie spread over the log among
//! thousands of others' as a live log's are — through `EventLog::append`, `APPEND_EVENTS` events
//! a call. Then, each after `ANALYZE` and `CHECKPOINT`:
//!
//! - **C** the checkpointer over the whole log (`asof::checkpoint_once` until caught up), its
//!   events/s; the size of `asof_cells` + `asof_checkpoints` against `events` and against the
//!   same rollups of the live figures (summed from the blocks into a table of `stats_rollup`'s
//!   shape and key);
//! - **AS** a province-year as of `T` (`asof::as_recorded_at`), `T` at 20 instants spread over
//!   the log (the year: that of the business date at `P(T)`), `--runs` rounds; and a year by
//!   level, the same way (grouping by agency or sector is the scan's: see `asof`);
//! - **AS0** its baseline: the scan (`asof::scan`, what the service answered before) at a few of
//!   those instants, once each; the two answers must be equal.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use eventlog::{DossierAppend, EventLog, ExpectedVersion};
use projection::asof;
use sqlx::PgPool;
use stats::{Dimension, Query, SliceFilter};

use crate::Timing;
use crate::query::{ms, pct};
use crate::report::{Machine, load_average, thousands};
use crate::synth::{self, Catalog};

/// Events per `append` call while filling the log.
const APPEND_EVENTS: usize = 1_000;
/// Instants the queries are asked at.
const INSTANTS: usize = 20;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct AsofConfig {
    pub events: u64,
    pub window: u32,
    pub runs: usize,
    /// Instants the scan baseline is measured at (once each).
    pub scans: usize,
    pub analyze: bool,
}

pub async fn run(pool: &PgPool, config: AsofConfig) -> Result<String> {
    let machine = Machine::probe(pool).await?;
    let log = EventLog::from_pool(pool.clone());
    log.migrate().await?;
    projection::store::migrate(pool).await?;

    let (fill, dossiers) = fill(&log, config.events).await?;
    let head = log.head().await?;
    crate::settle(pool, config.analyze).await?;
    let events_bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('events')")
        .fetch_one(pool)
        .await?;

    eprintln!(
        "bench: C  checkpointing {head} events, windows of {}",
        config.window
    );
    let started = Instant::now();
    let mut checkpoints = 0u64;
    let mut last_report = Instant::now();
    while let Some(c) = asof::checkpoint_once(pool, config.window).await? {
        checkpoints += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("bench: C  {} of {head} events", c.position);
        }
    }
    let checkpointed = checkpoints * u64::from(config.window);
    let checkpointer = Timing::new(checkpointed, started.elapsed(), Vec::new());
    eprintln!("bench: C  {}", checkpointer.summary());
    crate::settle(pool, config.analyze).await?;
    let sizes = sizes(pool, checkpoints as i64).await?;

    // The instants, and the year each asks for.
    let mut instants: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for i in 0..INSTANTS {
        let p = ((head as f64) * (i as f64 + 0.5) / INSTANTS as f64).ceil() as i64;
        let (at, occurred): (DateTime<Utc>, DateTime<Utc>) =
            sqlx::query_as("SELECT recorded_at, occurred_at FROM events WHERE position = $1")
                .bind(p.clamp(1, head))
                .fetch_one(pool)
                .await?;
        instants.push((at, calendar::local_date(occurred).year()));
    }
    let year_query = |year: i32, group_by: Vec<Dimension>| Query {
        from: NaiveDate::from_ymd_opt(year, 1, 1).expect("a year"),
        to: NaiveDate::from_ymd_opt(year + 1, 1, 1).expect("a year"),
        filter: SliceFilter::default(),
        group_by,
    };

    let mut fast: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for (name, group_by) in [
        ("province-year", vec![]),
        ("year by level", vec![Dimension::Level]),
    ] {
        eprintln!(
            "bench: AS {name}: {} rounds of {INSTANTS} instants",
            config.runs
        );
        let mut latencies = Vec::new();
        for _ in 0..config.runs {
            for (at, year) in &instants {
                let q = year_query(*year, group_by.clone());
                let t = Instant::now();
                let answer = asof::as_recorded_at(pool, &q, *at).await?;
                latencies.push(t.elapsed());
                if answer.is_none() {
                    bail!("the checkpoints did not answer {q:?} at {at}");
                }
            }
        }
        latencies.sort_unstable();
        fast.insert(name, latencies);
    }

    eprintln!("bench: AS0 the scan at {} instants", config.scans);
    let mut scans: Vec<(usize, i64, Duration, Duration)> = Vec::new();
    let picks: Vec<usize> = (0..config.scans)
        .map(|i| ((i + 1) * INSTANTS / config.scans).min(INSTANTS) - 1)
        .collect();
    for i in picks {
        let (at, year) = instants[i];
        let q = year_query(year, vec![]);
        let t = Instant::now();
        let scanned = asof::scan(pool, &q, at).await?;
        let scan_time = t.elapsed();
        let t = Instant::now();
        let answer = asof::as_recorded_at(pool, &q, at).await?;
        let fast_time = t.elapsed();
        if answer.as_ref() != Some(&scanned) {
            bail!("the checkpoints and the scan disagree at {at} for {q:?}");
        }
        let up_to: i64 =
            sqlx::query_scalar("SELECT max(position) FROM events WHERE recorded_at <= $1")
                .bind(at)
                .fetch_one(pool)
                .await?;
        eprintln!(
            "bench: AS0 at P = {up_to}: scan {:.0} ms, checkpoints {:.1} ms, equal",
            ms(scan_time),
            ms(fast_time)
        );
        scans.push((i, up_to, scan_time, fast_time));
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "## As recorded at T: checkpoints against the scan\n\n\
         Log: {} events, {} dossiers, appended in business-time order in calls of {APPEND_EVENTS} \
         events ({}). `events`: {}.\n",
        thousands(head as u64),
        thousands(dossiers),
        fill.summary(),
        mib(events_bytes)
    );
    let _ = writeln!(
        out,
        "| phase | figure |\n|---|---|\n\
         | **C** checkpointer, windows of {} events | {} checkpoints, {:.1} s, **{:.0} events/s** |\n\
         | checkpoint storage (`asof_cells` + `asof_checkpoints`) | {} ({} cells) = **{:.3} × `events`**, **{:.2} × those rollups of the live figures** |\n\
         | the same rollups of the live figures (0 and 1, every grain, in `stats_rollup`'s shape) | {} ({} cells) |",
        config.window,
        thousands(checkpoints),
        checkpointer.seconds,
        checkpointer.rate(),
        mib(sizes.checkpoint_bytes),
        thousands(sizes.checkpoint_cells as u64),
        sizes.checkpoint_bytes as f64 / events_bytes as f64,
        sizes.checkpoint_bytes as f64 / sizes.live_coarse_bytes as f64,
        mib(sizes.live_coarse_bytes),
        thousands(sizes.live_coarse_cells as u64),
    );
    let _ = writeln!(
        out,
        "\n| question, as of T at {INSTANTS} instants across the log | answers | p50 (ms) | p99 (ms) | max (ms) |\n|---|---|---|---|---|"
    );
    for (name, l) in &fast {
        let _ = writeln!(
            out,
            "| **AS** {name} (checkpoints + one window) | {} | {:.1} | **{:.1}** | {:.1} |",
            l.len(),
            ms(pct(l, 50.0)),
            ms(pct(l, 99.0)),
            ms(*l.last().unwrap_or(&Duration::ZERO))
        );
    }
    let _ = writeln!(
        out,
        "\n| **AS0** the scan (baseline) at P(T) | scan (ms) | checkpoints, same query (ms) | ratio |\n|---|---|---|---|"
    );
    for (_, up_to, scan, fast) in &scans {
        let _ = writeln!(
            out,
            "| {} events | {:.0} | {:.1} | {:.0} × |",
            thousands(*up_to as u64),
            ms(*scan),
            ms(*fast),
            scan.as_secs_f64() / fast.as_secs_f64().max(1e-9)
        );
    }
    machine.render(&mut out, "Machine:", &load_average());
    Ok(out)
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1024.0 / 1024.0)
}

struct Sizes {
    checkpoint_bytes: i64,
    checkpoint_cells: i64,
    live_coarse_bytes: i64,
    live_coarse_cells: i64,
}

/// The checkpoints' size, and that of the coarse live figures at the last checkpoint (the sum
/// of every window) in a table of `stats_rollup`'s columns and key.
async fn sizes(pool: &PgPool, k: i64) -> Result<Sizes> {
    let (checkpoint_bytes, checkpoint_cells): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('asof_cells') + pg_total_relation_size('asof_checkpoints'), \
                (SELECT count(*) FROM asof_cells)",
    )
    .fetch_one(pool)
    .await?;
    let blocks = asof::blocks_up_to(k);
    let tiers: Vec<i16> = blocks.iter().map(|b| b.0).collect();
    let ids: Vec<i64> = blocks.iter().map(|b| b.1).collect();
    sqlx::query("DROP TABLE IF EXISTS bench_live_coarse")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_live_coarse AS \
         SELECT c.rollup, c.grain, c.period, c.level, c.agency, c.sector, \
                ''::text AS procedure, ''::text AS channel, ''::text AS applicant_type, \
                c.metric, SUM(c.value) AS value \
         FROM asof_cells c JOIN UNNEST($1::smallint[], $2::bigint[]) AS b(tier, block) \
           ON c.tier = b.tier AND c.block = b.block \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 HAVING SUM(c.value) <> 0",
    )
    .bind(tiers)
    .bind(ids)
    .execute(pool)
    .await?;
    sqlx::query(
        "ALTER TABLE bench_live_coarse ADD PRIMARY KEY \
         (rollup, grain, period, level, agency, sector, procedure, channel, applicant_type, metric)",
    )
    .execute(pool)
    .await?;
    let (live_coarse_bytes, live_coarse_cells): (i64, i64) = sqlx::query_as(
        "SELECT pg_total_relation_size('bench_live_coarse'), (SELECT count(*) FROM bench_live_coarse)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Sizes {
        checkpoint_bytes,
        checkpoint_cells,
        live_coarse_bytes,
        live_coarse_cells,
    })
}

/// Appends synthetic dossiers until at least `events` events, each event in business-time
/// order. Returns the fill's timing and the number of dossiers.
async fn fill(log: &EventLog, events: u64) -> Result<(Timing, u64)> {
    let catalog = Catalog::new();
    let mut dossiers = Vec::new();
    let mut total = 0u64;
    while total < events {
        let d = synth::dossier(&catalog, dossiers.len() as u64);
        total += d.events.len() as u64;
        dossiers.push(d);
    }
    // (when, dossier, version index): a dossier's events in version order (the running
    // maximum of their times), all dossiers interleaved by time.
    let mut order: Vec<(DateTime<Utc>, usize, usize)> = Vec::with_capacity(total as usize);
    for (n, d) in dossiers.iter().enumerate() {
        let mut when = DateTime::<Utc>::MIN_UTC;
        for (i, e) in d.events.iter().enumerate() {
            when = when.max(e.occurred_at);
            order.push((when, n, i));
        }
    }
    order.sort_unstable();
    eprintln!(
        "bench: AS filling the log: {total} events of {} dossiers",
        dossiers.len()
    );
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut appended = 0u64;
    for chunk in order.chunks(APPEND_EVENTS) {
        // One DossierAppend per dossier of the chunk, its events consecutive versions.
        let mut calls: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for &(_, n, i) in chunk {
            let entry = calls.entry(n).or_insert((i, i));
            entry.1 = i;
        }
        let batch: Vec<DossierAppend> = calls
            .iter()
            .map(|(&n, &(first, last))| {
                let d = &dossiers[n];
                DossierAppend {
                    dossier_id: d.id.clone(),
                    expected_version: match first {
                        0 => ExpectedVersion::NoStream,
                        v => ExpectedVersion::Exact(v as u32),
                    },
                    routing: synth::routing(&catalog, d),
                    events: d.events[first..=last]
                        .iter()
                        .map(synth::new_event)
                        .collect(),
                }
            })
            .collect();
        appended += log.append(batch).await?.events.len() as u64;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("bench: AS {appended} of {total} events appended");
        }
    }
    Ok((
        Timing::new(appended, started.elapsed(), Vec::new()),
        dossiers.len() as u64,
    ))
}
