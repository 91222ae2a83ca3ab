//! The append-only event log in PostgreSQL: the system's source of truth.
//!
//! This crate owns the `events` table and everything that guarantees about it: per-dossier
//! optimistic concurrency, idempotent appends keyed by client event ids, a gapless global
//! position assigned in commit order (so a follower reading `position > cursor` never misses an
//! event), a hash chain, and immutability enforced by the database itself.
//!
//! It knows nothing of dossiers' rules (that is `domain`) nor of NATS (that is `relay`).

mod model;

pub use model::{Appended, DossierAppend, ExpectedVersion, NewEvent, Routing, StoredEvent};

// INTERFACE CONTRACT (implemented by the event-log work; relay and services code against it):
//
// pub struct EventLog { .. }                       // Clone, cheap (wraps PgPool)
// impl EventLog {
//     pub async fn connect(url: &str, max_connections: u32) -> Result<EventLog, ConnectError>;
//     pub fn from_pool(pool: PgPool) -> EventLog;
//     pub fn pool(&self) -> &PgPool;
//     pub async fn migrate(&self) -> Result<(), MigrateError>;            // embedded migrations
//     pub async fn append(&self, batch: Vec<DossierAppend>) -> Result<Appended, AppendError>;
//     pub async fn append_in(&self, tx: &mut PgTransaction<'_>, batch: Vec<DossierAppend>)
//         -> Result<Appended, AppendError>;                              // caller commits
//     pub async fn load_dossier(&self, dossier_id: &str) -> Result<Vec<StoredEvent>, ReadError>;
//     pub async fn load_dossiers(&self, ids: &[String])
//         -> Result<HashMap<String, Vec<StoredEvent>>, ReadError>;       // each in version order
//     pub async fn find_events(&self, ids: &[Uuid]) -> Result<Vec<StoredEvent>, ReadError>;
//     pub async fn read_after(&self, position: i64, limit: i64) -> Result<Vec<StoredEvent>, ReadError>;
//     pub async fn head(&self) -> Result<i64, ReadError>;                 // highest committed position
//     pub async fn changes(&self) -> Result<Changes, ReadError>;          // LISTEN-based wake-ups
//     pub fn follow(&self, after: i64) -> impl Stream<Item = Result<StoredEvent, ReadError>>;
// }
// impl Changes { pub async fn wait(&mut self, at_most: Duration); }       // returns on NOTIFY or timeout
// pub fn canonical_bytes(event: &StoredEvent) -> Vec<u8>;
// pub fn event_hash(canonical: &[u8]) -> [u8; 32];
// pub fn chain_hash(previous: &[u8; 32], event_hash: &[u8; 32]) -> [u8; 32];
//
// enum AppendError { Conflict { dossier_id, expected: ExpectedVersion, actual: u32 },
//                    EventIdReused { event_id }, InvalidEvent { event_id, reason },
//                    Unavailable(sqlx::Error) }
