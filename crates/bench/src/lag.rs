//! Scenario L: the lag from an append's commit to its figure being visible, under a sustained
//! load, through the whole live chain: `EventLog::append` → the relay (LISTEN/NOTIFY wakes it)
//! → a private JetStream stream → the projection's durable pull consumer
//! (`projection::consumer::run`, one or more instances) → `apply_dossier` commits.
//!
//! `--writers` tasks append at a steady total `--lag-rate` for `--lag-secs`: each tick starts a
//! new synthetic dossier or appends the next event of one it started (one event per append, as
//! at a counter). Every append is sampled: the instant `append` returned (its commit is done) is
//! compared with the first poll that sees the dossier's applied version reach it
//! ([`crate::visible::Poller`], shared with the end-to-end scenario).
//!
//! Also measured in the same run: when each event reaches a plain subscriber of the relay's
//! stream (the relay's share of the lag, [`crate::visible::Observer`]), and the baseline
//! **L0**: raw JetStream messages published at the same rate by as many tasks to a stream of
//! their own and received by a durable pull consumer with explicit acks (publish call →
//! receipt).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::pull};
use eventlog::EventLog;
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::synth::{self, Catalog, Rng};
use crate::visible::{Observer, Poller, wait_for_consumer, wait_for_stream};

/// The durable consumer the projection instances share.
const DURABLE: &str = "bench-projection";

#[derive(Debug, Clone, Copy)]
pub struct LagConfig {
    pub secs: u64,
    /// Appends per second, all writers together.
    pub rate: u64,
    pub writers: usize,
    pub consumers: usize,
}

/// What one lag run measured.
#[derive(Debug, Clone)]
pub struct Lag {
    pub config: LagConfig,
    pub appended: u64,
    pub seconds: f64,
    /// Append returned → figure visible, sorted.
    pub visible: Vec<Duration>,
    /// Append returned → message received by a plain subscriber of the relay's stream, sorted.
    pub relayed: Vec<Duration>,
    /// Appends whose figure was not visible within the drain timeout.
    pub unseen: u64,
    /// From the first append to the poll that saw the last figure: the projection's sustained
    /// apply rate is `visible.len() / applied_seconds` (the append rate when it keeps up).
    pub applied_seconds: f64,
}

pub async fn run(pool: &PgPool, config: LagConfig) -> Result<Lag> {
    let log = EventLog::from_pool(pool.clone());
    projection::store::migrate(pool).await?;
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();
    let relay =
        tests::RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let stream = wait_for_stream(&js, &nats.stream).await?;

    let shutdown = CancellationToken::new();
    let mut consumers = Vec::new();
    for _ in 0..config.consumers {
        let consumer = projection::ConsumerConfig::new(&nats.stream, &nats.prefix, DURABLE);
        consumers.push(tokio::spawn(projection::consumer::run(
            log.clone(),
            js.clone(),
            consumer,
            tokio::sync::watch::Sender::new(projection::ConsumerStatus::default()),
            shutdown.clone(),
        )));
    }
    // The relay's share: a plain subscriber of the same stream, without acks.
    let observer = Observer::start(&stream).await?;
    wait_for_consumer(&stream, DURABLE).await?;
    let poller = Arc::new(Poller::start(pool));

    // The writers.
    eprintln!(
        "bench: L  {} writers, {} appends/s for {} s, {} projection consumer(s)",
        config.writers, config.rate, config.secs, config.consumers
    );
    let catalog = Arc::new(Catalog::new());
    let committed: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let period = Duration::from_secs_f64(config.writers as f64 / config.rate as f64);
    let deadline = Instant::now() + Duration::from_secs(config.secs);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..config.writers {
        let log = log.clone();
        let catalog = catalog.clone();
        let poller = poller.clone();
        let committed = committed.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng::new(0xbe9c_0000 + w as u64);
            let mut open: VecDeque<(synth::Dossier, usize)> = VecDeque::new();
            let mut next_dossier = (w as u64) << 40;
            let mut appended = 0u64;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Writers start spread over one period, not all at once.
            tokio::time::sleep(period.mul_f64(w as f64 / 8.0)).await;
            while Instant::now() < deadline {
                tick.tick().await;
                let (dossier, index) = if open.len() < 4 || rng.below(100) < 30 {
                    next_dossier += 1;
                    (synth::dossier(&catalog, next_dossier), 0)
                } else {
                    open.pop_front().expect("not empty")
                };
                let mut append = synth::to_append(&catalog, &dossier);
                append.events = vec![synth::new_event(&dossier.events[index])];
                if index > 0 {
                    append.expected_version = eventlog::ExpectedVersion::Exact(index as u32);
                }
                let stored = log.append(vec![append]).await?;
                let now = Instant::now();
                let event = &stored.events[0];
                poller.watch(&event.dossier_id, event.version, now);
                committed
                    .lock()
                    .expect("not poisoned")
                    .push((event.position, now));
                appended += 1;
                if index + 1 < dossier.events.len() {
                    open.push_back((dossier, index + 1));
                }
            }
            Ok::<_, eventlog::AppendError>(appended)
        }));
    }
    let mut appended = 0;
    for w in writers {
        appended += w.await?.context("append")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "bench: L  {appended} appends in {seconds:.1} s ({:.0}/s); draining",
        appended as f64 / seconds
    );

    // Drain: everything appended should become visible.
    let poller = Arc::into_inner(poller).context("the writers are done with the poller")?;
    let visibility = poller.drain(Duration::from_secs(120)).await?;
    let committed = std::mem::take(&mut *committed.lock().expect("not poisoned"));
    let relayed = observer.stop(&committed).await?;
    let applied_seconds = visibility.last_visible.map_or(seconds, |t| {
        t.saturating_duration_since(started).as_secs_f64()
    });
    shutdown.cancel();
    for c in consumers {
        c.await?;
    }
    relay.stop().await;

    if visibility.lags.is_empty() {
        bail!("no append became visible");
    }
    drop(nats);
    Ok(Lag {
        config,
        appended,
        seconds,
        visible: visibility.lags,
        relayed,
        unseen: visibility.unseen,
        applied_seconds,
    })
}

/// Baseline L0: raw JetStream publish → pull-consumer receipt at the same rate.
pub async fn raw_baseline(config: LagConfig) -> Result<(u64, f64, Vec<Duration>)> {
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: nats.stream.clone(),
            subjects: vec![format!("{}.>", nats.prefix)],
            ..Default::default()
        })
        .await
        .context("create the baseline stream")?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("bench-raw".to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .context("baseline consumer")?;
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let received: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let shutdown = CancellationToken::new();
    let receiving = {
        let sent = sent.clone();
        let received = received.clone();
        let shutdown = shutdown.clone();
        let mut messages = consumer.messages().await.context("baseline messages")?;
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    () = shutdown.cancelled() => return Ok::<_, async_nats::Error>(()),
                    next = messages.next() => next,
                };
                let Some(message) = next else {
                    return Ok(());
                };
                let message = message?;
                let now = Instant::now();
                let id = u64::from_le_bytes(message.payload[..8].try_into()?);
                message.ack().await?;
                if let Some(t) = sent.lock().expect("not poisoned").get(&id) {
                    received
                        .lock()
                        .expect("not poisoned")
                        .push(now.saturating_duration_since(*t));
                }
            }
        })
    };

    let period = Duration::from_secs_f64(config.writers as f64 / config.rate as f64);
    let deadline = Instant::now() + Duration::from_secs(config.secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..config.writers {
        let js = js.clone();
        let sent = sent.clone();
        let subject = format!("{}.raw.{w}", nats.prefix);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::time::sleep(period.mul_f64(w as f64 / 8.0)).await;
            let mut n = 0u64;
            while Instant::now() < deadline {
                tick.tick().await;
                let id = ((w as u64) << 40) | n;
                // About the size of an event's canonical bytes.
                let mut payload = vec![b'x'; 400];
                payload[..8].copy_from_slice(&id.to_le_bytes());
                sent.lock()
                    .expect("not poisoned")
                    .insert(id, Instant::now());
                js.publish(subject.clone(), payload.into()).await?.await?;
                n += 1;
            }
            Ok::<_, async_nats::Error>(n)
        }));
    }
    let mut published = 0;
    for t in tasks {
        published += t.await?.map_err(|e| anyhow::anyhow!("publish: {e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let until = Instant::now() + Duration::from_secs(30);
    while (received.lock().expect("not poisoned").len() as u64) < published
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    receiving
        .await?
        .map_err(|e| anyhow::anyhow!("baseline consumer: {e}"))?;
    let mut lags = std::mem::take(&mut *received.lock().expect("not poisoned"));
    lags.sort_unstable();
    if (lags.len() as u64) < published {
        bail!(
            "the baseline received {} of {published} messages",
            lags.len()
        );
    }
    drop(nats);
    Ok((published, seconds, lags))
}
