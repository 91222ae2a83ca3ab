//! How the lag scenarios (L, and the end-to-end E) see an append become a visible figure, and
//! when its message reached the relay's stream. One method, shared:
//!
//! - [`Poller`]: every awaited append (dossier, version, the instant its answer arrived) is
//!   compared with the first poll that sees `projection_contributions.version` at least the
//!   appended version. Apply writes the contribution and the `stats_rollup` cells in one
//!   transaction, so that is the instant the figure is visible to the projection's queries. One
//!   statement every [`POLL`] asks for every outstanding dossier; a lag is therefore over-stated
//!   by at most one poll interval plus the poll's own time.
//! - [`Observer`]: a plain pull consumer of the relay's stream without acks, which notes when
//!   each log position arrives (the relay's share of the lag).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often the poller looks for applied dossiers.
pub const POLL: Duration = Duration::from_millis(2);

/// One append whose visibility is awaited.
#[derive(Debug)]
struct Pending {
    dossier_id: String,
    version: i32,
    answered: Instant,
}

/// Awaits appended versions in `projection_contributions` (see the module docs).
#[derive(Debug)]
pub struct Poller {
    pending: Arc<Mutex<Vec<Pending>>>,
    visible: Arc<Mutex<Vec<Duration>>>,
    last_visible: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
    handle: JoinHandle<Result<(), sqlx::Error>>,
}

/// What a poller measured.
#[derive(Debug, Clone, Default)]
pub struct Visibility {
    /// Append answered → figure visible, sorted.
    pub lags: Vec<Duration>,
    /// Awaited appends not visible within the drain timeout.
    pub unseen: u64,
    /// When the last awaited figure was seen visible (None: none was).
    pub last_visible: Option<Instant>,
}

impl Poller {
    pub fn start(pool: &PgPool) -> Poller {
        let pending: Arc<Mutex<Vec<Pending>>> = Arc::default();
        let visible: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let last_visible: Arc<Mutex<Option<Instant>>> = Arc::default();
        let stop = CancellationToken::new();
        let handle = {
            let (pending, visible, pool, stop) =
                (pending.clone(), visible.clone(), pool.clone(), stop.clone());
            let last_visible = last_visible.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let ids: Vec<String> = {
                        let p = pending.lock().expect("not poisoned");
                        if stop.is_cancelled() {
                            return Ok(());
                        }
                        let distinct: HashSet<&str> =
                            p.iter().map(|e| e.dossier_id.as_str()).collect();
                        distinct.into_iter().map(str::to_owned).collect()
                    };
                    if ids.is_empty() {
                        continue;
                    }
                    let asked = Instant::now();
                    let rows: Vec<(String, i32)> = sqlx::query_as(
                        "SELECT dossier_id, version FROM projection_contributions \
                         WHERE dossier_id = ANY($1)",
                    )
                    .bind(&ids)
                    .fetch_all(&pool)
                    .await?;
                    let applied: HashMap<String, i32> = rows.into_iter().collect();
                    let mut p = pending.lock().expect("not poisoned");
                    let mut v = visible.lock().expect("not poisoned");
                    let seen = v.len();
                    p.retain(|e| {
                        if applied.get(&e.dossier_id).is_some_and(|a| *a >= e.version) {
                            // Committed before the poll's statement started.
                            v.push(asked.saturating_duration_since(e.answered));
                            false
                        } else {
                            true
                        }
                    });
                    if v.len() > seen {
                        *last_visible.lock().expect("not poisoned") = Some(asked);
                    }
                }
            })
        };
        Poller {
            pending,
            visible,
            last_visible,
            stop,
            handle,
        }
    }

    /// Awaits `version` of `dossier_id`, whose append was answered at `answered`.
    pub fn watch(&self, dossier_id: &str, version: i32, answered: Instant) {
        self.pending.lock().expect("not poisoned").push(Pending {
            dossier_id: dossier_id.to_owned(),
            version,
            answered,
        });
    }

    /// Appends still awaited.
    pub fn outstanding(&self) -> usize {
        self.pending.lock().expect("not poisoned").len()
    }

    /// Waits up to `timeout` for every awaited append to become visible, then stops.
    pub async fn drain(self, timeout: Duration) -> Result<Visibility> {
        let until = Instant::now() + timeout;
        while self.outstanding() > 0 && Instant::now() < until && !self.handle.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Poller {
            pending,
            visible,
            last_visible,
            stop,
            handle,
        } = self;
        stop.cancel();
        handle.await?.context("visibility poller")?;
        let unseen = pending.lock().expect("not poisoned").len() as u64;
        let mut lags = std::mem::take(&mut *visible.lock().expect("not poisoned"));
        lags.sort_unstable();
        let last_visible = *last_visible.lock().expect("not poisoned");
        Ok(Visibility {
            lags,
            unseen,
            last_visible,
        })
    }
}

/// Notes when each log position reaches a plain subscriber of the relay's stream.
#[derive(Debug)]
pub struct Observer {
    arrivals: Arc<Mutex<HashMap<i64, Instant>>>,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

impl Observer {
    pub async fn start(stream: &jetstream::stream::Stream) -> Result<Observer> {
        let observer = stream
            .create_consumer(pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .context("observer consumer")?;
        let arrivals: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
        let stop = CancellationToken::new();
        let mut messages = observer.messages().await.context("observer messages")?;
        let handle = {
            let (arrivals, stop) = (arrivals.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        next = messages.next() => next,
                    };
                    let Some(Ok(message)) = next else { return };
                    let now = Instant::now();
                    let position = message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(relay::HEADER_POSITION))
                        .and_then(|v| v.as_str().parse::<i64>().ok());
                    if let Some(p) = position {
                        arrivals.lock().expect("not poisoned").insert(p, now);
                    }
                }
            })
        };
        Ok(Observer {
            arrivals,
            stop,
            handle,
        })
    }

    /// Stops; for each `(position, answered)`, the time until the position's message arrived
    /// (positions that never arrived are left out), sorted.
    pub async fn stop(self, answered: &[(i64, Instant)]) -> Result<Vec<Duration>> {
        // Whatever was published has normally arrived by now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.cancel();
        self.handle.await?;
        let arrivals = self.arrivals.lock().expect("not poisoned");
        let mut relayed: Vec<Duration> = answered
            .iter()
            .filter_map(|(p, t)| arrivals.get(p).map(|a| a.saturating_duration_since(*t)))
            .collect();
        relayed.sort_unstable();
        Ok(relayed)
    }
}

/// The relay creates its stream when it starts; wait for it.
pub async fn wait_for_stream(
    js: &jetstream::Context,
    name: &str,
) -> Result<jetstream::stream::Stream> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match js.get_stream(name).await {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() >= until => bail!("the relay did not create {name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits until the projection's durable consumer `durable` exists, so the clock starts with it
/// running.
pub async fn wait_for_consumer(stream: &jetstream::stream::Stream, durable: &str) -> Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if stream.get_consumer::<pull::Config>(durable).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("the projection consumer {durable} did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
