//! Tamper evidence for an append-only log, in the style of Certificate Transparency: the
//! RFC 9162 Merkle Tree Hash over leaf hashes, inclusion and consistency proofs, and signed
//! checkpoints in the C2SP `tlog-checkpoint` / `signed-note` text format.
//!
//! Pure: no I/O, no async. The audit service stores the tree's nodes in PostgreSQL and asks
//! this crate which ones it needs; an auditor's offline `verify` uses only the verification
//! half.
//!
//! # The tree (RFC 9162 §2.1.1)
//!
//! - Leaves are 32-byte hashes given by the caller. For the event log they are the events'
//!   `event_hash = SHA-256(0x00 || canonical_bytes)`, which is already the RFC leaf hash
//!   ([`leaf_hash`]); this crate never hashes leaf data itself except in that function.
//! - An interior node is `SHA-256(0x01 || left || right)` ([`node_hash`]).
//! - The hash of `n > 1` leaves splits them at `k`, the largest power of two smaller than `n`:
//!   `MTH(D[0:n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))`; the hash of one leaf is that leaf;
//!   the hash of the empty tree is `SHA-256("")` ([`EMPTY_ROOT`]).
//!
//! # Stored nodes
//!
//! Every hash a root or a proof needs is the hash of a *perfect* subtree — `2^level` leaves
//! starting at a multiple of `2^level` — or a combination of such hashes ([`NodeId`]). Perfect
//! subtrees never change once their last leaf exists, so a log can store each one once when it
//! completes ([`Frontier::push`] says which), and answer any root or proof with `O(log n)`
//! node reads: the `*_nodes` functions list the nodes to fetch, the others compute from a
//! lookup.
//!
//! # Checkpoints
//!
//! See [`checkpoint`]: the C2SP signed note, Ed25519, key id as the signed-note spec
//! recommends.

pub mod checkpoint;
mod frontier;
mod proof;
mod tree;

pub use checkpoint::{
    Checkpoint, CheckpointError, KeyError, NoteError, SignedCheckpoint, Signer, VerifierKey,
};
pub use frontier::{Frontier, FrontierError};
pub use proof::{VerifyError, verify_consistency, verify_inclusion};
pub use tree::{
    EMPTY_ROOT, Hash, MissingNode, NodeId, ProofError, consistency_proof, consistency_proof_nodes,
    inclusion_proof, inclusion_proof_nodes, leaf_hash, node_hash, root, root_nodes,
};

/// Reference implementations straight from the RFC's recursive definitions, over a slice of
/// leaves. Slow (they rehash everything); for tests and for cross-checking.
pub mod reference {
    pub use crate::tree::reference::{consistency_proof, inclusion_proof, root};
}
