//! gRPC `AuditService`: checkpoints, inclusion and consistency proofs, the public key. Any
//! valid token may read.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::audit_service_server::AuditService;
use eventlog::Position;
use merkle::VerifierKey;
use sqlx::PgPool;
use svc::Tokens;
use svc::status::{internal, invalid_field, unavailable, with_reason};
use tonic::{Code, Request, Response, Status};

use crate::proofs::{self, ProveError};
use crate::store::{self, StoreError, StoredCheckpoint};

#[derive(Debug, Clone)]
pub struct Audit {
    pool: PgPool,
    tokens: Arc<Tokens>,
    key: VerifierKey,
}

impl Audit {
    pub fn new(pool: PgPool, tokens: Arc<Tokens>, key: VerifierKey) -> Audit {
        Audit { pool, tokens, key }
    }

    async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, Status> {
        self.pool.acquire().await.map_err(unavailable)
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Database(e) => unavailable(e),
        e => internal(e),
    }
}

fn prove_status(e: ProveError) -> Status {
    match e {
        ProveError::Store(e) => store_status(e),
        ProveError::NotInTree {
            position,
            tree_size,
        } => with_reason(
            Code::FailedPrecondition,
            "event_not_checkpointed",
            format!("position {position} is not in the checkpoint of size {tree_size}"),
        ),
        ProveError::SizesReversed { .. } => {
            invalid_field("first_size", "must not exceed second_size")
        }
        e @ ProveError::MissingNode(_) => internal(e),
    }
}

fn not_found(size: u64) -> Status {
    let message = if size == 0 {
        "no checkpoint has been made yet".to_owned()
    } else {
        format!("no checkpoint of size {size}")
    };
    with_reason(Code::NotFound, "checkpoint_not_found", message)
}

/// A position or tree size from a request: beyond [`Position::MAX`] no log can reach it, and
/// it must not reach the database as another number (it was once bound as a negative BIGINT).
fn in_range(name: &str, value: u64) -> Result<u64, Status> {
    Position::new(value)
        .map(Position::get)
        .map_err(|_| invalid_field(name, format!("must be at most {}", Position::MAX)))
}

/// The checkpoint of `size`, or the latest when `size` is 0.
async fn checkpoint(conn: &mut sqlx::PgConnection, size: u64) -> Result<StoredCheckpoint, Status> {
    let found = if size == 0 {
        store::latest_checkpoint(conn).await
    } else {
        store::checkpoint_at(conn, size).await
    }
    .map_err(store_status)?;
    found.ok_or_else(|| not_found(size))
}

fn to_pb(c: &StoredCheckpoint) -> pb::LogCheckpoint {
    pb::LogCheckpoint {
        origin: c.origin.clone(),
        tree_size: c.tree_size,
        root_hash: c.root.to_vec(),
        timestamp_unix_micros: c.signed_at.timestamp_micros(),
        note: c.note.clone(),
    }
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::LogCheckpoint>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let mut conn = self.conn().await?;
        let size = in_range("tree_size", request.get_ref().tree_size)?;
        let c = checkpoint(&mut conn, size).await?;
        Ok(Response::new(to_pb(&c)))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let r = request.into_inner();
        let mut conn = self.conn().await?;
        let position = match r.event {
            Some(pb::get_inclusion_proof_request::Event::Position(0)) => {
                return Err(invalid_field("position", "positions start at 1"));
            }
            Some(pb::get_inclusion_proof_request::Event::Position(p)) => in_range("position", p)?,
            Some(pb::get_inclusion_proof_request::Event::EventId(id)) => {
                let id = uuid::Uuid::parse_str(id.trim())
                    .map_err(|_| invalid_field("event_id", "must be a UUID"))?;
                store::position_of(&mut conn, id)
                    .await
                    .map_err(store_status)?
                    .ok_or_else(|| {
                        with_reason(Code::NotFound, "event_not_found", format!("no event {id}"))
                    })?
            }
            None => return Err(invalid_field("event", "give a position or an event_id")),
        };
        let c = checkpoint(&mut conn, in_range("tree_size", r.tree_size)?).await?;
        let proof = proofs::inclusion(&mut conn, position, c.tree_size)
            .await
            .map_err(prove_status)?;
        Ok(Response::new(pb::InclusionProof {
            position,
            leaf_index: position - 1,
            leaf_hash: proof.leaf_hash.to_vec(),
            hashes: proof.hashes.iter().map(|h| h.to_vec()).collect(),
            checkpoint: Some(to_pb(&c)),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let r = request.into_inner();
        if r.first_size == 0 {
            return Err(invalid_field("first_size", "must be at least 1"));
        }
        in_range("first_size", r.first_size)?;
        let second_size = in_range("second_size", r.second_size)?;
        let mut conn = self.conn().await?;
        let second = checkpoint(&mut conn, second_size).await?;
        if r.first_size > second.tree_size {
            return Err(invalid_field("first_size", "must not exceed second_size"));
        }
        let first = checkpoint(&mut conn, r.first_size).await?;
        let hashes = proofs::consistency(&mut conn, first.tree_size, second.tree_size)
            .await
            .map_err(prove_status)?;
        Ok(Response::new(pb::ConsistencyProof {
            first_size: first.tree_size,
            second_size: second.tree_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            first: Some(to_pb(&first)),
            second: Some(to_pb(&second)),
        }))
    }

    async fn get_public_key(
        &self,
        request: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::CheckpointKey>, Status> {
        self.tokens.authenticate(request.metadata())?;
        Ok(Response::new(pb::CheckpointKey {
            name: self.key.name.clone(),
            key_id: format!("{:08x}", self.key.key_id),
            ed25519: self.key.key.as_bytes().to_vec(),
            verifier_key: self.key.to_text(),
        }))
    }
}
