//! Publishing the early warnings' changes on NATS, from the outbox the watcher writes in the
//! same transaction as the change (`deadline_warning_outbox`).
//!
//! # Where
//!
//! JetStream stream `{stream}_WARNINGS`, subject `{prefix}-warnings.{agency}.{holding_agency}`
//! (the agency that received the dossier, then the one holding it now; each token as the event
//! subjects spell agencies: `.` → `_`). Counter software subscribes to `dossier-warnings.
//! 000_00_12_H40.*` (dossiers its agency received) or `dossier-warnings.*.000_00_12_H40` (those
//! it holds). A JetStream stream rather than core NATS because counter software is often offline
//! (a night, a restart): with a durable consumer it gets what it missed, in order; the stream keeps
//! [`RETENTION`] of changes. It is apart from the event stream, whose exact sequence belongs to the
//! relay, and outside `{prefix}.>`.
//!
//! # What a subscriber gets
//!
//! One JSON message per change (`Content-Type: application/json`), with headers `Nats-Msg-Id:
//! warning/<seq>` and `Warning-Seq: <seq>`:
//!
//! ```json
//! {"seq":42,"kind":"raised","dossier_id":"H40.22-241121-0001","agency":"000.00.12.H40",
//!  "holding_agency":"000.00.12.H40","due_at":"2024-11-26T02:30:00Z",
//!  "apology_deadline":"2024-11-25T02:30:00Z","warn_from":"2024-11-25T02:30:00Z",
//!  "at":"2024-11-25T02:30:12.5Z"}
//! ```
//!
//! `kind` is `raised` or `withdrawn`; a withdrawal adds `reason`: `closed` (resolved, withdrawn or
//! stopped), `apologised`, `paused` (a supplement was requested), `due_time_moved` (raised again
//! with the new due time if still due soon), `transferred` (raised again under the new holding
//! agency), `deadline_changed` (the calendar or the horizon changed). `at` is the watcher's clock
//! at the change.
//!
//! # Guarantee
//!
//! Every change committed to the outbox is published, in `seq` order, at least once: a change is
//! deleted from the outbox only after JetStream acknowledged it, and whatever is left (NATS down,
//! a crash between the acknowledgement and the delete) is published again at the next tick of any
//! watcher. The server drops a repeat within the stream's duplicate window
//! (`nats.duplicate_window_secs`) by its `Nats-Msg-Id`; beyond it a subscriber sees the same
//! `seq` again and ignores it. `seq` increases along the changes but may skip numbers.
//! A subscriber that starts late reads the current list from the API (`ListDueSoon`,
//! `GET /v1/warnings`) and then follows the subject.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// How long the warnings stream keeps a change.
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Outbox rows published per transaction.
const PUBLISH_BATCH: i64 = 256;

/// How long one publication may wait for JetStream's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why publishing stopped; what is left in the outbox is published at the next tick.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create or read stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("publish failed: {0}")]
    Publish(String),
    #[error("outbox: {0}")]
    Database(#[from] sqlx::Error),
}

/// Where the warnings go.
#[derive(Debug, Clone)]
pub struct WarningPublisher {
    js: jetstream::Context,
    stream: String,
    prefix: String,
    duplicate_window: Duration,
}

/// The warnings' stream name for the event stream `stream`.
pub fn stream_name(stream: &str) -> String {
    format!("{stream}_WARNINGS")
}

/// The subject of a warning of a dossier received by `agency` and held by `holding_agency`.
pub fn subject(prefix: &str, agency: &str, holding_agency: &str) -> String {
    format!(
        "{prefix}-warnings.{}.{}",
        relay::subject_token(agency),
        relay::subject_token(holding_agency)
    )
}

/// One change as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct WarningChange {
    pub seq: i64,
    /// `raised` or `withdrawn`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub dossier_id: String,
    pub agency: String,
    pub holding_agency: String,
    #[serde(with = "rfc3339")]
    pub due_at: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub apology_deadline: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub warn_from: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub at: DateTime<Utc>,
}

/// RFC 3339 UTC with `Z` and 0, 3, 6 or 9 fractional digits, as the API's timestamps.
mod rfc3339 {
    use super::*;

    pub fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

impl WarningPublisher {
    /// For the event stream `stream`, its subject prefix and duplicate window (`[nats]`).
    pub fn new(js: jetstream::Context, nats: &svc::config::NatsConfig) -> WarningPublisher {
        WarningPublisher {
            js,
            stream: stream_name(&nats.stream),
            prefix: nats.subject_prefix.clone(),
            duplicate_window: nats.duplicate_window(),
        }
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// `{prefix}-warnings.>`: every warning subject.
    pub fn subjects(&self) -> String {
        format!("{}-warnings.>", self.prefix)
    }

    /// Creates the stream if it is missing.
    pub async fn ensure_stream(&self) -> Result<(), PublishError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subjects()],
                description: Some("Early warnings: dossiers due soon, raised and withdrawn".into()),
                max_age: RETENTION,
                duplicate_window: self.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(|e| PublishError::Stream {
                stream: self.stream.clone(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// Publishes the outbox in `seq` order, deleting each batch once JetStream acknowledged all
    /// of it; returns how many changes were published. A second watcher publishing at the same
    /// time waits on the batch's row locks and then finds the rows gone.
    pub async fn publish_pending(&self, pool: &PgPool) -> Result<u64, PublishError> {
        let mut published = 0u64;
        let mut stream_checked = false;
        loop {
            let mut tx = pool.begin().await?;
            let changes: Vec<WarningChange> = sqlx::query_as(
                "SELECT seq, kind, reason, dossier_id, agency, holding_agency, due_at, \
                   apology_deadline, warn_from, at \
                 FROM deadline_warning_outbox ORDER BY seq LIMIT $1 FOR UPDATE",
            )
            .bind(PUBLISH_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if changes.is_empty() {
                tx.commit().await?;
                return Ok(published);
            }
            if !std::mem::replace(&mut stream_checked, true) {
                self.ensure_stream().await?;
            }
            for change in &changes {
                self.publish(change).await?;
            }
            let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
            sqlx::query("DELETE FROM deadline_warning_outbox WHERE seq = ANY($1)")
                .bind(&seqs)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            published += seqs.len() as u64;
            if i64::try_from(seqs.len()).unwrap_or(i64::MAX) < PUBLISH_BATCH {
                return Ok(published);
            }
        }
    }

    async fn publish(&self, change: &WarningChange) -> Result<(), PublishError> {
        let body = serde_json::to_vec(change).map_err(|e| PublishError::Publish(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", format!("warning/{}", change.seq).as_str());
        headers.insert("Warning-Seq", change.seq.to_string().as_str());
        headers.insert("Content-Type", "application/json");
        let subject = subject(&self.prefix, &change.agency, &change.holding_agency);
        let ack = async {
            self.js
                .publish_with_headers(subject, headers, body.into())
                .await
                .map_err(|e| PublishError::Publish(e.to_string()))?
                .await
                .map_err(|e| PublishError::Publish(e.to_string()))
        };
        tokio::time::timeout(PUBLISH_TIMEOUT, ack)
            .await
            .map_err(|_| {
                PublishError::Publish(format!(
                    "no acknowledgement within {PUBLISH_TIMEOUT:?} for warning {}",
                    change.seq
                ))
            })??;
        Ok(())
    }
}
