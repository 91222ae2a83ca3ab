//! Validated identifiers and short texts. Parsed once at the edge, carried as newtypes after.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::limits;

/// Why a field was rejected at the edge. `field` is filled in by the caller that knows the
/// field's path in the request (`dossier_id`, `profile.agency`…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct FieldError {
    pub reason: String,
}

impl FieldError {
    pub fn new(reason: impl Into<String>) -> Self {
        FieldError {
            reason: reason.into(),
        }
    }
}

fn check_code(
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    what: &str,
) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(format!("{what} must not be empty")));
    }
    if value.len() > max {
        return Err(FieldError::new(format!(
            "{what} must be at most {max} characters"
        )));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(FieldError::new(format!(
            "{what} contains the character {bad:?}, which is not allowed"
        )));
    }
    Ok(())
}

macro_rules! code_type {
    ($(#[$doc:meta])* $name:ident, $max:expr, $allowed:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, FieldError> {
                let value = value.into();
                check_code(&value, $max, $allowed, $what)?;
                Ok($name(value))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = FieldError;
            fn try_from(value: String) -> Result<Self, FieldError> {
                Self::parse(value)
            }
        }
        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn code_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')
}

code_type!(
    /// The dossier's code (mã hồ sơ), chosen by the counter software, e.g. `H40.22-240115-0003`.
    DossierId, limits::DOSSIER_ID_MAX_CHARS, code_char, "dossier id"
);
code_type!(
    /// An agency's code (mã định danh), e.g. `000.00.12.H40`. No `_`, so the NATS subject token
    /// (dots mapped to `_`) maps back one to one.
    AgencyCode, limits::AGENCY_CODE_MAX_CHARS, |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'), "agency code"
);
code_type!(
    /// A sector (lĩnh vực) code, e.g. `land`, `business-registration`, `G01`. One subject token.
    SectorCode, limits::SECTOR_CODE_MAX_CHARS, |c: char| c.is_ascii_alphanumeric() || c == '-', "sector code"
);
code_type!(
    /// A published procedure's code (mã TTHC), e.g. `1.001234`.
    ProcedureCode, limits::PROCEDURE_CODE_MAX_CHARS, code_char, "procedure code"
);
code_type!(
    /// A dossier component's code (thành phần hồ sơ) within its procedure.
    ComponentCode, limits::COMPONENT_CODE_MAX_CHARS, code_char, "component code"
);
code_type!(
    /// The payment platform's transaction id; a platform calling back twice sends it twice.
    TransactionId, limits::TRANSACTION_ID_MAX_CHARS, |c: char| c.is_ascii_graphic(), "transaction id"
);

/// A free text the counter writes (a reason, a document reference): non-blank, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Text(String);

impl Text {
    pub const MAX_CHARS: usize = limits::TEXT_MAX_CHARS;

    pub fn parse(value: impl Into<String>) -> Result<Self, FieldError> {
        let value = value.into();
        if value.trim().is_empty() {
            return Err(FieldError::new("must not be blank"));
        }
        if value.chars().count() > Self::MAX_CHARS {
            return Err(FieldError::new(format!(
                "must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        if value.chars().any(|c| c.is_control() && c != '\n') {
            return Err(FieldError::new("must not contain control characters"));
        }
        Ok(Text(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Text {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, FieldError> {
        Self::parse(value)
    }
}
impl From<Text> for String {
    fn from(value: Text) -> String {
        value.0
    }
}

/// The client-chosen id of one event: the idempotency key of the request that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let id = Uuid::parse_str(value).map_err(|_| FieldError::new("must be a UUID"))?;
        Self::from_uuid(id)
    }
    pub fn from_uuid(id: Uuid) -> Result<Self, FieldError> {
        if id.is_nil() {
            return Err(FieldError::new("must not be the nil UUID"));
        }
        Ok(EventId(id))
    }
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
