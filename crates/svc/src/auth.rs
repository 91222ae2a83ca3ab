//! Bearer tokens → principals. The tokens file holds only SHA-256 hashes of tokens, never the
//! tokens themselves (`cargo xtask token` makes a token and its entry):
//!
//! ```toml
//! [[token]]
//! name = "Counter 1, provincial centre"
//! agency = "000.00.01.H40"      # or "*" for importer/auditor tokens that span agencies
//! level = "province"
//! role = "counter"              # counter | importer | auditor | admin
//! sha256 = "…64 hex digits…"
//! scopes = ["personal_data"]     # optional: personal_data (read any applicant), erasure
//! ```

use std::collections::HashMap;
use std::path::Path;

use domain::{AgencyCode, Level};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::Status;
use writepath::Forbidden;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A one-stop counter (or an agency's processing desk): writes dossiers of its agency.
    Counter,
    /// A migration tool: imports history for any agency; nothing else.
    Importer,
    /// Read-only: every write is refused.
    Auditor,
    /// Changes reference data (the procedure catalogue); writes no dossier.
    Admin,
}

/// A right granted to a token beyond its role (`scopes = [...]` in the tokens file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Read any dossier's applicant (`ApplicantService.GetApplicant`) and the access log; every
    /// read is recorded.
    PersonalData,
    /// Erase an applicant's data and re-wrap data keys (an administrator).
    Erasure,
}

/// Who is calling, as established from the bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    /// `None` for a token valid for every agency (`agency = "*"`).
    pub agency: Option<AgencyCode>,
    pub level: Option<Level>,
    pub role: Role,
    /// Rights beyond the role.
    pub scopes: Vec<Scope>,
}

impl Principal {
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Whether this principal may read the applicant of `dossier`: a counter of the agency that
    /// received or holds it, or a token with the `personal_data` scope.
    pub fn may_read_personal(&self, dossier: &domain::Dossier) -> Result<(), Status> {
        if self.has_scope(Scope::PersonalData)
            || (self.role == Role::Counter && self.may_act_on(dossier).is_ok())
        {
            return Ok(());
        }
        Err(Status::permission_denied(
            "only the agency holding the dossier, or a token granted the personal_data scope, may read its applicant",
        ))
    }

    pub fn require_scope(&self, scope: Scope) -> Result<(), Status> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this token is not granted the {} scope",
                match scope {
                    Scope::PersonalData => "personal_data",
                    Scope::Erasure => "erasure",
                }
            )))
        }
    }

    /// Whether this principal may write dossiers of `agency` as a counter.
    pub fn may_write_for(&self, agency: &AgencyCode) -> Result<(), Status> {
        match self.role {
            Role::Counter if self.agency.as_ref() == Some(agency) => Ok(()),
            Role::Counter => Err(Status::permission_denied(format!(
                "token of {} may not write dossiers of agency {agency}",
                self.agency.as_ref().map_or("(no agency)", |a| a.as_str())
            ))),
            Role::Importer => Err(Status::permission_denied(
                "importer tokens may only import history",
            )),
            Role::Auditor => Err(Status::permission_denied("auditor tokens are read-only")),
            Role::Admin => Err(admin_writes_no_dossier()),
        }
    }

    /// Whether this principal may act on an existing dossier: a counter of the agency that
    /// received it or of the agency holding it now (after a transfer). A dossier not received
    /// yet passes (the rules then answer NOT_FOUND).
    pub fn may_act_on(&self, dossier: &domain::Dossier) -> Result<(), Status> {
        self.may_write_on(dossier).map_err(crate::write::forbidden)
    }

    /// [`may_act_on`](Self::may_act_on) with its typed reason: what the write path's
    /// authorization answers.
    pub fn may_write_on(&self, dossier: &domain::Dossier) -> Result<(), Forbidden> {
        self.require_counter()
            .map_err(|s| Forbidden::NoDossierWrites(s.message().to_owned()))?;
        let Some(profile) = &dossier.profile else {
            return Ok(());
        };
        match &self.agency {
            Some(mine)
                if *mine == profile.agency || dossier.current_agency.as_ref() == Some(mine) =>
            {
                Ok(())
            }
            _ => Err(Forbidden::OtherAgency {
                caller: self.agency.clone(),
                received_by: profile.agency.clone(),
                held_by: dossier
                    .current_agency
                    .clone()
                    .unwrap_or_else(|| profile.agency.clone()),
            }),
        }
    }

    /// Counters write (each its own agency's dossiers, checked per dossier); others do not.
    pub fn require_counter(&self) -> Result<(), Status> {
        match self.role {
            Role::Counter => Ok(()),
            Role::Importer => Err(Status::permission_denied(
                "importer tokens may only import history",
            )),
            Role::Auditor => Err(Status::permission_denied("auditor tokens are read-only")),
            Role::Admin => Err(admin_writes_no_dossier()),
        }
    }

    pub fn require_importer(&self) -> Result<(), Status> {
        match self.role {
            Role::Importer => Ok(()),
            Role::Auditor => Err(Status::permission_denied("auditor tokens are read-only")),
            Role::Counter | Role::Admin => Err(Status::permission_denied(
                "only importer tokens may import history",
            )),
        }
    }

    /// Reference data (the procedure catalogue) is changed by administrator tokens only.
    pub fn require_admin(&self) -> Result<(), Status> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(Status::permission_denied(
                "only administrator tokens may change reference data (the procedure catalogue, the agency structure)",
            )),
        }
    }
}

fn admin_writes_no_dossier() -> Status {
    Status::permission_denied("administrator tokens change reference data, never dossiers")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    agency: String,
    level: Option<String>,
    role: Role,
    sha256: String,
    #[serde(default)]
    scopes: Vec<Scope>,
}

/// Why the tokens file was refused at start; the service does not start with a bad file.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tokens file: {0}")]
    Invalid(String),
}

/// The known tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Tokens, TokensError> {
        let file: TokensFile =
            toml::from_str(text).map_err(|e| TokensError::Invalid(e.to_string()))?;
        let mut by_hash = HashMap::new();
        for entry in file.token {
            let invalid =
                |what: String| TokensError::Invalid(format!("token {:?}: {what}", entry.name));
            let mut hash = [0u8; 32];
            hex::decode_to_slice(entry.sha256.trim(), &mut hash)
                .map_err(|_| invalid("sha256 must be 64 hex digits".into()))?;
            let agency = match entry.agency.as_str() {
                "*" => None,
                code => Some(AgencyCode::parse(code).map_err(|e| invalid(e.to_string()))?),
            };
            if agency.is_none() && entry.role == Role::Counter {
                return Err(invalid("a counter token must name one agency".into()));
            }
            let level = match entry.level.as_deref() {
                None => None,
                Some(text) => Some(
                    Level::parse(text).ok_or_else(|| invalid(format!("unknown level {text:?}")))?,
                ),
            };
            let principal = Principal {
                name: entry.name.clone(),
                agency,
                level,
                role: entry.role,
                scopes: entry.scopes.clone(),
            };
            if by_hash.insert(hash, principal).is_some() {
                return Err(invalid("the same token hash appears twice".into()));
            }
        }
        Ok(Tokens { by_hash })
    }

    /// Adds a token (tests and tools).
    pub fn insert(&mut self, token: &str, principal: Principal) {
        self.by_hash.insert(hash_token(token), principal);
    }

    /// Establishes the caller from `authorization: Bearer <token>`.
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Principal, Status> {
        let header = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing authorization: Bearer <token> metadata")
        })?;
        let header = header
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not valid text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be: Bearer <token>"))?;
        self.by_hash
            .get(&hash_token(token.trim()))
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(agency: &str, role: &str) -> String {
        format!(
            "[[token]]\nname = \"t\"\nagency = \"{agency}\"\nlevel = \"district\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            hex::encode(hash_token("secret"))
        )
    }

    fn meta(value: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    #[test]
    fn authenticates_known_tokens_only() {
        let tokens = Tokens::parse(&file("000.00.12.H40", "counter")).unwrap();
        let p = tokens.authenticate(&meta("Bearer secret")).unwrap();
        assert_eq!(p.agency.unwrap().as_str(), "000.00.12.H40");
        assert_eq!(p.level, Some(Level::District));
        for bad in ["Bearer wrong", "secret", "Basic secret"] {
            let err = tokens.authenticate(&meta(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        let err = tokens
            .authenticate(&tonic::metadata::MetadataMap::new())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn counters_write_only_their_agency_and_auditors_nothing() {
        let tokens = Tokens::parse(&file("000.00.12.H40", "counter")).unwrap();
        let p = tokens.authenticate(&meta("Bearer secret")).unwrap();
        assert!(
            p.may_write_for(&AgencyCode::parse("000.00.12.H40").unwrap())
                .is_ok()
        );
        let err = p
            .may_write_for(&AgencyCode::parse("000.00.13.H40").unwrap())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            p.require_importer().unwrap_err().code(),
            tonic::Code::PermissionDenied
        );

        let auditor = Tokens::parse(&file("*", "auditor")).unwrap();
        let a = auditor.authenticate(&meta("Bearer secret")).unwrap();
        assert_eq!(
            a.may_write_for(&AgencyCode::parse("000.00.12.H40").unwrap())
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            a.require_importer().unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(Tokens::parse(&file("*", "counter")).is_err());
        assert!(Tokens::parse(&file("bad_agency", "counter")).is_err());
        assert!(
            Tokens::parse("[[token]]\nname=\"x\"\nagency=\"A\"\nrole=\"counter\"\nsha256=\"zz\"")
                .is_err()
        );
        let twice = format!("{}{}", file("A", "counter"), file("B", "counter"));
        assert!(Tokens::parse(&twice).is_err());
    }
}
