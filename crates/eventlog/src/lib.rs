//! The append-only event log in PostgreSQL: the system's source of truth.
//!
//! This crate owns the `events` table and everything that guarantees about it: per-dossier
//! optimistic concurrency, idempotent appends keyed by client event ids, a gapless global
//! position assigned in commit order (so a follower reading `position > cursor` never misses an
//! event), a hash chain, and immutability enforced by the database itself.
//!
//! It knows nothing of dossiers' rules (that is `domain`) nor of NATS (that is `relay`).
//!
//! - Schema and immutability: `migrations/` (versions from 10001; [`EventLog::migrate`]).
//!   `UPDATE`, `DELETE` and `TRUNCATE` on `events` are refused by triggers, whatever the client.
//!   (A superuser can still disable triggers; the hash chain makes such tampering evident.)
//! - Appending, positions and concurrency: the [`append`] module's documentation.
//! - The canonical form and the hashes: see [`canonical_bytes`].
//! - Following the log: [`EventLog::read_after`], [`EventLog::changes`], [`EventLog::follow`].
//! - Whole dossiers as of a position (figures recomputed from the log): [`dossiers`].
//! - Recovery of events the log lost and the NATS stream kept (a database restored from an
//!   older backup): [`EventLog::append_recovered`], used by `relay-service recover-log`.

pub mod append;
pub mod bulk;
pub mod copy;
pub mod dossiers;
mod error;
pub mod group;
mod hash;
pub mod limits;
pub mod load;
mod model;
mod position;
mod queue;
mod read;
mod recover;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sqlx::postgres::{PgPool, PgPoolOptions, PgTransaction};
use uuid::Uuid;

pub use append::{
    INSERT as SQL_INSERT, MAX_DOSSIER_ID_CHARS, MAX_PAYLOAD_DEPTH, SEQUENCE as SQL_SEQUENCE,
    SEQUENCER_IDLE_TIMEOUT,
};
pub use bulk::{CheckedAppend, CheckedAppendError};
pub use dossiers::{
    DossierEvents, EventBody, EventColumns, EventText, RoutingFilter, dossiers_up_to,
    these_dossiers_up_to,
};
pub use error::{AppendError, ConnectError, MigrateError, ReadError};
pub use group::GroupCommitStats;
pub use hash::{GENESIS_CHAIN_HASH, canonical_bytes, chain_hash, event_hash};
pub use limits::MAX_EVENT_BYTES;
pub use load::LoadBatchStats;
pub use model::{
    Appended, DossierAppend, DossierHead, ExpectedVersion, LoadedDossier, NewEvent, Routing,
    StoredEvent,
};
pub use position::{Position, PositionError, Version, VersionError};
pub use read::{CHANNEL, Changes};
pub use recover::{LogHead, RecoverError, parse_canonical};

use read::{decode_events, select_events};

/// The event log: a handle on the PostgreSQL pool, its group committer ([`group`]) and its
/// batched loader ([`load`]). Cheap to clone; clones share the committer and the loader (make
/// one handle per process and clone it).
#[derive(Debug, Clone)]
pub struct EventLog {
    pool: PgPool,
    committer: Arc<group::Committer>,
    loader: Arc<load::Loader>,
}

const LOAD_DOSSIER: &str = select_events!("WHERE dossier_id = $1 ORDER BY version");

/// One dossier's events in version order, read on the caller's connection — inside the
/// caller's transaction, so a reader that also writes (the projection) needs no second
/// connection and sees the log as of its own snapshot.
pub async fn load_dossier_on(
    conn: &mut sqlx::PgConnection,
    dossier_id: &str,
) -> Result<Vec<StoredEvent>, ReadError> {
    load_dossier_with(conn, dossier_id).await
}

/// One dossier's events in version order, read on a connection or the pool.
async fn load_dossier_with<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    dossier_id: &str,
) -> Result<Vec<StoredEvent>, ReadError> {
    let rows = sqlx::query(LOAD_DOSSIER)
        .bind(dossier_id)
        .fetch_all(executor)
        .await
        .map_err(ReadError::Unavailable)?;
    decode_events(&rows)
}

/// The events of several dossiers, ordered by dossier and version, read on the caller's
/// connection (inside its transaction, as [`load_dossier_on`]): the projection's batched apply
/// reads every dossier of a batch in one statement.
pub async fn load_dossiers_on(
    conn: &mut sqlx::PgConnection,
    ids: &[&str],
) -> Result<Vec<StoredEvent>, ReadError> {
    let rows = sqlx::query(select_events!(
        "WHERE dossier_id = ANY($1) ORDER BY dossier_id, version"
    ))
    // Batch lookups are planned for each call (see `append::LOOKUP_EVENTS`).
    .persistent(false)
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(ReadError::Unavailable)?;
    decode_events(&rows)
}

/// Decodes a row of `events` selected with every column under its own name, with the same
/// checks as the log's own reads: for readers with queries of their own (the replay service's
/// filtered scans) that must not decode rows differently from the log.
pub fn decode_row(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, ReadError> {
    read::decode_event(row)
}

impl EventLog {
    /// Connects a pool of up to `max_connections` to `url`. It does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<EventLog, ConnectError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|e| match e {
                sqlx::Error::Configuration(_) => ConnectError::Invalid(e),
                e => ConnectError::Unavailable(e),
            })?;
        Ok(EventLog::from_pool(pool))
    }

    /// Wraps an existing pool (e.g. one shared with other crates of the same service).
    pub fn from_pool(pool: PgPool) -> EventLog {
        EventLog {
            committer: Arc::new(group::Committer::new(pool.clone())),
            loader: Arc::new(load::Loader::new(pool.clone())),
            pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies this crate's embedded migrations (versions 10001 and up). Migrations of other
    /// crates recorded in the same `_sqlx_migrations` table are ignored, not refused. Safe to
    /// call from several services at once (sqlx takes an advisory lock).
    pub async fn migrate(&self) -> Result<(), MigrateError> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(inner) if error::is_connection_error(&inner) => {
                MigrateError::Unavailable(inner)
            }
            e => MigrateError::Refused(e),
        })
    }

    /// Appends the events of one or more dossiers, atomically, in one transaction with one
    /// sequencing step; returns the stored events in the order given.
    ///
    /// - Each [`DossierAppend`] is checked against its `expected_version`
    ///   ([`AppendError::Conflict`] otherwise; nothing of the call is written).
    /// - Idempotent: a dossier append whose events are all stored already, with the same
    ///   fingerprints, is answered with the stored events and `duplicate = true`; part of them
    ///   stored, or one stored with another fingerprint or dossier, is
    ///   [`AppendError::EventIdReused`].
    /// - Positions are gapless and in commit order; `recorded_at` is the database's clock at
    ///   sequencing, never decreasing along positions; the hash chain is extended.
    ///
    /// How positions stay gapless and in commit order is explained in the [`append`] module:
    /// every check first, then `UPDATE log_head … RETURNING` (the sequencer's row lock), one
    /// `INSERT … SELECT FROM UNNEST` of the whole batch with the head update and `pg_notify`,
    /// and `COMMIT`.
    ///
    /// Calls that arrive together share that transaction (group commit, see [`group`]): each
    /// still gets its own answer, exactly as if the calls had come one after another — a
    /// conflict or a reused id refuses only its own call.
    ///
    /// Built for bulk import as well: a call of thousands of events costs a fixed handful of
    /// round trips (a call over [`group::GROUP_MAX_EVENTS`] runs in a transaction of its own).
    pub async fn append(&self, batch: Vec<DossierAppend>) -> Result<Appended, AppendError> {
        let prepared = append::prepare(batch)?;
        if prepared.appends.is_empty() {
            return Ok(append::empty());
        }
        if group::Committer::takes(&prepared) {
            self.committer.append(prepared).await
        } else {
            append::append_prepared(&self.pool, &prepared).await
        }
    }

    /// [`append`](Self::append) of one dossier's events decided on `head`, the dossier as
    /// [`load_dossier_for_append`](Self::load_dossier_for_append) read it: the same answers,
    /// with fewer round trips. When `append` is consistent with `head` (the same dossier, its
    /// expected version the head's), its group does not look up the dossier's version nor the
    /// call's event ids: the versions after the head's and the event ids go straight to the
    /// insert, whose unique constraints refuse them if another writer got there since the read
    /// (a concurrent change, a retry of a call already stored). Such a group is rolled back and
    /// run again with the look-ups, which answer that call as [`append`](Self::append) does (a
    /// conflict, a duplicate, a reused id) while the others of the group commit. An `append`
    /// that is not consistent with `head` is appended as by [`append`](Self::append).
    pub async fn append_after(
        &self,
        head: &DossierHead,
        append: DossierAppend,
    ) -> Result<Appended, AppendError> {
        let prepared = append::prepare_after(head, append)?;
        if group::Committer::takes(&prepared) {
            self.committer.append(prepared).await
        } else {
            append::append_prepared(&self.pool, &prepared).await
        }
    }

    /// Appends a [`CheckedAppend`] in a transaction of its own (the bulk import's path, see
    /// [`bulk`]): the sequencing section of [`append`](Self::append) without its lookups, the
    /// caller having done them, the rows written by one binary `COPY`. Returns the stored events in the order given;
    /// [`CheckedAppendError::Raced`] when another writer stored one of the ids or versions
    /// first (nothing written: check again).
    pub async fn append_checked(
        &self,
        checked: CheckedAppend,
    ) -> Result<Vec<StoredEvent>, CheckedAppendError> {
        bulk::append_checked(&self.pool, checked).await
    }

    /// What this handle's group committer has done (group sizes, queue, reruns), for metrics.
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        self.committer.stats()
    }

    /// Like [`append`](Self::append), inside the caller's transaction, which must be READ
    /// COMMITTED (the default). The caller commits; until then its transaction holds the log's
    /// sequencer and every other append waits, so commit promptly. If it rolls back, nothing
    /// was appended and no position is lost.
    pub async fn append_in(
        &self,
        tx: &mut PgTransaction<'_>,
        batch: Vec<DossierAppend>,
    ) -> Result<Appended, AppendError> {
        append::append_in(tx, batch).await
    }

    /// Every event of a dossier, in version order (empty when it has none).
    pub async fn load_dossier(&self, dossier_id: &str) -> Result<Vec<StoredEvent>, ReadError> {
        load_dossier_with(&self.pool, dossier_id).await
    }

    /// Every event of a dossier, in version order, with the [`DossierHead`] an append decided
    /// on them hands back to [`append_after`](Self::append_after).
    pub async fn load_dossier_for_append(
        &self,
        dossier_id: &str,
    ) -> Result<LoadedDossier, ReadError> {
        let events = self.loader.load(dossier_id).await?;
        Ok(LoadedDossier::new(dossier_id, events))
    }

    /// What this handle's batched loader has done (batches, loads), for metrics.
    pub fn load_batch_stats(&self) -> LoadBatchStats {
        self.loader.stats()
    }

    /// The events of several dossiers, each in version order. Dossiers without events are
    /// absent from the map.
    pub async fn load_dossiers(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, Vec<StoredEvent>>, ReadError> {
        let rows = sqlx::query(select_events!(
            "WHERE dossier_id = ANY($1) ORDER BY dossier_id, version"
        ))
        // Batch lookups are planned for each call (see `append::LOOKUP_EVENTS`).
        .persistent(false)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(ReadError::Unavailable)?;
        let mut out: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        for event in decode_events(&rows)? {
            out.entry(event.dossier_id.clone()).or_default().push(event);
        }
        Ok(out)
    }

    /// The stored events with these ids, in position order; unknown ids are left out.
    pub async fn find_events(&self, ids: &[Uuid]) -> Result<Vec<StoredEvent>, ReadError> {
        let rows = sqlx::query(select_events!("WHERE event_id = ANY($1) ORDER BY position"))
            // Batch lookups are planned for each call (see `append::LOOKUP_EVENTS`).
            .persistent(false)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(ReadError::Unavailable)?;
        decode_events(&rows)
    }

    /// Up to `limit` events with a position above `position`, in position order. Because
    /// positions become visible in order, the result is always `position + 1, position + 2, …`
    /// with no gap: a reader may move its cursor to the last position returned.
    pub async fn read_after(
        &self,
        position: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, ReadError> {
        let rows = sqlx::query(select_events!(
            "WHERE position > $1 ORDER BY position LIMIT $2"
        ))
        .bind(position)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(ReadError::Unavailable)?;
        decode_events(&rows)
    }

    /// The highest committed position (0 when the log is empty).
    pub async fn head(&self) -> Result<i64, ReadError> {
        sqlx::query_scalar("SELECT position FROM log_head")
            .fetch_one(&self.pool)
            .await
            .map_err(ReadError::Unavailable)
    }

    /// Starts listening for appends (`LISTEN eventlog` on a connection of its own, outside the
    /// pool). Create it before reading, then read, then wait, so that no wake-up is missed.
    pub async fn changes(&self) -> Result<Changes, ReadError> {
        Changes::connect((*self.pool.connect_options()).clone()).await
    }

    /// Every event with a position above `after`, in position order, exactly once, forever.
    ///
    /// Reads batches of up to 1000 with [`read_after`](Self::read_after); when there is nothing
    /// new it waits for a notification on [`changes`](Self::changes), polling every second
    /// anyway. A read error is yielded as an item and the stream carries on (after a second)
    /// from where it was; it never ends. The stream owns what it needs (`'static`).
    pub fn follow(
        &self,
        after: i64,
    ) -> impl Stream<Item = Result<StoredEvent, ReadError>> + Send + Unpin + use<> {
        read::follow(self.clone(), after)
    }
}
