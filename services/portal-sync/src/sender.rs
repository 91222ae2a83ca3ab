//! The sender: takes due dossiers from `portal_sync` ([`store::claim`]) and brings the portal
//! up to date with each, one turn per dossier:
//!
//! 1. read the dossier's events from the log (the truth; the stream only said "changed") and
//!    its applicant ([`crate::applicant`]);
//! 2. if the portal's record is older than the log's version `V`: POST the record at `V`
//!    (`DongBoHoSoMC`); on `error_code` 0 store `record_version = V`;
//! 3. POST the progress entries of the events after `progress_version`, 10 per request
//!    (`CapNhatTienDoHoSoMC`), storing `progress_version` after each acknowledged chunk; at most
//!    `max_chunks_per_turn` chunks per turn (the dossier stays due for the rest);
//! 4. release the dossier, counting the turn late when the portal acknowledged it more than
//!    `late_after` after the oldest event it carried was recorded.
//!
//! Guarantees. *Ordered per dossier*: one turn per dossier at a time (the lease, taken at the
//! claim and extended before each request by twice the request timeout, so it outlives any
//! request of a live instance; a crashed instance's dossiers are free once it ends), and
//! versions only grow (every store update is `GREATEST`). *At most one effect per version*:
//! the acknowledged version is stored after each acknowledgement, and a version at or below it
//! is never sent again; a crash between the portal's answer and that store resends the same
//! version once, which the portal treats as an update of the same content (and a resent
//! progress chunk as the same entries). *Resumable*: all state is in `portal_sync`; a restarted
//! instance finds the due dossiers there. *Failures*: a transient failure (see
//! [`crate::client`]) is retried with a backoff that doubles per attempt, capped; a permanent
//! refusal records the version as refused (poison) and the dossier waits for a later version
//! or an operator's retry — other dossiers never wait for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::Event;
use eventlog::{EventLog, StoredEvent};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use writepath::Clock;

use crate::applicant::ApplicantReader;
use crate::client::{Outcome, PortalClient};
use crate::shapes::{self, DOSSIER_SERVICE, PROGRESS_CHUNK, PROGRESS_SERVICE};
use crate::store::{self, Claimed};

/// How the sender works (from `[portal]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SenderConfig {
    /// Dossiers claimed per round.
    pub batch_size: i64,
    /// Dossiers worked on at once.
    pub concurrency: usize,
    /// Progress chunks sent per dossier per turn.
    pub max_chunks_per_turn: usize,
    /// The first retry delay, doubled per failed attempt up to `max_retry`.
    pub first_retry: Duration,
    pub max_retry: Duration,
    /// How often the table is looked at when nothing announced work.
    pub poll_interval: Duration,
    /// A turn acknowledged later than this after its oldest event was recorded is late.
    pub late_after: Duration,
    /// One request's bound (the lease covers a whole turn of them).
    pub request_timeout: Duration,
}

impl SenderConfig {
    /// The retry delay after the `attempts`-th failure in a row (1, 2, …).
    pub fn retry_delay(&self, attempts: i32) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.first_retry
            .saturating_mul(1u32 << doublings)
            .min(self.max_retry)
    }

    /// How long a claimed dossier is held from the claim and again before each request: one
    /// request's bound twice over, plus a second for the database. A crashed instance's
    /// dossiers are taken by the next round after that.
    pub fn lease(&self) -> Duration {
        self.request_timeout
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(1))
    }
}

/// What the sender did, as plain counters (the service exports them as metrics and health).
#[derive(Debug, Default)]
pub struct SenderStats {
    pub accepted: AtomicU64,
    pub transient: AtomicU64,
    pub refused: AtomicU64,
    /// Requests that failed in a row (transient), across dossiers; 0 after any acceptance.
    pub consecutive_failures: AtomicU64,
    /// Turns that brought a dossier up to date.
    pub synced: AtomicU64,
    pub late: AtomicU64,
    /// Rounds that could not reach the database.
    pub database_errors: AtomicU64,
    /// The backlog as last read (pending, refused, oldest pending age in seconds).
    pub pending: AtomicI64,
    pub refused_dossiers: AtomicI64,
    pub oldest_pending_secs: AtomicI64,
}

impl SenderStats {
    fn count(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Accepted => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            Outcome::Transient(_) => {
                self.transient.fetch_add(1, Ordering::Relaxed);
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Refused { .. } => {
                self.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The sender and what it needs.
#[derive(Debug, Clone)]
pub struct Sender {
    pub log: EventLog,
    pub client: PortalClient,
    pub applicant: ApplicantReader,
    pub clock: Arc<dyn Clock>,
    pub config: SenderConfig,
    pub stats: Arc<SenderStats>,
    /// Signalled by the consumer when it announced versions.
    pub wake: Arc<Notify>,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// The portal holds the dossier at this version.
    Done { version: i32, late: bool },
    /// More progress than one turn sends: due again at once.
    Partial,
    /// Retried at the next attempt.
    Failed(String),
    /// Recorded as refused at this version.
    Refused { version: i32 },
}

impl Sender {
    /// Rounds until `shutdown`: claim, work on each claimed dossier (up to `concurrency` at
    /// once), repeat at once while there was work, else wait for a wake-up or the poll interval.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut refresh = tokio::time::interval(Duration::from_secs(5));
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !shutdown.is_cancelled() {
            let worked = match self.round().await {
                Ok(n) => n > 0,
                Err(e) => {
                    self.stats.database_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "portal-sync: cannot read the work from the database");
                    false
                }
            };
            if worked {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
                _ = refresh.tick() => self.refresh_backlog().await,
            }
        }
    }

    /// Reads the backlog into the stats.
    pub async fn refresh_backlog(&self) {
        match store::backlog(self.log.pool(), self.clock.now()).await {
            Ok(b) => {
                self.stats.pending.store(b.pending, Ordering::Relaxed);
                self.stats
                    .refused_dossiers
                    .store(b.refused, Ordering::Relaxed);
                self.stats
                    .oldest_pending_secs
                    .store(b.oldest_pending_secs, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "portal-sync: cannot read the backlog"),
        }
    }

    /// One round: the dossiers claimed now, each turned. Returns how many were claimed.
    pub async fn round(&self) -> Result<usize, sqlx::Error> {
        let claimed = store::claim(
            self.log.pool(),
            self.config.batch_size,
            self.clock.now(),
            self.lease(),
        )
        .await?;
        let n = claimed.len();
        futures::stream::iter(claimed)
            .for_each_concurrent(self.config.concurrency.max(1), |c| async move {
                if let Err(e) = self.turn_and_record(&c).await {
                    // The lease runs out and another round takes the dossier again.
                    self.stats.database_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(dossier_id = %c.dossier_id, error = %e, "portal-sync: cannot record a turn");
                }
            })
            .await;
        if n > 0 {
            self.refresh_backlog().await;
        }
        Ok(n)
    }

    async fn turn_and_record(&self, claimed: &Claimed) -> Result<Turn, sqlx::Error> {
        let pool = self.log.pool();
        let turn = self.turn(claimed).await?;
        let now = self.clock.now();
        match &turn {
            Turn::Done { version, late } => {
                store::turn_done(pool, &claimed.dossier_id, *version, *late, now).await?;
                self.stats.synced.fetch_add(1, Ordering::Relaxed);
                if *late {
                    self.stats.late.fetch_add(1, Ordering::Relaxed);
                }
            }
            Turn::Partial => store::release(pool, &claimed.dossier_id).await?,
            Turn::Failed(error) => {
                let attempts = claimed.attempts.saturating_add(1);
                let delay = chrono::Duration::from_std(self.config.retry_delay(attempts))
                    .unwrap_or_else(|_| chrono::Duration::minutes(5));
                tracing::warn!(dossier_id = %claimed.dossier_id, attempts, error = %error, "portal-sync: not synchronised; retrying later");
                store::failed(pool, &claimed.dossier_id, attempts, now + delay, error).await?;
            }
            Turn::Refused { version } => {
                tracing::error!(dossier_id = %claimed.dossier_id, version, "portal-sync: the portal refused the dossier; recorded in portal_sync, not sent again until a later version");
            }
        }
        Ok(turn)
    }

    /// The name of the procedure in the catalogue version the dossier was received under
    /// (`None` outside the catalogue, or when that version is unreadable: the code is sent).
    /// Err (retry later) when the catalogue cannot be reached.
    async fn procedure_name(&self, id: &str, events: &[Event]) -> Result<Option<String>, String> {
        let Some(version) = shapes::catalogue_version(events) else {
            return Ok(None);
        };
        match catalogue::Catalogue::new(self.log.pool().clone())
            .version(version)
            .await
        {
            Ok(found) => Ok(found.map(|v| v.procedure.name.as_str().to_owned())),
            Err(catalogue::StoreError::Unavailable(e)) => {
                Err(format!("reading catalogue version {version}: {e}"))
            }
            Err(e) => {
                tracing::warn!(dossier_id = %id, version, error = %e, "portal-sync: the catalogue version is unreadable; the procedure code stands for its name");
                Ok(None)
            }
        }
    }

    /// One turn on a dossier (see the module docs). Records acknowledgements and refusals as
    /// they happen; the caller records how the turn ended.
    pub async fn turn(&self, claimed: &Claimed) -> Result<Turn, sqlx::Error> {
        let pool = self.log.pool();
        let id = claimed.dossier_id.as_str();
        let stored = match self.log.load_dossier(id).await {
            Ok(stored) => stored,
            Err(e) => return Ok(Turn::Failed(format!("reading the log: {e}"))),
        };
        let Some(last) = stored.last() else {
            return Ok(Turn::Failed(
                "the log holds no event of the dossier".to_owned(),
            ));
        };
        let version = last.version;
        let events = match decode(&stored) {
            Ok(events) => events,
            Err(reason) => return self.refuse(id, version, &reason).await,
        };
        let applicant = match self.applicant.fields(id, &events).await {
            Ok(a) => a,
            Err(e) => return Ok(Turn::Failed(e.to_string())),
        };
        if claimed.record_version < version {
            let procedure_name = match self.procedure_name(id, &events).await {
                Ok(name) => name,
                Err(e) => return Ok(Turn::Failed(e)),
            };
            let record =
                match shapes::dossier_record(id, &events, &applicant, procedure_name.as_deref()) {
                    Ok(r) => r,
                    Err(e) => return self.refuse(id, version, &e.to_string()).await,
                };
            match self.post(id, DOSSIER_SERVICE, &[record]).await? {
                Outcome::Accepted => store::record_acked(pool, id, version).await?,
                Outcome::Transient(e) => {
                    return Ok(Turn::Failed(format!("{DOSSIER_SERVICE}: {e}")));
                }
                Outcome::Refused { code, message } => {
                    let reason = format!("{DOSSIER_SERVICE} error_code {code}: {message}");
                    return self.refuse(id, version, &reason).await;
                }
            }
        }
        let after = u32::try_from(claimed.progress_version.max(0)).unwrap_or(0);
        let entries = shapes::progress_entries(id, &events, after);
        let mut chunks = entries.chunks(PROGRESS_CHUNK);
        for chunk in chunks.by_ref().take(self.config.max_chunks_per_turn) {
            let upto = chunk.last().map_or(0, |(v, _)| *v);
            let upto = i32::try_from(upto).unwrap_or(i32::MAX);
            let data: Vec<&shapes::ProgressEntry> = chunk.iter().map(|(_, e)| e).collect();
            match self.post(id, PROGRESS_SERVICE, &data).await? {
                Outcome::Accepted => store::progress_acked(pool, id, upto).await?,
                Outcome::Transient(e) => {
                    return Ok(Turn::Failed(format!("{PROGRESS_SERVICE}: {e}")));
                }
                Outcome::Refused { code, message } => {
                    let reason = format!("{PROGRESS_SERVICE} error_code {code}: {message}");
                    return self.refuse(id, version, &reason).await;
                }
            }
        }
        if chunks.next().is_some() {
            return Ok(Turn::Partial);
        }
        let oldest = stored
            .iter()
            .filter(|e| e.version > claimed.record_version.min(claimed.progress_version))
            .map(|e| e.recorded_at)
            .min();
        Ok(Turn::Done {
            version,
            late: oldest.is_some_and(|t| self.is_late(t)),
        })
    }

    fn is_late(&self, recorded_at: DateTime<Utc>) -> bool {
        let late_after =
            chrono::Duration::from_std(self.config.late_after).unwrap_or(chrono::Duration::MAX);
        self.clock.now() - recorded_at > late_after
    }

    /// Extends the dossier's lease, then POSTs.
    async fn post<T: serde::Serialize>(
        &self,
        id: &str,
        service: &'static str,
        data: &[T],
    ) -> Result<Outcome, sqlx::Error> {
        store::hold(self.log.pool(), id, self.clock.now() + self.lease()).await?;
        let outcome = self.client.post(service, data).await;
        self.stats.count(&outcome);
        Ok(outcome)
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.lease())
            .unwrap_or_else(|_| chrono::Duration::hours(1))
    }

    async fn refuse(&self, id: &str, version: i32, reason: &str) -> Result<Turn, sqlx::Error> {
        store::refused(self.log.pool(), id, version, reason, self.clock.now()).await?;
        Ok(Turn::Refused { version })
    }
}

/// The dossier's events as the fold needs them; an undecodable one is named.
fn decode(stored: &[StoredEvent]) -> Result<Vec<Event>, String> {
    writepath::decode_all(stored).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_delay_doubles_and_is_capped() {
        let config = SenderConfig {
            batch_size: 1,
            concurrency: 1,
            max_chunks_per_turn: 1,
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            late_after: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
        };
        let delays: Vec<u64> = (1..=8).map(|a| config.retry_delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(config.retry_delay(i32::MAX).as_secs(), 60);
        assert_eq!(config.lease(), Duration::from_secs(21));
    }
}
