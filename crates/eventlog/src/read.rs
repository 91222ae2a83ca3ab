//! Reading the log: row decoding, the LISTEN-based [`Changes`] and the [`follow`] stream.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use futures::Stream;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use tokio::time::Instant;

use crate::{EventLog, Position, ReadError, Routing, StoredEvent, Version};

/// The NOTIFY channel: every append sends its new head position on it when it commits.
pub const CHANNEL: &str = "eventlog";

/// How many events `follow` reads at once.
pub(crate) const FOLLOW_BATCH: i64 = 1000;
/// How long `follow` waits for a notification before polling anyway.
pub(crate) const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// How long `follow` waits before trying again to LISTEN after it failed to.
const RELISTEN_AFTER: Duration = Duration::from_secs(30);

/// `SELECT <every column of events> FROM events <rest>`, as a `&'static str`.
macro_rules! select_events {
    ($($rest:literal),* $(,)?) => {
        concat!(
            "SELECT position, event_id, dossier_id, version, event_type, occurred_at, recorded_at, ",
            "level, agency, sector, payload, fingerprint, event_hash, chain_hash FROM events ",
            $($rest),*
        )
    };
}
pub(crate) use select_events;

/// A stored row being decoded: its position, checked ≥ 1 as every event read has it, and its
/// columns, each refused as [`ReadError::Corrupt`] at that position when it does not decode.
pub(crate) struct EventRow<'r> {
    row: &'r PgRow,
    pub(crate) position: i64,
}

impl<'r> EventRow<'r> {
    pub(crate) fn new(row: &'r PgRow) -> Result<EventRow<'r>, ReadError> {
        let position: i64 = row.try_get("position").map_err(ReadError::Unavailable)?;
        let checked = EventRow { row, position };
        // Position ≥ 1 and version ≥ 1, checked here so that every event read has them.
        Position::try_from(position)
            .and_then(|p| Position::of_event(p.get()))
            .map_err(|e| checked.corrupt(e.to_string()))?;
        Ok(checked)
    }

    pub(crate) fn corrupt(&self, reason: String) -> ReadError {
        ReadError::Corrupt {
            position: self.position,
            reason,
        }
    }

    pub(crate) fn col<T>(&self, name: &str) -> Result<T, ReadError>
    where
        T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        self.row
            .try_get(name)
            .map_err(|e| self.corrupt(format!("column {name}: {e}")))
    }

    /// The version column, ≥ 1.
    pub(crate) fn version(&self) -> Result<i32, ReadError> {
        Ok(self.col::<Version>("version")?.as_i32())
    }
}

/// Decodes a row selected with [`select_events!`].
pub(crate) fn decode_event(row: &PgRow) -> Result<StoredEvent, ReadError> {
    let r = EventRow::new(row)?;
    let hash = |name: &str| -> Result<[u8; 32], ReadError> {
        let bytes: Vec<u8> = r.col(name)?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| r.corrupt(format!("{name} has {} bytes, not 32", bytes.len())))
    };
    Ok(StoredEvent {
        position: r.position,
        event_id: r.col("event_id")?,
        dossier_id: r.col("dossier_id")?,
        version: r.version()?,
        event_type: r.col("event_type")?,
        occurred_at: r.col("occurred_at")?,
        recorded_at: r.col("recorded_at")?,
        routing: Routing {
            level: r.col("level")?,
            agency: r.col("agency")?,
            sector: r.col("sector")?,
        },
        payload: r.col("payload")?,
        fingerprint: hash("fingerprint")?,
        event_hash: hash("event_hash")?,
        chain_hash: hash("chain_hash")?,
    })
}

pub(crate) fn decode_events(rows: &[PgRow]) -> Result<Vec<StoredEvent>, ReadError> {
    rows.iter().map(decode_event).collect()
}

/// Wake-ups when the log grows: a `LISTEN eventlog` on a connection of its own.
///
/// Notifications are hints, not data: a reader always reads the log itself (`read_after`) and
/// uses [`Changes::wait`] only to know when to look again, so a lost notification costs at
/// most the caller's `at_most`.
pub struct Changes {
    options: PgConnectOptions,
    listener: Option<PgListener>,
}

impl fmt::Debug for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changes")
            .field("listening", &self.listener.is_some())
            .finish_non_exhaustive()
    }
}

impl Changes {
    pub(crate) async fn connect(options: PgConnectOptions) -> Result<Changes, ReadError> {
        let listener = listen(&options).await.map_err(ReadError::Unavailable)?;
        Ok(Changes {
            options,
            listener: Some(listener),
        })
    }

    /// Returns when an append has committed since the last call (or since this value was
    /// created), or after `at_most`, whichever comes first. Several notifications pending at
    /// once count as one wake-up. Never fails: when the listening connection is lost it returns
    /// early (notifications may have been missed, so the caller should look), and while it
    /// cannot listen it just waits `at_most`, trying to listen again on the next call.
    pub async fn wait(&mut self, at_most: Duration) {
        let deadline = Instant::now() + at_most;
        let _ = tokio::time::timeout_at(deadline, self.wait_inner(deadline)).await;
    }

    async fn wait_inner(&mut self, deadline: Instant) {
        if self.listener.is_none() {
            match listen(&self.options).await {
                Ok(listener) => {
                    self.listener = Some(listener);
                    // Whatever was committed while we were not listening went unnoticed.
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, "eventlog: cannot LISTEN, polling instead");
                    tokio::time::sleep_until(deadline).await;
                    return;
                }
            }
        }
        let Some(listener) = self.listener.as_mut() else {
            return;
        };
        match listener.try_recv().await {
            Ok(Some(_)) => while listener.next_buffered().is_some() {},
            // The connection was lost and re-established: notifications may have been missed.
            Ok(None) => {}
            Err(error) => {
                tracing::debug!(%error, "eventlog: LISTEN connection failed, polling instead");
                self.listener = None;
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}

async fn listen(options: &PgConnectOptions) -> Result<PgListener, sqlx::Error> {
    // A private pool of one connection, so that listening never takes a connection from the
    // log's pool; PgListener uses it to reconnect.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

struct Follow {
    log: EventLog,
    cursor: i64,
    buffered: VecDeque<StoredEvent>,
    changes: Option<Changes>,
    next_listen_attempt: Instant,
    idle: bool,
}

/// See [`EventLog::follow`].
pub(crate) fn follow(
    log: EventLog,
    after: i64,
) -> impl Stream<Item = Result<StoredEvent, ReadError>> + Send + Unpin + use<> {
    let state = Follow {
        log,
        cursor: after,
        buffered: VecDeque::new(),
        changes: None,
        next_listen_attempt: Instant::now(),
        idle: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.buffered.pop_front() {
                st.cursor = event.position;
                return Some((Ok(event), st));
            }
            // Listen before reading, so that an append committed between an empty read and the
            // wait still wakes us.
            if st.changes.is_none() && Instant::now() >= st.next_listen_attempt {
                match tokio::time::timeout(FOLLOW_POLL, st.log.changes()).await {
                    Ok(Ok(changes)) => st.changes = Some(changes),
                    _ => st.next_listen_attempt = Instant::now() + RELISTEN_AFTER,
                }
            }
            if st.idle {
                match st.changes.as_mut() {
                    Some(changes) => changes.wait(FOLLOW_POLL).await,
                    None => tokio::time::sleep(FOLLOW_POLL).await,
                }
                st.idle = false;
            }
            match st.log.read_after(st.cursor, FOLLOW_BATCH).await {
                Ok(events) if events.is_empty() => st.idle = true,
                Ok(events) => st.buffered = events.into(),
                Err(error) => {
                    // Report it, then carry on after a pause: the stream never ends.
                    st.idle = true;
                    return Some((Err(error), st));
                }
            }
        }
    }))
}
