//! Scenario A: live receives, many counters at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{SubsecRound, Utc};
use eventlog::{EventLog, GroupCommitStats};
use tests::{COUNTER_DISTRICT, RunningIntake, authed, receive_request};

use crate::Timing;

/// What the group committer of intake's log handle did during one timed phase (warm-ups
/// excluded): the difference of two snapshots of [`EventLog::group_commit_stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSizes {
    pub groups: u64,
    pub calls: u64,
    /// `(le, groups of at most le calls)`, cumulative; the last bound is `u64::MAX` (`+Inf`).
    pub buckets: Vec<(u64, u64)>,
    pub reruns: u64,
    pub heads_looked_up: u64,
    pub splits: u64,
}

impl GroupSizes {
    pub fn between(before: &GroupCommitStats, after: &GroupCommitStats) -> GroupSizes {
        GroupSizes {
            groups: after.groups - before.groups,
            calls: after.calls - before.calls,
            buckets: after
                .size_buckets
                .iter()
                .zip(&before.size_buckets)
                .map(|(&(le, a), &(_, b))| (le, a - b))
                .collect(),
            reruns: after.reruns - before.reruns,
            heads_looked_up: after.heads_looked_up - before.heads_looked_up,
            splits: after.splits - before.splits,
        }
    }

    /// Calls per group on average.
    pub fn mean(&self) -> f64 {
        self.calls as f64 / self.groups.max(1) as f64
    }

    /// The upper bound of the bucket that holds the `p`-th percentile group (nearest rank):
    /// the `p`-th percentile group has at most this many calls. `None` without groups, or
    /// beyond the last finite bound.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.groups == 0 {
            return None;
        }
        let rank = (((p / 100.0) * self.groups as f64).ceil() as u64).clamp(1, self.groups);
        self.buckets
            .iter()
            .find(|(_, groups)| *groups >= rank)
            .map(|(le, _)| *le)
            .filter(|le| *le != u64::MAX)
    }

    /// `mean 9.3, p50 ≤ 8, p99 ≤ 24 calls per group (1,075 groups)`, with any reruns.
    pub fn summary(&self) -> String {
        let bound = |p: f64| {
            self.percentile(p)
                .map_or_else(|| "—".to_owned(), |le| format!("≤ {le}"))
        };
        let mut text = format!(
            "mean {:.1}, p50 {}, p99 {} calls per group ({} groups, {} calls)",
            self.mean(),
            bound(50.0),
            bound(99.0),
            crate::report::thousands(self.groups),
            crate::report::thousands(self.calls),
        );
        if self.reruns + self.heads_looked_up + self.splits > 0 {
            text.push_str(&format!(
                "; run again: {} after a lost race, {} with look-ups after out-of-date heads; {} split",
                self.reruns, self.heads_looked_up, self.splits
            ));
        }
        text
    }
}

/// Dossier ids of the measured receives; the baseline reads their rows back by this prefix.
pub const DOSSIER_PREFIX: &str = "BENCH-R-";

/// `receives` calls of `ReceiveDossier` (each a new dossier) from `clients` tasks, each with its
/// own channel (its own HTTP/2 connection). Before the clock starts, every client makes one
/// warm-up call (not counted), so connections and the pool are open.
pub async fn run(
    intake: &RunningIntake,
    log: &EventLog,
    receives: usize,
    clients: usize,
) -> Result<(Timing, GroupSizes)> {
    // Business time a little in the past (the server refuses future times).
    let occurred_at = (Utc::now() - chrono::Duration::minutes(5)).trunc_subsecs(0);
    let mut channels = Vec::with_capacity(clients);
    for _ in 0..clients {
        channels.push(intake.client().await);
    }

    let mut warmups = Vec::with_capacity(clients);
    for (c, client) in channels.iter().enumerate() {
        let mut client = client.clone();
        warmups.push(tokio::spawn(async move {
            let request = receive_request(&format!("BENCH-W-{c:04}"), occurred_at);
            client
                .receive_dossier(authed(COUNTER_DISTRICT, request))
                .await
                .map(|_| ())
        }));
    }
    for warmup in warmups {
        warmup.await?.context("warm-up ReceiveDossier")?;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let groups_before = log.group_commit_stats();
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for mut client in channels {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= receives {
                    return Ok::<_, tonic::Status>(latencies);
                }
                let request = receive_request(&format!("{DOSSIER_PREFIX}{i:07}"), occurred_at);
                let sent = Instant::now();
                client
                    .receive_dossier(authed(COUNTER_DISTRICT, request))
                    .await?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(receives);
    for task in tasks {
        latencies.extend(task.await?.context("ReceiveDossier")?);
    }
    let elapsed = start.elapsed();
    let groups = GroupSizes::between(&groups_before, &log.group_commit_stats());
    Ok((Timing::new(receives as u64, elapsed, latencies), groups))
}

/// Dossier ids of the lone calls.
pub const LONE_PREFIX: &str = "BENCH-L-";

/// A1: `calls` `ReceiveDossier` calls one after another from one client, nothing else running:
/// the latency of an uncontended call. One warm-up call first (not counted).
pub async fn lone(
    intake: &RunningIntake,
    log: &EventLog,
    calls: usize,
) -> Result<(Timing, GroupSizes)> {
    let occurred_at = (Utc::now() - chrono::Duration::minutes(5)).trunc_subsecs(0);
    let mut client = intake.client().await;
    let warmup = receive_request("BENCH-W-LONE", occurred_at);
    client
        .receive_dossier(authed(COUNTER_DISTRICT, warmup))
        .await
        .context("warm-up ReceiveDossier")?;
    let mut latencies = Vec::with_capacity(calls);
    let groups_before = log.group_commit_stats();
    let start = Instant::now();
    for i in 0..calls {
        let request = receive_request(&format!("{LONE_PREFIX}{i:07}"), occurred_at);
        let sent = Instant::now();
        client
            .receive_dossier(authed(COUNTER_DISTRICT, request))
            .await
            .context("ReceiveDossier")?;
        latencies.push(sent.elapsed());
    }
    let elapsed = start.elapsed();
    let groups = GroupSizes::between(&groups_before, &log.group_commit_stats());
    Ok((Timing::new(calls as u64, elapsed, latencies), groups))
}

#[cfg(test)]
mod unit {
    use super::GroupSizes;

    #[test]
    fn group_size_percentiles_are_bucket_bounds() {
        let sizes = GroupSizes {
            groups: 100,
            calls: 700,
            buckets: vec![(1, 10), (4, 50), (8, 98), (16, 100), (u64::MAX, 100)],
            reruns: 0,
            heads_looked_up: 0,
            splits: 0,
        };
        assert_eq!(sizes.mean(), 7.0);
        assert_eq!(sizes.percentile(50.0), Some(4));
        assert_eq!(sizes.percentile(51.0), Some(8));
        assert_eq!(sizes.percentile(99.0), Some(16));
        let beyond = GroupSizes {
            buckets: vec![(1, 0), (u64::MAX, 100)],
            ..sizes
        };
        assert_eq!(beyond.percentile(50.0), None);
    }
}
