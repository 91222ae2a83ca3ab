//! One `LISTEN eventlog` connection per service instance, fanned out to every following stream.
//!
//! A connection per following client would let auditors exhaust PostgreSQL's connections; one
//! listener bumping a `watch` counter costs one connection however many clients follow.
//! Notifications are hints: a follower always reads the log itself, and polls every
//! [`crate::stream::FOLLOW_POLL`] (by default) anyway, so a lost notification (or no listener
//! at all while the database is away) only delays delivery.

use std::time::Duration;

use eventlog::EventLog;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long one wait on the listener lasts before it is renewed.
const LISTEN_SLICE: Duration = Duration::from_secs(5);
/// How long to wait before trying to `LISTEN` again after it failed.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Listens until `stop` is cancelled, bumping `tx` on every committed append (several at once
/// count as one) and whenever the listening connection was lost (something may have been
/// missed). Followers wake on each bump.
pub(crate) async fn run(log: EventLog, tx: watch::Sender<u64>, stop: CancellationToken) {
    let mut changes = loop {
        tokio::select! {
            () = stop.cancelled() => return,
            connected = log.changes() => match connected {
                Ok(changes) => break changes,
                Err(error) => {
                    tracing::warn!(%error, "replay: cannot LISTEN for appends; followers poll meanwhile");
                }
            },
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY_AFTER) => {}
        }
    };
    // Whatever was committed before we listened is found by the followers' own reads.
    loop {
        let started = Instant::now();
        tokio::select! {
            () = stop.cancelled() => return,
            () = changes.wait(LISTEN_SLICE) => {}
        }
        // `wait` returns before its time only on a notification or a lost connection.
        if started.elapsed() < LISTEN_SLICE {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
