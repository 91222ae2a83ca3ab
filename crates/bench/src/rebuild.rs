//! Scenario R: the projection's rebuild (`projection::rebuild::rebuild`, what `projection
//! rebuild` runs) against a raw sequential read of the `events` table, in the same database.
//!
//! The log is filled with synthetic dossiers ([`crate::synth`]) through `EventLog::append`, a
//! thousand dossiers a call (hashes, chain and sequencer as in production). Then, each after
//! `ANALYZE` and `CHECKPOINT`:
//!
//! - **R0** raw read: `SELECT` every column `ORDER BY position`, every row fetched through sqlx
//!   and each column decoded into its Rust type (the payload into a `serde_json::Value`);
//! - **R1** the rebuild's own read: the log's reader of whole dossiers
//!   (`eventlog::dossiers_up_to`, `ORDER BY dossier_id, version`, the columns figures need),
//!   each event decoded into a `domain::Event`, nothing computed or written;
//! - **R** the rebuild: shadow tables filled from one snapshot, swapped in; the time each of its
//!   phases (read and sum, write the cells, build the keys) was first reported;
//! - **RC** (after R) the rebuilt cells `COPY`ed again into an unkeyed table, in text and in
//!   binary format, alternating: what each format costs the server for the same rows.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use eventlog::EventLog;
use futures::TryStreamExt;
use sqlx::{PgPool, Row};

use crate::Timing;
use crate::synth::{self, Catalog};

/// Dossiers per `append` call while filling the log.
const DOSSIERS_PER_APPEND: usize = 1_000;

/// What scenario R measured.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    pub dossiers: u64,
    /// The rebuild's memory budget (MiB).
    pub memory_mb: u64,
    pub fill: Timing,
    pub events_bytes: i64,
    pub raw: Timing,
    pub rebuild_read: Timing,
    pub rebuild: Timing,
    /// The rebuild's time to read the log and fill the shadow tables (before the swap).
    pub rebuild_fill: Duration,
    pub cells: i64,
    /// Each phase of the fill and when it was first reported (seconds from the start; the
    /// reports come about once a second, and at each phase the fill itself enters).
    pub phases: Vec<(projection::rebuild::Phase, f64)>,
    pub spilled_runs: u64,
    pub compute_times: projection::rebuild::ComputeTimes,
}

pub async fn run(pool: &PgPool, events: u64, memory_mb: u64) -> Result<Rebuilt> {
    let log = EventLog::from_pool(pool.clone());
    let catalog = Catalog::new();
    let started = Instant::now();
    let mut appended = 0u64;
    let mut dossiers = 0u64;
    let mut last_report = Instant::now();
    while appended < events {
        let batch: Vec<eventlog::DossierAppend> = (0..DOSSIERS_PER_APPEND as u64)
            .map(|i| synth::to_append(&catalog, &synth::dossier(&catalog, dossiers + i)))
            .collect();
        dossiers += batch.len() as u64;
        let stored = log.append(batch).await?;
        appended += stored.events.len() as u64;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!("bench: R  {appended} of {events} events appended");
        }
    }
    let fill = Timing::new(appended, started.elapsed(), Vec::new());
    eprintln!(
        "bench: R  log filled: {} ({dossiers} dossiers)",
        fill.summary()
    );
    let events_bytes: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('events')")
        .fetch_one(pool)
        .await?;

    crate::settle(pool, true).await?;
    eprintln!("bench: R0 raw sequential read of events");
    let raw = raw_read(pool).await?;
    eprintln!("bench: R0 {}", raw.summary());

    crate::settle(pool, true).await?;
    eprintln!("bench: R1 the rebuild's read alone");
    let rebuild_read = rebuild_read(pool).await?;
    eprintln!("bench: R1 {}", rebuild_read.summary());

    crate::settle(pool, true).await?;
    eprintln!("bench: R  projection rebuild");
    let t = Instant::now();
    let mut phases: Vec<(projection::rebuild::Phase, f64)> = Vec::new();
    let options = projection::rebuild::RebuildOptions {
        memory_bytes: usize::try_from(memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        ..Default::default()
    };
    let report = projection::rebuild::rebuild_with(pool, options, |p| {
        eprintln!("bench: R  {p}");
        if phases.last().is_none_or(|(phase, _)| *phase != p.phase) {
            phases.push((p.phase, p.elapsed.as_secs_f64()));
        }
    })
    .await?;
    let rebuild = Timing::new(report.events, t.elapsed(), Vec::new());
    eprintln!("bench: R  {}", rebuild.summary());
    eprintln!("bench: R  phases (first reported at, s): {phases:?}");
    eprintln!("bench: R  worker threads: {:?}", report.compute_times);
    if report.events != appended || report.dossiers != dossiers || report.reapplied != 0 {
        bail!(
            "the rebuild read {} events of {} dossiers (re-applied {}); the log holds {appended} \
             of {dossiers}",
            report.events,
            report.dossiers,
            report.reapplied
        );
    }
    if raw.count != appended || rebuild_read.count != appended {
        bail!(
            "the reads saw {} and {} events; the log holds {appended}",
            raw.count,
            rebuild_read.count
        );
    }
    // The rebuilt aggregates answer as the day grain does (a cheap consistency check).
    for q in crate::query::questions() {
        let ours = projection::store::query(pool, &q.query).await?;
        let reference = projection::store::query_reference(pool, &q.query).await?;
        if ours != reference {
            bail!(
                "{}: after the rebuild, query and query_reference differ",
                q.name
            );
        }
    }
    let formats = copy_formats(pool).await?;
    for (round, (text, binary)) in formats.iter().enumerate() {
        eprintln!(
            "bench: RC round {}: the cells' COPY into an unkeyed table, text {} · binary {} \
             (binary ÷ text time {:.2})",
            round + 1,
            text.summary(),
            binary.summary(),
            binary.seconds / text.seconds
        );
    }
    Ok(Rebuilt {
        dossiers,
        memory_mb,
        fill,
        events_bytes,
        raw,
        rebuild_read,
        rebuild,
        rebuild_fill: report.fill,
        cells: report.cells,
        phases,
        spilled_runs: report.spilled_runs,
        compute_times: report.compute_times,
    })
}

/// Rounds of [`copy_formats`]: text and binary alternate.
const COPY_ROUNDS: usize = 2;

/// **RC**: the rebuilt `stats_cells` rows, `COPY`ed in text and in binary format (each read
/// back once with `COPY … TO STDOUT` in its format, not timed) into an unkeyed table shaped like
/// `stats_cells`, as the rebuild writes its shadow: the time of each `COPY … FROM STDIN`, same
/// rows, same run, `CHECKPOINT` before each. What the server's parsing of each format costs.
async fn copy_formats(pool: &PgPool) -> Result<Vec<(Timing, Timing)>> {
    use sqlx::postgres::PgPoolCopyExt;
    sqlx::query("DROP TABLE IF EXISTS bench_cells_copy")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_cells_copy \
           (LIKE stats_cells INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
    )
    .execute(pool)
    .await?;
    let mut data = Vec::new();
    for format in ["text", "binary"] {
        let chunks: Vec<_> = pool
            .copy_out_raw(&format!("COPY stats_cells TO STDOUT (FORMAT {format})"))
            .await?
            .try_collect()
            .await?;
        // Sent as the rebuild sends it: in chunks of about 1 MiB.
        let mut joined: Vec<Vec<u8>> = vec![Vec::new()];
        for chunk in chunks {
            if joined.last().is_some_and(|j| j.len() >= 1 << 20) {
                joined.push(Vec::new());
            }
            if let Some(last) = joined.last_mut() {
                last.extend_from_slice(&chunk);
            }
        }
        data.push((format, joined));
    }
    let mut rounds = Vec::with_capacity(COPY_ROUNDS);
    for _ in 0..COPY_ROUNDS {
        let mut timings = Vec::with_capacity(2);
        for (format, chunks) in &data {
            sqlx::query("TRUNCATE bench_cells_copy")
                .execute(pool)
                .await?;
            crate::settle(pool, false).await?;
            let t = Instant::now();
            let mut copy = pool
                .copy_in_raw(&format!(
                    "COPY bench_cells_copy FROM STDIN (FORMAT {format})"
                ))
                .await?;
            for chunk in chunks {
                copy.send(chunk.as_slice()).await?;
            }
            let rows = copy.finish().await?;
            timings.push(Timing::new(rows, t.elapsed(), Vec::new()));
        }
        let binary = timings.pop();
        let text = timings.pop();
        if let (Some(text), Some(binary)) = (text, binary) {
            if text.count != binary.count {
                bail!(
                    "COPY text wrote {} rows, binary {}",
                    text.count,
                    binary.count
                );
            }
            rounds.push((text, binary));
        }
    }
    sqlx::query("DROP TABLE bench_cells_copy")
        .execute(pool)
        .await?;
    Ok(rounds)
}

/// Every row of `events` in position order, every column decoded.
async fn raw_read(pool: &PgPool) -> Result<Timing> {
    let t = Instant::now();
    let mut rows = sqlx::query(
        "SELECT position, event_id, dossier_id, version, event_type, occurred_at, recorded_at, \
         level, agency, sector, payload, fingerprint, event_hash, chain_hash \
         FROM events ORDER BY position",
    )
    .fetch(pool);
    let mut count = 0u64;
    let mut last = 0i64;
    while let Some(row) = rows.try_next().await? {
        let position: i64 = row.try_get(0)?;
        let decoded = (
            row.try_get::<uuid::Uuid, _>(1)?,
            row.try_get::<String, _>(2)?,
            row.try_get::<i32, _>(3)?,
            row.try_get::<String, _>(4)?,
            row.try_get::<DateTime<Utc>, _>(5)?,
            row.try_get::<DateTime<Utc>, _>(6)?,
            row.try_get::<String, _>(7)?,
            row.try_get::<String, _>(8)?,
            row.try_get::<String, _>(9)?,
            row.try_get::<serde_json::Value, _>(10)?,
            row.try_get::<Vec<u8>, _>(11)?,
            row.try_get::<Vec<u8>, _>(12)?,
            row.try_get::<Vec<u8>, _>(13)?,
        );
        std::hint::black_box(decoded);
        if position != last + 1 {
            bail!("raw read: position {position} after {last}");
        }
        last = position;
        count += 1;
    }
    Ok(Timing::new(count, t.elapsed(), Vec::new()))
}

/// The rebuild's read: the log's reader of whole dossiers up to the head
/// (`eventlog::dossiers_up_to`, the columns figures need), each event decoded into a domain
/// event; nothing else.
async fn rebuild_read(pool: &PgPool) -> Result<Timing> {
    let t = Instant::now();
    let mut conn = pool.acquire().await?;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&mut *conn)
        .await?;
    let everything = eventlog::RoutingFilter::default();
    let mut dossiers =
        eventlog::dossiers_up_to::<eventlog::EventBody>(&mut conn, head, &everything);
    let mut count = 0u64;
    while let Some(dossier) = dossiers.try_next().await? {
        for e in &dossier.events {
            let event = domain::Event::from_row(&e.event_type, e.occurred_at, &e.payload)?;
            std::hint::black_box((&dossier.dossier_id, e.version, event));
            count += 1;
        }
    }
    Ok(Timing::new(count, t.elapsed(), Vec::new()))
}
