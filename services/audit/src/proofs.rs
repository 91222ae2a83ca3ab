//! Proofs from the stored nodes: each reads the `O(log n)` nodes the `merkle` crate lists, in
//! one query.

use merkle::{Hash, NodeId, ProofError};
use sqlx::PgConnection;

use crate::store::{self, StoreError};

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The event is newer than the tree asked for.
    #[error("position {position} is not in the tree of size {tree_size}")]
    NotInTree { position: u64, tree_size: u64 },
    #[error("no consistency proof from size {first} to the smaller size {second}")]
    SizesReversed { first: u64, second: u64 },
    /// The stored tree lacks a node it should have: it is behind the size asked for, or a row
    /// was removed.
    #[error("the stored Merkle tree lacks node ({}, {})", .0.level, .0.index)]
    MissingNode(NodeId),
}

impl From<ProofError> for ProveError {
    fn from(e: ProofError) -> Self {
        match e {
            ProofError::LeafOutOfRange { index, size } => ProveError::NotInTree {
                position: index + 1,
                tree_size: size,
            },
            ProofError::SizesReversed { first, second } => {
                ProveError::SizesReversed { first, second }
            }
            ProofError::Missing(m) => ProveError::MissingNode(m.0),
        }
    }
}

/// An inclusion proof of the event at `position` (1-based) in the tree of `tree_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inclusion {
    pub position: u64,
    pub tree_size: u64,
    /// The event's leaf hash as checkpointed.
    pub leaf_hash: Hash,
    /// Leaf to root.
    pub hashes: Vec<Hash>,
}

/// Inclusion proofs of several positions in one tree, with one read of all the nodes they need.
pub async fn inclusions(
    conn: &mut PgConnection,
    positions: &[u64],
    tree_size: u64,
) -> Result<Vec<Inclusion>, ProveError> {
    let mut ids = Vec::new();
    for &position in positions {
        if position == 0 || position > tree_size {
            return Err(ProveError::NotInTree {
                position,
                tree_size,
            });
        }
        ids.push(NodeId::new(0, position - 1));
        ids.extend(merkle::inclusion_proof_nodes(position - 1, tree_size)?);
    }
    ids.sort_unstable();
    ids.dedup();
    let nodes = store::load_nodes(conn, &ids).await?;
    positions
        .iter()
        .map(|&position| {
            let leaf = NodeId::new(0, position - 1);
            Ok(Inclusion {
                position,
                tree_size,
                leaf_hash: *nodes.get(&leaf).ok_or(ProveError::MissingNode(leaf))?,
                hashes: merkle::inclusion_proof(position - 1, tree_size, |id| {
                    nodes.get(&id).copied()
                })?,
            })
        })
        .collect()
}

pub async fn inclusion(
    conn: &mut PgConnection,
    position: u64,
    tree_size: u64,
) -> Result<Inclusion, ProveError> {
    let mut all = inclusions(conn, &[position], tree_size).await?;
    Ok(all.remove(0))
}

/// The consistency proof from `first` to `second` leaves.
pub async fn consistency(
    conn: &mut PgConnection,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, ProveError> {
    let ids = merkle::consistency_proof_nodes(first, second)?;
    let nodes = store::load_nodes(conn, &ids).await?;
    Ok(merkle::consistency_proof(first, second, |id| {
        nodes.get(&id).copied()
    })?)
}

/// The root of the first `size` leaves from the stored nodes.
pub async fn root(conn: &mut PgConnection, size: u64) -> Result<Hash, ProveError> {
    let nodes = store::load_nodes(conn, &merkle::root_nodes(size)).await?;
    merkle::root(size, |id| nodes.get(&id).copied()).map_err(|m| ProveError::MissingNode(m.0))
}
