//! Batched dossier loads: the reads of [`EventLog::load_dossier_for_append`](crate::EventLog::load_dossier_for_append)
//! that arrive together share one statement.
//!
//! Every live call of the write path first reads its dossier (the events it decides on). Read
//! one by one, each is a round trip of its own to PostgreSQL — and a second one, sqlx's check of
//! the connection as it goes back to the pool — so at 64 concurrent calls the server spends most
//! of its work waking up for single-row index lookups. Each `EventLog` handle (and its clones)
//! therefore has one **loader**, built like the group committer ([`crate::group`]): a dispatcher
//! task takes every load queued at the moment it has a free slot (it never waits for more, so a
//! lone load goes at once, as the same prepared statement as before) and reads them as one
//! batch, `WHERE dossier_id = ANY($1)`, at most [`LOADS_IN_FLIGHT`] batches at a time.
//!
//! Exactness: a batch's statement starts after each of its loads was asked for, and reads one
//! snapshot, so each caller sees every append committed before its call — what a read of its own
//! would see, or later. (The write path checks what it read against the log anyway: the group
//! commit's unique constraints refuse an append decided on an out-of-date read.)
//!
//! Failures: a batch whose statement fails reads its dossiers again one by one (each answers with
//! its own error or events), so one bad batch costs no caller more than its own read; a row that
//! does not decode fails only its dossier's loads; a batch that has not finished within
//! [`LOAD_DEADLINE`] is abandoned (its connection dropped) and answered `Unavailable`; a task that
//! dies drops its callers' answer channels (they get `Unavailable`) and the next load starts a
//! new dispatcher.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::queue::Queue;
use crate::read::{decode_events, select_events};
use crate::{ReadError, StoredEvent};

/// The most dossiers one batch reads; more queued loads wait for the next batch.
pub const LOAD_MAX_DOSSIERS: usize = 256;
/// Batches of one handle in flight at once.
pub const LOADS_IN_FLIGHT: usize = 2;
/// The longest a batch may take; past it its loads are answered `Unavailable`. The write path's
/// `WRITE_TIMEOUT` (15 s) answers its callers before this.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(30);

const LOAD_BATCH: &str = select_events!("WHERE dossier_id = ANY($1) ORDER BY dossier_id, version");

type Answer = Result<Vec<StoredEvent>, ReadError>;

struct Job {
    dossier_id: String,
    reply: oneshot::Sender<Answer>,
}

/// What a handle's loader has done, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoadBatchStats {
    /// Batches read (a lone load is a batch of one).
    pub batches: u64,
    /// Loads answered by those batches.
    pub loads: u64,
    /// Batches whose statement failed and whose dossiers were read again one by one.
    pub splits: u64,
    /// Loads waiting for a batch now.
    pub queued: u64,
}

#[derive(Debug, Default)]
struct Stats {
    batches: AtomicU64,
    loads: AtomicU64,
    splits: AtomicU64,
    queued: AtomicU64,
}

/// The loader of one `EventLog` handle (shared by its clones).
pub(crate) struct Loader {
    pool: PgPool,
    /// The dispatcher's queue; started by the first load, started again if it died.
    queue: Queue<Job>,
    stats: Arc<Stats>,
}

impl fmt::Debug for Loader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loader")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Loader {
    pub(crate) fn new(pool: PgPool) -> Loader {
        Loader {
            pool,
            queue: Queue::default(),
            stats: Arc::new(Stats::default()),
        }
    }

    pub(crate) fn stats(&self) -> LoadBatchStats {
        LoadBatchStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            loads: self.stats.loads.load(Ordering::Relaxed),
            splits: self.stats.splits.load(Ordering::Relaxed),
            queued: self.stats.queued.load(Ordering::Relaxed),
        }
    }

    /// Every event of the dossier, in version order (empty when it has none).
    pub(crate) async fn load(&self, dossier_id: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            dossier_id: dossier_id.to_owned(),
            reply,
        };
        let sent = self.queue.send(
            job,
            &self.stats.queued,
            |jobs| {
                tokio::spawn(dispatch(self.pool.clone(), jobs, self.stats.clone()));
            },
            || tracing::warn!("eventlog: the dossier loader had stopped; restarting it"),
        );
        match sent {
            Ok(()) => answer.await.unwrap_or_else(|_| Err(lost())),
            Err(_) => Err(lost()),
        }
    }
}

/// The answer of a load whose batch task is gone without answering.
fn lost() -> ReadError {
    ReadError::Unavailable(sqlx::Error::WorkerCrashed)
}

/// Takes the queued loads into batches, one per free slot, each read in a task of its own. A
/// load whose caller stopped waiting before its batch starts is dropped unread.
async fn dispatch(pool: PgPool, mut jobs: mpsc::UnboundedReceiver<Job>, stats: Arc<Stats>) {
    let slots = Arc::new(Semaphore::new(LOADS_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch: Vec<Job> = Vec::new();
        while batch.is_empty() {
            // Every handle gone: stop.
            let Some(job) = jobs.recv().await else { return };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            if !job.reply.is_closed() {
                batch.push(job);
            }
        }
        // Whatever is queued right now, within the bound; never wait for more.
        while batch.len() < LOAD_MAX_DOSSIERS
            && let Ok(job) = jobs.try_recv()
        {
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            if !job.reply.is_closed() {
                batch.push(job);
            }
        }
        tokio::spawn(run_batch(pool.clone(), batch, slot, stats.clone()));
    }
}

async fn run_batch(pool: PgPool, jobs: Vec<Job>, _slot: OwnedSemaphorePermit, stats: Arc<Stats>) {
    // The index of the last load of each dossier: it takes the events, the others a copy.
    let mut last: HashMap<String, usize> = HashMap::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        last.insert(job.dossier_id.clone(), i);
    }
    let ids: Vec<&str> = last.keys().map(String::as_str).collect();
    let read = async {
        if let [id] = ids.as_slice() {
            return HashMap::from([(id.to_string(), crate::load_dossier_with(&pool, id).await)]);
        }
        match read_batch(&pool, &ids).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(
                    %error,
                    dossiers = ids.len(),
                    "eventlog: a batched load failed, reading its dossiers one by one"
                );
                stats.splits.fetch_add(1, Ordering::Relaxed);
                let mut found = HashMap::with_capacity(ids.len());
                for id in &ids {
                    found.insert(id.to_string(), crate::load_dossier_with(&pool, id).await);
                }
                found
            }
        }
    };
    let mut found = match tokio::time::timeout(LOAD_DEADLINE, read).await {
        Ok(found) => found,
        Err(_) => {
            tracing::warn!(
                dossiers = ids.len(),
                "eventlog: a batched load did not finish within {LOAD_DEADLINE:?}"
            );
            HashMap::new()
        }
    };
    stats.batches.fetch_add(1, Ordering::Relaxed);
    stats.loads.fetch_add(jobs.len() as u64, Ordering::Relaxed);
    for (i, job) in jobs.into_iter().enumerate() {
        let answer = if last.get(&job.dossier_id) == Some(&i) {
            found.remove(&job.dossier_id)
        } else {
            found.get(&job.dossier_id).map(copy)
        };
        // A caller that gave up (its own timeout) no longer listens.
        let _ = job.reply.send(answer.unwrap_or_else(|| Err(timed_out())));
    }
}

/// Reads every dossier of a batch in one statement. A dossier without events is answered with
/// none; a dossier whose rows do not decode gets its own `Corrupt`.
async fn read_batch(pool: &PgPool, ids: &[&str]) -> Result<HashMap<String, Answer>, sqlx::Error> {
    // Batch lookups are planned for each call (see `append::LOOKUP_EVENTS`).
    let rows: Vec<PgRow> = sqlx::query(LOAD_BATCH)
        .persistent(false)
        .bind(ids)
        .fetch_all(pool)
        .await?;
    let mut found: HashMap<String, Answer> = ids
        .iter()
        .map(|id| (id.to_string(), Ok(Vec::new())))
        .collect();
    // Rows come ordered by dossier: decode each dossier's run of rows on its own.
    let mut start = 0;
    while start < rows.len() {
        let dossier_id: String = rows[start].try_get("dossier_id")?;
        let mut end = start + 1;
        while end < rows.len() && rows[end].try_get::<&str, _>("dossier_id")? == dossier_id {
            end += 1;
        }
        found.insert(dossier_id, decode_events(&rows[start..end]));
        start = end;
    }
    Ok(found)
}

/// A second answer for another load of the same dossier in the same batch.
fn copy(answer: &Answer) -> Answer {
    match answer {
        Ok(events) => Ok(events.clone()),
        Err(ReadError::Corrupt { position, reason }) => Err(ReadError::Corrupt {
            position: *position,
            reason: reason.clone(),
        }),
        Err(ReadError::Unavailable(error)) => Err(ReadError::Unavailable(sqlx::Error::Io(
            std::io::Error::other(error.to_string()),
        ))),
    }
}

fn timed_out() -> ReadError {
    ReadError::Unavailable(sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("the batched load did not finish within {LOAD_DEADLINE:?}"),
    )))
}
