//! Appending: validation, idempotency, optimistic concurrency and the sequencer.
//!
//! # Gapless positions in commit order
//!
//! A follower reads `WHERE position > cursor ORDER BY position` and moves its cursor to the last
//! position it saw. That is only safe if an event can never become visible after an event with a
//! higher position: otherwise the follower would move past it and never see it. A sequence
//! (`nextval`) does not give that (positions are taken at insert time but become visible at
//! commit time, in any order, and a rollback burns numbers, leaving gaps). So positions come
//! from one row, `log_head`, and every append runs in one transaction shaped like this:
//!
//! 1. **Everything that may take time or fail comes first, holding no lock**: input validation
//!    (no database), then the current version of every dossier of the call (one query for the
//!    whole batch) and, after it, the idempotency lookup of the call's event ids
//!    (`event_id = ANY($1)`); in that order, a concurrent identical append that commits between
//!    the two reads is seen as a duplicate, not as a version conflict.
//!    Duplicates, stale expected versions and reused ids are answered here.
//! 2. **The sequencing section, the last steps before COMMIT**, three round trips:
//!    - [`SEQUENCE`]: `UPDATE log_head SET position = position + n, recorded_at = greatest(clock_timestamp(),
//!      recorded_at) RETURNING position, chain_hash, recorded_at`. The row lock this takes is
//!      the sequencer: a second writer blocks here until the first has committed or rolled
//!      back, and then (READ COMMITTED re-reads the updated row) continues from the new head.
//!      `recorded_at` is the database's clock, and never decreases along positions even if the
//!      clock steps back.
//!    - The client fills the positions and `recorded_at` into the events' canonical bytes
//!      (serialised, like most of the statement's parameters, before the lock was taken),
//!      computes the event and chain hashes from the returned head, then sends one statement
//!      ([`INSERT`]): a multi-row `INSERT … SELECT FROM UNNEST(…)` of the whole batch, the
//!      `UPDATE` of `log_head.chain_hash` and `pg_notify('eventlog', '<new head position>')`
//!      (delivered at commit).
//!    - `COMMIT`.
//!
//! Because the next writer gets the head row only after the previous one has committed, and
//! PostgreSQL makes a commit visible before it releases the transaction's locks, the order in
//! which appends become visible is the order of their positions: a reader that sees position
//! `p` also sees every position below `p`. A rollback (or a crash) releases the row with its
//! position unchanged, so it leaves no gap. Writers on different dossiers do their step 1 in
//! parallel; only the short step 2 is serial.
//!
//! A call decided on the dossier as its caller read it ([`EventLog::append_after`](crate::EventLog::append_after))
//! may skip step 1's look-ups: its expected version is then the version it read, and the
//! unique constraints (below) check both it and the event ids at insert time (the
//! [`group`](crate::group) module, which runs such calls).
//!
//! `append_in` stops before the COMMIT: the caller's transaction then holds the sequencer until
//! it commits, and must be READ COMMITTED (PostgreSQL's default).
//!
//! A transaction holding the sequencer may sit idle for [`SEQUENCER_IDLE_TIMEOUT`] at most
//! (`idle_in_transaction_session_timeout`, set local to the transaction by [`SEQUENCE`]): a
//! writer that froze inside the section is cut off by the server instead of stopping every
//! other writer (the fault test `tests/tests/it/faults.rs` freezes one there).
//!
//! # Races
//!
//! Step 1 reads without locking, so two writers may both pass it. The unique constraints settle
//! the race at insert time, after the loser has waited for the winner's commit on the head row:
//! a unique violation on `event_id` (two identical retries at once) or on
//! `(dossier_id, version)` (two writers on one dossier) rolls the attempt back and the whole
//! append runs once more from the top, where step 1 now sees the winner's events and answers
//! with the duplicates or a `Conflict` carrying the actual version. Writers never interleave.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, SubsecRound, Utc};
use serde_json::Value;
use sqlx::postgres::{PgPool, PgTransaction};
use sqlx::{Connection, PgConnection, Row};
use uuid::Uuid;

use crate::hash::{Canonical, chain_hash, format_timestamp};
use crate::limits::MAX_EVENT_BYTES;
use crate::read::{decode_events, select_events};
use crate::{
    AppendError, Appended, DossierAppend, DossierHead, ExpectedVersion, Routing, StoredEvent,
};

/// Attempts per call: the first, and one more after losing a race on a unique constraint.
const MAX_ATTEMPTS: u32 = 2;
/// Longest dossier id, in characters.
pub const MAX_DOSSIER_ID_CHARS: usize = 128;
/// Deepest nesting of arrays and objects accepted in a payload.
pub const MAX_PAYLOAD_DEPTH: usize = 64;
/// What an event costs in [`Prepared::bytes`] besides its payload and strings: the ids, the
/// time, the fingerprint and the hashes, roughly.
const EVENT_OVERHEAD_BYTES: usize = 200;

/// The batch lookups (`= ANY($1)` over up to thousands of ids) run unprepared
/// (`persistent(false)`), so PostgreSQL plans each call for its array and its table. A cached
/// generic plan made while the table was small can stay a full scan after it has grown (stale
/// statistics), which made a bulk import quadratic (seen in `crates/bench`, BENCHMARKS.md).
const LOOKUP_EVENTS: &str = select_events!("WHERE event_id = ANY($1)");

/// The last event of each dossier (one backward index scan per dossier).
const LOOKUP_VERSIONS: &str = "\
SELECT d.dossier_id, e.version, e.level, e.agency, e.sector
FROM UNNEST($1::text[]) AS d(dossier_id)
CROSS JOIN LATERAL (
    SELECT version, level, agency, sector FROM events
    WHERE events.dossier_id = d.dossier_id
    ORDER BY version DESC LIMIT 1
) AS e";

/// Sequencing, statement 1: take the head row (the sequencer lock) and reserve `$1` positions;
/// from now on the transaction may sit idle for [`SEQUENCER_IDLE_TIMEOUT`] at most.
pub const SEQUENCE: &str = "\
UPDATE log_head
SET position = position + $1, recorded_at = greatest(clock_timestamp(), recorded_at)
RETURNING position, chain_hash, recorded_at,
          set_config('idle_in_transaction_session_timeout', '10s', true) AS idle_timeout";

/// How long a transaction that holds the sequencer may sit idle — the server waiting for the
/// client's next statement — before PostgreSQL ends its session (rolling it back, releasing the
/// head row). A writer that froze there (its process or machine stopped, or the network to it
/// went silent without a reset) looks to PostgreSQL like a healthy idle session, and would
/// otherwise stop every other writer of the installation for as long as it stays frozen.
/// Set with `SET LOCAL` semantics in [`SEQUENCE`] (so it lasts until the end of the
/// transaction, the caller's for `append_in`). A live writer idles there for milliseconds.
pub const SEQUENCER_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Sequencing, statement 2: the whole batch, the new chain head and the wake-up, at once.
/// `$1`–`$10` do not depend on the positions and are encoded before the sequencer is taken.
pub const INSERT: &str = "\
WITH inserted AS (
    INSERT INTO events (position, event_id, dossier_id, version, event_type, occurred_at,
                        recorded_at, level, agency, sector, payload, fingerprint, event_hash,
                        chain_hash)
    SELECT e.position, e.event_id, e.dossier_id, e.version, e.event_type, e.occurred_at,
           $14, e.level, e.agency, e.sector, e.payload, e.fingerprint, e.event_hash, e.chain_hash
    FROM UNNEST($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::text[],
                $7::text[], $8::text[], $9::jsonb[], $10::bytea[], $11::bigint[], $12::bytea[],
                $13::bytea[])
         AS e(event_id, dossier_id, version, event_type, occurred_at, level, agency, sector,
              payload, fingerprint, position, event_hash, chain_hash)
    RETURNING 1
), head AS (
    UPDATE log_head SET chain_hash = $15 RETURNING 1
)
SELECT pg_notify('eventlog', $16)";

/// A validated call: occurred_at truncated to microseconds, ids unique.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) appends: Vec<DossierAppend>,
    /// For each of `appends`, the head its caller decided on, when the append is consistent
    /// with it ([`prepare_after`]): an attempt that trusts the heads skips that dossier's
    /// version look-up and its events' id look-up.
    pub(crate) heads: Vec<Option<DossierHead>>,
    pub(crate) event_ids: Vec<Uuid>,
    /// A rough size of the call's events (their payloads' strings and keys, ids, types,
    /// routing), to bound a group of calls; not the canonical size.
    pub(crate) bytes: usize,
}

impl Prepared {
    /// Whether every append of the call came with a consistent head ([`prepare_after`]).
    pub(crate) fn has_heads(&self) -> bool {
        self.heads.len() == self.appends.len() && self.heads.iter().all(Option::is_some)
    }
}

pub(crate) enum AttemptError {
    /// A final answer.
    Failed(AppendError),
    /// Lost a race on a unique constraint: roll back and start again from the top.
    Raced(Race, sqlx::Error),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Race {
    EventId,
    DossierVersion,
}

impl From<AppendError> for AttemptError {
    fn from(error: AppendError) -> Self {
        AttemptError::Failed(error)
    }
}

/// What one attempt over one or more calls did (before the COMMIT): each call's answer, in the
/// order given, and whether anything was written (otherwise the transaction only read).
pub(crate) struct Attempt {
    pub(crate) answers: Vec<Result<Appended, AppendError>>,
    pub(crate) wrote: bool,
}

/// A plain append of one call in a transaction of its own, committed here: the path of calls
/// too large for a group (bulk import), and of a group's calls run one by one.
pub(crate) async fn append_prepared(
    pool: &PgPool,
    prepared: &Prepared,
) -> Result<Appended, AppendError> {
    let mut attempt_no = 1;
    loop {
        let mut tx = pool.begin().await.map_err(AppendError::Unavailable)?;
        match attempt_one(&mut tx, prepared).await {
            Ok((appended, wrote)) => {
                if wrote {
                    tx.commit().await.map_err(AppendError::Unavailable)?;
                } else {
                    // Read-only: nothing to keep. A failed rollback does not change the answer.
                    let _ = tx.rollback().await;
                }
                return Ok(appended);
            }
            Err(AttemptError::Failed(error)) => {
                let _ = tx.rollback().await;
                return Err(error);
            }
            Err(AttemptError::Raced(race, error)) => {
                let _ = tx.rollback().await;
                if attempt_no >= MAX_ATTEMPTS {
                    let mut conn = pool.acquire().await.map_err(AppendError::Unavailable)?;
                    return Err(after_lost_race(&mut conn, prepared, race, error).await);
                }
                tracing::debug!(?race, "eventlog: append lost a race, retrying from the top");
                attempt_no += 1;
            }
        }
    }
}

/// `EventLog::append_in`: inside the caller's transaction, under a savepoint so that a lost race
/// can be retried without aborting the caller's transaction. The caller commits.
pub(crate) async fn append_in(
    tx: &mut PgTransaction<'_>,
    batch: Vec<DossierAppend>,
) -> Result<Appended, AppendError> {
    let prepared = prepare(batch)?;
    if prepared.appends.is_empty() {
        return Ok(empty());
    }
    let mut attempt_no = 1;
    loop {
        let conn: &mut PgConnection = tx;
        let mut savepoint = conn.begin().await.map_err(AppendError::Unavailable)?;
        match attempt_one(&mut savepoint, &prepared).await {
            Ok((appended, _)) => {
                savepoint.commit().await.map_err(AppendError::Unavailable)?;
                return Ok(appended);
            }
            Err(AttemptError::Failed(error)) => {
                savepoint
                    .rollback()
                    .await
                    .map_err(AppendError::Unavailable)?;
                return Err(error);
            }
            Err(AttemptError::Raced(race, error)) => {
                savepoint
                    .rollback()
                    .await
                    .map_err(AppendError::Unavailable)?;
                if attempt_no >= MAX_ATTEMPTS {
                    return Err(after_lost_race(tx, &prepared, race, error).await);
                }
                tracing::debug!(?race, "eventlog: append lost a race, retrying from the top");
                attempt_no += 1;
            }
        }
    }
}

pub(crate) fn empty() -> Appended {
    Appended {
        events: Vec::new(),
        duplicate: Vec::new(),
    }
}

/// One attempt of one call: its answer (`Failed` when refused) and whether it wrote.
async fn attempt_one(
    conn: &mut PgConnection,
    prepared: &Prepared,
) -> Result<(Appended, bool), AttemptError> {
    let Attempt { answers, wrote } = attempt(conn, &[prepared]).await?;
    match answers.into_iter().next() {
        Some(Ok(appended)) => Ok((appended, wrote)),
        Some(Err(error)) => Err(AttemptError::Failed(error)),
        None => Ok((empty(), false)),
    }
}

/// One attempt over a group of calls (one call for a plain append): the look-ups for all of
/// them, each call resolved in order against the log and the calls before it, then one
/// sequencing section for everything the accepted calls write (without the COMMIT).
pub(crate) async fn attempt(
    conn: &mut PgConnection,
    calls: &[&Prepared],
) -> Result<Attempt, AttemptError> {
    // The dossiers' current versions are read BEFORE the event ids. Each statement sees every
    // commit the previous one saw (READ COMMITTED), so an identical append that committed in
    // between shows up as duplicates below, never as a version conflict.
    let mut dossier_ids: Vec<&str> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for call in calls {
        for append in &call.appends {
            if seen.insert(append.dossier_id.as_str()) {
                dossier_ids.push(append.dossier_id.as_str());
            }
        }
    }
    let current = current_versions(conn, dossier_ids.into_iter()).await?;

    // 1. Idempotency: which of the calls' events are already stored?
    let event_ids: Vec<Uuid> = calls
        .iter()
        .flat_map(|call| call.event_ids.iter().copied())
        .collect();
    let rows = sqlx::query(LOOKUP_EVENTS)
        .persistent(false)
        .bind(&event_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(AppendError::Unavailable)?;
    let stored: HashMap<Uuid, StoredEvent> = decode_events(&rows)
        .map_err(AppendError::from)?
        .into_iter()
        .map(|e| (e.event_id, e))
        .collect();

    // 2. Each call in order: duplicates, reused ids, expected versions, sizes.
    let resolved = Resolved::of(calls, current, stored);

    // 3. Sequencing: from here to COMMIT, the head row is locked.
    write(conn, resolved).await
}

/// Step 2 of an attempt on the callers' heads instead of look-ups (no database): `Some` when
/// every call came with consistent heads ([`prepare_after`]) and the heads settle every one of
/// them — each is written, or is a duplicate of an earlier call of the group. Written after
/// a look-up, each would get the same answer, as long as the insert succeeds: the versions
/// are the heads' plus one and on, and the ids are taken as new, so a head out of date (a
/// write since the caller's read, a retry of a call already stored) fails the insert on a
/// unique constraint, and the group then runs with the look-ups ([`attempt`]).
///
/// `None` sends the group to the look-ups at once: a call without a head, or a call the heads
/// would refuse (a conflict — two calls decided on one version —, a reused id, a size): a
/// refusal writes nothing, so no constraint would check the heads it was based on.
pub(crate) fn resolve_on_heads(calls: &[&Prepared]) -> Option<Resolved> {
    // Each dossier at its head; two heads of one dossier (read at different times): the later,
    // i.e. the higher version.
    let mut current: HashMap<String, (i32, Routing)> = HashMap::new();
    for call in calls {
        if !call.has_heads() {
            return None;
        }
        for (append, head) in call.appends.iter().zip(&call.heads) {
            let head = head.as_ref()?;
            let Some(routing) = head.routing.as_ref().filter(|_| head.version > 0) else {
                continue;
            };
            let known = current
                .entry(append.dossier_id.clone())
                .or_insert_with(|| (head.version, routing.clone()));
            if head.version > known.0 {
                *known = (head.version, routing.clone());
            }
        }
    }
    let resolved = Resolved::of(calls, current, HashMap::new());
    resolved.parts.iter().all(Result::is_ok).then_some(resolved)
}

/// Every call of an attempt resolved (step 2), ready for the sequencing section.
pub(crate) struct Resolved {
    /// Each call's parts, or its refusal.
    parts: Vec<Result<Vec<Part>, AppendError>>,
    /// What the accepted calls write, in position order (positions and hashes filled later).
    written: Vec<StoredEvent>,
    canonical: Vec<Canonical>,
}

impl Resolved {
    /// Each call in order, against `current` (each dossier's version and routing) and
    /// `stored` (the calls' events already in the log, by id) and the calls before it.
    fn of(
        calls: &[&Prepared],
        current: HashMap<String, (i32, Routing)>,
        stored: HashMap<Uuid, StoredEvent>,
    ) -> Resolved {
        let mut group = Group {
            versions: current,
            stored,
            claimed: HashMap::new(),
            written: Vec::new(),
            canonical: Vec::new(),
        };
        let parts = calls.iter().map(|call| group.resolve(call)).collect();
        Resolved {
            parts,
            written: group.written,
            canonical: group.canonical,
        }
    }
}

/// Step 3 of an attempt: the sequencing section for what the resolved calls write (if
/// anything), then each call's answer.
pub(crate) async fn write(
    conn: &mut PgConnection,
    resolved: Resolved,
) -> Result<Attempt, AttemptError> {
    let Resolved {
        parts,
        mut written,
        canonical,
    } = resolved;
    // From here to COMMIT, the head row is locked.
    let wrote = !written.is_empty();
    if wrote {
        sequence_and_insert(conn, &mut written, &canonical).await?;
    }

    // The answers, in the order of the calls and of each call's dossiers.
    let answers = parts
        .into_iter()
        .map(|parts| {
            let parts = parts?;
            let mut events = Vec::new();
            let mut duplicate = Vec::with_capacity(parts.len());
            for part in parts {
                duplicate.push(!matches!(part, Part::New(_)));
                match part {
                    Part::Stored(stored) => events.extend(stored),
                    Part::InGroup(indices) => {
                        events.extend(indices.into_iter().map(|i| written[i].clone()));
                    }
                    Part::New(range) => events.extend(written[range].iter().cloned()),
                }
            }
            Ok(Appended { events, duplicate })
        })
        .collect();
    Ok(Attempt { answers, wrote })
}

/// What one dossier append of an accepted call comes to.
enum Part {
    /// A duplicate of events stored before this attempt.
    Stored(Vec<StoredEvent>),
    /// A duplicate of events an earlier call of the same group writes (indices into `written`).
    InGroup(Vec<usize>),
    /// New: written now (a range of `written`).
    New(std::ops::Range<usize>),
}

/// How a dossier append of a call relates to what is stored or written before it.
enum Class {
    New,
    Stored(Vec<StoredEvent>),
    InGroup(Vec<usize>),
}

/// The state of an attempt while its calls are resolved one after another.
struct Group {
    /// Each dossier's version and routing: as read, then as left by the calls accepted so far.
    versions: HashMap<String, (i32, Routing)>,
    /// The calls' events already stored, by id.
    stored: HashMap<Uuid, StoredEvent>,
    /// The events the accepted calls write, by id (index into `written`).
    claimed: HashMap<Uuid, usize>,
    /// What the accepted calls write, in position order (positions and hashes filled later).
    written: Vec<StoredEvent>,
    canonical: Vec<Canonical>,
}

impl Group {
    /// One call, against the log and the calls accepted before it: refused as a whole (nothing
    /// of it written, nothing of the state changed) or accepted.
    fn resolve(&mut self, call: &Prepared) -> Result<Vec<Part>, AppendError> {
        let mut classes = Vec::with_capacity(call.appends.len());
        for append in &call.appends {
            classes.push(self.classify(append)?);
        }

        // Optimistic concurrency for the dossiers that are new in this call.
        let mut new_events: Vec<StoredEvent> = Vec::new();
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        let mut moved: Vec<(&str, i32, Routing)> = Vec::new();
        for (append, class) in call.appends.iter().zip(&classes) {
            if !matches!(class, Class::New) {
                continue;
            }
            let (version, routing) = match self.versions.get(&append.dossier_id) {
                Some((version, routing)) => (*version, routing.clone()),
                None => (0, append.routing.clone()),
            };
            if !matches_expected(append.expected_version, version) {
                return Err(conflict(append, version));
            }
            if i64::from(version) + append.events.len() as i64 > i64::from(i32::MAX) {
                return Err(invalid(
                    append.events[0].event_id,
                    "the dossier's version would overflow",
                ));
            }
            let start = self.written.len() + new_events.len();
            let mut next = version;
            for event in &append.events {
                next += 1;
                new_events.push(StoredEvent {
                    position: 0,
                    event_id: event.event_id,
                    dossier_id: append.dossier_id.clone(),
                    version: next,
                    event_type: event.event_type.clone(),
                    occurred_at: event.occurred_at,
                    recorded_at: DateTime::<Utc>::UNIX_EPOCH,
                    routing: routing.clone(),
                    payload: event.payload.clone(),
                    fingerprint: event.fingerprint,
                    event_hash: [0; 32],
                    chain_hash: [0; 32],
                });
            }
            ranges.push(start..start + append.events.len());
            moved.push((append.dossier_id.as_str(), next, routing));
        }

        // Everything that does not depend on the positions, prepared before taking the
        // sequencer: the canonical bytes but for two values. The last guard of "every stored
        // event can be published": the request bounds keep events far below the limit; should
        // one slip through, nothing of the call is written.
        let canonical: Vec<Canonical> = new_events.iter().map(Canonical::of).collect();
        for (event, canonical) in new_events.iter().zip(&canonical) {
            let bytes = canonical.max_len();
            if bytes > MAX_EVENT_BYTES {
                return Err(AppendError::EventTooLarge {
                    event_id: event.event_id,
                    bytes,
                    max: MAX_EVENT_BYTES,
                });
            }
        }

        // Accepted: later calls of the group see its versions and its event ids.
        for (dossier_id, version, routing) in moved {
            self.versions
                .insert(dossier_id.to_owned(), (version, routing));
        }
        for (i, event) in new_events.iter().enumerate() {
            self.claimed.insert(event.event_id, self.written.len() + i);
        }
        self.written.extend(new_events);
        self.canonical.extend(canonical);
        let mut ranges = ranges.into_iter();
        Ok(classes
            .into_iter()
            .map(|class| match class {
                Class::Stored(events) => Part::Stored(events),
                Class::InGroup(indices) => Part::InGroup(indices),
                Class::New => Part::New(ranges.next().unwrap_or_default()),
            })
            .collect())
    }

    /// A dossier append whose events are all stored (or all written by one earlier call of the
    /// group) with the same fingerprint and dossier is a duplicate; one with none of them known
    /// is new; anything else is a reused id.
    fn classify(&self, append: &DossierAppend) -> Result<Class, AppendError> {
        let mut first_found = None;
        let (mut in_log, mut in_group) = (0, 0);
        for event in &append.events {
            let existing = if let Some(existing) = self.stored.get(&event.event_id) {
                in_log += 1;
                existing
            } else if let Some(&i) = self.claimed.get(&event.event_id) {
                in_group += 1;
                &self.written[i]
            } else {
                continue;
            };
            if existing.fingerprint != event.fingerprint || existing.dossier_id != append.dossier_id
            {
                return Err(AppendError::EventIdReused {
                    event_id: event.event_id,
                });
            }
            first_found.get_or_insert(event.event_id);
        }
        let n = append.events.len();
        match first_found {
            None => Ok(Class::New),
            Some(_) if in_log == n => Ok(Class::Stored(
                append
                    .events
                    .iter()
                    .filter_map(|e| self.stored.get(&e.event_id).cloned())
                    .collect(),
            )),
            Some(_) if in_group == n => Ok(Class::InGroup(
                append
                    .events
                    .iter()
                    .filter_map(|e| self.claimed.get(&e.event_id).copied())
                    .collect(),
            )),
            Some(event_id) => Err(AppendError::EventIdReused { event_id }),
        }
    }
}

/// The sequencing section but for the COMMIT: takes the head row, fills in positions,
/// `recorded_at` and hashes, and inserts everything with the head update and the wake-up.
pub(crate) async fn sequence_and_insert(
    conn: &mut PgConnection,
    written: &mut [StoredEvent],
    canonical: &[Canonical],
) -> Result<(), AttemptError> {
    let count = written.len();
    // The binds that do not depend on the positions, encoded before taking the sequencer.
    let insert = sqlx::query(INSERT)
        .bind(written.iter().map(|e| e.event_id).collect::<Vec<Uuid>>())
        .bind(
            written
                .iter()
                .map(|e| e.dossier_id.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(written.iter().map(|e| e.version).collect::<Vec<i32>>())
        .bind(
            written
                .iter()
                .map(|e| e.event_type.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(written.iter().map(|e| e.occurred_at).collect::<Vec<_>>())
        .bind(
            written
                .iter()
                .map(|e| e.routing.level.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(
            written
                .iter()
                .map(|e| e.routing.agency.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(
            written
                .iter()
                .map(|e| e.routing.sector.as_str())
                .collect::<Vec<&str>>(),
        )
        .bind(written.iter().map(|e| &e.payload).collect::<Vec<&Value>>())
        .bind(
            written
                .iter()
                .map(|e| &e.fingerprint[..])
                .collect::<Vec<&[u8]>>(),
        );

    let head = sqlx::query(SEQUENCE)
        .bind(count as i64)
        .fetch_one(&mut *conn)
        .await
        .map_err(AppendError::Unavailable)?;
    let head_position: i64 = head.try_get("position").map_err(AppendError::Unavailable)?;
    let previous: Vec<u8> = head
        .try_get("chain_hash")
        .map_err(AppendError::Unavailable)?;
    let recorded_at: DateTime<Utc> = head
        .try_get("recorded_at")
        .map_err(AppendError::Unavailable)?;
    let mut chain = <[u8; 32]>::try_from(previous.as_slice()).map_err(|_| {
        AppendError::Unavailable(sqlx::Error::Decode(
            "log_head.chain_hash is not 32 bytes".into(),
        ))
    })?;

    let recorded_text = format_timestamp(&recorded_at);
    let first = head_position - count as i64 + 1;
    let positions: Vec<i64> = (first..=head_position).collect();
    let event_hashes = event_hashes(canonical, first, &recorded_text);
    let mut chain_hashes = Vec::with_capacity(count);
    for ((stored, &position), &hash) in written.iter_mut().zip(&positions).zip(&event_hashes) {
        stored.position = position;
        stored.recorded_at = recorded_at;
        stored.event_hash = hash;
        chain = chain_hash(&chain, &hash);
        stored.chain_hash = chain;
        chain_hashes.push(chain);
    }

    let result = insert
        .bind(positions)
        .bind(event_hashes.iter().map(|h| &h[..]).collect::<Vec<&[u8]>>())
        .bind(chain_hashes.iter().map(|h| &h[..]).collect::<Vec<&[u8]>>())
        .bind(recorded_at)
        .bind(&chain[..])
        .bind(head_position.to_string())
        .execute(&mut *conn)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(error) => Err(match race_of(&error) {
            Some(race) => AttemptError::Raced(race, error),
            None => AttemptError::Failed(AppendError::Unavailable(error)),
        }),
    }
}

/// Below this many events a batch's event hashes are computed on the calling thread; from it on,
/// on [`HASH_THREADS`] threads at most (a live group is far smaller; an import batch larger).
pub(crate) const PARALLEL_HASH_MIN: usize = 1024;
/// The most threads the event hashes of one batch are spread over.
pub(crate) const HASH_THREADS: usize = 4;

/// The event hashes of consecutive events from position `first`, all recorded at
/// `recorded_text`. Each event's hash depends on that event alone (only the chain is
/// sequential), so a large batch is split over scoped threads, one chunk each.
pub(crate) fn event_hashes(
    canonical: &[Canonical],
    first: i64,
    recorded_text: &str,
) -> Vec<[u8; 32]> {
    let hash_range = |chunk: &[Canonical], from: i64| -> Vec<[u8; 32]> {
        chunk
            .iter()
            .zip(from..)
            .map(|(c, position)| c.event_hash(position, recorded_text))
            .collect()
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(HASH_THREADS);
    if canonical.len() < PARALLEL_HASH_MIN || threads < 2 {
        return hash_range(canonical, first);
    }
    let chunk = canonical.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = canonical
            .chunks(chunk)
            .enumerate()
            .map(|(i, part)| {
                let from = first + (i * chunk) as i64;
                scope.spawn(move || hash_range(part, from))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(hashes) => hashes,
                // Hashing cannot panic short of a bug; re-raise it where it belongs.
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

/// The current version and routing of each dossier that has events.
async fn current_versions<'a>(
    conn: &mut PgConnection,
    dossier_ids: impl Iterator<Item = &'a str>,
) -> Result<HashMap<String, (i32, Routing)>, AppendError> {
    let rows = sqlx::query(LOOKUP_VERSIONS)
        .persistent(false)
        .bind(dossier_ids.collect::<Vec<&str>>())
        .fetch_all(&mut *conn)
        .await
        .map_err(AppendError::Unavailable)?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("dossier_id")?,
                (
                    row.try_get("version")?,
                    Routing {
                        level: row.try_get("level")?,
                        agency: row.try_get("agency")?,
                        sector: row.try_get("sector")?,
                    },
                ),
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(AppendError::Unavailable)
}

fn matches_expected(expected: ExpectedVersion, current: i32) -> bool {
    match expected {
        ExpectedVersion::NoStream => current == 0,
        ExpectedVersion::Exact(v) => i64::from(v) == i64::from(current),
    }
}

fn conflict(append: &DossierAppend, current: i32) -> AppendError {
    AppendError::Conflict {
        dossier_id: append.dossier_id.clone(),
        expected: append.expected_version,
        actual: u32::try_from(current).unwrap_or(0),
    }
}

/// Which unique constraint a failed insert ran into, if that is why it failed.
pub(crate) fn race_of(error: &sqlx::Error) -> Option<Race> {
    let db = error.as_database_error()?;
    if !db.is_unique_violation() {
        return None;
    }
    match db.constraint() {
        Some("events_event_id_key") => Some(Race::EventId),
        Some("events_dossier_version_key") => Some(Race::DossierVersion),
        _ => None,
    }
}

/// The answer when the last attempt also lost a race (another writer committed between its
/// checks and its sequencing): a `Conflict` with the actual version when it was a dossier's
/// version, else `Unavailable` (retrying the call is then safe and will be answered from the
/// log).
async fn after_lost_race(
    conn: &mut PgConnection,
    prepared: &Prepared,
    race: Race,
    error: sqlx::Error,
) -> AppendError {
    if let Race::DossierVersion = race {
        let ids = prepared.appends.iter().map(|a| a.dossier_id.as_str());
        match current_versions(conn, ids).await {
            Ok(current) => {
                for append in &prepared.appends {
                    let version = current.get(&append.dossier_id).map_or(0, |(v, _)| *v);
                    if !matches_expected(append.expected_version, version) {
                        return conflict(append, version);
                    }
                }
            }
            Err(lookup) => return lookup,
        }
    }
    AppendError::Unavailable(error)
}

fn invalid(event_id: Uuid, reason: impl Into<String>) -> AppendError {
    AppendError::InvalidEvent {
        event_id,
        reason: reason.into(),
    }
}

/// Validates a call without touching the database, and normalises it (occurred_at truncated to
/// microseconds, the precision of `timestamptz`).
pub(crate) fn prepare(mut batch: Vec<DossierAppend>) -> Result<Prepared, AppendError> {
    let mut dossiers: HashSet<&str> = HashSet::with_capacity(batch.len());
    let mut event_ids: Vec<Uuid> = Vec::new();
    let mut seen: HashSet<Uuid> = HashSet::new();
    let mut bytes = 0usize;
    for append in &batch {
        let Some(first) = append.events.first() else {
            return Err(invalid(
                Uuid::nil(),
                format!("dossier {:?}: no events to append", append.dossier_id),
            ));
        };
        check_dossier_id(&append.dossier_id).map_err(|reason| invalid(first.event_id, reason))?;
        if !dossiers.insert(append.dossier_id.as_str()) {
            return Err(invalid(
                first.event_id,
                format!(
                    "dossier {:?} appears more than once in one append",
                    append.dossier_id
                ),
            ));
        }
        for (name, value) in [
            ("level", &append.routing.level),
            ("agency", &append.routing.agency),
            ("sector", &append.routing.sector),
        ] {
            if value.contains('\0') {
                return Err(invalid(
                    first.event_id,
                    format!("routing {name} contains a NUL character"),
                ));
            }
        }
        for event in &append.events {
            let id = event.event_id;
            if id.is_nil() {
                return Err(invalid(id, "the event id must not be the nil UUID"));
            }
            if !seen.insert(id) {
                return Err(invalid(
                    id,
                    "the event id appears more than once in this append",
                ));
            }
            if event.event_type.is_empty()
                || !event
                    .event_type
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            {
                return Err(invalid(
                    id,
                    format!(
                        "event type {:?} is not a non-empty [a-z_]+ name",
                        event.event_type
                    ),
                ));
            }
            let year = event.occurred_at.year();
            if !(1..=9999).contains(&year) {
                return Err(invalid(
                    id,
                    format!("occurred_at year {year} is outside 1..=9999"),
                ));
            }
            bytes += check_payload(&event.payload).map_err(|reason| invalid(id, reason))?;
            bytes += EVENT_OVERHEAD_BYTES
                + event.event_type.len()
                + append.dossier_id.len()
                + append.routing.level.len()
                + append.routing.agency.len()
                + append.routing.sector.len();
            event_ids.push(id);
        }
    }
    for append in &mut batch {
        for event in &mut append.events {
            event.occurred_at = event.occurred_at.trunc_subsecs(6);
        }
    }
    Ok(Prepared {
        heads: vec![None; batch.len()],
        appends: batch,
        event_ids,
        bytes,
    })
}

/// [`prepare`] of one dossier's append decided on `head`: the head is kept for the attempt
/// when the append is consistent with it (the same dossier, the head's version expected),
/// else dropped (the append is then looked up as any other).
pub(crate) fn prepare_after(
    head: &DossierHead,
    append: DossierAppend,
) -> Result<Prepared, AppendError> {
    let consistent = append.dossier_id == head.dossier_id
        && matches_expected(append.expected_version, head.version);
    let mut prepared = prepare(vec![append])?;
    if consistent {
        prepared.heads = vec![Some(head.clone())];
    }
    Ok(prepared)
}

fn check_dossier_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the dossier id is empty".into());
    }
    if id.chars().count() > MAX_DOSSIER_ID_CHARS {
        return Err(format!(
            "the dossier id is longer than {MAX_DOSSIER_ID_CHARS} characters"
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(format!(
            "the dossier id {id:?} contains a control character"
        ));
    }
    Ok(())
}

/// No floats (they would not survive `jsonb` byte for byte), no NUL (`jsonb` cannot store it),
/// bounded nesting. Iterative, so a hostile payload cannot overflow the stack here. Returns a
/// rough size: the bytes of its strings and keys, and a few per value.
fn check_payload(payload: &Value) -> Result<usize, String> {
    let mut stack = vec![(payload, 1usize)];
    let mut bytes = 0usize;
    while let Some((value, depth)) = stack.pop() {
        bytes += 4;
        match value {
            Value::Number(n) if !(n.is_i64() || n.is_u64()) => {
                return Err(format!(
                    "the payload contains the float {n}: use an integer (e.g. in minor units) or a string"
                ));
            }
            Value::String(s) if s.contains('\0') => {
                return Err("the payload contains a NUL character".into());
            }
            Value::Array(items) => {
                if depth >= MAX_PAYLOAD_DEPTH {
                    return Err(format!(
                        "the payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels"
                    ));
                }
                stack.extend(items.iter().map(|item| (item, depth + 1)));
            }
            Value::Object(map) => {
                if depth >= MAX_PAYLOAD_DEPTH {
                    return Err(format!(
                        "the payload is nested deeper than {MAX_PAYLOAD_DEPTH} levels"
                    ));
                }
                for (key, item) in map {
                    if key.contains('\0') {
                        return Err("a payload key contains a NUL character".into());
                    }
                    bytes += key.len();
                    stack.push((item, depth + 1));
                }
            }
            Value::String(s) => bytes += s.len(),
            Value::Number(_) => bytes += 16,
            _ => {}
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequencer_idle_timeout_is_the_one_set() {
        let set = format!(
            "set_config('idle_in_transaction_session_timeout', '{}s', true)",
            SEQUENCER_IDLE_TIMEOUT.as_secs()
        );
        assert!(SEQUENCE.contains(&set), "{SEQUENCE}");
    }

    #[test]
    fn payload_rules() {
        assert!(
            check_payload(
                &serde_json::json!({"a": [1, -2, "x", true, null, {"b": 18446744073709551615u64}]})
            )
            .is_ok()
        );
        assert!(check_payload(&serde_json::json!({"a": [1.5]})).is_err());
        assert!(check_payload(&serde_json::json!({"a": "x\u{0}"})).is_err());
        let mut deep = serde_json::json!(1);
        for _ in 0..MAX_PAYLOAD_DEPTH {
            deep = serde_json::json!([deep]);
        }
        assert!(check_payload(&deep).is_err());
    }
}
