//! Publishing checkpoints on NATS: subject `{subject_prefix}-checkpoints` in a stream of its
//! own, `{stream}_CHECKPOINTS`. Not under `{subject_prefix}.>`: that subject space belongs to the
//! event stream, whose exact sequence the relay relies on.

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};

use crate::store::StoredCheckpoint;

/// Why publishing failed; the checkpoint stays stored and is published on a later tick.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot create or read stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("publish failed: {0}")]
    Publish(String),
}

/// Where checkpoints go.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

/// The checkpoints' stream name for the event stream `stream`.
pub fn stream_name(stream: &str) -> String {
    format!("{stream}_CHECKPOINTS")
}

/// The checkpoints' subject for the event subject prefix `prefix`.
pub fn subject(prefix: &str) -> String {
    format!("{prefix}-checkpoints")
}

impl Publisher {
    /// For the event stream `stream` and its subject prefix.
    pub fn new(js: jetstream::Context, stream: &str, prefix: &str) -> Publisher {
        Publisher {
            js,
            stream: stream_name(stream),
            subject: subject(prefix),
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Creates the stream if it is missing.
    pub async fn ensure_stream(&self) -> Result<(), PublishError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![self.subject.clone()],
                description: Some("Signed checkpoints of the dossier event log".into()),
                ..Default::default()
            })
            .await
            .map_err(|e| PublishError::Stream {
                stream: self.stream.clone(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// Publishes the signed note, with `Nats-Msg-Id = <origin>/<size>` so that instances
    /// publishing the same checkpoint store it once (within the stream's duplicate window).
    pub async fn publish(&self, checkpoint: &StoredCheckpoint) -> Result<(), PublishError> {
        self.ensure_stream().await?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Msg-Id",
            format!("{}/{}", checkpoint.origin, checkpoint.tree_size).as_str(),
        );
        headers.insert(
            "Checkpoint-Tree-Size",
            checkpoint.tree_size.to_string().as_str(),
        );
        headers.insert("Content-Type", "text/plain; charset=utf-8");
        self.js
            .publish_with_headers(
                self.subject.clone(),
                headers,
                bytes::Bytes::from(checkpoint.note.clone()),
            )
            .await
            .map_err(|e| PublishError::Publish(e.to_string()))?
            .await
            .map_err(|e| PublishError::Publish(e.to_string()))?;
        Ok(())
    }
}
