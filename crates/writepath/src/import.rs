//! The write path in batch form: bulk import of history (already-timestamped events from an old
//! system), decided with the live rules, written with one checked append per batch.
//!
//! A batch goes through two stages, which a caller may overlap across batches:
//!
//! 1. [`WritePath::prepare_import`]: one load of the dossiers the batch touches (events stored
//!    by an earlier attempt with the same id and content are duplicates; another content is a
//!    reused id — a lookup of the batch's ids among every stored event settles what the
//!    dossiers cannot, see there), every event decided in order against the folded states, and
//!    the rows with their canonical bytes and `COPY` fields built ([`eventlog::CheckedAppend`]).
//!    It writes nothing.
//! 2. [`WritePath::write_import`]: the checked append (sequencer, hashes, one binary `COPY`,
//!    commit), on a task of its own.
//!
//! While batch n is being written (stage 2), batch n+1 can be prepared (stage 1) against the
//! log as committed *plus* what batch n writes: [`Speculation`], the states batch n leaves its
//! dossiers in and the ids it writes, both known in memory. When batch n is written as prepared,
//! that is exactly what the log holds afterwards. When it is not (it lost a race to another
//! writer and was checked again from the top), [`write_import`](WritePath::write_import) says so
//! and the caller prepares batch n+1 again. Any failure ends an import stream, so speculative
//! work past a failed batch is simply dropped: nothing of it was written.
//!
//! A batch is all or nothing; re-sending it after a failure is safe, even while the first send
//! is still being written (the loser of that race checks the batch again and counts the
//! winner's events as duplicates).

use std::collections::HashMap;

use domain::{Command, Decision, Dossier, DossierEvent, DossierId, EventId, Refusal, Rules};
use eventlog::{
    AppendError, CheckedAppend, CheckedAppendError, DossierAppend, EventLog, ExpectedVersion,
    StoredEvent,
};
use uuid::Uuid;

use crate::{Undecodable, WritePath, fold_recorded, new_events, recorded, routing_of};

/// Attempts per batch: a batch that loses a race with another writer of one of its dossiers or
/// ids (typically the same batch re-sent while the first send is still being written) is checked
/// again from the top, where the winner's events are found and counted as duplicates.
const MAX_ATTEMPTS: usize = 4;

/// Whether [`WritePath::prepare_import`] looks the batch's event ids up among every stored
/// event, or finds them only among its dossiers' (see there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdLookup {
    Skip,
    Exact,
}

/// One event of an import batch, parsed and validated by the caller.
#[derive(Debug, Clone)]
pub struct ImportEvent {
    pub event_id: EventId,
    pub dossier_id: DossierId,
    pub command: Command,
    /// A digest of the event's content: equal when the same event is sent again.
    pub fingerprint: [u8; 32],
}

/// What a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Imported {
    /// Events written now (a resolution that withdraws a late mark writes two).
    pub appended: u32,
    /// Events found already stored (an earlier send), or already done by the rules.
    pub duplicates: u32,
    /// The highest position written; 0 when nothing was.
    pub last_position: i64,
}

/// Why a batch wrote nothing. `index` is the event's index in the batch.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The rules refuse the event.
    #[error("event {index}: {refusal}")]
    Refused { index: usize, refusal: Refusal },
    /// The event's id is stored for another event (another content or dossier).
    #[error("event {index}: event id {event_id} was already used for a different event")]
    EventIdReused { index: usize, event_id: Uuid },
    /// An event would be larger than the log stores (`eventlog::MAX_EVENT_BYTES`).
    #[error("{message}")]
    EventTooLarge {
        index: Option<usize>,
        message: String,
    },
    /// The batch lost [`MAX_ATTEMPTS`] races in a row to other writers: re-send it.
    #[error(
        "a dossier or event of the batch changed while it was checked ({0}); re-send the batch"
    )]
    Raced(&'static str),
    /// The log cannot be reached; re-sending the batch is safe.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Undecodable(#[from] Undecodable),
    /// The log refused what the domain produced: a bug.
    #[error("internal: {0}")]
    Internal(String),
}

/// What a prepared batch leaves behind, for preparing the next one before it is written: the
/// state of every dossier it touches and the id, fingerprint and dossier of every event it
/// writes.
#[derive(Debug, Clone, Default)]
pub struct Speculation {
    states: HashMap<String, Dossier>,
    ids: HashMap<Uuid, ([u8; 32], String)>,
}

/// A batch decided and ready to write ([`WritePath::write_import`]).
#[derive(Debug)]
pub struct PreparedImport {
    append: Option<CheckedAppend>,
    /// Per dossier append, its events (to count what was written).
    duplicates: u32,
}

impl PreparedImport {
    /// Events it will write.
    pub fn len(&self) -> usize {
        self.append.as_ref().map_or(0, CheckedAppend::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl WritePath {
    /// A whole batch, prepared and written with nothing in flight before it.
    pub async fn import(&self, events: &[ImportEvent]) -> Result<Imported, ImportError> {
        let (prepared, _) = self.prepare_import(events, None).await?;
        Ok(self.write_import(events, prepared).await?.0)
    }

    /// Stage 1 of a batch (no write): checks and decides `events` against the log as committed
    /// plus `after`, the speculation of the batch being written just before this one (`None`
    /// when every earlier batch is committed). Returns the batch ready to write and the
    /// speculation it leaves for the next.
    ///
    /// Idempotency without a lookup of the batch's event ids, in the common case: an event sent
    /// again is found among its dossier's stored events, which are loaded anyway to decide (or
    /// among the ids of `after`). What that cannot see — an id stored for another dossier, or
    /// for an event of a dossier known only from `after` — is never concluded from, only
    /// settled exactly:
    ///
    /// - an event taken for new that is stored already makes the checked append fail on the
    ///   unique `event_id` ([`write_import`](Self::write_import) then checks the batch again
    ///   from the top, with the lookup);
    /// - a refusal of any kind, and an event the rules find already done (counted as a
    ///   duplicate, where the lookup might find a reused id), make the batch be prepared again
    ///   at once with the lookup, whose answer is the one given.
    ///
    /// So every answer is the one the lookup gives, and the batch of new events (an import's
    /// every batch but re-sent ones) costs one lookup of its dossiers instead of two.
    pub async fn prepare_import(
        &self,
        events: &[ImportEvent],
        after: Option<&Speculation>,
    ) -> Result<(PreparedImport, Speculation), ImportError> {
        match self.prepare_batch(events, after, IdLookup::Skip).await {
            Ok((prepared, speculation, 0)) => Ok((prepared, speculation)),
            Ok(_)
            | Err(
                ImportError::Refused { .. }
                | ImportError::EventIdReused { .. }
                | ImportError::EventTooLarge { .. },
            ) => self
                .prepare_batch(events, after, IdLookup::Exact)
                .await
                .map(|(prepared, speculation, _)| (prepared, speculation)),
            Err(other) => Err(other),
        }
    }

    /// [`prepare_import`](Self::prepare_import) with or without the lookup of the batch's ids;
    /// also returns how many events the rules found already done.
    async fn prepare_batch(
        &self,
        events: &[ImportEvent],
        after: Option<&Speculation>,
        lookup: IdLookup,
    ) -> Result<(PreparedImport, Speculation, u32), ImportError> {
        let empty = Speculation::default();
        let after = after.unwrap_or(&empty);
        let log = self.log();
        let unavailable = |e: eventlog::ReadError| ImportError::Unavailable(e.to_string());

        // Idempotency: the batch's event ids among every stored event, when asked.
        let stored: HashMap<Uuid, ([u8; 32], String)> = match lookup {
            IdLookup::Skip => HashMap::new(),
            IdLookup::Exact => {
                let ids: Vec<Uuid> = events.iter().map(|e| e.event_id.as_uuid()).collect();
                log.find_events(&ids)
                    .await
                    .map_err(unavailable)?
                    .into_iter()
                    .map(|e| (e.event_id, (e.fingerprint, e.dossier_id)))
                    .collect()
            }
        };
        let mut duplicates = 0u32;
        let mut fresh = Vec::with_capacity(events.len());
        for (index, event) in events.iter().enumerate() {
            let id = event.event_id.as_uuid();
            match stored.get(&id).or_else(|| after.ids.get(&id)) {
                Some(existing) => {
                    already_stored(index, event, existing)?;
                    duplicates += 1;
                }
                None => fresh.push(index),
            }
        }

        // The dossiers: as the previous batch leaves them, else as committed.
        let mut dossier_ids: Vec<String> = fresh
            .iter()
            .map(|&i| events[i].dossier_id.to_string())
            .filter(|id| !after.states.contains_key(id))
            .collect();
        dossier_ids.sort();
        dossier_ids.dedup();
        let loaded = log.load_dossiers(&dossier_ids).await.map_err(unavailable)?;
        // Events committed since the lookup above (a racing send of the same batch) are in the
        // dossiers just loaded: they are duplicates too, never decided again on top of
        // themselves.
        let committed_since: HashMap<Uuid, ([u8; 32], String)> = loaded
            .values()
            .flatten()
            .map(|e| (e.event_id, (e.fingerprint, e.dossier_id.clone())))
            .collect();
        let mut still_fresh = Vec::with_capacity(fresh.len());
        for index in fresh {
            match committed_since.get(&events[index].event_id.as_uuid()) {
                Some(existing) => {
                    already_stored(index, &events[index], existing)?;
                    duplicates += 1;
                }
                None => still_fresh.push(index),
            }
        }
        let mut states: HashMap<String, Dossier> = HashMap::new();
        for event in still_fresh.iter().map(|&i| &events[i]) {
            let key = event.dossier_id.as_str();
            if states.contains_key(key) {
                continue;
            }
            let state = match after.states.get(key) {
                Some(state) => state.clone(),
                None => {
                    let stored = loaded.get(key).cloned().unwrap_or_default();
                    fold_recorded(&recorded(stored).map_err(|e| match e {
                        crate::WriteError::Undecodable(u) => ImportError::Undecodable(u),
                        other => ImportError::Internal(other.to_string()),
                    })?)
                }
            };
            states.insert(key.to_owned(), state);
        }

        let decided = decide_import(&mut states, events, &still_fresh, self.rules())?;
        duplicates += decided.already_done;
        let mut next = Speculation {
            states,
            ids: HashMap::new(),
        };
        for append in &decided.appends {
            for event in &append.events {
                next.ids.insert(
                    event.event_id,
                    (event.fingerprint, append.dossier_id.clone()),
                );
            }
        }
        let append = if decided.appends.is_empty() {
            None
        } else {
            Some(CheckedAppend::new(decided.appends).map_err(|e| append_error(events, e))?)
        };
        Ok((
            PreparedImport { append, duplicates },
            next,
            decided.already_done,
        ))
    }

    /// Stage 2 of a batch: writes it. When the checked append loses a race to another writer,
    /// the batch is checked again from the top against the log as committed (up to
    /// [`MAX_ATTEMPTS`] in all); the flag is then false: the speculation prepared with the
    /// batch is void, and a next batch prepared on it must be prepared again.
    pub async fn write_import(
        &self,
        events: &[ImportEvent],
        mut prepared: PreparedImport,
    ) -> Result<(Imported, bool), ImportError> {
        let mut last_race = "event id";
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                prepared = self.prepare_batch(events, None, IdLookup::Exact).await?.0;
            }
            let Some(append) = prepared.append else {
                return Ok((
                    Imported {
                        appended: 0,
                        duplicates: prepared.duplicates,
                        last_position: 0,
                    },
                    attempt == 0,
                ));
            };
            match append_on_a_task_of_its_own(self.log(), append).await? {
                Ok(rows) => {
                    return Ok((
                        Imported {
                            appended: u32::try_from(rows.len()).unwrap_or(u32::MAX),
                            duplicates: prepared.duplicates,
                            last_position: rows.iter().map(|e| e.position).max().unwrap_or(0),
                        },
                        attempt == 0,
                    ));
                }
                Err(CheckedAppendError::Raced(what)) => {
                    tracing::debug!(what, "import lost a race; checking the batch again");
                    last_race = what;
                    prepared = PreparedImport {
                        append: None,
                        duplicates: 0,
                    };
                }
                Err(CheckedAppendError::Unavailable(e)) => {
                    return Err(ImportError::Unavailable(e.to_string()));
                }
            }
        }
        Err(ImportError::Raced(last_race))
    }
}

/// The checked append of a batch, run on a task of its own and awaited here.
///
/// It holds the log's sequencer from its first statement to its COMMIT, so it must be driven
/// the moment the database answers. The caller (an import stream) typically prepares the next
/// batch in the same task meanwhile — tens of milliseconds of CPU between two awaits — and would
/// otherwise leave the section's next statement waiting that long each time. On a task of its
/// own, another worker thread drives it. Dropping this future (the caller's bound expired, the
/// stream went away) aborts the task as dropping the append itself would: the transaction is
/// rolled back with its connection, nothing of the batch is written.
async fn append_on_a_task_of_its_own(
    log: &EventLog,
    append: CheckedAppend,
) -> Result<Result<Vec<StoredEvent>, CheckedAppendError>, ImportError> {
    struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);
    impl<T> Drop for AbortOnDrop<T> {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let log = log.clone();
    let mut task = AbortOnDrop(tokio::spawn(
        async move { log.append_checked(append).await },
    ));
    match (&mut task.0).await {
        Ok(result) => Ok(result),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(_) => Err(ImportError::Unavailable(
            "the batch's write was cancelled (the runtime is shutting down)".into(),
        )),
    }
}

/// What [`decide_import`] decided.
#[derive(Debug, Clone)]
pub struct DecidedImport {
    /// One append per dossier, its expected version the state's version before the batch.
    pub appends: Vec<DossierAppend>,
    /// Events the rules found already done (nothing to write).
    pub already_done: u32,
}

/// Decides `events[i]` for each `i` of `order`, in that order, against `states` (each touched
/// dossier's state, folded; one entry per dossier), evolving each state with what is decided.
/// Pure; a refusal names the event's index.
pub fn decide_import(
    states: &mut HashMap<String, Dossier>,
    events: &[ImportEvent],
    order: &[usize],
    rules: Rules<'_>,
) -> Result<DecidedImport, ImportError> {
    let mut already_done = 0u32;
    let mut appends: Vec<DossierAppend> = Vec::new();
    let mut append_of: HashMap<String, usize> = HashMap::new();
    for &index in order {
        let event = &events[index];
        let key = event.dossier_id.as_str();
        let dossier = states.get_mut(key).ok_or_else(|| {
            ImportError::Internal(format!("dossier {key} of the batch was not loaded"))
        })?;
        let before = dossier.version;
        let decided: Vec<DossierEvent> = match domain::decide(dossier, &event.command, rules)
            .map_err(|refusal| ImportError::Refused { index, refusal })?
        {
            Decision::AlreadyDone => {
                already_done += 1;
                continue;
            }
            decision => decision.into_events(),
        };
        let new = new_events(event.event_id, &event.command, &decided, event.fingerprint);
        let append = match append_of.get(key) {
            Some(&i) => i,
            None => {
                let routing = routing_of(dossier, &decided).ok_or_else(|| {
                    ImportError::Internal("imported dossier has no profile".into())
                })?;
                appends.push(DossierAppend {
                    dossier_id: key.to_owned(),
                    expected_version: match before {
                        0 => ExpectedVersion::NoStream,
                        v => ExpectedVersion::Exact(v),
                    },
                    routing,
                    events: Vec::new(),
                });
                append_of.insert(key.to_owned(), appends.len() - 1);
                appends.len() - 1
            }
        };
        for (new_event, body) in new.iter().zip(decided) {
            dossier.evolve(&domain::Event {
                occurred_at: new_event.occurred_at,
                body,
            });
        }
        appends[append].events.extend(new);
    }
    Ok(DecidedImport {
        appends,
        already_done,
    })
}

/// An event with the item's id is stored (or being written): the same event (a duplicate,
/// `Ok`), or another one that reused the id.
fn already_stored(
    index: usize,
    event: &ImportEvent,
    (fingerprint, dossier_id): &([u8; 32], String),
) -> Result<(), ImportError> {
    if *fingerprint == event.fingerprint && dossier_id == event.dossier_id.as_str() {
        return Ok(());
    }
    Err(ImportError::EventIdReused {
        index,
        event_id: event.event_id.as_uuid(),
    })
}

fn append_error(events: &[ImportEvent], error: AppendError) -> ImportError {
    let index_of = |id: Uuid| events.iter().position(|e| e.event_id.as_uuid() == id);
    match error {
        AppendError::EventTooLarge {
            event_id,
            bytes,
            max,
        } => ImportError::EventTooLarge {
            index: index_of(event_id),
            message: format!("event {event_id}: {bytes} > {max} bytes"),
        },
        other => ImportError::Internal(other.to_string()),
    }
}
