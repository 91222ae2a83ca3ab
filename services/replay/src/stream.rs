//! The `StreamEvents` producer: pages through the log in position order into a bounded channel,
//! and the response stream that reads it.
//!
//! - *Constant memory.* At most one page ([`PAGE`] events) plus the channel ([`BUFFER`]) per
//!   call, whatever the log's size.
//! - *Back-pressure.* The producer awaits room in the channel; the channel empties as fast as
//!   gRPC flow control lets the client read. A slow client slows the reading, nothing piles up.
//! - *Cancellation.* When the client goes away the response stream (the channel's receiver) is
//!   dropped, the next send fails or the wait for new events sees the channel closed, and the
//!   producer returns. When the server stops, the producer ends the stream with UNAVAILABLE.
//! - *Never a silent truncation.* The stream completes with OK only when the producer says the
//!   selection is exhausted ([`Msg::End`]); a producer that vanished (a panic) ends it with
//!   INTERNAL, so a client can never take a cut replay for a complete one.
//! - *Strictly increasing positions.* The cursor only moves forward, to the last position
//!   delivered or to the end of a window read in full; pages are ordered by position.
//! - *Following.* Positions become visible in order, so everything up to the head read before a
//!   page is visible to that page. With nothing new, the producer waits for a wake-up from the
//!   service's one `LISTEN` connection ([`crate::wakeups`]), or its poll interval at most
//!   ([`FOLLOW_POLL`] by default).

use std::pin::Pin;
use std::time::Duration;

use api::v1 as pb;
use eventlog::ReadError;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::convert;
use crate::query::{PAGE, Reader, Selection, WINDOW};

/// Events buffered between the producer and the client.
pub const BUFFER: usize = 64;
/// How long a following producer waits for a wake-up before looking anyway, by default.
pub const FOLLOW_POLL: Duration = Duration::from_secs(2);

/// What the producer sends.
#[derive(Debug)]
pub(crate) enum Msg {
    Event(Box<pb::ReplayedEvent>),
    /// The selection is exhausted: complete the stream with OK.
    End,
    /// End the stream with this status.
    Fail(Status),
}

/// The response stream of `StreamEvents`.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ReplayedEvent, Status>> + Send>>;

/// Where a producer starts and stops, resolved against the log when the call arrived.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub selection: Selection,
    /// Deliver positions above this one.
    pub cursor: i64,
    /// Deliver no position above this one; `None`: follow without end.
    pub end: Option<i64>,
    /// How long to wait for a wake-up before looking anyway, when following.
    pub poll: Duration,
}

/// Starts the producer for `plan` and returns the response stream.
pub(crate) fn start(
    reader: Reader,
    plan: Plan,
    wakeups: watch::Receiver<u64>,
    stopping: CancellationToken,
) -> EventStream {
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(produce(reader, plan, wakeups, stopping, tx));
    respond(rx)
}

/// The response stream reading a producer's channel: OK only after [`Msg::End`].
fn respond(rx: mpsc::Receiver<Msg>) -> EventStream {
    Box::pin(futures::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await {
            Some(Msg::Event(event)) => Some((Ok(*event), Some(rx))),
            Some(Msg::End) => None,
            Some(Msg::Fail(status)) => Some((Err(status), None)),
            None => Some((
                Err(Status::internal(
                    "the replay ended unexpectedly; resume with after_position = the last position received",
                )),
                None,
            )),
        }
    }))
}

async fn produce(
    reader: Reader,
    plan: Plan,
    mut wakeups: watch::Receiver<u64>,
    stopping: CancellationToken,
    tx: mpsc::Sender<Msg>,
) {
    let Plan {
        selection,
        mut cursor,
        end,
        poll,
    } = plan;
    let by_dossier = selection.filter.dossier_id.is_some();
    let outcome: Result<(), Stop> = async {
        loop {
            if end.is_some_and(|end| cursor >= end) {
                return Ok(());
            }
            // Mark the wake-ups seen before reading, so one sent after the read is not missed.
            wakeups.borrow_and_update();
            let visible = if selection.follow {
                reader.head().await?
            } else {
                // Without follow, `end` is at most the head when the call arrived.
                end.unwrap_or(cursor)
            };
            let bound = end.map_or(visible, |end| end.min(visible));
            if cursor >= bound {
                if !selection.follow {
                    return Ok(());
                }
                tokio::select! {
                    () = wait_for_wakeup(&mut wakeups, poll) => continue,
                    () = tx.closed() => return Err(Stop::ClientGone),
                    () = stopping.cancelled() => return Err(Stop::Stopping),
                }
            }
            let through = if by_dossier {
                bound
            } else {
                bound.min(cursor.saturating_add(WINDOW))
            };
            let page = reader
                .page(&selection.filter, cursor, through, PAGE)
                .await?;
            let full = page.len() as i64 == PAGE;
            let mut last = None;
            // A corrupt row ends the stream, after the events before it are sent.
            let mut events = Vec::with_capacity(page.len());
            let mut corrupt = None;
            for stored in page {
                match stored.and_then(|stored| {
                    last = Some(stored.position);
                    convert::replayed_event(&stored)
                }) {
                    Ok(event) => events.push(event),
                    Err(error) => {
                        corrupt = Some(error);
                        break;
                    }
                }
            }
            let erased = reader
                .erased_among(&convert::sealed_dossiers(&events))
                .await?;
            for mut event in events {
                convert::mark_erased(&mut event, &erased);
                let event = Msg::Event(Box::new(event));
                tokio::select! {
                    sent = tx.send(event) => sent.map_err(|_| Stop::ClientGone)?,
                    () = stopping.cancelled() => return Err(Stop::Stopping),
                }
            }
            if let Some(error) = corrupt {
                return Err(error.into());
            }
            cursor = match last {
                Some(last) if full => last,
                _ => through,
            };
        }
    }
    .await;
    let last = match outcome {
        Ok(()) => Msg::End,
        Err(Stop::ClientGone) => return,
        Err(Stop::Stopping) => Msg::Fail(Status::unavailable(
            "the replay service is stopping; resume with after_position = the last position received",
        )),
        Err(Stop::Read(error)) => Msg::Fail(crate::service::read_status(error)),
    };
    // Waits for room: the client either reads the end, goes away, or the server's drain
    // timeout cuts the connection (an error for the client, never a clean end).
    let _ = tx.send(last).await;
}

/// Why a producer stopped before its selection was exhausted.
enum Stop {
    ClientGone,
    Stopping,
    Read(ReadError),
}

impl From<ReadError> for Stop {
    fn from(error: ReadError) -> Self {
        Stop::Read(error)
    }
}

/// Returns on a wake-up or after `poll`; without a wake-up source (the service is stopping)
/// just after `poll`.
async fn wait_for_wakeup(wakeups: &mut watch::Receiver<u64>, poll: Duration) {
    let _ = tokio::time::timeout(poll, async {
        if wakeups.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tonic::Code;

    fn event(position: u64) -> Msg {
        Msg::Event(Box::new(pb::ReplayedEvent {
            position,
            ..Default::default()
        }))
    }

    async fn collect(messages: Vec<Msg>, close: bool) -> Vec<Result<u64, Code>> {
        let (tx, rx) = mpsc::channel(BUFFER);
        for m in messages {
            tx.send(m).await.unwrap();
        }
        let mut stream = respond(rx);
        if close {
            drop(tx);
            stream
                .map(|item| item.map(|e| e.position).map_err(|s| s.code()))
                .collect()
                .await
        } else {
            // The producer still holds the channel: only what it said ends the stream.
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                out.push(item.map(|e| e.position).map_err(|s| s.code()));
            }
            drop(tx);
            out
        }
    }

    #[tokio::test]
    async fn only_the_producers_end_completes_the_stream() {
        assert_eq!(
            collect(vec![event(1), event(2), Msg::End], false).await,
            [Ok(1), Ok(2)]
        );
        assert_eq!(
            collect(
                vec![event(1), Msg::Fail(Status::unavailable("x")), event(2)],
                false
            )
            .await,
            [Ok(1), Err(Code::Unavailable)]
        );
    }

    #[tokio::test]
    async fn a_vanished_producer_is_an_error_never_a_clean_end() {
        assert_eq!(
            collect(vec![event(1)], true).await,
            [Ok(1), Err(Code::Internal)]
        );
        assert_eq!(collect(vec![], true).await, [Err(Code::Internal)]);
    }
}
