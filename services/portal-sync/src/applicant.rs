//! The applicant seam: the one place where the applicant's personal data enters the portal
//! records (`ChuHoSo`, `SoGiayToChuHoSo`, `Email`, `SoDienThoai`, `DinhDanhCHS`).
//!
//! The `received` event holds the applicant sealed (crate `personal`); [`ApplicantReader`]
//! opens it through the [`personal::Vault`] as the service `portal-sync` for the purpose
//! "national portal synchronisation" — every open writes a row of `personal_access_log`.
//!
//! | the dossier | the record |
//! |---|---|
//! | received without an applicant (older events, imports) | no personal field, `DinhDanhCHS` empty |
//! | applicant erased (its key destroyed) | the same: nothing personal is sent again; the portal keeps or drops its earlier copy by its own rules |
//! | applicant readable | `ChuHoSo` = name, `SoGiayToChuHoSo` = document number, `Email`, `SoDienThoai`; `DinhDanhCHS` = the document when it is a CCCD (`LoaiDinhDanh` 1) or a CMND (2) |
//! | sealed, but no master keys configured, no key stored, or it does not open | an error: the dossier is retried later (never sent without its applicant) |
//!
//! None of these values is logged, put in a metric, an error message or a table of this
//! service (`Debug` of [`ApplicantFields`] is redacted).

use domain::{DossierEvent, DossierId, Event};
use personal::{DocumentKind, Opened, Reader, Vault, VaultError};
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

    fn of(applicant: &personal::Applicant) -> ApplicantFields {
        let code = match applicant.document.kind {
            DocumentKind::Cccd => Some(1),
            DocumentKind::Cmnd => Some(2),
            DocumentKind::Passport | DocumentKind::TaxCode | DocumentKind::Other => None,
        };
        ApplicantFields {
            owner_name: Some(applicant.owner_name.clone()),
            document_number: Some(applicant.document.number.clone()),
            email: applicant.email.clone(),
            phone: applicant.phone.clone(),
            identities: code
                .map(|loai_dinh_danh| Identity {
                    loai_dinh_danh,
                    so_dinh_danh: applicant.document.number.clone(),
                })
                .into_iter()
                .collect(),
        }
    }
}

/// Why the applicant's fields cannot be read now (the dossier is retried later). The message
/// names no personal value.
#[derive(Debug, thiserror::Error)]
#[error("applicant data unavailable: {0}")]
pub struct ApplicantError(pub String);

/// The purpose recorded in the access log.
pub const PURPOSE: &str = "national portal synchronisation";

/// Reads the applicant's fields of a dossier from its events.
#[derive(Debug, Clone, Default)]
pub struct ApplicantReader {
    /// `None`: no master keys configured (a sealed applicant is then an error).
    vault: Option<Vault>,
}

impl ApplicantReader {
    pub fn new(vault: Option<Vault>) -> ApplicantReader {
        ApplicantReader { vault }
    }

    /// The applicant of the dossier `dossier_id`, from its `events` (oldest first).
    pub async fn fields(
        &self,
        dossier_id: &str,
        events: &[Event],
    ) -> Result<ApplicantFields, ApplicantError> {
        let sealed = events.iter().find_map(|e| match &e.body {
            DossierEvent::Received { applicant, .. } => applicant.as_ref(),
            _ => None,
        });
        let Some(sealed) = sealed else {
            return Ok(ApplicantFields::unknown());
        };
        let vault = self.vault.as_ref().ok_or_else(|| {
            ApplicantError(
                "the dossier's applicant is sealed and no master keys are configured \
                 (auth.master_keys_file or MOTCUA_MASTER_KEYS)"
                    .to_owned(),
            )
        })?;
        let dossier =
            DossierId::parse(dossier_id).map_err(|e| ApplicantError(format!("dossier id: {e}")))?;
        let reader = Reader::service("portal-sync", PURPOSE);
        match vault.open(&reader, &dossier, sealed).await {
            Ok(Opened::Applicant(applicant)) => Ok(ApplicantFields::of(&applicant)),
            Ok(Opened::Erased { .. }) | Err(VaultError::Erased { .. }) => {
                Ok(ApplicantFields::unknown())
            }
            Err(e) => Err(ApplicantError(e.to_string())),
        }
    }
}
