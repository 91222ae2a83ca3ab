//! The service as deployed: `AuditApp` on port 0, gRPC calls with tokens, checkpoints published
//! on a private NATS subject.

use std::net::SocketAddr;
use std::time::Duration;

use api::v1 as pb;
use api::v1::audit_service_client::AuditServiceClient;
use audit::{AuditApp, Publisher};
use svc::{Principal, Role, Tokens};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request};

use crate::support::*;

const TOKEN: &str = "auditor-token";

fn tokens() -> Tokens {
    let mut tokens = Tokens::default();
    tokens.insert(
        TOKEN,
        Principal {
            name: "auditor".into(),
            agency: None,
            level: None,
            role: Role::Auditor,
            scopes: Vec::new(),
        },
    );
    tokens
}

fn authorized<T>(message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_proofs_and_key_over_grpc_and_nats() {
    let (_db, log) = setup().await;
    let nats = testkit::TestNats::new().await;
    let publisher = Publisher::new(nats.jetstream(), &nats.stream, &nats.prefix);
    let events = append(&log, &["A1", "B1"], 3).await;
    let app = AuditApp::build_with(
        log.clone(),
        tokens(),
        signer(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(publisher.clone()),
        // Long: the test drives the checkpointer itself, except for the first tick at start.
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let addr = app.local_addr();
    let checkpointer = app.checkpointer();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let mut client = AuditServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    // The run loop's first tick signs the 6 events; wait for it through the API.
    let first = {
        let mut found = None;
        for _ in 0..200 {
            match client
                .get_checkpoint(authorized(pb::GetCheckpointRequest { tree_size: 0 }))
                .await
            {
                Ok(c) => {
                    found = Some(c.into_inner());
                    break;
                }
                Err(s) if s.code() == Code::NotFound => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(s) => panic!("{s:?}"),
            }
        }
        found.expect("the first checkpoint within 5 s")
    };
    assert_eq!(first.tree_size, 6);
    let key = client
        .get_public_key(authorized(pb::GetPublicKeyRequest {}))
        .await
        .unwrap()
        .into_inner();
    let verifier = merkle::VerifierKey::parse(&key.verifier_key).unwrap();
    assert_eq!(verifier, signer().verifier());
    assert_eq!(key.key_id, format!("{:08x}", verifier.key_id));
    let stated = verifier.verify(&first.note).unwrap();
    assert_eq!(stated.root.to_vec(), first.root_hash);

    append(&log, &["C1"], 4).await;
    let tick = checkpointer.tick().await.unwrap();
    assert_eq!(tick.signed.as_ref().map(|c| c.tree_size), Some(10));
    assert!(tick.published);

    // Inclusion by event id against the latest, and by position against the first.
    let proof = client
        .get_inclusion_proof(authorized(pb::GetInclusionProofRequest {
            event: Some(pb::get_inclusion_proof_request::Event::EventId(
                events[4].event_id.to_string(),
            )),
            tree_size: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((proof.position, proof.leaf_index), (5, 4));
    let checkpoint = proof.checkpoint.unwrap();
    let root = verifier.verify(&checkpoint.note).unwrap().root;
    let hashes: Vec<merkle::Hash> = proof
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect();
    merkle::verify_inclusion(4, 10, &events[4].event_hash, &hashes, &root).unwrap();

    let err = client
        .get_inclusion_proof(authorized(pb::GetInclusionProofRequest {
            event: Some(pb::get_inclusion_proof_request::Event::Position(9)),
            tree_size: 6,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    let consistency = client
        .get_consistency_proof(authorized(pb::GetConsistencyProofRequest {
            first_size: 6,
            second_size: 0,
        }))
        .await
        .unwrap()
        .into_inner();
    let hashes: Vec<merkle::Hash> = consistency
        .hashes
        .iter()
        .map(|h| h.as_slice().try_into().unwrap())
        .collect();
    let first_root = verifier
        .verify(&consistency.first.unwrap().note)
        .unwrap()
        .root;
    merkle::verify_consistency(6, 10, &first_root, &root, &hashes).unwrap();

    // Errors: no token, unknown checkpoint, malformed id.
    let err = client
        .get_checkpoint(Request::new(pb::GetCheckpointRequest { tree_size: 0 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .get_checkpoint(authorized(pb::GetCheckpointRequest { tree_size: 7 }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .get_inclusion_proof(authorized(pb::GetInclusionProofRequest {
            event: Some(pb::get_inclusion_proof_request::Event::EventId(
                "nope".into(),
            )),
            tree_size: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Sizes and positions beyond the log's BIGINT range name their field. They were once bound
    // as negative numbers: NOT_FOUND "no checkpoint of size 9223372036854775808" after a lookup
    // of size -9223372036854775808, and FAILED_PRECONDITION `event_not_checkpointed` for a
    // position no log can hold.
    let beyond = 1_u64 << 63;
    let field = |err: tonic::Status| {
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        use tonic_types::StatusExt;
        let details = err.get_details_bad_request().expect("BadRequest details");
        details.field_violations[0].field.clone()
    };
    let err = client
        .get_checkpoint(authorized(pb::GetCheckpointRequest { tree_size: beyond }))
        .await
        .unwrap_err();
    assert_eq!(field(err), "tree_size");
    let err = client
        .get_inclusion_proof(authorized(pb::GetInclusionProofRequest {
            event: Some(pb::get_inclusion_proof_request::Event::Position(u64::MAX)),
            tree_size: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(field(err), "position");
    let err = client
        .get_inclusion_proof(authorized(pb::GetInclusionProofRequest {
            event: Some(pb::get_inclusion_proof_request::Event::Position(1)),
            tree_size: beyond,
        }))
        .await
        .unwrap_err();
    assert_eq!(field(err), "tree_size");
    let err = client
        .get_consistency_proof(authorized(pb::GetConsistencyProofRequest {
            first_size: 6,
            second_size: u64::MAX,
        }))
        .await
        .unwrap_err();
    assert_eq!(field(err), "second_size");

    // Published: the latest checkpoint's note, on the checkpoints subject of a stream of its
    // own, not in the event stream's subject space.
    assert!(
        !publisher
            .subject()
            .starts_with(&format!("{}.", nats.prefix))
    );
    let stream = nats
        .jetstream()
        .get_stream(publisher.stream())
        .await
        .unwrap();
    let message = stream
        .get_last_raw_message_by_subject(publisher.subject())
        .await
        .unwrap();
    let note = String::from_utf8(message.payload.to_vec()).unwrap();
    assert_eq!(verifier.verify(&note).unwrap().size, 10);
    // Both checkpoints were published, once each.
    let info = nats
        .jetstream()
        .get_stream(publisher.stream())
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.state.messages, 2);

    shutdown.cancel();
    server.await.unwrap().unwrap();
    nats.jetstream()
        .delete_stream(publisher.stream())
        .await
        .unwrap();
}
