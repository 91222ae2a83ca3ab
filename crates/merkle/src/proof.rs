//! Proof verification (RFC 9162 §2.1.3.2 and §2.1.4.2): what an auditor runs, needing nothing
//! but the proof, the sizes and the hashes.

use crate::tree::{Hash, node_hash};

/// Why a proof does not verify. Any of these means: do not trust the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("leaf index {index} is not in a tree of size {size}")]
    LeafOutOfRange { index: u64, size: u64 },
    #[error("a tree of size {first} cannot be a prefix of the smaller size {second}")]
    SizesReversed { first: u64, second: u64 },
    /// The proof has too many or too few hashes for the sizes.
    #[error("the proof has the wrong number of hashes for these sizes")]
    WrongLength,
    /// The proof recomputes to another root: the leaf, the proof or the root was altered.
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
}

fn lsb(x: u64) -> bool {
    x & 1 == 1
}

/// Checks that `leaf` is leaf number `index` (0-based) of the tree of `size` leaves whose root
/// is `root`, given its audit path `proof` (leaf to root).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::LeafOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(VerifyError::WrongLength);
        }
        if lsb(f) || f == s {
            r = node_hash(p, &r);
            if !lsb(f) {
                while !lsb(f) && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(VerifyError::WrongLength);
    }
    if r != *root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}

/// Checks that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root`, given the consistency proof `proof`.
///
/// A tree of size 0 is a prefix of every tree (the proof must be empty); equal sizes need an
/// empty proof and equal roots.
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if first > second {
        return Err(VerifyError::SizesReversed { first, second });
    }
    if first == 0 || first == second {
        if !proof.is_empty() {
            return Err(VerifyError::WrongLength);
        }
        if first == second && first_root != second_root {
            return Err(VerifyError::RootMismatch);
        }
        return Ok(());
    }
    let Some((head, rest)) = proof.split_first() else {
        return Err(VerifyError::WrongLength);
    };
    // When `first` is a power of two its root is the first node of the path, and the RFC
    // leaves it out of the proof.
    let (start, rest): (&Hash, &[Hash]) = if first.is_power_of_two() {
        (first_root, proof)
    } else {
        (head, rest)
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while lsb(f) {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in rest {
        if s == 0 {
            return Err(VerifyError::WrongLength);
        }
        if lsb(f) || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if !lsb(f) {
                while !lsb(f) && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(VerifyError::WrongLength);
    }
    if fr != *first_root || sr != *second_root {
        return Err(VerifyError::RootMismatch);
    }
    Ok(())
}
