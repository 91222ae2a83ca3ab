//! Whole dossiers as of a log position: the one reader of "every event of these dossiers up to
//! position `P`, in version order", for the readers that recompute figures from the log (the
//! projection's "as recorded at" scan and its checkpointer; rebuild and verify read the same
//! thing).
//!
//! Why a position is a consistent cut: positions are gapless and become visible in commit order
//! (see [`crate::append`]), and events are immutable. Once a reader has seen position `P`
//! committed (it read `P` from `log_head` or read the event at `P`), every read of
//! `position <= P` returns the same rows, in any transaction: no snapshot is needed to agree on
//! "the log up to `P`". A dossier's versions are assigned in its commit order too, so its events
//! up to `P` are a prefix of its versions.

use futures::{Stream, StreamExt};
use sqlx::PgConnection;

use crate::read::{decode_event, select_events};
use crate::{ReadError, StoredEvent};

/// One dossier's events up to a position, in version order (never empty).
#[derive(Debug, Clone, PartialEq)]
pub struct DossierEvents {
    pub dossier_id: String,
    pub events: Vec<StoredEvent>,
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

const UP_TO: &str = select_events!(
    "WHERE position <= $1 ",
    "AND ($2::text IS NULL OR level = $2) ",
    "AND ($3::text IS NULL OR agency = $3) ",
    "AND ($4::text IS NULL OR sector = $4) ",
    "ORDER BY dossier_id, version"
);

const THESE_UP_TO: &str =
    select_events!("WHERE dossier_id = ANY($1) AND position <= $2 ORDER BY dossier_id, version");

/// Every dossier with an event at or below `up_to` that `routing` keeps, each with all its
/// events `<= up_to` in version order, streamed in `dossier_id` order on the caller's connection
/// (rows are decoded as they arrive; one dossier is held at a time). Read inside the caller's
/// transaction when it wants other reads to share its snapshot.
pub fn dossiers_up_to<'c>(
    conn: &'c mut PgConnection,
    up_to: i64,
    routing: &'c RoutingFilter,
) -> impl Stream<Item = Result<DossierEvents, ReadError>> + Send + Unpin + 'c {
    let rows = sqlx::query(UP_TO)
        .bind(up_to)
        .bind(routing.level.as_deref())
        .bind(routing.agency.as_deref())
        .bind(routing.sector.as_deref())
        .fetch(conn)
        .map(|row| {
            row.map_err(ReadError::Unavailable)
                .and_then(|row| decode_event(&row))
        });
    Box::pin(group_by_dossier(rows))
}

/// The dossiers `ids` with their events `<= up_to`, in `dossier_id` order (dossiers without
/// such an event are left out), read in one statement on the caller's connection.
pub async fn these_dossiers_up_to(
    conn: &mut PgConnection,
    ids: &[&str],
    up_to: i64,
) -> Result<Vec<DossierEvents>, ReadError> {
    let rows = sqlx::query(THESE_UP_TO)
        // Planned for each call, as every `ANY($1)` lookup of the log.
        .persistent(false)
        .bind(ids)
        .bind(up_to)
        .fetch_all(conn)
        .await
        .map_err(ReadError::Unavailable)?;
    let events = rows
        .iter()
        .map(decode_event)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(group_events(events))
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

/// A stream of events ordered by dossier, grouped into whole dossiers. An error is yielded
/// once and ends the stream.
fn group_by_dossier<'a>(
    rows: impl Stream<Item = Result<StoredEvent, ReadError>> + Send + 'a,
) -> impl Stream<Item = Result<DossierEvents, ReadError>> + Send + 'a {
    struct State<S> {
        rows: std::pin::Pin<Box<S>>,
        pending: Option<DossierEvents>,
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
            match st.rows.next().await {
                None => {
                    st.done = true;
                    return st.pending.take().map(|d| (Ok(d), st));
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
                Some(Ok(event)) => match st.pending.as_mut() {
                    Some(d) if d.dossier_id == event.dossier_id => d.events.push(event),
                    _ => {
                        let next = DossierEvents {
                            dossier_id: event.dossier_id.clone(),
                            events: vec![event],
                        };
                        if let Some(done) = st.pending.replace(next) {
                            return Some((Ok(done), st));
                        }
                    }
                },
            }
        }
    })
}
