//! The catalogue in memory, kept current by the database's notifications.
//!
//! Every `ReceiveDossier` asks which version of its procedure is in force. Asked of PostgreSQL,
//! that is a round trip (and sqlx's check of the connection as it goes back to the pool) per
//! call, for a table that changes a few times a year: on the two-core bench machine the lookup
//! alone cost a third of intake's throughput. A cached [`Catalogue`](crate::Catalogue) keeps
//! every stored version of each procedure code it was asked about, and answers from memory.
//!
//! Kept current by:
//! - a publication through the same handle (or a clone): the cache is emptied as soon as the
//!   publishing transaction has committed, before `publish` returns;
//! - any other insert into `procedure_versions` (another intake process, an operator's `psql`):
//!   the table's trigger (migration 70002) notifies [`CHANNEL`] at commit, and the cache's
//!   listener empties it when the notification arrives — a receive that reads the catalogue in
//!   the moment between the other process's commit and the notification's arrival (well under a
//!   millisecond on one server) still gets the previous version, as it would had it come a
//!   moment earlier. The `received` event records the version it used either way.
//!
//! The cache is used only while its listener is listening: it has `LISTEN`ed and heard a probe
//! it notified itself through the service's pool (a transaction-mode pooler in between would
//! swallow it, and the cache is then never used). Until then, and from the moment its
//! connection is lost until it listens again (retried after 1 s, doubling up to 30 s), every
//! lookup goes to the database, and each (re)connection empties the cache (what was notified
//! while it was not listening is unknown). A lookup that read the table while a notification arrived
//! does not store what it read (a generation number tells). Codes without versions are kept
//! too (most receives name a procedure the catalogue does not hold and state its rules
//! themselves), so a client could name endless codes: the cache holds at most
//! [`MAX_CACHED_CODES`] codes and is emptied when a new one would exceed that, so that it never
//! costs more than the lookups it saves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};

use crate::store::ProcedureVersion;

/// The channel `procedure_versions`' trigger notifies at the commit of every insert.
pub const CHANNEL: &str = "motcua_catalogue";
/// The most procedure codes the cache holds (with or without versions); a province's catalogue
/// has a few thousand.
pub const MAX_CACHED_CODES: usize = 20_000;
/// How long the listener waits for its own probe before it counts as not listening.
const PROBE_WAIT: Duration = Duration::from_secs(5);
/// How long the listener waits before listening again after its connection failed; doubled
/// after each failed attempt, up to [`RELISTEN_AT_MOST`].
const RELISTEN_AFTER: Duration = Duration::from_secs(1);
const RELISTEN_AT_MOST: Duration = Duration::from_secs(30);

/// Every stored version of one code with the `effective_from` column it was stored under
/// (the in-force rule compares the column, as the query does).
pub(crate) type Versions = Arc<[(DateTime<Utc>, ProcedureVersion)]>;

/// The version in force at `at` among `versions`: the latest `effective_from` not after `at`,
/// and of several for that instant, the highest version — the order of the database's query.
pub(crate) fn in_force_of(
    versions: &[(DateTime<Utc>, ProcedureVersion)],
    at: DateTime<Utc>,
) -> Option<ProcedureVersion> {
    versions
        .iter()
        .filter(|(from, _)| *from <= at)
        .max_by_key(|(from, v)| (*from, v.version))
        .map(|(_, v)| v.clone())
}

#[derive(Debug, Default)]
struct State {
    /// Entries may be used and stored only while the listener listens.
    listening: bool,
    /// Moves on at every notification, (re)connection and loss of the listener.
    generation: u64,
    codes: HashMap<String, Versions>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets every entry (and makes any lookup under way keep nothing); `listening`, when
    /// given, says whether entries may be used and kept from now on.
    fn forget(&self, listening: Option<bool>) {
        let mut state = self.lock();
        if let Some(listening) = listening {
            state.listening = listening;
        }
        state.generation += 1;
        state.codes.clear();
    }
}

/// The cache of one [`Catalogue`](crate::Catalogue) handle and its clones; its listener task
/// stops when the last of them is dropped.
#[derive(Debug)]
pub(crate) struct Cache {
    shared: Arc<Shared>,
    listener: tokio::task::AbortHandle,
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// What a lookup found in the cache: the answer, or the generation to store a fresh read under.
pub(crate) enum Lookup {
    Hit(Option<ProcedureVersion>),
    Miss { generation: u64 },
}

impl Cache {
    /// Starts the listener (on a connection of its own, made with `pool`'s options). Must be
    /// called inside a tokio runtime.
    pub(crate) fn start(pool: &PgPool) -> Cache {
        let shared = Arc::new(Shared::default());
        let listener = tokio::spawn(listen(pool.clone(), Arc::downgrade(&shared))).abort_handle();
        Cache { shared, listener }
    }

    pub(crate) fn lookup(&self, code: &str, at: DateTime<Utc>) -> Lookup {
        let state = self.shared.lock();
        match state.codes.get(code) {
            Some(versions) if state.listening => Lookup::Hit(in_force_of(versions, at)),
            _ => Lookup::Miss {
                generation: state.generation,
            },
        }
    }

    /// Keeps what a lookup read from the database (no versions included), unless anything was
    /// notified (or the listener stopped) since the lookup began.
    pub(crate) fn store(&self, code: &str, generation: u64, versions: Versions) {
        let mut state = self.shared.lock();
        if state.listening && state.generation == generation {
            if state.codes.len() >= MAX_CACHED_CODES {
                state.codes.clear();
            }
            state.codes.insert(code.to_owned(), versions);
        }
    }

    /// Forgets every entry (a publication through this handle has committed).
    pub(crate) fn invalidate(&self) {
        self.shared.forget(None);
    }

    /// Whether the listener listens (so entries are used): for tests and health.
    pub(crate) fn listening(&self) -> bool {
        self.shared.lock().listening
    }
}

async fn listen(pool: PgPool, shared: Weak<Shared>) {
    let options = (*pool.connect_options()).clone();
    // Doubles while listening keeps failing (the database down), back to the first after a
    // connection that listened.
    let mut pause = RELISTEN_AFTER;
    loop {
        match listener(&options, &pool).await {
            Ok(mut listener) => {
                let Some(cache) = shared.upgrade() else {
                    return;
                };
                cache.forget(Some(true));
                drop(cache);
                pause = RELISTEN_AFTER;
                loop {
                    let received = listener.try_recv().await;
                    let Some(cache) = shared.upgrade() else {
                        return;
                    };
                    match received {
                        Ok(Some(_)) => {
                            while listener.next_buffered().is_some() {}
                            cache.forget(None);
                        }
                        // The connection was lost (`None`) or failed: what was published
                        // meanwhile is unknown, so stop using the cache until listening again.
                        Ok(None) | Err(_) => {
                            tracing::warn!(
                                "catalogue: the cache's listener lost its connection; reading the database until it listens again"
                            );
                            cache.forget(Some(false));
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "catalogue: cannot LISTEN; the cache is not used until it can");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RELISTEN_AT_MOST);
    }
}

/// A listener on [`CHANNEL`] that has heard a probe it sent itself through the service's pool:
/// `LISTEN` through a transaction-mode pooler (PgBouncer) succeeds yet hears nothing, and a
/// cache relying on it would never learn of another process's publication.
async fn listener(
    options: &sqlx::postgres::PgConnectOptions,
    service: &PgPool,
) -> Result<PgListener, sqlx::Error> {
    // A private pool of one connection, so that listening never takes one of the service's.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    let probe = format!("probe {}", uuid::Uuid::new_v4());
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(&probe)
        .execute(service)
        .await?;
    let heard = tokio::time::timeout(PROBE_WAIT, async {
        loop {
            match listener.try_recv().await? {
                Some(notification) if notification.payload() == probe => return Ok(()),
                Some(_) => {}
                None => return Err(sqlx::Error::PoolClosed),
            }
        }
    })
    .await;
    match heard {
        Ok(Ok(())) => Ok(listener),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(sqlx::Error::Protocol(format!(
            "LISTEN {CHANNEL} did not hear its own probe within {PROBE_WAIT:?} (a transaction-mode pooler in between?)"
        ))),
    }
}
