//! The test vectors of the Certificate Transparency reference implementation (RFC 6962 trees
//! over eight fixed leaf inputs).

use merkle::{
    EMPTY_ROOT, consistency_proof, inclusion_proof, leaf_hash, reference, root, verify_consistency,
    verify_inclusion,
};

use crate::{Stored, hex32};

const INPUTS: [&[u8]; 8] = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
];

/// Roots of the trees of the first 1..=8 inputs.
const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn leaves() -> Vec<merkle::Hash> {
    INPUTS.iter().map(|d| leaf_hash(d)).collect()
}

#[test]
fn empty_tree_root() {
    assert_eq!(
        EMPTY_ROOT,
        hex32("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(merkle::Frontier::empty().root(), EMPTY_ROOT);
    assert_eq!(root(0, |_| None).unwrap(), EMPTY_ROOT);
}

#[test]
fn roots_of_every_size() {
    let leaves = leaves();
    for size in 1..=8 {
        let expected = hex32(ROOTS[size - 1]);
        let stored = Stored::of(&leaves[..size]);
        assert_eq!(
            reference::root(&leaves[..size]),
            expected,
            "reference, size {size}"
        );
        assert_eq!(stored.frontier.root(), expected, "frontier, size {size}");
        // The root of a smaller tree from the bigger tree's stored nodes.
        let all = Stored::of(&leaves);
        assert_eq!(
            root(size as u64, all.lookup()).unwrap(),
            expected,
            "stored nodes, size {size}"
        );
    }
}

#[test]
fn inclusion_vectors() {
    let leaves = leaves();
    let all = Stored::of(&leaves);
    let cases: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (index, size, expected) in cases {
        let expected: Vec<_> = expected.iter().map(|h| hex32(h)).collect();
        let proof = inclusion_proof(index, size, all.lookup()).unwrap();
        assert_eq!(proof, expected, "inclusion of {index} in {size}");
        assert_eq!(
            reference::inclusion_proof(index as usize, &leaves[..size as usize]).unwrap(),
            expected
        );
        let root = hex32(ROOTS[size as usize - 1]);
        verify_inclusion(index, size, &leaves[index as usize], &proof, &root).unwrap();
    }
}

#[test]
fn consistency_vectors() {
    let leaves = leaves();
    let all = Stored::of(&leaves);
    let cases: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (first, second, expected) in cases {
        let expected: Vec<_> = expected.iter().map(|h| hex32(h)).collect();
        let proof = consistency_proof(first, second, all.lookup()).unwrap();
        assert_eq!(proof, expected, "consistency {first} → {second}");
        assert_eq!(
            reference::consistency_proof(first as usize, &leaves[..second as usize]).unwrap(),
            expected
        );
        verify_consistency(
            first,
            second,
            &hex32(ROOTS[first as usize - 1]),
            &hex32(ROOTS[second as usize - 1]),
            &proof,
        )
        .unwrap();
    }
}
