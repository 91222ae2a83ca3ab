//! The applicant as a counter records it, validated once at the edge. Pure: no I/O.
//!
//! Nothing here ever echoes a value: a refused field is named with what was wrong, never with
//! what was sent (error messages reach logs and clients). `Debug` is redacted for the same
//! reason.

use std::fmt;

use domain::ApplicantType;
use domain::limits::{
    APPLICANT_ADDRESS_MAX_CHARS, APPLICANT_DOCUMENT_MAX_CHARS, APPLICANT_EMAIL_MAX_CHARS,
    APPLICANT_NAME_MAX_CHARS, APPLICANT_PHONE_MAX_DIGITS,
};
use serde::{Deserialize, Serialize};

/// A refused applicant field: its path in the request and what was wrong (never the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ApplicantError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: &str, reason: impl Into<String>) -> ApplicantError {
    ApplicantError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The kind of identity document (giấy tờ tùy thân / định danh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// Citizen identity card (CCCD / thẻ căn cước): exactly 12 digits.
    Cccd,
    /// The former identity card (CMND): exactly 9 digits.
    Cmnd,
    /// Passport: 1–20 of `[A-Z0-9]`.
    Passport,
    /// Tax code (mã số thuế, also a business's registration number): 10 digits, or 10 digits,
    /// `-` and 3 digits for a branch.
    TaxCode,
    /// Any other paper (establishment decision…): 1–20 of `[A-Z0-9]`.
    Other,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Cccd => "cccd",
            DocumentKind::Cmnd => "cmnd",
            DocumentKind::Passport => "passport",
            DocumentKind::TaxCode => "tax_code",
            DocumentKind::Other => "other",
        }
    }

    /// Which kinds identify which applicant: a citizen by a personal paper, a business by its
    /// tax code, an organisation by its tax code or another paper.
    pub fn fits(self, applicant: ApplicantType) -> bool {
        use DocumentKind::*;
        match applicant {
            ApplicantType::Citizen => matches!(self, Cccd | Cmnd | Passport),
            ApplicantType::Business => matches!(self, TaxCode),
            ApplicantType::Organisation => matches!(self, TaxCode | Other),
        }
    }

    fn check(self, number: &str) -> Result<(), &'static str> {
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        let ok = match self {
            DocumentKind::Cccd => digits(number, 12),
            DocumentKind::Cmnd => digits(number, 9),
            DocumentKind::TaxCode => match number.split_once('-') {
                None => digits(number, 10),
                Some((head, branch)) => digits(head, 10) && digits(branch, 3),
            },
            DocumentKind::Passport | DocumentKind::Other => {
                !number.is_empty()
                    && number.len() <= APPLICANT_DOCUMENT_MAX_CHARS
                    && number
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            }
        };
        if ok {
            Ok(())
        } else {
            Err(match self {
                DocumentKind::Cccd => "a CCCD number is exactly 12 digits",
                DocumentKind::Cmnd => "a CMND number is exactly 9 digits",
                DocumentKind::TaxCode => "a tax code is 10 digits, or 10 digits, '-' and 3 digits",
                DocumentKind::Passport | DocumentKind::Other => {
                    "a document number is 1-20 of [A-Z0-9]"
                }
            })
        }
    }
}

/// An identity document: its kind and its number, checked against the kind.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityDocument {
    pub kind: DocumentKind,
    pub number: String,
}

/// The person submitting on the applicant's behalf (người nộp thay).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Representative {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<IdentityDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// The applicant (chủ hồ sơ), validated. This is the plaintext that is sealed into the
/// `received` event; its type is the dossier profile's `applicant_type`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Applicant {
    pub owner_name: String,
    pub document: IdentityDocument,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub representative: Option<Representative>,
}

impl fmt::Debug for Applicant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Applicant { <personal data redacted> }")
    }
}

impl fmt::Debug for IdentityDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IdentityDocument {{ kind: {:?}, <redacted> }}",
            self.kind
        )
    }
}

impl fmt::Debug for Representative {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Representative { <personal data redacted> }")
    }
}

/// A document as sent: its kind's name and its number.
#[derive(Debug, Clone, Copy)]
pub struct DocumentInput<'a> {
    pub kind: Option<DocumentKind>,
    pub number: &'a str,
}

/// What a request carries, before validation (empty strings are "absent" for optional fields).
#[derive(Debug, Clone, Copy)]
pub struct ApplicantInput<'a> {
    pub owner_name: &'a str,
    pub document: DocumentInput<'a>,
    pub phone: &'a str,
    pub email: &'a str,
    pub address: &'a str,
    pub representative: Option<RepresentativeInput<'a>>,
}

#[derive(Debug, Clone, Copy)]
pub struct RepresentativeInput<'a> {
    pub name: &'a str,
    pub document: Option<DocumentInput<'a>>,
    pub phone: &'a str,
}

impl Applicant {
    /// Validates a request's applicant for a dossier of `applicant_type`. `path` prefixes the
    /// field names in errors (`applicant`, `events[3].received.applicant`).
    pub fn parse(
        path: &str,
        input: &ApplicantInput<'_>,
        applicant_type: ApplicantType,
    ) -> Result<Applicant, ApplicantError> {
        let at = |field: &str| format!("{path}.{field}");
        let owner_document = document(&at("document"), &input.document)?;
        if !owner_document.kind.fits(applicant_type) {
            return Err(refuse(
                &at("document.kind"),
                format!(
                    "a document of kind {} does not identify an applicant of type {}",
                    owner_document.kind.as_str(),
                    applicant_type.as_str()
                ),
            ));
        }
        let representative = match &input.representative {
            None => None,
            Some(r) => {
                let rpath = at("representative");
                let rat = |field: &str| format!("{rpath}.{field}");
                Some(Representative {
                    name: text(&rat("name"), r.name, APPLICANT_NAME_MAX_CHARS)?,
                    document: r
                        .document
                        .as_ref()
                        .map(|d| document(&rat("document"), d))
                        .transpose()?,
                    phone: optional(r.phone, |p| phone(&rat("phone"), p))?,
                })
            }
        };
        Ok(Applicant {
            owner_name: text(
                &at("owner_name"),
                input.owner_name,
                APPLICANT_NAME_MAX_CHARS,
            )?,
            document: owner_document,
            phone: optional(input.phone, |p| phone(&at("phone"), p))?,
            email: optional(input.email, |e| email(&at("email"), e))?,
            address: optional(input.address, |a| {
                text(&at("address"), a, APPLICANT_ADDRESS_MAX_CHARS)
            })?,
            representative,
        })
    }

    /// Every personal string of the record (tests look for them where they must not be).
    pub fn personal_strings(&self) -> Vec<&str> {
        let mut out = vec![self.owner_name.as_str(), self.document.number.as_str()];
        out.extend(self.phone.as_deref());
        out.extend(self.email.as_deref());
        out.extend(self.address.as_deref());
        if let Some(r) = &self.representative {
            out.push(&r.name);
            out.extend(r.document.as_ref().map(|d| d.number.as_str()));
            out.extend(r.phone.as_deref());
        }
        out
    }
}

fn optional<T>(
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, ApplicantError>,
) -> Result<Option<T>, ApplicantError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

fn document(path: &str, input: &DocumentInput<'_>) -> Result<IdentityDocument, ApplicantError> {
    let kind = input
        .kind
        .ok_or_else(|| refuse(&format!("{path}.kind"), "is required"))?;
    kind.check(input.number)
        .map_err(|reason| refuse(&format!("{path}.number"), reason))?;
    Ok(IdentityDocument {
        kind,
        number: input.number.to_owned(),
    })
}

fn text(path: &str, value: &str, max: usize) -> Result<String, ApplicantError> {
    if value.trim().is_empty() {
        return Err(refuse(path, "is required and must not be blank"));
    }
    if value.chars().count() > max {
        return Err(refuse(path, format!("must be at most {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(refuse(path, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

fn phone(path: &str, value: &str) -> Result<String, ApplicantError> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if digits.len() < 8
        || digits.len() > APPLICANT_PHONE_MAX_DIGITS
        || !digits.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(refuse(
            path,
            format!(
                "a phone number is 8-{APPLICANT_PHONE_MAX_DIGITS} digits, optionally after '+'"
            ),
        ));
    }
    Ok(value.to_owned())
}

fn email(path: &str, value: &str) -> Result<String, ApplicantError> {
    let shape_ok = value.len() <= APPLICANT_EMAIL_MAX_CHARS
        && value.bytes().all(|b| b.is_ascii_graphic())
        && matches!(value.split_once('@'), Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@'));
    if !shape_ok {
        return Err(refuse(
            path,
            format!(
                "an e-mail address is at most {APPLICANT_EMAIL_MAX_CHARS} printable ASCII characters with one '@' between non-empty parts"
            ),
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(kind: DocumentKind, number: &'a str) -> ApplicantInput<'a> {
        ApplicantInput {
            owner_name: "Nguyễn Văn A",
            document: DocumentInput {
                kind: Some(kind),
                number,
            },
            phone: "0912345678",
            email: "a@example.vn",
            address: "1 Tràng Tiền, Hoàn Kiếm, Hà Nội",
            representative: None,
        }
    }

    #[test]
    fn documents_are_checked_against_their_kind_and_the_applicant_type() {
        use DocumentKind::*;
        let ok = [
            (Cccd, "001099012345", ApplicantType::Citizen),
            (Cmnd, "012345678", ApplicantType::Citizen),
            (Passport, "C1234567", ApplicantType::Citizen),
            (TaxCode, "0101234567", ApplicantType::Business),
            (TaxCode, "0101234567-001", ApplicantType::Organisation),
            (Other, "QD123", ApplicantType::Organisation),
        ];
        for (kind, number, t) in ok {
            Applicant::parse("applicant", &input(kind, number), t).unwrap();
        }
        let bad = [
            (
                Cccd,
                "00109901234",
                ApplicantType::Citizen,
                "document.number",
            ),
            (
                Cccd,
                "00109901234X",
                ApplicantType::Citizen,
                "document.number",
            ),
            (
                Cmnd,
                "0123456789",
                ApplicantType::Citizen,
                "document.number",
            ),
            (
                TaxCode,
                "0101234567-01",
                ApplicantType::Business,
                "document.number",
            ),
            (
                Passport,
                "c1234567",
                ApplicantType::Citizen,
                "document.number",
            ),
            (
                Cccd,
                "001099012345",
                ApplicantType::Business,
                "document.kind",
            ),
            (
                TaxCode,
                "0101234567",
                ApplicantType::Citizen,
                "document.kind",
            ),
        ];
        for (kind, number, t, field) in bad {
            let err = Applicant::parse("applicant", &input(kind, number), t).unwrap_err();
            assert_eq!(err.field, format!("applicant.{field}"), "{number}");
            assert!(!err.to_string().contains(number), "echoes the value: {err}");
        }
    }

    #[test]
    fn contacts_are_bounded_and_never_echoed() {
        let mut i = input(DocumentKind::Cccd, "001099012345");
        i.phone = "12345";
        let err = Applicant::parse("a", &i, ApplicantType::Citizen).unwrap_err();
        assert_eq!(err.field, "a.phone");
        assert!(!err.to_string().contains("12345"));
        let mut i = input(DocumentKind::Cccd, "001099012345");
        i.email = "no-at-sign";
        assert_eq!(
            Applicant::parse("a", &i, ApplicantType::Citizen)
                .unwrap_err()
                .field,
            "a.email"
        );
        let long = "x".repeat(APPLICANT_NAME_MAX_CHARS + 1);
        let mut i = input(DocumentKind::Cccd, "001099012345");
        i.owner_name = &long;
        assert_eq!(
            Applicant::parse("a", &i, ApplicantType::Citizen)
                .unwrap_err()
                .field,
            "a.owner_name"
        );
        let mut i = input(DocumentKind::Cccd, "001099012345");
        i.phone = "";
        i.email = "";
        i.address = "";
        let a = Applicant::parse("a", &i, ApplicantType::Citizen).unwrap();
        assert!(!format!("{a:?}").contains("Nguy"));
        assert_eq!((a.phone, a.email, a.address), (None, None, None));
    }
}
