//! The Markdown report of the projection's scenarios (L, Q, R).

use std::fmt::Write as _;
use std::time::Duration;

use crate::lag::Lag;
use crate::query::{Loaded, Measured, ms, pct};
use crate::rebuild::Rebuilt;
use crate::report::{Machine, thousands};
use crate::{Args, Timing};

/// Everything one projection run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub args: Args,
    pub machine: Option<Machine>,
    pub lag: Vec<Lag>,
    /// L0: (messages, seconds, sorted latencies).
    pub lag_baseline: Option<(u64, f64, Vec<Duration>)>,
    pub query: Option<(Loaded, Vec<Measured>)>,
    pub rebuild: Option<Rebuilt>,
    pub load_end: String,
}

fn p50_p99(sorted: &[Duration]) -> String {
    if sorted.is_empty() {
        return "—".to_owned();
    }
    format!(
        "{:.1} / {:.1}",
        ms(pct(sorted, 50.0)),
        ms(pct(sorted, 99.0))
    )
}

fn ratio(ours: Duration, theirs: Duration) -> f64 {
    ours.as_secs_f64() / theirs.as_secs_f64().max(1e-9)
}

/// Two decimals below 10, none above.
fn times(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0} ×")
    } else {
        format!("{x:.2} ×")
    }
}

fn gib(bytes: i64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn render(f: &Figures) -> String {
    let mut out = String::new();
    if !f.lag.is_empty() {
        render_lag(&mut out, f);
    }
    if let Some((loaded, measured)) = &f.query {
        render_query(&mut out, f, loaded, measured);
    }
    if let Some(r) = &f.rebuild {
        render_rebuild(&mut out, r);
    }
    if let Some(m) = &f.machine {
        let _ = writeln!(out, "\n### Machine\n");
        let _ = writeln!(out, "- nproc: {}", m.nproc);
        let _ = writeln!(out, "- CPU: {}", m.cpu);
        let _ = writeln!(out, "- memory: {}", m.memory);
        let _ = writeln!(out, "- PostgreSQL: {}", m.postgres);
        let settings: Vec<String> = m
            .settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let _ = writeln!(out, "- PostgreSQL settings: {}", settings.join(", "));
        let _ = writeln!(
            out,
            "- load average (1/5/15 min): {} at the start, {} at the end",
            m.load_start, f.load_end
        );
        let _ = writeln!(
            out,
            "- everything on this one machine: PostgreSQL, NATS, the relay, the projection \
             consumers, the writers and the bench"
        );
    }
    out
}

fn render_lag(out: &mut String, f: &Figures) {
    let a = &f.args;
    let _ = writeln!(out, "### L: lag from append to visible figure\n");
    let _ = writeln!(
        out,
        "{} writers appending one event at a time at {} appends/s in all for {} s.\n",
        a.writers, a.lag_rate, a.lag_secs
    );
    let base = f.lag_baseline.as_ref().map(|(_, _, l)| l.as_slice());
    let _ = writeln!(
        out,
        "| scenario | samples | achieved rate | applied rate | p50 / p99 (ms) | max (ms) | ratio to L0 (p50 · p99) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    let ratios = |sorted: &[Duration]| match base {
        Some(b) if !b.is_empty() && !sorted.is_empty() => format!(
            "{} · {}",
            times(ratio(pct(sorted, 50.0), pct(b, 50.0))),
            times(ratio(pct(sorted, 99.0), pct(b, 99.0)))
        ),
        _ => "—".to_owned(),
    };
    for l in &f.lag {
        let rate = l.appended as f64 / l.seconds;
        let _ = writeln!(
            out,
            "| **L** append → figure visible, {} consumer(s){} | {} | {:.0}/s | {:.0}/s | {} | {:.1} | {} |",
            l.config.consumers,
            if l.unseen > 0 {
                format!(" ({} never visible)", l.unseen)
            } else {
                String::new()
            },
            thousands(l.visible.len() as u64),
            rate,
            l.visible.len() as f64 / l.applied_seconds.max(f64::EPSILON),
            p50_p99(&l.visible),
            ms(l.visible.last().copied().unwrap_or_default()),
            ratios(&l.visible),
        );
        let _ = writeln!(
            out,
            "| of which relay: append → message received from the stream, {} consumer(s) run | {} | {:.0}/s | — | {} | {:.1} | {} |",
            l.config.consumers,
            thousands(l.relayed.len() as u64),
            rate,
            p50_p99(&l.relayed),
            ms(l.relayed.last().copied().unwrap_or_default()),
            ratios(&l.relayed),
        );
    }
    if let Some((n, secs, lags)) = &f.lag_baseline {
        let _ = writeln!(
            out,
            "| L0 baseline: raw JetStream publish → pull consumer receipt (explicit ack), same rate | {} | {:.0}/s | — | {} | {:.1} | 1 |",
            thousands(*n),
            *n as f64 / secs,
            p50_p99(lags),
            ms(lags.last().copied().unwrap_or_default()),
        );
    }
    let _ = writeln!(
        out,
        "\nL: from `EventLog::append` returning to the first poll (every {} ms) that sees the \
         dossier's applied version; apply commits the contribution and the rollup cells in one \
         transaction, so that is when `store::query` shows the figure. L0: from the publish call \
         to the receipt. Applied rate: figures made visible per second, from the first append to \
         the last figure (below the achieved rate when the projection falls behind).\n",
        crate::visible::POLL.as_millis()
    );
}

fn render_query(out: &mut String, f: &Figures, loaded: &Loaded, measured: &[Measured]) {
    let _ = writeln!(
        out,
        "### Q: query latency at {} dossiers\n",
        thousands(loaded.dossiers)
    );
    let _ = writeln!(
        out,
        "Loaded: {} non-zero slice × day × metric cells; {} non-zero figures over every rollup \
         and grain, stored as {} wide rows of `stats_cells` over {} slices of `stats_slice` \
         ({}, both with their indexes; {:.1} bytes per event of the {} events generated); the \
         baseline's per-dossier table {} rows ({}, with 5 indexes). \
         Generating and summing took {:.0} s, `COPY` and indexing {:.0} s.\n",
        thousands(loaded.day_cells),
        thousands(loaded.rollup_rows),
        thousands(loaded.wide_rows),
        thousands(loaded.slices),
        gib(loaded.rollup_bytes),
        loaded.rollup_bytes as f64 / loaded.events.max(1) as f64,
        thousands(loaded.events),
        thousands(loaded.dossiers),
        gib(loaded.dossier_bytes),
        loaded.generate.as_secs_f64(),
        loaded.load.as_secs_f64(),
    );
    if f.args.no_jit {
        let _ = writeln!(
            out,
            "**`jit = off`** for this database (`--no-jit`); PostgreSQL's default is on.\n"
        );
    }
    if loaded.rollups.len() == projection::rollup::ROLLUPS.len()
        && loaded.dossiers > crate::query::REFERENCE_MAX_DOSSIERS
    {
        let _ = writeln!(
            out,
            "`query_reference` was not run (more than {} dossiers: one run sums the whole \
             all-dimension day grain, minutes a question); every answer was checked equal to \
             the baseline's.\n",
            thousands(crate::query::REFERENCE_MAX_DOSSIERS)
        );
    }
    if loaded.rollups.len() < projection::rollup::ROLLUPS.len() {
        let _ = writeln!(
            out,
            "**Only the rollups {:?} of {:?} were loaded** (`--rollups`): the questions read only \
             those; the others would be in other parts of the primary key's index. \
             `query_reference` needs rollup 63 and was not run.\n",
            loaded.rollups,
            projection::rollup::ROLLUPS
        );
    }
    let _ = writeln!(
        out,
        "| question | groups | received in period | **`store::query`** p50 / p99 (ms) | its SQL alone p50 / p99 (ms) | baseline `GROUP BY` p50 / p99 (ms) | baseline ÷ ours (p50 · p99) | `query_reference` median (ms) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for m in measured {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} ({} runs) | {} | {} ({} runs) | {} · {} | {} |",
            m.name,
            m.groups,
            thousands(m.received),
            p50_p99(&m.ours),
            m.ours.len(),
            p50_p99(&m.sql_only),
            p50_p99(&m.baseline),
            m.baseline.len(),
            times(ratio(pct(&m.baseline, 50.0), pct(&m.ours, 50.0))),
            times(ratio(pct(&m.baseline, 99.0), pct(&m.ours, 99.0))),
            if m.reference.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.1}", ms(pct(&m.reference, 50.0)))
            },
        );
    }
    let _ = writeln!(
        out,
        "\nOurs: `projection::store::query` (every metric, the coarsest rollup, whole years, \
         months and edge days) on the bench's pool (which pings a connection before each use). \
         Its SQL alone: the text `store::query_text` gives, sent on the same pool and its rows \
         received but not decoded, timed right after ours. Baseline: one `SELECT … count(*) FILTER (WHERE …) … GROUP BY` \
         over one row per dossier, answering received (all, direct, online, postal), resolved \
         (all, early, on time, late), pending at start and end and overdue at end; both answers \
         are checked equal before timing. Runs interleave ours and the baseline; the baseline \
         stops after {} s per question. `query_reference`: the plain sum over the all-dimension \
         day grain (what the projection did before the rollups), its check run and up to 2 \
         more within the baseline's budget.\n",
        f.args.baseline_secs
    );
}

fn render_rebuild(out: &mut String, r: &Rebuilt) {
    let _ = writeln!(
        out,
        "### R: rebuild rate\n\nThe log: {} events of {} dossiers ({} with indexes), appended \
         through `EventLog::append` at {:.0} events/s.\n",
        thousands(r.fill.count),
        thousands(r.dossiers),
        gib(r.events_bytes),
        r.fill.rate()
    );
    let _ = writeln!(out, "| scenario | events | seconds | rate | ratio to R0 |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let row = |out: &mut String, name: &str, t: &Timing| {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.2} | {} events/s | {:.2} |",
            thousands(t.count),
            t.seconds,
            thousands(t.rate().round() as u64),
            t.rate() / r.raw.rate()
        );
    };
    row(
        out,
        "**R** `projection::rebuild::rebuild` (fill shadow tables, swap)",
        &r.rebuild,
    );
    row(
        out,
        "R0 baseline: `SELECT *` `ORDER BY position`, every column decoded",
        &r.raw,
    );
    row(
        out,
        "R1 the rebuild's read alone (`ORDER BY dossier_id, version`, decoded to domain events)",
        &r.rebuild_read,
    );
    let _ = writeln!(
        out,
        "\nR: {:.2} s of it reading and filling the shadow tables ({} rollup cells), the rest the \
         swap. All three after `ANALYZE` and `CHECKPOINT`, in this order: R0, R1, R.\n",
        r.rebuild_fill.as_secs_f64(),
        thousands(r.cells.max(0) as u64)
    );
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|(phase, at)| format!("{phase:?} from {at:.1} s"))
        .collect();
    let _ = writeln!(
        out,
        "Phases of the fill (first reported; reports come about once a second): {}; {} runs \
         spilled (memory budget {} MiB).\n",
        phases.join(", "),
        r.spilled_runs,
        r.memory_mb
    );
    let t = &r.compute_times;
    let _ = writeln!(
        out,
        "The worker threads ({}, their times summed): waiting for the reader {:.2} s, decoding \
         {:.2} s, contributions {:.2} s, waiting for their `COPY` {:.2} s, expanding into cells \
         {:.2} s, summing {:.2} s, writing the cells {:.2} s, spilling runs {:.2} s.\n",
        t.workers,
        t.waiting_for_reader.as_secs_f64(),
        t.decoding.as_secs_f64(),
        t.contributions.as_secs_f64(),
        t.waiting_for_writers.as_secs_f64(),
        t.expanding.as_secs_f64(),
        t.summing.as_secs_f64(),
        t.writing_cells.as_secs_f64(),
        t.spilling.as_secs_f64()
    );
}
