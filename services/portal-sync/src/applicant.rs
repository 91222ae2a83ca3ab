//! The applicant seam: the one place where the applicant's personal data enters the portal
//! records (`ChuHoSo`, `SoGiayToChuHoSo`, `Email`, `SoDienThoai`, `DinhDanhCHS`).
//!
//! The events do not carry the applicant yet (issue 12, the personal-data part, adds it
//! encrypted in the events with a library to decrypt it). Until then [`ApplicantReader`]
//! answers [`ApplicantFields::unknown`] for every dossier, and the records are sent without
//! those fields.
//!
//! Behaviour to keep when the decryption is wired here: an applicant whose key was erased (the
//! right to erasure) is [`ApplicantFields::unknown`] too — the record is sent without personal
//! fields and `DinhDanhCHS` empty; the portal keeps or drops its earlier copy by its own rules;
//! nothing erased is ever sent again. None of these values is logged, put in a metric or an
//! error message.

use eventlog::StoredEvent;
use serde::Serialize;

use crate::shapes::Identity;

/// The applicant's fields as the portal records carry them.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplicantFields {
    pub owner_name: Option<String>,
    pub document_number: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub identities: Vec<Identity>,
}

impl std::fmt::Debug for ApplicantFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Personal data: never printed.
        f.write_str("ApplicantFields { .. }")
    }
}

impl ApplicantFields {
    /// Not recorded, or erased.
    pub fn unknown() -> ApplicantFields {
        ApplicantFields::default()
    }
}

/// Why the applicant's fields cannot be read now (the dossier is retried later).
#[derive(Debug, thiserror::Error)]
#[error("applicant data unavailable: {0}")]
pub struct ApplicantError(pub String);

/// Reads the applicant's fields of a dossier from its events.
#[derive(Debug, Clone, Default)]
pub struct ApplicantReader {}

impl ApplicantReader {
    pub fn new() -> ApplicantReader {
        ApplicantReader {}
    }

    /// The applicant of the dossier `_dossier_id`, from its `_events` (oldest first).
    pub async fn fields(
        &self,
        _dossier_id: &str,
        _events: &[StoredEvent],
    ) -> Result<ApplicantFields, ApplicantError> {
        Ok(ApplicantFields::unknown())
    }
}
