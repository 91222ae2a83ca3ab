//! Checkpoints: made when the log grew, signed, consistent, proofs against them, several
//! instances at once.

use audit::proofs;
use merkle::{verify_consistency, verify_inclusion};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_signed_when_the_log_grew_and_not_otherwise() {
    let (_db, log) = setup().await;
    // An empty log has nothing to sign.
    let t = tick(&log).await;
    assert_eq!((t.extended, t.signed.is_none()), (0, true));

    let events = append(&log, &["A1", "B1", "C1"], 4).await;
    let t = tick(&log).await;
    assert_eq!(t.extended, 12);
    let first = t.signed.expect("a checkpoint of 12");
    assert_eq!(first.tree_size, 12);
    let leaves: Vec<_> = events.iter().map(|e| e.event_hash).collect();
    assert_eq!(first.root, merkle::reference::root(&leaves));
    let stated = verifier().verify(&first.note).expect("signature");
    assert_eq!(
        (stated.size, stated.root, stated.origin.as_str()),
        (12, first.root, ORIGIN)
    );

    // Nothing new: no second checkpoint.
    let t = tick(&log).await;
    assert_eq!((t.extended, t.signed), (0, None));

    append(&log, &["A1"], 3).await;
    let second = tick(&log).await.signed.expect("a checkpoint of 15");
    assert_eq!(second.tree_size, 15);

    let mut conn = log.pool().acquire().await.unwrap();
    let proof = proofs::consistency(&mut conn, 12, 15).await.unwrap();
    verify_consistency(12, 15, &first.root, &second.root, &proof).unwrap();

    let report = assert_intact(&log).await;
    assert_eq!((report.events, report.checkpoints), (15, 2));
    assert_eq!(report.latest, Some((15, second.root)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_has_an_inclusion_proof_against_every_later_checkpoint() {
    let (_db, log) = setup().await;
    let mut events = append(&log, &["A1", "B1"], 5).await;
    let c10 = tick(&log).await.signed.unwrap();
    events.extend(append(&log, &["C1", "A1", "D1"], 3).await);
    let c19 = tick(&log).await.signed.unwrap();
    let mut conn = log.pool().acquire().await.unwrap();
    for c in [&c10, &c19] {
        for e in events.iter().filter(|e| e.position as u64 <= c.tree_size) {
            let p = proofs::inclusion(&mut conn, e.position as u64, c.tree_size)
                .await
                .unwrap();
            assert_eq!(p.leaf_hash, e.event_hash);
            verify_inclusion(
                e.position as u64 - 1,
                c.tree_size,
                &e.event_hash,
                &p.hashes,
                &c.root,
            )
            .unwrap_or_else(|err| panic!("position {} in {}: {err}", e.position, c.tree_size));
        }
    }
    // An event newer than the checkpoint has no proof against it.
    assert!(matches!(
        proofs::inclusion(&mut conn, 11, 10).await,
        Err(proofs::ProveError::NotInTree {
            position: 11,
            tree_size: 10
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_checkpointing_at_once_write_each_node_and_checkpoint_once() {
    let (_db, log) = setup().await;
    for round in 0..4 {
        append(&log, &["A1", "B1", "C1"], round + 1).await;
        let instances: Vec<_> = (0..3)
            .map(|_| {
                let c = checkpointer(&log);
                tokio::spawn(async move { c.tick().await })
            })
            .collect();
        let mut signed = Vec::new();
        for instance in instances {
            signed.extend(instance.await.unwrap().unwrap().signed);
        }
        assert_eq!(signed.len(), 1, "round {round}: one instance signs");
    }
    let nodes: i64 = sqlx::query_scalar("SELECT count(*) FROM merkle_nodes WHERE level = 0")
        .fetch_one(log.pool())
        .await
        .unwrap();
    assert_eq!(nodes, 30);
    let report = assert_intact(&log).await;
    assert_eq!((report.events, report.checkpoints), (30, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_catch_up_spans_several_batches() {
    let (_db, log) = setup().await;
    let n = audit::checkpointer::BATCH as usize + 37;
    let ids: Vec<String> = (0..n / 100 + 1).map(|i| format!("X{i:04}")).collect();
    let mut left = n;
    for id in &ids {
        let k = left.min(100);
        if k == 0 {
            break;
        }
        append(&log, &[id.as_str()], k).await;
        left -= k;
    }
    let t = tick(&log).await;
    assert_eq!(t.extended, n as u64);
    assert_eq!(t.signed.unwrap().tree_size, n as u64);
    assert_intact(&log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_refuses_to_sign_a_tampered_log() {
    let (db, log) = setup().await;
    append(&log, &["A1", "B1"], 3).await;
    tick(&log).await;
    append(&log, &["C1"], 3).await;
    // An event not yet checkpointed is altered: the checkpointer sees it does not match its hash.
    tamper(
        &db,
        &["UPDATE events SET payload = '{\"n\":99}' WHERE position = 8"],
    )
    .await;
    let err = checkpointer(&log).tick().await.unwrap_err();
    assert!(
        matches!(err, audit::CheckpointError::Tampered { position: 8, .. }),
        "{err}"
    );

    // A checkpointed leaf replaced in the tree: the next checkpoint would fork from the signed
    // one, and is refused.
    let (db, log) = setup().await;
    append(&log, &["A1", "B1"], 3).await;
    tick(&log).await;
    append(&log, &["C1"], 2).await;
    tamper(
        &db,
        &["UPDATE merkle_nodes SET hash = sha256('x') WHERE level = 2 AND idx = 0"],
    )
    .await;
    let err = checkpointer(&log).tick().await.unwrap_err();
    assert!(
        matches!(err, audit::CheckpointError::Inconsistent { size: 6 }),
        "{err}"
    );
}
