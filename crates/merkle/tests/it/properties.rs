//! Properties over random trees: the stored-node algorithms equal the RFC's definitions, every
//! generated proof verifies, and any altered leaf, proof hash, index, size or root fails.

use merkle::{
    Frontier, Hash, consistency_proof, consistency_proof_nodes, inclusion_proof,
    inclusion_proof_nodes, leaf_hash, reference, root, root_nodes, verify_consistency,
    verify_inclusion,
};
use proptest::prelude::*;

use crate::Stored;

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut h = *h;
    h[bit / 8 % 32] ^= 1 << (bit % 8);
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn stored_nodes_give_the_rfc_root_proofs_and_read_only_what_they_list(
        n in 1usize..300, i in any::<prop::sample::Index>(), m in any::<prop::sample::Index>(),
    ) {
        let leaves = leaves(n);
        let stored = Stored::of(&leaves);
        let size = n as u64;
        prop_assert_eq!(stored.frontier.root(), reference::root(&leaves));
        prop_assert_eq!(root(size, stored.lookup()).unwrap(), reference::root(&leaves));

        // Exactly the nodes listed are read (so a store can prefetch them in one query).
        let index = i.index(n) as u64;
        let listed = inclusion_proof_nodes(index, size).unwrap();
        let mut read = Vec::new();
        let proof = inclusion_proof(index, size, |id| { read.push(id); stored.nodes.get(&id).copied() }).unwrap();
        read.sort_unstable();
        read.dedup();
        prop_assert_eq!(&read, &listed);
        prop_assert_eq!(&proof, &reference::inclusion_proof(index as usize, &leaves).unwrap());
        // Every node a tree of this size needs exists once the tree has this size.
        prop_assert!(listed.iter().all(|id| id.end_leaf() <= size));
        prop_assert!(root_nodes(size).iter().all(|id| stored.nodes.contains_key(id)));

        let first = m.index(n + 1) as u64;
        let listed = consistency_proof_nodes(first, size).unwrap();
        let mut read = Vec::new();
        let proof = consistency_proof(first, size, |id| { read.push(id); stored.nodes.get(&id).copied() }).unwrap();
        read.sort_unstable();
        read.dedup();
        prop_assert_eq!(&read, &listed);
        prop_assert_eq!(&proof, &reference::consistency_proof(first as usize, &leaves).unwrap());
    }

    #[test]
    fn every_inclusion_proof_verifies_and_any_alteration_fails(
        n in 1usize..200, i in any::<prop::sample::Index>(), bit in 0usize..256,
        which in any::<prop::sample::Index>(),
    ) {
        let leaves = leaves(n);
        let stored = Stored::of(&leaves);
        let size = n as u64;
        let index = i.index(n) as u64;
        let root = stored.frontier.root();
        let leaf = leaves[index as usize];
        let proof = inclusion_proof(index, size, stored.lookup()).unwrap();
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &root).is_ok());

        prop_assert!(verify_inclusion(index, size, &flip(&leaf, bit), &proof, &root).is_err());
        prop_assert!(verify_inclusion(index, size, &leaf, &proof, &flip(&root, bit)).is_err());
        if !proof.is_empty() {
            let mut altered = proof.clone();
            let k = which.index(altered.len());
            altered[k] = flip(&altered[k], bit);
            prop_assert!(verify_inclusion(index, size, &leaf, &altered, &root).is_err());
            let mut shorter = proof.clone();
            shorter.pop();
            prop_assert!(verify_inclusion(index, size, &leaf, &shorter, &root).is_err());
        }
        let mut longer = proof.clone();
        longer.push(root);
        prop_assert!(verify_inclusion(index, size, &leaf, &longer, &root).is_err());
        // Another position for the same leaf: another leaf unless the leaves repeat (they don't).
        if n > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(other, size, &leaf, &proof, &root).is_err());
        }
        prop_assert!(verify_inclusion(size, size, &leaf, &proof, &root).is_err());
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_alteration_fails(
        n in 1usize..200, m in any::<prop::sample::Index>(), bit in 0usize..256,
        which in any::<prop::sample::Index>(),
    ) {
        let leaves = leaves(n);
        let stored = Stored::of(&leaves);
        let second = n as u64;
        let first = 1 + m.index(n) as u64; // 1..=n
        let first_root = reference::root(&leaves[..first as usize]);
        let second_root = stored.frontier.root();
        let proof = consistency_proof(first, second, stored.lookup()).unwrap();
        prop_assert!(verify_consistency(first, second, &first_root, &second_root, &proof).is_ok());

        prop_assert!(verify_consistency(first, second, &flip(&first_root, bit), &second_root, &proof).is_err());
        prop_assert!(verify_consistency(first, second, &first_root, &flip(&second_root, bit), &proof).is_err());
        if !proof.is_empty() {
            let mut altered = proof.clone();
            let k = which.index(altered.len());
            altered[k] = flip(&altered[k], bit);
            prop_assert!(verify_consistency(first, second, &first_root, &second_root, &altered).is_err());
            let mut shorter = proof.clone();
            shorter.pop();
            prop_assert!(verify_consistency(first, second, &first_root, &second_root, &shorter).is_err());
        }
        let mut longer = proof.clone();
        longer.push(second_root);
        prop_assert!(verify_consistency(first, second, &first_root, &second_root, &longer).is_err());
        // A tree that is not a prefix: one leaf of the first tree changed.
        let mut forked = leaves.clone();
        let k = which.index(first as usize);
        forked[k] = flip(&forked[k], bit);
        let forked_root = reference::root(&forked[..first as usize]);
        prop_assert!(verify_consistency(first, second, &forked_root, &second_root, &proof).is_err());
        prop_assert!(verify_consistency(second, first, &second_root, &first_root, &proof).is_err() || first == second);
    }

    #[test]
    fn a_resumed_frontier_continues_the_same_tree(n in 0usize..300, more in 0usize..50) {
        let all = leaves(n + more);
        let stored = Stored::of(&all[..n]);
        let ids = Frontier::nodes_for(n as u64);
        let hashes = ids.iter().map(|id| stored.nodes[id]).collect();
        let mut resumed = Frontier::resume(n as u64, hashes).unwrap();
        for leaf in &all[n..] {
            resumed.push(*leaf);
        }
        prop_assert_eq!(resumed.size(), (n + more) as u64);
        prop_assert_eq!(resumed.root(), reference::root(&all));
    }
}

#[test]
fn proofs_beyond_the_tree_are_refused() {
    let stored = Stored::of(&leaves(5));
    assert!(inclusion_proof(5, 5, stored.lookup()).is_err());
    assert!(consistency_proof(6, 5, stored.lookup()).is_err());
    // Nodes of a bigger tree than stored are missing, not invented.
    assert!(matches!(
        inclusion_proof(0, 6, stored.lookup()),
        Err(merkle::ProofError::Missing(_))
    ));
    assert!(Frontier::resume(5, vec![[0; 32]]).is_err());
}

#[test]
fn consistency_from_the_empty_tree_and_to_itself() {
    let l = leaves(3);
    let r = reference::root(&l);
    verify_consistency(0, 3, &merkle::EMPTY_ROOT, &r, &[]).unwrap();
    verify_consistency(3, 3, &r, &r, &[]).unwrap();
    assert!(verify_consistency(3, 3, &r, &merkle::EMPTY_ROOT, &[]).is_err());
    assert!(verify_consistency(0, 3, &merkle::EMPTY_ROOT, &r, &[r]).is_err());
}
