//! The gRPC side of the write path (`writepath`): the request fingerprints and the mapping of
//! its typed errors to statuses ([`status`], [`forbidden`]; functions, as neither type is this
//! crate's). The write path itself knows no gRPC.

use sha2::{Digest, Sha256};
use tonic::Status;
use writepath::{Forbidden, WriteError};

use crate::status;

/// The status a service answers for a write path error.
pub fn status(e: WriteError) -> Status {
    match e {
        WriteError::Refused(r) => status::refusal(&r),
        WriteError::Forbidden(f) => forbidden(f),
        WriteError::EventIdReused(id) => status::with_reason(
            tonic::Code::AlreadyExists,
            "event_id_reused",
            format!(
                "event_id {id} was already used for a different request; choose a new event_id"
            ),
        ),
        e @ WriteError::Conflict { .. } => {
            status::with_reason(tonic::Code::Aborted, "version_conflict", e.to_string())
        }
        WriteError::EventTooLarge(e) => status::event_too_large(e),
        WriteError::Unavailable(e) => status::unavailable(e),
        e @ WriteError::Undecodable(_) => status::internal(e),
        WriteError::Internal(e) => status::internal(e),
    }
}

/// PERMISSION_DENIED with the reason.
pub fn forbidden(f: Forbidden) -> Status {
    Status::permission_denied(f.to_string())
}

/// SHA-256 over a request's method name and protobuf encoding: equal for a retried request.
pub fn fingerprint(method: &str, request: &impl prost::Message) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update([0u8]);
    h.update(request.encode_to_vec());
    h.finalize().into()
}

/// The fingerprint of a request that carries personal data: [`fingerprint`] of the request
/// with its personal fields cleared, combined with `personal_mac`, a digest of those fields
/// keyed by the dossier's data key (`personal::DataKey::fingerprint`). A retry still matches,
/// but the stored fingerprint (also published as the relay's `Dossier-Fingerprint` header) is
/// no unsalted hash of a phone or identity number that anyone could search by trial, and it
/// means nothing once the key is erased.
pub fn fingerprint_with_personal(
    method: &str,
    request_without_personal: &impl prost::Message,
    personal_mac: [u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(fingerprint(method, request_without_personal));
    h.update(b"\0personal\0");
    h.update(personal_mac);
    h.finalize().into()
}
