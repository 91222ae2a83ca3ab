//! Hashing, the perfect subtrees a hash is made of, and proof generation (RFC 9162 §2.1).

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf, a node, a root.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// `SHA-256(0x00 || data)`: the hash of a leaf whose data is `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// A perfect subtree: the `2^level` leaves `index * 2^level .. (index + 1) * 2^level`.
/// Level 0 nodes are the leaves themselves. Its hash never changes once its last leaf exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn new(level: u8, index: u64) -> NodeId {
        NodeId { level, index }
    }

    /// The first leaf it covers.
    pub fn first_leaf(self) -> u64 {
        self.index << self.level
    }

    /// One past the last leaf it covers: the tree size from which this node exists.
    pub fn end_leaf(self) -> u64 {
        (self.index + 1) << self.level
    }
}

/// A node a computation needed was not given by the lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("merkle node at level {} index {} is missing", .0.level, .0.index)]
pub struct MissingNode(pub NodeId);

/// Why a proof cannot be produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// An inclusion proof for a leaf the tree does not hold.
    #[error("leaf index {index} is not in a tree of size {size}")]
    LeafOutOfRange { index: u64, size: u64 },
    /// A consistency proof needs `first <= second`.
    #[error("no consistency proof from size {first} to the smaller size {second}")]
    SizesReversed { first: u64, second: u64 },
    /// The node store lacks a node: it has not been extended to the tree size asked for.
    #[error(transparent)]
    Missing(#[from] MissingNode),
}

/// The largest power of two strictly smaller than `n` (`n >= 2`).
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees whose combination is `MTH(D[start:end])`, left to right.
fn span_nodes(start: u64, end: u64, out: &mut Vec<NodeId>) {
    let n = end - start;
    if n.is_power_of_two() && start % n == 0 {
        let level = n.trailing_zeros() as u8;
        out.push(NodeId::new(level, start >> level));
        return;
    }
    let k = split(n);
    span_nodes(start, start + k, out);
    span_nodes(start + k, end, out);
}

/// `MTH(D[start:end])` (non-empty) from perfect subtrees given by `lookup`.
fn span_hash(
    start: u64,
    end: u64,
    lookup: &mut impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Hash, MissingNode> {
    let n = end - start;
    if n.is_power_of_two() && start % n == 0 {
        let level = n.trailing_zeros() as u8;
        let id = NodeId::new(level, start >> level);
        return lookup(id).ok_or(MissingNode(id));
    }
    let k = split(n);
    let left = span_hash(start, start + k, lookup)?;
    let right = span_hash(start + k, end, lookup)?;
    Ok(node_hash(&left, &right))
}

fn nodes_of(spans: &[(u64, u64)]) -> Vec<NodeId> {
    let mut out = Vec::new();
    for &(start, end) in spans {
        span_nodes(start, end, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn hashes_of(
    spans: &[(u64, u64)],
    lookup: &mut impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, MissingNode> {
    spans
        .iter()
        .map(|&(start, end)| span_hash(start, end, lookup))
        .collect()
}

/// The perfect subtrees the root of a tree of `size` leaves is made of (one per bit set in
/// `size`); empty for the empty tree.
pub fn root_nodes(size: u64) -> Vec<NodeId> {
    if size == 0 {
        return Vec::new();
    }
    nodes_of(&[(0, size)])
}

/// The root hash of the first `size` leaves.
pub fn root(
    size: u64,
    mut lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Hash, MissingNode> {
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    span_hash(0, size, &mut lookup)
}

/// The subtrees whose hashes make `PATH(index, D[0:size])`, leaf to root (RFC 9162 §2.1.3.1).
fn inclusion_spans(index: u64, size: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if index >= size {
        return Err(ProofError::LeafOutOfRange { index, size });
    }
    let (mut lo, mut hi) = (0, size);
    let mut spans = Vec::new();
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            spans.push((lo + k, hi));
            hi = lo + k;
        } else {
            spans.push((lo, lo + k));
            lo += k;
        }
    }
    spans.reverse();
    Ok(spans)
}

/// The subtrees whose hashes make `PROOF(first, D[0:second])` (RFC 9162 §2.1.4.1); empty when
/// `first` is 0 or equal to `second` (nothing to prove).
fn consistency_spans(first: u64, second: u64) -> Result<Vec<(u64, u64)>, ProofError> {
    if first > second {
        return Err(ProofError::SizesReversed { first, second });
    }
    if first == 0 || first == second {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[lo:hi], b), unrolled top-down; the RFC appends each level's sibling after
    // the deeper elements, so the list is reversed at the end.
    let (mut lo, mut hi, mut m, mut whole) = (0, second, first, true);
    let mut spans = Vec::new();
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                spans.push((lo, hi));
            }
            break;
        }
        let k = split(n);
        if m <= k {
            spans.push((lo + k, hi));
            hi = lo + k;
        } else {
            spans.push((lo, lo + k));
            lo += k;
            m -= k;
            whole = false;
        }
    }
    spans.reverse();
    Ok(spans)
}

/// The stored nodes an inclusion proof of leaf `index` in a tree of `size` leaves reads.
pub fn inclusion_proof_nodes(index: u64, size: u64) -> Result<Vec<NodeId>, ProofError> {
    Ok(nodes_of(&inclusion_spans(index, size)?))
}

/// The audit path of leaf `index` (0-based) in the tree of the first `size` leaves, leaf to
/// root, as RFC 9162 §2.1.3.1 defines it.
pub fn inclusion_proof(
    index: u64,
    size: u64,
    mut lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, ProofError> {
    Ok(hashes_of(&inclusion_spans(index, size)?, &mut lookup)?)
}

/// The stored nodes a consistency proof from `first` to `second` leaves reads.
pub fn consistency_proof_nodes(first: u64, second: u64) -> Result<Vec<NodeId>, ProofError> {
    Ok(nodes_of(&consistency_spans(first, second)?))
}

/// The consistency proof that the tree of `first` leaves is a prefix of the tree of `second`
/// leaves, as RFC 9162 §2.1.4.1 defines it (empty when `first` is 0 or equals `second`).
pub fn consistency_proof(
    first: u64,
    second: u64,
    mut lookup: impl FnMut(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, ProofError> {
    Ok(hashes_of(&consistency_spans(first, second)?, &mut lookup)?)
}

/// The RFC's recursive definitions over a slice of leaf hashes, written as literally as possible.
pub mod reference {
    use super::{EMPTY_ROOT, Hash, node_hash, split};

    /// `MTH(D[n])`.
    pub fn root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => EMPTY_ROOT,
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
            }
        }
    }

    /// `PATH(m, D[n])`; `None` when `m` is out of range.
    pub fn inclusion_proof(m: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
        let n = leaves.len();
        if m >= n {
            return None;
        }
        if n == 1 {
            return Some(Vec::new());
        }
        let k = split(n as u64) as usize;
        let mut path;
        if m < k {
            path = inclusion_proof(m, &leaves[..k])?;
            path.push(root(&leaves[k..]));
        } else {
            path = inclusion_proof(m - k, &leaves[k..])?;
            path.push(root(&leaves[..k]));
        }
        Some(path)
    }

    /// `PROOF(m, D[n])`; `None` when `m > n`; empty when `m` is 0 or `n`.
    pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Option<Vec<Hash>> {
        if m > leaves.len() {
            return None;
        }
        if m == 0 {
            return Some(Vec::new());
        }
        Some(subproof(m, leaves, true))
    }

    fn subproof(m: usize, leaves: &[Hash], b: bool) -> Vec<Hash> {
        let n = leaves.len();
        if m == n {
            return if b { Vec::new() } else { vec![root(leaves)] };
        }
        let k = split(n as u64) as usize;
        let mut proof;
        if m <= k {
            proof = subproof(m, &leaves[..k], b);
            proof.push(root(&leaves[k..]));
        } else {
            proof = subproof(m - k, &leaves[k..], false);
            proof.push(root(&leaves[..k]));
        }
        proof
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_the_largest_power_of_two_below() {
        assert_eq!(split(2), 1);
        assert_eq!(split(3), 2);
        assert_eq!(split(4), 2);
        assert_eq!(split(5), 4);
        assert_eq!(split(8), 4);
        assert_eq!(split(9), 8);
        assert_eq!(split(u64::MAX), 1 << 63);
    }

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let expected: Hash = Sha256::digest(b"").into();
        assert_eq!(EMPTY_ROOT, expected);
    }

    #[test]
    fn a_root_reads_one_node_per_bit_of_the_size() {
        assert_eq!(root_nodes(0), vec![]);
        assert_eq!(root_nodes(8), vec![NodeId::new(3, 0)]);
        assert_eq!(
            root_nodes(13),
            vec![NodeId::new(0, 12), NodeId::new(2, 2), NodeId::new(3, 0)]
        );
        let size = (1u64 << 40) + (1 << 20) + 5;
        assert_eq!(root_nodes(size).len(), 4);
        // A proof in a tree of a trillion leaves reads about 2·log2(n) nodes at most.
        assert!(inclusion_proof_nodes(123_456_789, size).unwrap().len() <= 82);
        assert!(consistency_proof_nodes(999_999_999, size).unwrap().len() <= 82);
    }

    #[test]
    fn node_ids_cover_their_leaves() {
        let id = NodeId::new(3, 2);
        assert_eq!(id.first_leaf(), 16);
        assert_eq!(id.end_leaf(), 24);
    }
}
