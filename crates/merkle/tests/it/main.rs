//! The Merkle tree against the RFC 6962 / Certificate Transparency test vectors, the stored-node
//! algorithms against the RFC's recursive definitions, and proofs under tampering.

mod properties;
mod vectors;

use std::collections::HashMap;

use merkle::{Frontier, Hash, NodeId};

/// A tree grown leaf by leaf through [`Frontier::push`], keeping every node it emits: what the
/// audit service stores in its table.
#[derive(Debug)]
pub struct Stored {
    pub frontier: Frontier,
    pub nodes: HashMap<NodeId, Hash>,
}

impl Stored {
    pub fn of(leaves: &[Hash]) -> Stored {
        let mut frontier = Frontier::empty();
        let mut nodes = HashMap::new();
        for leaf in leaves {
            for (id, hash) in frontier.push(*leaf) {
                assert!(nodes.insert(id, hash).is_none(), "{id:?} emitted twice");
            }
        }
        Stored { frontier, nodes }
    }

    pub fn lookup(&self) -> impl FnMut(NodeId) -> Option<Hash> + '_ {
        |id| self.nodes.get(&id).copied()
    }
}

pub fn hex32(s: &str) -> Hash {
    hex::decode(s).unwrap().try_into().unwrap()
}
