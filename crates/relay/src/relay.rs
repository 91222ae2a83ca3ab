//! The relay loop: resync from the stream, publish in order, back off on failure.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use async_nats::connection::State;
use async_nats::jetstream;
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{RawMessageErrorKind, Stream};
use bytes::Bytes;
use eventlog::{Changes, EventLog, Position, StoredEvent};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::status::{RelayState, RelayStatus};
use crate::subject::{
    HEADER_MSG_ID, HEADER_POSITION, headers_for, headers_wire_len, max_headers_len,
    placeholder_body, placeholder_headers, subject_for,
};
use crate::{RelayConfig, RelayError, ensure_stream};

/// Where the stream stands: the log position of its last message and its last sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamPosition {
    /// Position (in the event log) of the last event in the stream; 0 when the stream is empty.
    pub position: i64,
    /// The stream's last sequence: the `Nats-Expected-Last-Sequence` of the next publication.
    pub last_sequence: u64,
}

/// Publishes the event log to JetStream, in position order, each event once in the stream.
/// See the crate documentation for the protocol.
pub struct Relay {
    log: EventLog,
    js: jetstream::Context,
    cfg: RelayConfig,
    progress: watch::Sender<i64>,
    failures: watch::Sender<u64>,
    status: watch::Sender<RelayStatus>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("cfg", &self.cfg)
            .field("published", &*self.progress.borrow())
            .finish_non_exhaustive()
    }
}

impl Relay {
    pub fn new(log: EventLog, js: jetstream::Context, cfg: RelayConfig) -> Self {
        let (progress, _) = watch::channel(0);
        let (failures, _) = watch::channel(0);
        let (status, _) = watch::channel(RelayStatus::default());
        Relay {
            log,
            js,
            cfg,
            progress,
            failures,
            status,
        }
    }

    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// The position of the last event known to be in the stream: set at each resync (read from
    /// the stream, so it may go down if NATS lost data) and after each acknowledged batch.
    /// Starts at 0. Take it before [`Relay::run`], which consumes the relay.
    pub fn progress(&self) -> watch::Receiver<i64> {
        self.progress.subscribe()
    }

    /// How many transient failures (each followed by a backoff and a resync) the relay has met
    /// since it started. For metrics and tests; a steadily growing count while the log has
    /// news means publication is stuck (NATS down, or several relays contending).
    pub fn failures(&self) -> watch::Receiver<u64> {
        self.failures.subscribe()
    }

    /// The event log the relay follows (its pool, for the service's pool metrics).
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Everything the relay reports about itself (log head, published position, state,
    /// placeholders published, failures), for health checks and metrics: see [`RelayStatus`].
    /// Take it before [`Relay::run`], which consumes the relay.
    pub fn status(&self) -> watch::Receiver<RelayStatus> {
        self.status.subscribe()
    }

    /// Runs until `shutdown` is cancelled (then returns `Ok(())`) or a permanent error occurs.
    ///
    /// - Transient failures ([`RelayError::is_transient`]) — NATS down, timeouts, "wrong last
    ///   sequence", PostgreSQL unavailable — are logged and retried after an exponential
    ///   backoff with jitter, each time resyncing from the stream. The status says `Retrying`,
    ///   then `Stalled` once they have lasted `stall_after` without progress.
    /// - [`RelayError::Diverged`] does not end the relay: it publishes nothing, reports
    ///   `Diverged` and checks again after each backoff (and when the log changes), resuming by
    ///   itself once the log agrees with the stream again (`recover-log`) or the stream was reset.
    /// - [`RelayError::MaxPayloadTooSmall`] ends the relay when found at the first connection
    ///   (a misconfigured deployment should not start); found after a reconnection (a server
    ///   reconfigured meanwhile), it is reported `Stalled` and checked again after each backoff.
    /// - The other permanent errors are returned.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), RelayError> {
        self.cfg.validate()?;
        let mut backoff = Backoff::new(self.cfg.max_backoff);
        let mut changes: Option<Changes> = None;
        let mut payload_checked = false;
        loop {
            let outcome = shutdown
                .run_until_cancelled(self.resync_and_follow(
                    &mut changes,
                    &mut backoff,
                    &mut payload_checked,
                ))
                .await;
            let error = match outcome {
                None => {
                    tracing::info!(stream = %self.cfg.stream, "relay stopped");
                    return Ok(());
                }
                Some(Interruption::Reconnected) => {
                    tracing::info!(
                        stream = %self.cfg.stream,
                        "reconnected to NATS; resyncing in case the server lost data"
                    );
                    continue;
                }
                Some(Interruption::LogBehind { head, published }) => {
                    tracing::warn!(
                        stream = %self.cfg.stream,
                        head,
                        published,
                        "the event log's head is below what the stream holds; resyncing"
                    );
                    continue;
                }
                Some(Interruption::Failed(error)) => error,
            };
            // For the status only: bounded, so that PostgreSQL being down does not delay the retry.
            if let Ok(Ok(head)) =
                tokio::time::timeout(self.cfg.publish_timeout, self.log.head()).await
            {
                self.status.send_if_modified(|s| {
                    let changed = s.log_head != head;
                    s.log_head = head;
                    changed
                });
            }
            let delay = backoff.next_delay();
            match &error {
                RelayError::Diverged {
                    position,
                    stream_event_id,
                    log_event_id,
                } => self.report_diverged(&error, *position, stream_event_id, log_event_id, delay),
                RelayError::MaxPayloadTooSmall { .. } if !payload_checked => {
                    tracing::error!(stream = %self.cfg.stream, %error, "relay refuses to start");
                    self.report_failure(&error, true);
                    return Err(error);
                }
                RelayError::MaxPayloadTooSmall { .. } => {
                    tracing::error!(
                        stream = %self.cfg.stream,
                        %error,
                        retry_in = ?delay,
                        "the NATS server's max_payload shrank; not publishing until it is raised"
                    );
                    self.report_failure(&error, true);
                }
                _ if !error.is_transient() => {
                    tracing::error!(stream = %self.cfg.stream, %error, "relay stopped on a permanent error");
                    self.report_failure(&error, true);
                    return Err(error);
                }
                _ => {
                    self.failures.send_modify(|n| *n += 1);
                    self.report_failure(&error, false);
                    tracing::warn!(
                        stream = %self.cfg.stream,
                        %error,
                        retry_in = ?delay,
                        failures = backoff.failures,
                        "relay failed; will resync from the stream"
                    );
                }
            }
            let wait = async {
                match (&mut changes, error) {
                    // Diverged: check again as soon as the log changes (a recovery appended).
                    (Some(listener), RelayError::Diverged { .. }) => listener.wait(delay).await,
                    _ => tokio::time::sleep(delay).await,
                }
            };
            if shutdown.run_until_cancelled(wait).await.is_none() {
                return Ok(());
            }
        }
    }

    /// The status after a failure: `Retrying` (since the first failure without progress), then
    /// `Stalled` once that lasted `stall_after`; `Stalled` at once when `needs_operator`.
    fn report_failure(&self, error: &RelayError, needs_operator: bool) {
        let reason = error.to_string();
        let stall_after = self.cfg.stall_after;
        self.status.send_modify(|status| {
            let since = match &status.state {
                RelayState::Retrying { since, .. } | RelayState::Stalled { since, .. } => *since,
                _ => SystemTime::now(),
            };
            let stalled =
                needs_operator || since.elapsed().is_ok_and(|elapsed| elapsed >= stall_after);
            if stalled && !matches!(status.state, RelayState::Stalled { .. }) {
                tracing::error!(
                    stream = %self.cfg.stream,
                    %reason,
                    "relay stalled: nothing is published until the cause is removed"
                );
            }
            status.failures = *self.failures.borrow();
            status.state = if stalled {
                RelayState::Stalled { reason, since }
            } else {
                RelayState::Retrying { reason, since }
            };
        });
    }

    fn report_diverged(
        &self,
        error: &RelayError,
        position: i64,
        stream_event_id: &str,
        log_event_id: &Option<String>,
        delay: Duration,
    ) {
        self.status.send_modify(|status| {
            let since = match &status.state {
                RelayState::Diverged { since, .. } => *since,
                _ => {
                    tracing::error!(
                        stream = %self.cfg.stream,
                        %error,
                        "stream and event log diverge: publishing nothing until the log is \
                         recovered (relay-service recover-log) or the stream reset \
                         (relay-service reset-stream)"
                    );
                    SystemTime::now()
                }
            };
            tracing::debug!(stream = %self.cfg.stream, %error, retry_in = ?delay, "still diverged");
            status.state = RelayState::Diverged {
                position,
                stream_event_id: stream_event_id.to_owned(),
                log_event_id: log_event_id.clone(),
                since,
            };
        });
    }

    /// Publication is moving (or caught up): the state is `Running` again.
    fn report_progress(&self, published: i64, log_head: Option<i64>) {
        self.progress.send_if_modified(|p| {
            let changed = *p != published;
            *p = published;
            changed
        });
        // Called at every idle wake-up too: watchers are woken only by a change.
        self.status.send_if_modified(|status| {
            let before = (status.published, status.log_head);
            let was_running = matches!(status.state, RelayState::Running);
            if !was_running {
                tracing::info!(stream = %self.cfg.stream, position = published, "relay running");
                status.state = RelayState::Running;
            }
            status.published = published;
            if let Some(head) = log_head {
                status.log_head = head;
            }
            !was_running || before != (status.published, status.log_head)
        });
    }

    /// One resync followed by publication until something fails, or until the client
    /// reconnected to NATS while the relay was idle (the server may have come back without its
    /// data: resync then, rather than wait for the next event to find out).
    async fn resync_and_follow(
        &self,
        changes: &mut Option<Changes>,
        backoff: &mut Backoff,
        payload_checked: &mut bool,
    ) -> Interruption {
        // Listen before the first read, so no notification falls between a read and the wait.
        if changes.is_none() {
            match self.bounded("LISTEN", self.log.changes()).await {
                Ok(listener) => *changes = Some(listener),
                Err(error) => tracing::warn!(%error, "no change notifications; polling the log"),
            }
        }
        let connects = self.connects();
        let mut at = match self.resync(payload_checked).await {
            Ok(at) => at,
            Err(error) => return Interruption::Failed(error),
        };
        tracing::info!(
            stream = %self.cfg.stream,
            position = at.position,
            last_sequence = at.last_sequence,
            "resynced from the stream; publishing the events after this position"
        );
        self.progress.send_replace(at.position);
        self.status.send_modify(|s| s.published = at.position);
        loop {
            let read = self.log.read_after(at.position, self.max_batch());
            let batch = match self.bounded("read a batch", read).await {
                Ok(batch) => batch,
                Err(error) => return Interruption::Failed(error),
            };
            if batch.is_empty() {
                // Caught up — unless the log now ends before the stream does: a database
                // restored from an older backup (or recreated) under the running relay, whose
                // reads succeed on fresh connections. Resync then: it reports the divergence.
                let head = match self.bounded("head", self.log.head()).await {
                    Ok(head) => head,
                    Err(error) => return Interruption::Failed(error),
                };
                if head < at.position {
                    return Interruption::LogBehind {
                        head,
                        published: at.position,
                    };
                }
                self.report_progress(at.position, Some(at.position));
                backoff.reset();
                // (From 0, the client's first connection: nothing was lost.)
                if connects != 0 && self.connects() != connects {
                    return Interruption::Reconnected;
                }
                self.wait_for_changes(changes).await;
                continue;
            }
            at = match self.publish_batch(at, &batch).await {
                Ok(at) => at,
                Err(error) => return Interruption::Failed(error),
            };
            backoff.reset();
            tracing::debug!(
                position = at.position,
                last_sequence = at.last_sequence,
                count = batch.len(),
                "published a batch"
            );
            self.report_progress(
                at.position,
                self.bounded("head", self.log.head()).await.ok(),
            );
        }
    }

    /// While disconnected the client would queue requests and messages and send them on
    /// reconnection, long after the relay stopped waiting for their answers: fail early instead.
    /// (A queued message that does get sent is harmless: it expects the stream's last sequence
    /// as it was, and is refused if the stream has moved.)
    fn require_connection(&self, what: &str) -> Result<(), RelayError> {
        match self.js.client().connection_state() {
            State::Connected => Ok(()),
            state => Err(RelayError::nats(
                what,
                format!("NATS connection is {state:?}"),
            )),
        }
    }

    /// How many times the NATS client has (re)connected.
    fn connects(&self) -> u64 {
        self.js
            .client()
            .statistics()
            .connects
            .load(Ordering::Relaxed)
    }

    /// One read of the event log, bounded by `db_timeout`: a silent database becomes a
    /// transient failure ([`RelayError::EventLogTimeout`]) instead of a relay stuck `Running`.
    async fn bounded<T>(
        &self,
        what: &'static str,
        read: impl std::future::Future<Output = Result<T, eventlog::ReadError>>,
    ) -> Result<T, RelayError> {
        let after = self.cfg.db_timeout;
        match tokio::time::timeout(after, read).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(RelayError::EventLogTimeout { what, after }),
        }
    }

    fn max_batch(&self) -> i64 {
        i64::try_from(self.cfg.max_batch).unwrap_or(i64::MAX)
    }

    async fn wait_for_changes(&self, changes: &mut Option<Changes>) {
        if changes.is_none() {
            // Retry listening; the read that follows the wait catches anything committed before.
            if let Ok(listener) = self.bounded("LISTEN", self.log.changes()).await {
                *changes = Some(listener);
            }
        }
        match changes {
            Some(listener) => listener.wait(self.cfg.poll_interval).await,
            None => tokio::time::sleep(self.cfg.poll_interval).await,
        }
    }

    /// Reads where the stream stands (creating the stream if it is missing, e.g. after NATS lost
    /// its data), and checks that the log agrees with the stream's last event.
    async fn resync(&self, payload_checked: &mut bool) -> Result<StreamPosition, RelayError> {
        self.require_connection("resync")?;
        self.check_max_payload()?;
        *payload_checked = true;
        let timeout = self.cfg.publish_timeout;
        let stream = tokio::time::timeout(timeout, ensure_stream(&self.js, &self.cfg))
            .await
            .map_err(|_| RelayError::nats("stream info", "timed out"))??;
        let (at, last_event_id) = tokio::time::timeout(timeout, inspect(&stream, &self.cfg))
            .await
            .map_err(|_| RelayError::nats("read the stream's last message", "timed out"))??;
        if let Some(stream_event_id) = last_event_id {
            self.check_log_agrees(at.position, stream_event_id).await?;
        }
        Ok(at)
    }

    /// The largest event the log may hold, with the largest headers, must fit in the server's
    /// `max_payload` (as of the server's last INFO: checked at each resync, so after each
    /// reconnection).
    fn check_max_payload(&self) -> Result<(), RelayError> {
        let max_payload = self.js.client().server_info().max_payload;
        let needed = eventlog::MAX_EVENT_BYTES + max_headers_len(&self.cfg.stream);
        if max_payload < needed {
            return Err(RelayError::MaxPayloadTooSmall {
                max_payload,
                needed,
            });
        }
        Ok(())
    }

    /// The event at the stream's last position must be the log's event at that position.
    async fn check_log_agrees(
        &self,
        position: i64,
        stream_event_id: String,
    ) -> Result<(), RelayError> {
        let found = self
            .bounded(
                "read the stream's last event",
                self.log.read_after(position - 1, 1),
            )
            .await?;
        let log_event_id = found
            .first()
            .filter(|e| e.position == position)
            .map(|e| e.event_id.to_string());
        if log_event_id.as_deref() == Some(stream_event_id.as_str()) {
            Ok(())
        } else {
            Err(RelayError::Diverged {
                position,
                stream_event_id,
                log_event_id,
            })
        }
    }

    /// Publishes the batch pipelined — every message sent, then every ack awaited in order —
    /// the i-th message expecting the stream to end at `at.last_sequence + i`.
    async fn publish_batch(
        &self,
        at: StreamPosition,
        batch: &[StoredEvent],
    ) -> Result<StreamPosition, RelayError> {
        self.require_connection("publish")?;
        let timeout = self.cfg.publish_timeout;
        let max_payload = self.js.client().max_payload();
        let mut acks: Vec<PublishAckFuture> = Vec::with_capacity(batch.len());
        // The events published as placeholders, with their canonical size.
        let mut oversized: Vec<Option<usize>> = Vec::with_capacity(batch.len());
        for (i, event) in batch.iter().enumerate() {
            let expected = at.last_sequence + i as u64;
            let body = eventlog::canonical_bytes(event);
            let headers = headers_for(&self.cfg.stream, event, expected);
            let message = if headers_wire_len(&headers) + body.len() <= max_payload {
                oversized.push(None);
                PublishMessage::build()
                    .payload(Bytes::from(body))
                    .headers(headers)
            } else {
                // Publication must not stop on one event, nor skip it: a placeholder keeps its
                // place in the stream, and the event stays readable in the log.
                oversized.push(Some(body.len()));
                PublishMessage::build()
                    .payload(Bytes::from(placeholder_body(event, body.len())))
                    .headers(placeholder_headers(&self.cfg.stream, event, expected))
            };
            let subject = subject_for(&self.cfg.subject_prefix, event);
            let context = || format!("publish position {}", event.position);
            let ack = tokio::time::timeout(timeout, self.js.send_publish(subject, message))
                .await
                .map_err(|_| RelayError::nats(context(), "timed out sending"))?
                .map_err(|e| match e.kind() {
                    PublishErrorKind::MaxPayloadExceeded => RelayError::TooLarge {
                        position: event.position,
                        message: e.to_string(),
                    },
                    _ => RelayError::nats(context(), e),
                })?;
            acks.push(ack);
        }
        for (i, (event, ack)) in batch.iter().zip(acks).enumerate() {
            let want_sequence = at.last_sequence + i as u64 + 1;
            let context = || format!("ack of position {}", event.position);
            let ack = tokio::time::timeout(timeout, ack.into_future())
                .await
                .map_err(|_| RelayError::nats(context(), "timed out"))?
                .map_err(|e| RelayError::nats(context(), e))?;
            if ack.duplicate {
                return Err(RelayError::Duplicate {
                    position: event.position,
                    event_id: event.event_id.to_string(),
                    sequence: ack.sequence,
                });
            }
            if ack.stream != self.cfg.stream || ack.sequence != want_sequence {
                return Err(RelayError::nats(
                    context(),
                    format!(
                        "stored in {} at sequence {}, expected {} at {want_sequence}",
                        ack.stream, ack.sequence, self.cfg.stream
                    ),
                ));
            }
            if let Some(bytes) = oversized[i] {
                tracing::warn!(
                    stream = %self.cfg.stream,
                    position = event.position,
                    event_id = %event.event_id,
                    bytes,
                    max_payload,
                    sequence = ack.sequence,
                    "event too large for a NATS message: published a placeholder without its \
                     body (Dossier-Body-Omitted: too-large); the event stays in the log"
                );
                self.status.send_modify(|s| s.oversized_events += 1);
            }
        }
        let last = batch.last().map_or(at.position, |e| e.position);
        Ok(StreamPosition {
            position: last,
            last_sequence: at.last_sequence + batch.len() as u64,
        })
    }
}

/// Reads where the relay's stream stands, without creating or changing it: the position of its
/// last event (from the `Dossier-Position` header) and its last sequence. A missing stream is
/// position 0. For health checks and metrics (`log.head() - position` is the relay's lag).
pub async fn stream_position(
    js: &jetstream::Context,
    cfg: &RelayConfig,
) -> Result<StreamPosition, RelayError> {
    match js.get_stream(&cfg.stream).await {
        Ok(stream) => Ok(inspect(&stream, cfg).await?.0),
        Err(e) if crate::stream::stream_missing(&e.kind()) => Ok(StreamPosition::default()),
        Err(e) => Err(RelayError::nats("stream info", e)),
    }
}

/// Where the stream stands, and the event id (`Nats-Msg-Id`) of its last message if any.
async fn inspect(
    stream: &Stream,
    cfg: &RelayConfig,
) -> Result<(StreamPosition, Option<String>), RelayError> {
    let state = &stream.cached_info().state;
    if state.messages == 0 {
        // Nothing durable: everything the log has is to be published. (Deletes and purges are
        // denied on the relay's stream, so an empty stream is a new or recreated one.)
        let at = StreamPosition {
            position: 0,
            last_sequence: state.last_sequence,
        };
        return Ok((at, None));
    }
    let message = last_message(stream, cfg, state.last_sequence).await?;
    let reason = |why: &str| RelayError::ForeignMessage {
        sequence: message.sequence,
        reason: why.to_owned(),
    };
    let position = header(&message, HEADER_POSITION)
        .ok_or_else(|| reason("no Dossier-Position header"))?
        .parse::<Position>()
        .and_then(|p| Position::of_event(p.get()))
        .map_err(|e| reason(&format!("Dossier-Position: {e}")))?
        .as_i64();
    let event_id = header(&message, HEADER_MSG_ID)
        .ok_or_else(|| reason("no Nats-Msg-Id header"))?
        .to_owned();
    let at = StreamPosition {
        position,
        // If another relay appended between the info and the read, the message is newer than
        // the info: its sequence is then the stream's last.
        last_sequence: state.last_sequence.max(message.sequence),
    };
    Ok((at, Some(event_id)))
}

/// The message at `last_sequence`, or, if that one is gone, the last one on the relay's subjects.
async fn last_message(
    stream: &Stream,
    cfg: &RelayConfig,
    last_sequence: u64,
) -> Result<jetstream::message::StreamMessage, RelayError> {
    match stream.get_raw_message(last_sequence).await {
        Ok(message) => Ok(message),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => stream
            .get_last_raw_message_by_subject(&format!("{}.>", cfg.subject_prefix))
            .await
            .map_err(|e| RelayError::nats("read the stream's last message", e)),
        Err(e) => Err(RelayError::nats("read the stream's last message", e)),
    }
}

fn header<'a>(message: &'a jetstream::message::StreamMessage, name: &str) -> Option<&'a str> {
    message.headers.get_last(name).map(|v| v.as_str())
}

/// Why publication stopped following the log.
#[derive(Debug)]
enum Interruption {
    Failed(RelayError),
    Reconnected,
    /// The log's head is below the position the stream holds (the database was restored from
    /// an older backup, or recreated): resync, which reports the divergence.
    LogBehind {
        head: i64,
        published: i64,
    },
}

/// Exponential backoff with equal jitter: the n-th consecutive failure waits between half and
/// all of `min(100 ms · 2ⁿ, max)`.
#[derive(Debug)]
struct Backoff {
    max: Duration,
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    fn new(max: Duration) -> Self {
        Backoff { max, failures: 0 }
    }

    fn reset(&mut self) {
        self.failures = 0;
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = Self::FIRST
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(random_fraction())
    }
}

/// A number in [0, 1) from the process's randomly keyed hasher: enough for jitter.
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_max() {
        let mut backoff = Backoff::new(Duration::from_secs(2));
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(Duration::from_secs(2));
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..32).map(|_| random_fraction()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }
}
