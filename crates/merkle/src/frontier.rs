//! Growing the tree: the right edge of a tree (its "compact range"), which is all one needs to
//! append leaves, to know which perfect subtrees each new leaf completes, and to compute the
//! root.

use crate::tree::{EMPTY_ROOT, Hash, NodeId, node_hash, root_nodes};

/// The perfect subtrees of a tree of `size` leaves that are not inside a bigger complete one:
/// one per bit set in `size`, largest (leftmost) first. `O(log n)` hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

/// The hashes given do not fit the size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a frontier of size {size} has {expected} nodes, {given} were given")]
pub struct FrontierError {
    pub size: u64,
    pub expected: usize,
    pub given: usize,
}

impl Default for Frontier {
    fn default() -> Self {
        Frontier::empty()
    }
}

impl Frontier {
    pub fn empty() -> Frontier {
        Frontier {
            size: 0,
            nodes: Vec::new(),
        }
    }

    /// The nodes to load to resume a tree of `size` leaves, in the order [`Frontier::resume`]
    /// takes their hashes.
    pub fn nodes_for(size: u64) -> Vec<NodeId> {
        let mut ids = root_nodes(size);
        // Largest first = leftmost first.
        ids.sort_by_key(|id| std::cmp::Reverse(id.level));
        ids
    }

    /// Resumes a tree of `size` leaves from the hashes of [`Frontier::nodes_for`]`(size)`.
    pub fn resume(size: u64, hashes: Vec<Hash>) -> Result<Frontier, FrontierError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(FrontierError {
                size,
                expected,
                given: hashes.len(),
            });
        }
        Ok(Frontier {
            size,
            nodes: hashes,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf and returns the perfect subtrees it completes, the leaf itself (level 0)
    /// first: exactly the nodes to store so that every later root and proof can be answered.
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        let index = self.size;
        let mut completed = vec![(NodeId::new(0, index), leaf)];
        let mut current = leaf;
        let mut level = 0u8;
        while (self.size >> level) & 1 == 1 {
            // A bit set at `level` means a complete subtree of that size sits on the edge:
            // the new one pairs with it.
            let Some(left) = self.nodes.pop() else {
                unreachable!("a frontier holds one node per bit of its size");
            };
            current = node_hash(&left, &current);
            level += 1;
            completed.push((NodeId::new(level, index >> level), current));
        }
        self.nodes.push(current);
        self.size += 1;
        completed
    }

    /// The root hash of the tree so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return EMPTY_ROOT;
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}
