//! The machine and the Markdown report.

use std::fmt::Write as _;

use anyhow::Result;
use sqlx::PgPool;

use crate::import::Import;
use crate::live::GroupSizes;
use crate::raw::PayloadSizes;
use crate::{Args, Timing};

/// What the figures were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub memory: String,
    pub postgres: String,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages when the run started.
    pub load_start: String,
    /// Settings that decide write throughput.
    pub settings: Vec<(String, String)>,
}

impl Machine {
    pub async fn probe(pool: &PgPool) -> Result<Machine> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or_else(
                || "unknown".to_owned(),
                |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0),
            );
        let postgres: String = sqlx::query_scalar("SELECT version()")
            .fetch_one(pool)
            .await?;
        let mut settings = Vec::new();
        for name in [
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "wal_sync_method",
            "max_wal_size",
            "autovacuum",
            "work_mem",
            "jit",
        ] {
            let value: String = sqlx::query_scalar("SELECT current_setting($1)")
                .bind(name)
                .fetch_one(pool)
                .await?;
            settings.push((name.to_owned(), value));
        }
        Ok(Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory,
            postgres,
            load_start: load_average(),
            settings,
        })
    }
}

impl Machine {
    /// The machine's lines under `heading`, with the load average at the end of the run.
    pub fn render(&self, out: &mut String, heading: &str, load_end: &str) {
        let _ = writeln!(out, "\n{heading}\n");
        let _ = writeln!(out, "- nproc: {}", self.nproc);
        let _ = writeln!(out, "- CPU: {}", self.cpu);
        let _ = writeln!(out, "- memory: {}", self.memory);
        let _ = writeln!(out, "- PostgreSQL: {}", self.postgres);
        let settings: Vec<String> = self
            .settings
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let _ = writeln!(out, "- PostgreSQL settings: {}", settings.join(", "));
        let _ = writeln!(
            out,
            "- load average (1/5/15 min): {} at the start, {load_end} at the end",
            self.load_start
        );
    }
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    pub args: Args,
    pub machine: Machine,
    pub live: Timing,
    /// The group commit during A and A1: calls per group.
    pub live_groups: GroupSizes,
    pub live_raw: Timing,
    /// A1 and its baseline A1₀.
    pub lone: Timing,
    pub lone_groups: GroupSizes,
    pub lone_raw: Timing,
    pub bulk: Import,
    pub bulk_raw: Timing,
    pub bulk_raw_indexed: Timing,
    /// B1c: as B1, by `COPY` (text format).
    pub bulk_raw_copy: Timing,
    /// B1b: as B1, by binary `COPY` (what the import writes with).
    pub bulk_raw_binary: Timing,
    pub sizes: PayloadSizes,
    pub load_end: String,
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn latency(t: &Timing) -> String {
    match (t.percentile(50.0), t.percentile(99.0)) {
        (Some(p50), Some(p99)) => format!(
            "{:.1} / {:.1}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        ),
        _ => "—".to_owned(),
    }
}

fn row(out: &mut String, name: &str, t: &Timing, unit: &str, ratio: &str) {
    let _ = writeln!(
        out,
        "| {name} | {} | {:.2} | {} {unit}/s | {} | {ratio} |",
        thousands(t.count),
        t.seconds,
        thousands(t.rate().round() as u64),
        latency(t),
    );
}

pub fn render(f: &Figures) -> String {
    let a = &f.args;
    let mut out = String::new();
    let _ = writeln!(out, "## Results\n");
    let _ = writeln!(
        out,
        "| scenario | count | seconds | rate | latency p50 / p99 (ms) | ratio to its baseline |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    row(
        &mut out,
        &format!(
            "**A** live `ReceiveDossier`, {} clients (one channel each)",
            a.clients
        ),
        &f.live,
        "events",
        &format!("{:.2} × A0", f.live.rate() / f.live_raw.rate()),
    );
    row(
        &mut out,
        &format!(
            "A0 baseline: single-row `INSERT`, autocommit, {} tasks, plain table",
            a.clients
        ),
        &f.live_raw,
        "rows",
        "1",
    );
    let p50 = |t: &Timing| t.percentile(50.0).map_or(0.0, |d| d.as_secs_f64());
    row(
        &mut out,
        "**A1** lone `ReceiveDossier`: 1 client, one call after another, nothing else running",
        &f.lone,
        "events",
        &format!(
            "{:.2} × A1₀ (p50 {:.1} × A1₀'s)",
            f.lone.rate() / f.lone_raw.rate(),
            p50(&f.lone) / p50(&f.lone_raw).max(1e-9)
        ),
    );
    row(
        &mut out,
        "A1₀ baseline: A1's rows, single-row `INSERT`, autocommit, 1 task, plain table",
        &f.lone_raw,
        "rows",
        "1",
    );
    row(
        &mut out,
        &format!(
            "**B** bulk `ImportHistory`, 1 stream, batches of {}, {} in flight",
            thousands(a.batch as u64),
            a.pipeline
        ),
        &f.bulk.timing,
        "events",
        &format!(
            "{:.2} × B0 · {:.2} × B1",
            f.bulk.timing.rate() / f.bulk_raw.rate(),
            f.bulk.timing.rate() / f.bulk_raw_indexed.rate()
        ),
    );
    row(
        &mut out,
        &format!(
            "B0 baseline: `INSERT … SELECT FROM UNNEST`, {} rows a statement, plain table",
            thousands(a.batch as u64)
        ),
        &f.bulk_raw,
        "rows",
        "1",
    );
    row(
        &mut out,
        "B1 baseline: as B0, with the primary key and unique indexes of `events`",
        &f.bulk_raw_indexed,
        "rows",
        &format!("{:.2} × B0", f.bulk_raw_indexed.rate() / f.bulk_raw.rate()),
    );
    row(
        &mut out,
        "B1b baseline: as B1, each batch by one binary `COPY … FROM STDIN (FORMAT binary)`",
        &f.bulk_raw_binary,
        "rows",
        &format!(
            "{:.2} × B0 · {:.2} × B1",
            f.bulk_raw_binary.rate() / f.bulk_raw.rate(),
            f.bulk_raw_binary.rate() / f.bulk_raw_indexed.rate()
        ),
    );
    row(
        &mut out,
        "B1c baseline: as B1, each batch by one `COPY … FROM STDIN` (text format) instead",
        &f.bulk_raw_copy,
        "rows",
        &format!(
            "{:.2} × B0 · {:.2} × B1",
            f.bulk_raw_copy.rate() / f.bulk_raw.rate(),
            f.bulk_raw_copy.rate() / f.bulk_raw_indexed.rate()
        ),
    );
    let _ = writeln!(
        out,
        "\nA, A0, A1, A1₀: wall time of all calls; latency per call, at the client. \
         B: wall time from the first batch built to the last answer, including the client \
         building its {} batches ({:.1} s of CPU on the same cores). B0, B1: time inside the \
         `INSERT` statements only, B1b, B1c: inside the `COPY`s, encoding included (reading \
         the rows back from `events` is not timed). \
         Average payload: {:.0} bytes of JSON in `events`, {:.0} in B0's table.",
        f.bulk.batches,
        f.bulk.generating.as_secs_f64(),
        f.sizes.events,
        f.sizes.raw,
    );
    let _ = writeln!(
        out,
        "\nGroup commit (intake's log handle; percentiles are the bounds of \
         `motcua_append_group_size`'s buckets): A: {}. A1: {}.",
        f.live_groups.summary(),
        f.lone_groups.summary(),
    );

    f.machine.render(&mut out, "## Machine", &f.load_end);
    let _ = writeln!(
        out,
        "- `ANALYZE` before each phase: {}",
        if a.analyze {
            "yes (as autovacuum would have done by then)"
        } else {
            "no (`--no-analyze`)"
        }
    );
    let _ = writeln!(
        out,
        "- everything on this one machine: PostgreSQL, intake (in-process, pool of {} \
         connections) and the clients",
        a.pool
    );
    out
}

#[cfg(test)]
mod unit {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
