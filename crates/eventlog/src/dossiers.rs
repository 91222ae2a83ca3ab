//! Whole dossiers as of a log position: the one reader of "every event of these dossiers up to
//! position `P`, in version order", for every reader that recomputes figures from the log: the
//! projection's "as recorded at" scan and its checkpointer, its rebuild and its verify.
//!
//! Each caller chooses which columns it decodes ([`EventColumns`]): every column
//! ([`StoredEvent`], what the figures as of `T` read) or only what recomputing a dossier needs
//! ([`EventBody`]: no hashes, fingerprint, event id or routing, for the whole-log scans of
//! rebuild and verify). The statement, its filter and its order are the same for both.
//!
//! Why a position is a consistent cut: positions are gapless and become visible in commit order
//! (see [`crate::append`]), and events are immutable. Once a reader has seen position `P`
//! committed (it read `P` from `log_head` or read the event at `P`), every read of
//! `position <= P` returns the same rows, in any transaction: no snapshot is needed to agree on
//! "the log up to `P`". A dossier's versions are assigned in its commit order too, so its events
//! up to `P` are a prefix of its versions.

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use sqlx::PgConnection;
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::read::{EventRow, decode_event, select_events};
use crate::{ReadError, StoredEvent};

/// One dossier's events up to a position, in version order (never empty). `E` is what each
/// event holds: [`StoredEvent`] (every column) unless the reader chose [`EventBody`].
#[derive(Debug, Clone, PartialEq)]
pub struct DossierEvents<E = StoredEvent> {
    pub dossier_id: String,
    pub events: Vec<E>,
}

/// What recomputing a dossier's figures needs of an event: its place and the columns the domain
/// decoder reads (`event_type`, `occurred_at`, `payload`; see `domain::Event::from_row`). The
/// payload is parsed (`P` = `serde_json::Value`) or, in [`EventText`], its JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct EventBody<P = serde_json::Value> {
    pub position: i64,
    /// 1-based version within the dossier.
    pub version: i32,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: P,
}

/// [`EventBody`] with the payload as the JSON text PostgreSQL prints for it (`payload::text`),
/// not parsed: for a reader that hands events to other threads (the rebuild), so that parsing
/// happens there, in parallel, rather than on the thread that reads the rows.
pub type EventText = EventBody<String>;

impl<P> EventBody<P>
where
    P: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    fn from_row(row: &PgRow) -> Result<Self, ReadError> {
        let r = EventRow::new(row)?;
        Ok(EventBody {
            position: r.position,
            version: r.version()?,
            event_type: r.col("event_type")?,
            occurred_at: r.col("occurred_at")?,
            payload: r.col("payload")?,
        })
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::StoredEvent {}
    impl Sealed for super::EventBody {}
    impl Sealed for super::EventText {}
}

/// The columns a whole-dossier read decodes for each event: [`StoredEvent`] or [`EventBody`]
/// (sealed: the statements are this crate's).
pub trait EventColumns: sealed::Sealed + Sized + Send + 'static {
    /// [`dossiers_up_to`]'s statement: `$1` the position, `$2`–`$4` the routing filter.
    #[doc(hidden)]
    const UP_TO: &'static str;
    /// [`these_dossiers_up_to`]'s statement: `$1` the ids, `$2` the position.
    #[doc(hidden)]
    const THESE_UP_TO: &'static str;
    /// Decodes one row of either statement.
    #[doc(hidden)]
    fn decode(row: &PgRow) -> Result<Self, ReadError>;
}

/// [`dossiers_up_to`]'s statement after a select list (a macro call giving a literal).
macro_rules! up_to {
    ($($select:tt)*) => {
        concat!(
            $($select)*,
            "WHERE position <= $1 ",
            "AND ($2::text IS NULL OR level = $2) ",
            "AND ($3::text IS NULL OR agency = $3) ",
            "AND ($4::text IS NULL OR sector = $4) ",
            "ORDER BY dossier_id, version"
        )
    };
}

/// [`these_dossiers_up_to`]'s statement after a select list.
macro_rules! these_up_to {
    ($($select:tt)*) => {
        concat!(
            $($select)*,
            "WHERE dossier_id = ANY($1) AND position <= $2 ORDER BY dossier_id, version"
        )
    };
}

/// `SELECT <the columns of EventBody> FROM events `.
macro_rules! select_bodies {
    () => {
        "SELECT dossier_id, position, version, event_type, occurred_at, payload FROM events "
    };
}

/// `SELECT <the columns of EventText> FROM events `.
macro_rules! select_texts {
    () => {
        "SELECT dossier_id, position, version, event_type, occurred_at, payload::text AS payload \
         FROM events "
    };
}

impl EventColumns for StoredEvent {
    const UP_TO: &'static str = up_to!(select_events!());
    const THESE_UP_TO: &'static str = these_up_to!(select_events!());

    fn decode(row: &PgRow) -> Result<Self, ReadError> {
        decode_event(row)
    }
}

impl EventColumns for EventBody {
    const UP_TO: &'static str = up_to!(select_bodies!());
    const THESE_UP_TO: &'static str = these_up_to!(select_bodies!());

    fn decode(row: &PgRow) -> Result<Self, ReadError> {
        Self::from_row(row)
    }
}

impl EventColumns for EventText {
    const UP_TO: &'static str = up_to!(select_texts!());
    const THESE_UP_TO: &'static str = these_up_to!(select_texts!());

    fn decode(row: &PgRow) -> Result<Self, ReadError> {
        Self::from_row(row)
    }
}

/// Which dossiers a whole-log read keeps, by the routing columns every event of a dossier
/// carries (the receiving agency's): `None` keeps all. Filtering on them keeps or drops whole
/// dossiers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingFilter {
    pub level: Option<String>,
    pub agency: Option<String>,
    pub sector: Option<String>,
}

/// Every dossier with an event at or below `up_to` that `routing` keeps, each with all its
/// events `<= up_to` in version order, streamed in `dossier_id` order on the caller's connection
/// (rows are decoded as they arrive; one dossier is held at a time), each event decoded as `E`
/// ([`StoredEvent`] or [`EventBody`]). Read inside the caller's transaction when it wants other
/// reads to share its snapshot.
pub fn dossiers_up_to<'c, E: EventColumns>(
    conn: &'c mut PgConnection,
    up_to: i64,
    routing: &'c RoutingFilter,
) -> impl Stream<Item = Result<DossierEvents<E>, ReadError>> + Send + Unpin + 'c {
    let rows = sqlx::query(E::UP_TO)
        .bind(up_to)
        .bind(routing.level.as_deref())
        .bind(routing.agency.as_deref())
        .bind(routing.sector.as_deref())
        .fetch(conn)
        .map(|row| row.map_err(ReadError::Unavailable));
    Box::pin(group_by_dossier(rows))
}

/// The dossiers `ids` with their events `<= up_to`, in `dossier_id` order (dossiers without
/// such an event are left out), read in one statement on the caller's connection.
pub async fn these_dossiers_up_to<E: EventColumns>(
    conn: &mut PgConnection,
    ids: &[&str],
    up_to: i64,
) -> Result<Vec<DossierEvents<E>>, ReadError> {
    let rows = sqlx::query(E::THESE_UP_TO)
        // Planned for each call, as every `ANY($1)` lookup of the log.
        .persistent(false)
        .bind(ids)
        .bind(up_to)
        .fetch_all(conn)
        .await
        .map_err(ReadError::Unavailable)?;
    let mut out: Vec<DossierEvents<E>> = Vec::new();
    for row in &rows {
        let id = dossier_id(row)?;
        let event = E::decode(row)?;
        match out.last_mut() {
            Some(d) if d.dossier_id == id => d.events.push(event),
            _ => out.push(DossierEvents {
                dossier_id: id.to_owned(),
                events: vec![event],
            }),
        }
    }
    Ok(out)
}

/// Groups events ordered by dossier into whole dossiers.
pub fn group_events(events: impl IntoIterator<Item = StoredEvent>) -> Vec<DossierEvents> {
    let mut out: Vec<DossierEvents> = Vec::new();
    for event in events {
        match out.last_mut() {
            Some(d) if d.dossier_id == event.dossier_id => d.events.push(event),
            _ => out.push(DossierEvents {
                dossier_id: event.dossier_id.clone(),
                events: vec![event],
            }),
        }
    }
    out
}

/// The `dossier_id` column of a row, borrowed.
fn dossier_id(row: &PgRow) -> Result<&str, ReadError> {
    row.try_get("dossier_id").map_err(ReadError::Unavailable)
}

/// A row's dossier id (borrowed) and its event decoded as `E`.
fn id_and_event<E: EventColumns>(row: &PgRow) -> Result<(&str, E), ReadError> {
    Ok((dossier_id(row)?, E::decode(row)?))
}

/// A stream of rows ordered by dossier, grouped into whole dossiers, each row decoded as `E`
/// (the dossier id is compared in the row: one `String` per dossier). An error is yielded once
/// and ends the stream.
fn group_by_dossier<'a, E: EventColumns>(
    rows: impl Stream<Item = Result<PgRow, ReadError>> + Send + 'a,
) -> impl Stream<Item = Result<DossierEvents<E>, ReadError>> + Send + 'a {
    struct State<S, E> {
        rows: std::pin::Pin<Box<S>>,
        pending: Option<DossierEvents<E>>,
        done: bool,
    }
    let state = State {
        rows: Box::pin(rows),
        pending: None,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let row = match st.rows.next().await {
                None => {
                    st.done = true;
                    return st.pending.take().map(|d| (Ok(d), st));
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Some(Ok(row)) => row,
            };
            let (id, event) = match id_and_event::<E>(&row) {
                Ok(decoded) => decoded,
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            };
            match st.pending.as_mut() {
                Some(d) if d.dossier_id == id => d.events.push(event),
                _ => {
                    let next = DossierEvents {
                        dossier_id: id.to_owned(),
                        events: vec![event],
                    };
                    if let Some(done) = st.pending.replace(next) {
                        return Some((Ok(done), st));
                    }
                }
            }
        }
    })
}
