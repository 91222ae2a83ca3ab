//! The relay's configuration.

use std::time::Duration;

use serde::Deserialize;

use crate::RelayError;

/// How the relay publishes the event log to JetStream.
///
/// Deserializes from a table (TOML, JSON…) in which every field is optional; durations are
/// either a number of seconds (`7200`) or a string with one unit (`"2h"`, `"30s"`, `"250ms"`;
/// units `ms`, `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// JetStream stream name. Default `DOSSIER_EVENTS`.
    pub stream: String,
    /// First tokens of every subject; the stream captures `{subject_prefix}.>`. Default `dossier`.
    pub subject_prefix: String,
    /// Stream replicas (1 on a single server, 3 or 5 in a cluster). Default 1.
    pub replicas: usize,
    /// The stream's `Nats-Msg-Id` deduplication window, the second guard against duplicates.
    /// Default 2 hours.
    #[serde(deserialize_with = "duration::deserialize")]
    pub duplicate_window: Duration,
    /// Most events read from the log and published in one pipelined batch. Keep it below the
    /// JetStream context's `max_ack_inflight` (5,000 by default). Default 256.
    pub max_batch: usize,
    /// Bound on sending one message, on waiting for one acknowledgement, and on each step of a
    /// resync (stream info or update, reading the last message). Default 5 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub publish_timeout: Duration,
    /// Upper bound of the exponential backoff between two attempts after a failure. Default 30 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub max_backoff: Duration,
    /// When caught up, how long to wait for a change notification from the log before reading
    /// it again anyway (the fallback poll, in case a notification is lost). Default 5 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub poll_interval: Duration,
    /// How long failures may go on without any progress before the relay reports itself
    /// `Stalled` rather than `Retrying` (it keeps retrying). Default 60 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub stall_after: Duration,
    /// Bound on each read of the event log (a batch, the head, a resync's check) and on opening
    /// the `LISTEN` connection. A database that went silent (a partition, a frozen host: no
    /// reset, so the connection looks healthy) would otherwise hold the relay, reporting
    /// `Running`, until TCP gives up; past this bound the read is a transient failure (the
    /// status goes `Retrying`, then `Stalled`). A healthy read of `max_batch` events takes
    /// milliseconds. Default 15 s.
    #[serde(deserialize_with = "duration::deserialize")]
    pub db_timeout: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            stream: "DOSSIER_EVENTS".to_owned(),
            subject_prefix: "dossier".to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(2 * 60 * 60),
            max_batch: 256,
            publish_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            poll_interval: Duration::from_secs(5),
            stall_after: Duration::from_secs(60),
            db_timeout: Duration::from_secs(15),
        }
    }
}

/// Largest accepted `max_batch`: a batch holds one in-flight ack per message.
pub const MAX_BATCH_LIMIT: usize = 4096;

impl RelayConfig {
    /// Checks what the server would refuse later, or what would make the relay misbehave.
    pub fn validate(&self) -> Result<(), RelayError> {
        let bad = |reason: String| Err(RelayError::Config(reason));
        if self.stream.is_empty()
            || self
                .stream
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
        {
            return bad(format!(
                "stream name {:?} must be non-empty, without whitespace, '.', '*', '>', '/' or '\\'",
                self.stream
            ));
        }
        if self.subject_prefix.split('.').any(|token| {
            token.is_empty()
                || token == "*"
                || token == ">"
                || token.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return bad(format!(
                "subject prefix {:?} must be dot-separated non-empty tokens without wildcards or whitespace",
                self.subject_prefix
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return bad(format!("replicas must be 1 to 5, not {}", self.replicas));
        }
        if !(1..=MAX_BATCH_LIMIT).contains(&self.max_batch) {
            return bad(format!(
                "max_batch must be 1 to {MAX_BATCH_LIMIT}, not {}",
                self.max_batch
            ));
        }
        for (name, value) in [
            ("duplicate_window", self.duplicate_window),
            ("publish_timeout", self.publish_timeout),
            ("max_backoff", self.max_backoff),
            ("poll_interval", self.poll_interval),
            ("stall_after", self.stall_after),
            ("db_timeout", self.db_timeout),
        ] {
            if value.is_zero() {
                return bad(format!("{name} must be positive"));
            }
        }
        Ok(())
    }
}

/// Durations as seconds or as a string with one unit.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, de::Error};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Seconds(secs) => Ok(Duration::from_secs(secs)),
            Raw::Text(text) => parse(&text).map_err(D::Error::custom),
        }
    }

    pub(super) fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {text:?} needs a unit (ms, s, m, h, d)"))?;
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("duration {text:?} must start with a whole number"))?;
        let millis_per_unit: u64 = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        n.checked_mul(millis_per_unit)
            .map(Duration::from_millis)
            .ok_or_else(|| format!("duration {text:?} is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RelayConfig::default().validate().unwrap();
        assert_eq!(
            RelayConfig::default().duplicate_window,
            Duration::from_secs(7200)
        );
    }

    #[test]
    fn deserializes_partial_config_with_durations() {
        let cfg: RelayConfig = serde_json::from_str(
            r#"{"stream":"S","duplicate_window":"90m","publish_timeout":3,"max_backoff":"500ms"}"#,
        )
        .unwrap();
        assert_eq!(cfg.stream, "S");
        assert_eq!(cfg.subject_prefix, "dossier");
        assert_eq!(cfg.duplicate_window, Duration::from_secs(90 * 60));
        assert_eq!(cfg.publish_timeout, Duration::from_secs(3));
        assert_eq!(cfg.max_backoff, Duration::from_millis(500));
        assert!(serde_json::from_str::<RelayConfig>(r#"{"duplicate_window":"2 weeks"}"#).is_err());
        assert!(serde_json::from_str::<RelayConfig>(r#"{"unknown":1}"#).is_err());
    }

    #[test]
    fn parses_units() {
        assert_eq!(duration::parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(duration::parse("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(duration::parse("15 s").unwrap(), Duration::from_secs(15));
        assert!(duration::parse("15").is_err());
        assert!(duration::parse("h").is_err());
    }

    #[test]
    fn rejects_invalid_values() {
        let with = |f: fn(&mut RelayConfig)| {
            let mut cfg = RelayConfig::default();
            f(&mut cfg);
            cfg.validate()
        };
        assert!(with(|c| c.stream = "a.b".into()).is_err());
        assert!(with(|c| c.stream = String::new()).is_err());
        assert!(with(|c| c.subject_prefix = "a..b".into()).is_err());
        assert!(with(|c| c.subject_prefix = "a.>".into()).is_err());
        assert!(with(|c| c.replicas = 0).is_err());
        assert!(with(|c| c.max_batch = 0).is_err());
        assert!(with(|c| c.publish_timeout = Duration::ZERO).is_err());
        assert!(with(|c| c.db_timeout = Duration::ZERO).is_err());
        assert!(with(|c| c.subject_prefix = "t1.dossier".into()).is_ok());
    }
}
