//! What the relay reports about itself, for health checks and metrics.

use std::time::SystemTime;

/// The relay's state as a value: a [`tokio::sync::watch`] of it is
/// [`Relay::status`](crate::Relay::status). Metrics: `motcua_relay_log_head_position` = `log_head`,
/// `motcua_relay_published_position` = `published`, `motcua_relay_stalled` =
/// [`RelayState::is_stalled`], `motcua_relay_diverged` = [`RelayState::is_diverged`],
/// `motcua_relay_oversized_events_total` = `oversized_events`. A health check should say
/// NOT_SERVING when the state is `Stalled` or `Diverged`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RelayStatus {
    /// The log's head position, as last read (0 until first read).
    pub log_head: i64,
    /// The position of the last event known to be in the stream (0 until the first resync).
    pub published: i64,
    pub state: RelayState,
    /// Events published as placeholders because they did not fit in the server's
    /// `max_payload`, since the relay started.
    pub oversized_events: u64,
    /// Transient failures (each followed by a backoff and a resync) since the relay started.
    pub failures: u64,
}

/// What the relay is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RelayState {
    /// Not connected yet, or not resynced yet.
    #[default]
    Starting,
    /// Following the log: publishing, or caught up and waiting for news.
    Running,
    /// Failing since `since` (NATS down, a timeout, PostgreSQL unavailable, another relay
    /// contending…) and retrying with backoff; `reason` is the last failure. Becomes `Stalled`
    /// when this lasts longer than the configuration's `stall_after`.
    Retrying { reason: String, since: SystemTime },
    /// Retrying for longer than `stall_after`: publication has stopped until someone acts or
    /// the cause goes away (the relay keeps retrying). Alert.
    Stalled { reason: String, since: SystemTime },
    /// The stream holds at `position` another event than the log (or the log ends before it):
    /// the database was restored from an older backup, or the stream belongs to another
    /// database. The relay publishes nothing and checks again after each backoff; it resumes
    /// by itself once the log agrees (after `relay-service recover-log`) or the stream was
    /// reset (`relay-service reset-stream`). Alert: an operator must choose.
    Diverged {
        position: i64,
        stream_event_id: String,
        log_event_id: Option<String>,
        since: SystemTime,
    },
}

impl RelayState {
    /// Whether publication is stopped for longer than `stall_after`, or diverged: in both cases
    /// the relay needs attention (`motcua_relay_stalled` is 1 for both).
    pub fn is_stalled(&self) -> bool {
        matches!(
            self,
            RelayState::Stalled { .. } | RelayState::Diverged { .. }
        )
    }

    /// Whether the stream and the log diverge (`motcua_relay_diverged`).
    pub fn is_diverged(&self) -> bool {
        matches!(self, RelayState::Diverged { .. })
    }
}
