//! `verify` against tampering as a database superuser with the immutability triggers bypassed:
//! each case is caught and the first wrong position named.

use audit::verify::{Outcome, Problem};

use crate::support::*;

/// 12 events in 3 dossiers, checkpointed at 8 and 12.
async fn checkpointed_log() -> (testkit::TestDb, eventlog::EventLog) {
    let (db, log) = setup().await;
    append(&log, &["A1", "B1"], 4).await;
    tick(&log).await;
    append(&log, &["C1"], 4).await;
    tick(&log).await;
    assert_intact(&log).await;
    (db, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_payload_is_named() {
    let (db, log) = checkpointed_log().await;
    tamper(
        &db,
        &["UPDATE events SET payload = jsonb_set(payload, '{n}', '7') WHERE position = 7"],
    )
    .await;
    assert_finding(&log, 7, Problem::EventHash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_row_after_the_last_checkpoint_is_named_too() {
    let (db, log) = checkpointed_log().await;
    append(&log, &["D1"], 3).await;
    tamper(
        &db,
        &["UPDATE events SET agency = 'elsewhere' WHERE position = 14"],
    )
    .await;
    assert_finding(&log, 14, Problem::EventHash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_named() {
    let (db, log) = checkpointed_log().await;
    tamper(&db, &["DELETE FROM events WHERE position = 5"]).await;
    assert_finding(&log, 5, Problem::Missing { next: Some(6) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_last_row_is_named() {
    let (db, log) = checkpointed_log().await;
    tamper(&db, &["DELETE FROM events WHERE position = 12"]).await;
    assert_finding(&log, 12, Problem::Missing { next: None }).await;

    // Even with log_head moved back and no checkpoint of 12 left to tell.
    let (db, log) = setup().await;
    append(&log, &["A1"], 5).await;
    tick(&log).await;
    append(&log, &["B1"], 1).await;
    tamper(
        &db,
        &[
            "DELETE FROM events WHERE position = 6",
            "UPDATE log_head SET position = 5, chain_hash = (SELECT chain_hash FROM events WHERE position = 5)",
        ],
    )
    .await;
    // Undetectable without a checkpoint covering it: a truncated tail looks like a shorter log.
    // This is why checkpoints are published outside the database (NATS) and kept by auditors.
    assert!(matches!(verify(&log).await, Outcome::Intact(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_rows_are_named() {
    let (db, log) = checkpointed_log().await;
    tamper(
        &db,
        &[
            "UPDATE events SET position = 1000 WHERE position = 3",
            "UPDATE events SET position = 3 WHERE position = 9",
            "UPDATE events SET position = 9 WHERE position = 1000",
        ],
    )
    .await;
    assert_finding(&log, 3, Problem::EventHash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_contents_with_their_hashes_are_named() {
    let (db, log) = checkpointed_log().await;
    // Everything but the position moves: each row still carries the hash of its own content,
    // but the content says another position.
    tamper(
        &db,
        &[
            "CREATE TEMP TABLE a AS SELECT * FROM events WHERE position = 2",
            "CREATE TEMP TABLE b AS SELECT * FROM events WHERE position = 6",
            "DELETE FROM events WHERE position IN (2, 6)",
            "INSERT INTO events SELECT 2, event_id, dossier_id, version, event_type, occurred_at, recorded_at, level, agency, sector, payload, fingerprint, event_hash, chain_hash FROM b",
            "INSERT INTO events SELECT 6, event_id, dossier_id, version, event_type, occurred_at, recorded_at, level, agency, sector, payload, fingerprint, event_hash, chain_hash FROM a",
        ],
    )
    .await;
    assert_finding(&log, 2, Problem::EventHash).await;
}

/// The attacker alters an event and recomputes its event_hash, every later chain hash and the
/// head, so the chain alone verifies. The Merkle leaf recorded at checkpointing names the
/// position; with that rewritten as well, the signed checkpoint still refuses the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consistently_recomputed_chain_is_caught_by_the_checkpoint() {
    let (db, log) = checkpointed_log().await;
    let mut events = log.read_after(0, 100).await.unwrap();
    events[3].payload = serde_json::json!({"note": "forged", "n": 1000, "ok": true});
    let mut chain = eventlog::GENESIS_CHAIN_HASH;
    let mut statements = Vec::new();
    for e in &mut events {
        e.event_hash = eventlog::event_hash(&eventlog::canonical_bytes(e));
        chain = eventlog::chain_hash(&chain, &e.event_hash);
        e.chain_hash = chain;
        statements.push(format!(
            "UPDATE events SET payload = '{}'::jsonb, event_hash = '\\x{}', chain_hash = '\\x{}' WHERE position = {}",
            e.payload,
            hex::encode(e.event_hash),
            hex::encode(e.chain_hash),
            e.position
        ));
    }
    statements.push(format!(
        "UPDATE log_head SET chain_hash = '\\x{}'",
        hex::encode(chain)
    ));
    let refs: Vec<&str> = statements.iter().map(String::as_str).collect();
    tamper(&db, &refs).await;
    // The chain and every event hash are consistent again…
    let reread = log.read_after(0, 100).await.unwrap();
    assert_eq!(reread, events);
    // …but the leaf checkpointed for position 4 is not the new hash.
    assert_finding(&log, 4, Problem::TreeLeaf).await;

    // The attacker rewrites the Merkle leaf too: the signed root of 8 no longer comes out.
    tamper(
        &db,
        &[&format!(
            "UPDATE merkle_nodes SET hash = '\\x{}' WHERE level = 0 AND idx = 3",
            hex::encode(events[3].event_hash)
        )],
    )
    .await;
    assert_finding(&log, 8, Problem::CheckpointRoot { tree_size: 8 }).await;
    // Without the public key too: the root is compared with the stored note's root.
    let unsigned = audit::verify::verify_database(log.pool(), None)
        .await
        .unwrap();
    assert!(
        matches!(unsigned, Outcome::Tampered(f) if f.problem == Problem::CheckpointRoot { tree_size: 8 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_edited_checkpoint_is_refused() {
    let (db, log) = checkpointed_log().await;
    // Signed by another key.
    let other = merkle::Signer::from_seed(ORIGIN, [1; 32])
        .unwrap()
        .verifier();
    let outcome = audit::verify::verify_database(log.pool(), Some(&other))
        .await
        .unwrap();
    assert!(
        matches!(&outcome, Outcome::Tampered(f) if f.position == 8 && matches!(f.problem, Problem::Signature { tree_size: 8, .. })),
        "{outcome:?}"
    );
    // The note's root edited (and the column with it).
    tamper(
        &db,
        &["UPDATE checkpoints SET note = replace(note, '\n12\n', '\n13\n'), tree_size = 13 WHERE tree_size = 12"],
    )
    .await;
    let outcome = verify(&log).await;
    assert!(
        matches!(&outcome, Outcome::Tampered(f) if matches!(f.problem, Problem::Signature { tree_size: 13, .. })),
        "{outcome:?}"
    );
}
