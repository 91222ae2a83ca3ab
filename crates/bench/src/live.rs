//! Scenario A: live receives, many counters at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{SubsecRound, Utc};
use tests::{COUNTER_DISTRICT, RunningIntake, authed, receive_request};

use crate::Timing;

/// Dossier ids of the measured receives; the baseline reads their rows back by this prefix.
pub const DOSSIER_PREFIX: &str = "BENCH-R-";

/// `receives` calls of `ReceiveDossier` (each a new dossier) from `clients` tasks, each with its
/// own channel (its own HTTP/2 connection). Before the clock starts, every client makes one
/// warm-up call (not counted), so connections and the pool are open.
pub async fn run(intake: &RunningIntake, receives: usize, clients: usize) -> Result<Timing> {
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
    Ok(Timing::new(receives as u64, start.elapsed(), latencies))
}

/// Dossier ids of the lone calls.
pub const LONE_PREFIX: &str = "BENCH-L-";

/// A1: `calls` `ReceiveDossier` calls one after another from one client, nothing else running:
/// the latency of an uncontended call. One warm-up call first (not counted).
pub async fn lone(intake: &RunningIntake, calls: usize) -> Result<Timing> {
    let occurred_at = (Utc::now() - chrono::Duration::minutes(5)).trunc_subsecs(0);
    let mut client = intake.client().await;
    let warmup = receive_request("BENCH-W-LONE", occurred_at);
    client
        .receive_dossier(authed(COUNTER_DISTRICT, warmup))
        .await
        .context("warm-up ReceiveDossier")?;
    let mut latencies = Vec::with_capacity(calls);
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
    Ok(Timing::new(calls as u64, start.elapsed(), latencies))
}
