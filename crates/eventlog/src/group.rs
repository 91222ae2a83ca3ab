//! Group commit: the calls of [`EventLog::append`](crate::EventLog::append) that arrive together
//! share one transaction, one sequencing step and one WAL flush.
//!
//! Each `EventLog` handle (and its clones) has one **committer**: a dispatcher task that takes
//! every call queued at the moment it has a free slot — it never waits for more, so a lone call
//! goes at once — and runs them as one group in a task of its own, at most
//! [`GROUPS_IN_FLIGHT`] groups at a time. A group is one [`append::attempt`] over all its calls
//! (the lookups for all of them, each call resolved in queue order against the log and the
//! calls before it, one `SEQUENCE`, one `INSERT`) and one `COMMIT`; every caller then gets its
//! own answer, exactly the one it would have got had the calls come one after another.
//!
//! Calls decided on their callers' reads ([`EventLog::append_after`](crate::EventLog::append_after),
//! the write path's) skip the look-ups: when every call of a group came with the
//! [`DossierHead`](crate::DossierHead) its caller loaded and decided on, and those heads settle
//! every call (each is written, or duplicates an earlier call of the group), the group's
//! transaction is only `SEQUENCE`, `INSERT` and `COMMIT` (`append::resolve_on_heads`). The
//! versions after each head and the event ids go straight to the insert, so anything written
//! since a caller's read — another writer on the dossier, the original of a retried call —
//! fails the insert on the unique constraint on `(dossier_id, version)` or `event_id`; the
//! group is rolled back (nothing written, no position taken) and runs with the look-ups, which
//! answer that call (a conflict, a duplicate, a reused id) while the others commit. A group
//! the heads would refuse a call of, or with a call without a head, runs with the look-ups
//! from the start: a refusal writes nothing, so no constraint would check what it rests on.
//!
//! Failures:
//! - a unique violation in a group run on its heads: run again with the look-ups (above; it
//!   does not count as one of the `GROUP_ATTEMPTS`);
//! - a unique violation (a race with another writer: another process, the handle's other group
//!   in flight, an `append_in`) aborts the transaction; the group runs once more from the top,
//!   where the lookups see the winner; if it loses again its calls run one by one
//!   ([`append::append_prepared`], each with the single call's race handling);
//! - a statement error that can only come from one call's data (SQLSTATE classes 22, 23, 54)
//!   splits the group the same way, so that only that call fails;
//! - anything else (the connection, the `COMMIT`) answers every call of the group
//!   `Unavailable`; nothing of it was written, or, when the `COMMIT` itself failed, the outcome
//!   is unknown, and a retry with the same event ids tells;
//! - a group that has not finished within [`GROUP_DEADLINE`] is abandoned (its connection
//!   dropped) and answered `Unavailable`, so a dead connection cannot hold a slot for ever;
//! - a task that dies (a panic, its runtime shut down) drops its callers' answer channels: they
//!   get `Unavailable`; the next call starts a new dispatcher if the old one is gone.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::append::{self, Attempt, AttemptError, Prepared, Race, Resolved};
use crate::queue::Queue;
use crate::{AppendError, Appended};

/// The most events one group carries. A call with more runs on its own, as one transaction of
/// its own (the bulk import's batches of thousands).
pub const GROUP_MAX_EVENTS: usize = 1_000;
/// The most bytes (roughly: payload strings and keys, ids, routing) one group carries; a larger
/// call runs on its own.
pub const GROUP_MAX_BYTES: usize = 4 << 20;
/// Groups of one handle in flight at once: the next group does its lookups while the previous
/// one holds the sequencer, and a group stuck on a dead connection does not stop the others.
pub const GROUPS_IN_FLIGHT: usize = 2;
/// The longest a group may take, waiting for the sequencer included; past it every call of the
/// group is answered `Unavailable` (the outcome is unknown only if the `COMMIT` had been sent).
/// A healthy group takes milliseconds; the write path's `WRITE_TIMEOUT` (15 s) answers its
/// callers before this.
pub const GROUP_DEADLINE: Duration = Duration::from_secs(30);
/// Attempts of a whole group before its calls run one by one.
const GROUP_ATTEMPTS: u32 = 2;
/// Upper bounds of the group size histogram (calls per group); the last bucket is `+Inf`.
pub const GROUP_SIZE_BOUNDS: [u64; 17] = [
    1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024,
];

type Answer = Result<Appended, AppendError>;

struct Job {
    prepared: Prepared,
    reply: oneshot::Sender<Answer>,
}

/// The committer of one `EventLog` handle (shared by its clones).
pub(crate) struct Committer {
    pool: PgPool,
    /// The dispatcher's queue; started by the first call, started again if it died.
    queue: Queue<Job>,
    stats: Arc<Stats>,
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer")
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl Committer {
    pub(crate) fn new(pool: PgPool) -> Committer {
        Committer {
            pool,
            queue: Queue::default(),
            stats: Arc::new(Stats::default()),
        }
    }

    /// Whether a call is small enough to join a group (else it runs on its own).
    pub(crate) fn takes(prepared: &Prepared) -> bool {
        prepared.event_ids.len() <= GROUP_MAX_EVENTS && prepared.bytes <= GROUP_MAX_BYTES
    }

    /// Queues a validated call and waits for its answer.
    pub(crate) async fn append(&self, prepared: Prepared) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.submit(Job { prepared, reply })?;
        answer.await.unwrap_or_else(|_| Err(lost()))
    }

    pub(crate) fn stats(&self) -> GroupCommitStats {
        self.stats.snapshot()
    }

    fn submit(&self, job: Job) -> Result<(), AppendError> {
        self.queue
            .send(
                job,
                &self.stats.queued,
                |jobs| {
                    tokio::spawn(dispatch(self.pool.clone(), jobs, self.stats.clone()));
                },
                || {
                    self.stats.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("eventlog: the group committer had stopped; restarting it");
                },
            )
            .map_err(|_| lost())
    }
}

/// The answer of a call whose group task is gone without answering.
fn lost() -> AppendError {
    AppendError::Unavailable(sqlx::Error::WorkerCrashed)
}

/// Takes the queued calls into groups, one group per free slot, and starts each in a task.
/// A call whose caller has stopped waiting (its own timeout) before its group starts is dropped
/// unwritten.
async fn dispatch(pool: PgPool, mut jobs: mpsc::UnboundedReceiver<Job>, stats: Arc<Stats>) {
    let slots = Arc::new(Semaphore::new(GROUPS_IN_FLIGHT));
    let mut carried: Option<Job> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut group: Vec<Job> = Vec::new();
        let (mut events, mut bytes) = (0, 0);
        while group.is_empty() {
            let job = match carried.take() {
                Some(job) => job,
                None => match jobs.recv().await {
                    Some(job) => job,
                    // Every handle is gone.
                    None => return,
                },
            };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            if !job.reply.is_closed() {
                events = job.prepared.event_ids.len();
                bytes = job.prepared.bytes;
                group.push(job);
            }
        }
        // Whatever is queued right now, within the bounds; never wait for more.
        while let Ok(job) = jobs.try_recv() {
            let (more_events, more_bytes) = (job.prepared.event_ids.len(), job.prepared.bytes);
            if !job.reply.is_closed()
                && (events + more_events > GROUP_MAX_EVENTS || bytes + more_bytes > GROUP_MAX_BYTES)
            {
                carried = Some(job);
                break;
            }
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            if !job.reply.is_closed() {
                events += more_events;
                bytes += more_bytes;
                group.push(job);
            }
        }
        stats.record(group.len());
        tokio::spawn(run_group(pool.clone(), group, slot, stats.clone()));
    }
}

/// Counts a group task that panicked (its callers get `Unavailable` from their dropped
/// channels).
struct PanicWatch(Arc<Stats>);

impl Drop for PanicWatch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "eventlog: a group commit panicked; its calls are answered Unavailable"
            );
        }
    }
}

async fn run_group(pool: PgPool, jobs: Vec<Job>, _slot: OwnedSemaphorePermit, stats: Arc<Stats>) {
    let _watch = PanicWatch(stats.clone());
    let (calls, replies): (Vec<Prepared>, Vec<oneshot::Sender<Answer>>) = jobs
        .into_iter()
        .map(|job| (job.prepared, job.reply))
        .unzip();
    let answers = match tokio::time::timeout(GROUP_DEADLINE, commit_group(&pool, &calls, &stats))
        .await
    {
        Ok(answers) => answers,
        Err(_) => {
            tracing::warn!(
                calls = calls.len(),
                "eventlog: a group commit did not finish within {GROUP_DEADLINE:?}"
            );
            calls
                .iter()
                .map(|_| {
                    Err(AppendError::Unavailable(sqlx::Error::Io(
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the group commit did not finish within {GROUP_DEADLINE:?}"),
                        ),
                    )))
                })
                .collect()
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A caller that gave up (its own timeout) no longer listens.
        let _ = reply.send(answer);
    }
}

/// Why a group's transaction did not commit.
enum GroupError {
    /// A unique violation: another writer won a race.
    Raced(Race),
    /// A statement failed on what one of the calls carries (SQLSTATE 22, 23, 54).
    Data(sqlx::Error),
    /// Anything else: the same answer for every call.
    Failed(AppendError),
}

/// What one attempt of a group does before its sequencing section.
enum Plan<'a> {
    /// Nothing: its calls were resolved on their callers' heads ([`append::resolve_on_heads`]).
    Heads(Resolved),
    /// The look-ups, then the resolution ([`append::attempt`]).
    LookUp(&'a [&'a Prepared]),
}

/// Every call's answer, in order.
async fn commit_group(pool: &PgPool, calls: &[Prepared], stats: &Stats) -> Vec<Answer> {
    let refs: Vec<&Prepared> = calls.iter().collect();
    // First on the callers' heads, without look-ups, when every call came with them and they
    // settle every call; a unique violation there means a head was out of date: the group then
    // runs with the look-ups, as a group without heads does from the start.
    let mut on_heads = append::resolve_on_heads(&refs);
    if on_heads.is_none() && refs.iter().all(|call| call.has_heads()) {
        // The heads would refuse a call: refusals are answered after a look-up.
        stats.heads_looked_up.fetch_add(1, Ordering::Relaxed);
    }
    let mut attempt_no = 1;
    loop {
        let plan = match on_heads.take() {
            Some(resolved) => Plan::Heads(resolved),
            None => Plan::LookUp(&refs),
        };
        let trusted = matches!(plan, Plan::Heads(_));
        match group_attempt(pool, plan).await {
            Ok(answers) => return answers,
            Err(GroupError::Raced(race)) if trusted => {
                tracing::debug!(
                    ?race,
                    calls = calls.len(),
                    "eventlog: a group's heads were out of date, running it with the look-ups"
                );
                stats.heads_looked_up.fetch_add(1, Ordering::Relaxed);
            }
            Err(GroupError::Raced(race)) if attempt_no < GROUP_ATTEMPTS => {
                tracing::debug!(
                    ?race,
                    calls = calls.len(),
                    "eventlog: a group lost a race, running it again"
                );
                stats.reruns.fetch_add(1, Ordering::Relaxed);
                attempt_no += 1;
            }
            Err(GroupError::Raced(race)) => {
                tracing::debug!(
                    ?race,
                    calls = calls.len(),
                    "eventlog: a group lost a race again, running its calls one by one"
                );
                break;
            }
            Err(GroupError::Data(error)) if calls.len() > 1 => {
                tracing::debug!(%error, calls = calls.len(), "eventlog: a group failed on one call's data, running its calls one by one");
                break;
            }
            Err(GroupError::Data(error)) => return vec![Err(AppendError::Unavailable(error))],
            Err(GroupError::Failed(error)) => {
                let mut answers: Vec<Answer> =
                    (1..calls.len()).map(|_| Err(copy(&error))).collect();
                answers.insert(0, Err(error));
                return answers;
            }
        }
    }
    stats.splits.fetch_add(1, Ordering::Relaxed);
    let mut answers = Vec::with_capacity(calls.len());
    for call in calls {
        answers.push(append::append_prepared(pool, call).await);
    }
    answers
}

/// One transaction over the whole group, committed here when it wrote.
async fn group_attempt(pool: &PgPool, plan: Plan<'_>) -> Result<Vec<Answer>, GroupError> {
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| GroupError::Failed(AppendError::Unavailable(e)))?;
    let attempt = match plan {
        Plan::Heads(resolved) => append::write(&mut tx, resolved).await,
        Plan::LookUp(calls) => append::attempt(&mut tx, calls).await,
    };
    match attempt {
        Ok(Attempt {
            answers,
            wrote: true,
        }) => {
            tx.commit()
                .await
                .map_err(|e| GroupError::Failed(AppendError::Unavailable(e)))?;
            Ok(answers)
        }
        Ok(Attempt {
            answers,
            wrote: false,
        }) => {
            // Read-only: nothing to keep. A failed rollback does not change the answers.
            let _ = tx.rollback().await;
            Ok(answers)
        }
        Err(error) => {
            let _ = tx.rollback().await;
            Err(match error {
                AttemptError::Raced(race, _) => GroupError::Raced(race),
                AttemptError::Failed(AppendError::Unavailable(e)) if is_data_error(&e) => {
                    GroupError::Data(e)
                }
                AttemptError::Failed(e) => GroupError::Failed(e),
            })
        }
    }
}

/// Whether PostgreSQL refused a statement for the values it carries (a data exception, an
/// integrity constraint, a program limit such as an index row too large) rather than for the
/// state of the server or the connection.
fn is_data_error(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| {
            ["22", "23", "54"]
                .iter()
                .any(|class| code.starts_with(class))
        })
}

/// The same answer for another call of the group (`sqlx::Error` cannot be cloned: the copy
/// keeps its message).
fn copy(error: &AppendError) -> AppendError {
    match error {
        AppendError::Conflict {
            dossier_id,
            expected,
            actual,
        } => AppendError::Conflict {
            dossier_id: dossier_id.clone(),
            expected: *expected,
            actual: *actual,
        },
        AppendError::EventIdReused { event_id } => AppendError::EventIdReused {
            event_id: *event_id,
        },
        AppendError::InvalidEvent { event_id, reason } => AppendError::InvalidEvent {
            event_id: *event_id,
            reason: reason.clone(),
        },
        AppendError::EventTooLarge {
            event_id,
            bytes,
            max,
        } => AppendError::EventTooLarge {
            event_id: *event_id,
            bytes: *bytes,
            max: *max,
        },
        AppendError::Unavailable(e) => {
            AppendError::Unavailable(sqlx::Error::Io(std::io::Error::other(e.to_string())))
        }
    }
}

/// The committer's counters, read with [`EventLog::group_commit_stats`](crate::EventLog::group_commit_stats).
#[derive(Default)]
struct Stats {
    /// Groups by size, per bucket of [`GROUP_SIZE_BOUNDS`] (not cumulative), then `+Inf`.
    buckets: [AtomicU64; GROUP_SIZE_BOUNDS.len() + 1],
    calls: AtomicU64,
    groups: AtomicU64,
    largest: AtomicU64,
    queued: AtomicU64,
    reruns: AtomicU64,
    heads_looked_up: AtomicU64,
    splits: AtomicU64,
    restarts: AtomicU64,
    panics: AtomicU64,
}

impl Stats {
    fn record(&self, size: usize) {
        let size = size as u64;
        let bucket = GROUP_SIZE_BOUNDS
            .iter()
            .position(|bound| size <= *bound)
            .unwrap_or(GROUP_SIZE_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(size, Ordering::Relaxed);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.largest.fetch_max(size, Ordering::Relaxed);
    }

    fn snapshot(&self) -> GroupCommitStats {
        let mut cumulative = 0;
        let size_buckets = GROUP_SIZE_BOUNDS
            .iter()
            .copied()
            .chain([u64::MAX])
            .zip(&self.buckets)
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        GroupCommitStats {
            size_buckets,
            calls: self.calls.load(Ordering::Relaxed),
            groups: self.groups.load(Ordering::Relaxed),
            largest: self.largest.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            reruns: self.reruns.load(Ordering::Relaxed),
            heads_looked_up: self.heads_looked_up.load(Ordering::Relaxed),
            splits: self.splits.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
        }
    }
}

/// What one handle's committer has done since it was made: plain values for the service to
/// export (`motcua_append_group_size` is the histogram of `size_buckets`, `calls`, `groups`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Groups by number of calls, cumulative as in a Prometheus histogram: `(le, groups with at
    /// most le calls)`, the bounds of [`GROUP_SIZE_BOUNDS`] and then `u64::MAX` for `+Inf`.
    pub size_buckets: Vec<(u64, u64)>,
    /// Calls taken into groups (the histogram's sum).
    pub calls: u64,
    /// Groups formed (the histogram's count).
    pub groups: u64,
    /// The largest group so far, in calls.
    pub largest: u64,
    /// Calls waiting for a free slot right now.
    pub queued: u64,
    /// Groups run again after losing a race.
    pub reruns: u64,
    /// Groups whose every call came with its caller's head ([`EventLog::append_after`](crate::EventLog::append_after))
    /// but that were run with the look-ups all the same: a head was out of date (the insert
    /// hit a unique constraint, and was rolled back), or the heads would have refused a call.
    pub heads_looked_up: u64,
    /// Groups whose calls were run one by one (a race lost twice, or one call's data refused).
    pub splits: u64,
    /// Times the dispatcher was found dead and started again.
    pub restarts: u64,
    /// Group tasks that panicked.
    pub panics: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_sizes_are_a_cumulative_histogram() {
        let stats = Stats::default();
        for size in [1, 3, 3, 64, 2_000] {
            stats.record(size);
        }
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.groups, 5);
        assert_eq!(snapshot.calls, 2_071);
        assert_eq!(snapshot.largest, 2_000);
        let le = |bound: u64| {
            snapshot
                .size_buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
        };
        assert_eq!(le(1), Some(1));
        assert_eq!(le(2), Some(1));
        assert_eq!(le(4), Some(3));
        assert_eq!(le(64), Some(4));
        assert_eq!(le(1024), Some(4));
        assert_eq!(le(u64::MAX), Some(5));
    }
}
