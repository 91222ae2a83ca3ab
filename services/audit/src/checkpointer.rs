//! The checkpointer: extends the stored Merkle tree with the log's new events, signs a
//! checkpoint when the log grew, stores it and publishes it on NATS.
//!
//! Several instances may run. Every step that writes holds a transaction-scoped advisory lock
//! ([`LOCK_KEY`]), re-reads the tree size under it, and `checkpoints.tree_size` is the primary
//! key: two instances never write the same node or sign two different checkpoints of one size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use merkle::{Checkpoint, Frontier, Signer};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::proofs::{self, ProveError};
use crate::publish::Publisher;
use crate::store::{self, StoreError, StoredCheckpoint};

/// `pg_advisory_xact_lock` key serialising the writers of the audit tables ("motcua-a").
pub const LOCK_KEY: i64 = 0x6d6f_7463_7561_2d61;

/// Events read and added to the tree per transaction.
pub const BATCH: i64 = 5000;

/// Why a checkpoint could not be made. Nothing half-done is left: each batch commits whole.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Prove(#[from] ProveError),
    /// An event does not match its own hash, or positions have a gap: the log was altered.
    /// The checkpointer refuses to sign it; run `audit verify`.
    #[error("refusing to checkpoint: position {position}: {reason}")]
    Tampered { position: u64, reason: String },
    /// The stored tree no longer leads to a root already signed: it was altered.
    #[error(
        "refusing to checkpoint: the stored tree does not reproduce the signed checkpoint of size {size}"
    )]
    Inconsistent { size: u64 },
    #[error("cannot sign: {0}")]
    Sign(#[from] merkle::CheckpointError),
}

/// What one [`Checkpointer::tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// Leaves added to the tree.
    pub extended: u64,
    /// The checkpoint made now, if the log grew since the last one.
    pub signed: Option<StoredCheckpoint>,
    /// Whether the latest checkpoint was published on NATS by this tick.
    pub published: bool,
}

#[derive(Debug, Clone)]
pub struct Checkpointer {
    pool: PgPool,
    signer: Arc<Signer>,
    publisher: Option<Publisher>,
    published: Arc<AtomicU64>,
    status: CheckpointerStatus,
}

/// The tree size of a checkpoint and when it was signed.
pub type LatestCheckpoint = (u64, chrono::DateTime<Utc>);

/// What the checkpointer exposes to metrics and health (plain values, shared by its clones).
#[derive(Debug, Clone, Default)]
pub struct CheckpointerStatus {
    /// The latest checkpoint seen by this instance: tree size and signing time
    /// (`motcua_checkpoint_tree_size`, `motcua_checkpoint_age_seconds`).
    pub latest: Arc<std::sync::Mutex<Option<LatestCheckpoint>>>,
    /// Why the last tick failed, while it keeps failing.
    pub failing: Arc<std::sync::Mutex<Option<String>>>,
}

impl CheckpointerStatus {
    fn set_latest(&self, checkpoint: &StoredCheckpoint) {
        *self
            .latest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((checkpoint.tree_size, checkpoint.signed_at));
    }

    fn set_failing(&self, reason: Option<String>) {
        *self
            .failing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reason;
    }
}

impl Checkpointer {
    pub fn new(pool: PgPool, signer: Arc<Signer>, publisher: Option<Publisher>) -> Checkpointer {
        Checkpointer {
            pool,
            signer,
            publisher,
            published: Arc::new(AtomicU64::new(0)),
            status: CheckpointerStatus::default(),
        }
    }

    /// The checkpointer's latest checkpoint and health, for the service's metrics.
    pub fn status(&self) -> CheckpointerStatus {
        self.status.clone()
    }

    /// Extends the tree to the log's head, signs a checkpoint if the tree grew past the latest
    /// one, and publishes the latest checkpoint if this instance has not yet.
    pub async fn tick(&self) -> Result<Tick, CheckpointError> {
        let mut extended = 0;
        loop {
            let added = self.extend_batch().await?;
            extended += added;
            if added < BATCH as u64 {
                break;
            }
        }
        let signed = self.sign_if_grown().await?;
        let published = self.publish_latest().await;
        Ok(Tick {
            extended,
            signed,
            published,
        })
    }

    /// Runs [`tick`](Self::tick) now and every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            let outcome = self.tick().await;
            self.status
                .set_failing(outcome.as_ref().err().map(ToString::to_string));
            match outcome {
                Ok(tick) => {
                    if let Some(c) = &tick.signed {
                        tracing::info!(
                            tree_size = c.tree_size,
                            root = %hex::encode(c.root),
                            extended = tick.extended,
                            "signed a checkpoint"
                        );
                    }
                }
                Err(error @ CheckpointError::Store(_)) => {
                    tracing::warn!(%error, "checkpoint failed; retrying next interval");
                }
                Err(error) => tracing::error!(%error, "checkpoint refused"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn lock(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(tx)
            .await?;
        Ok(())
    }

    /// Adds up to [`BATCH`] new events to the tree in one transaction; returns how many.
    async fn extend_batch(&self) -> Result<u64, CheckpointError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        Self::lock(&mut tx).await?;
        let size = store::tree_size(&mut tx).await?;
        let ids = Frontier::nodes_for(size);
        let nodes = store::load_nodes(&mut tx, &ids).await?;
        let hashes = ids
            .iter()
            .map(|id| nodes.get(id).copied().ok_or(ProveError::MissingNode(*id)))
            .collect::<Result<Vec<_>, _>>()?;
        let Ok(mut frontier) = Frontier::resume(size, hashes) else {
            unreachable!("nodes_for gives one node per bit of the size");
        };
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            store::EVENT_COLUMNS
        )))
        .bind(store::db(size)?)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        let mut new_nodes = Vec::with_capacity(rows.len() * 2);
        for row in &rows {
            let expected = frontier.size() + 1;
            let event = store::decode_event(row).map_err(|reason| CheckpointError::Tampered {
                position: expected,
                reason,
            })?;
            if u64::try_from(event.position) != Ok(expected) {
                return Err(CheckpointError::Tampered {
                    position: expected,
                    reason: format!("missing (the next stored position is {})", event.position),
                });
            }
            let leaf = eventlog::event_hash(&eventlog::canonical_bytes(&event));
            if leaf != event.event_hash {
                return Err(CheckpointError::Tampered {
                    position: expected,
                    reason: "the stored event_hash does not match the event's content".into(),
                });
            }
            new_nodes.extend(frontier.push(leaf));
        }
        store::insert_nodes(&mut tx, &new_nodes).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(rows.len() as u64)
    }

    /// Signs and stores a checkpoint of the stored tree if it is larger than the latest one.
    async fn sign_if_grown(&self) -> Result<Option<StoredCheckpoint>, CheckpointError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        Self::lock(&mut tx).await?;
        let size = store::tree_size(&mut tx).await?;
        let latest = store::latest_checkpoint(&mut tx).await?;
        if let Some(latest) = &latest {
            self.status.set_latest(latest);
        }
        if size == 0 || latest.as_ref().is_some_and(|c| c.tree_size >= size) {
            return Ok(None);
        }
        // Never sign a tree that forks from what was signed before (C2SP: a log must not sign
        // inconsistent checkpoints): the previous root must come out of the same nodes.
        if let Some(previous) = &latest
            && proofs::root(&mut tx, previous.tree_size).await? != previous.root
        {
            return Err(CheckpointError::Inconsistent {
                size: previous.tree_size,
            });
        }
        let root = proofs::root(&mut tx, size).await?;
        let signed = self.signer.sign(Checkpoint {
            origin: self.signer.name().to_owned(),
            size,
            root,
            timestamp: svc::status::truncate_micros(Utc::now()),
        })?;
        let key_id = self.signer.verifier().key_id;
        store::insert_checkpoint(&mut tx, &signed, key_id).await?;
        tx.commit().await.map_err(StoreError::from)?;
        let stored = StoredCheckpoint {
            tree_size: size,
            root,
            origin: signed.checkpoint.origin.clone(),
            key_id: format!("{key_id:08x}"),
            signed_at: signed.checkpoint.timestamp,
            note: signed.note,
        };
        self.status.set_latest(&stored);
        Ok(Some(stored))
    }

    /// Publishes the latest checkpoint unless this instance already did. A failure is logged
    /// and retried next tick (the message id makes a repeat harmless).
    async fn publish_latest(&self) -> bool {
        let Some(publisher) = &self.publisher else {
            return false;
        };
        let latest = match self.pool.acquire().await {
            Ok(mut conn) => store::latest_checkpoint(&mut conn).await,
            Err(e) => Err(StoreError::from(e)),
        };
        let latest = match latest {
            Ok(Some(latest)) => latest,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(%error, "cannot read the latest checkpoint to publish it");
                return false;
            }
        };
        if latest.tree_size <= self.published.load(Ordering::Relaxed) {
            return false;
        }
        match publisher.publish(&latest).await {
            Ok(()) => {
                self.published
                    .fetch_max(latest.tree_size, Ordering::Relaxed);
                true
            }
            Err(error) => {
                tracing::warn!(%error, tree_size = latest.tree_size, "cannot publish the checkpoint; retrying next interval");
                false
            }
        }
    }
}
