//! Every bound on what a write request may carry, in one place: the newtypes' parse functions,
//! the decision rules and the services' request parsing all read these constants, and
//! `proto/dossier/v1/*.proto` and README "Limits" document them.
//!
//! They are chosen so that a real counter never meets them and the largest event any accepted
//! request can produce stays far below `eventlog::MAX_EVENT_BYTES` (64 KiB of canonical JSON;
//! the `svc` test `largest_events_fit` builds the largest event of every type and checks it).
//!
//! Units: a code's bound is in characters, and codes are ASCII, so also in bytes; a code's
//! characters need no JSON escaping (a transaction id's `"` and `\` take 2 bytes). A free text's
//! bound is in Unicode characters (scalar values): up to 4 bytes each in UTF-8, and in the
//! canonical JSON at most 4 bytes each too (the only control character allowed, `\n`, is
//! written `\n`, 2 bytes; `"` and `\` 2 bytes), so a text is at most 4 × its bound in bytes.

/// The dossier's code (mã hồ sơ): 1–64 of `[A-Za-z0-9._/-]`.
pub const DOSSIER_ID_MAX_CHARS: usize = 64;
/// A published procedure's code (mã TTHC): 1–64 of `[A-Za-z0-9._/-]`.
pub const PROCEDURE_CODE_MAX_CHARS: usize = 64;
/// A dossier component's code: 1–64 of `[A-Za-z0-9._/-]`.
pub const COMPONENT_CODE_MAX_CHARS: usize = 64;
/// An agency's code: 1–40 of `[A-Za-z0-9.-]`.
pub const AGENCY_CODE_MAX_CHARS: usize = 40;
/// A sector's code: 1–40 of `[A-Za-z0-9-]`.
pub const SECTOR_CODE_MAX_CHARS: usize = 40;
/// A payment platform's transaction id: 1–128 printable ASCII characters, no spaces.
pub const TRANSACTION_ID_MAX_CHARS: usize = 128;
/// A free text (a reason, a document reference): 1–2,000 Unicode characters.
pub const TEXT_MAX_CHARS: usize = 2_000;

/// At most this many component codes in one list: the components submitted with a dossier,
/// and each of the digitized and reused lists. A procedure has a few dozen at most.
pub const MAX_COMPONENTS: usize = 200;

/// The largest amount one assessment or payment may carry: 10^15 VND (about 40 billion USD),
/// above any fee, charge or tax (the largest land-use levies are around 10^13 VND). One
/// dossier's assessments may add up to at most `i64::MAX` VND; an assessment beyond is refused.
pub const MAX_AMOUNT_VND: i64 = 1_000_000_000_000_000;

/// Statutory time: 1 to 365 working days…
pub const MAX_STATUTORY_DAYS: u32 = 365;
/// …or 1 to 2,920 working hours (365 working days of 8 hours).
pub const MAX_STATUTORY_HOURS: u32 = 2_920;

/// At most this many events in one `ImportHistory` batch: bounds memory and transaction size.
pub const MAX_IMPORT_BATCH: usize = 10_000;

/// The largest encoded request message the write services (processing, payment, results)
/// decode: far above the largest valid request (a `ReceiveDossier` with 200 components of 64
/// characters is under 15 KiB). A larger message is refused with OUT_OF_RANGE (tonic's answer)
/// before it is parsed.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 1024 * 1024;

/// The largest encoded message the intake service decodes: one `ImportHistory` batch (10,000
/// events of a typical size take 1–3 MiB) and its unary requests.
pub const MAX_IMPORT_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The applicant (chủ hồ sơ) and the person submitting on their behalf: each name 1–200
/// Unicode characters (at most 800 bytes of UTF-8).
pub const APPLICANT_NAME_MAX_CHARS: usize = 200;
/// An address: 1–500 Unicode characters.
pub const APPLICANT_ADDRESS_MAX_CHARS: usize = 500;
/// An e-mail address: 3–254 ASCII characters (RFC 5321's path limit), one `@`.
pub const APPLICANT_EMAIL_MAX_CHARS: usize = 254;
/// A phone number: 8–15 digits (E.164), optionally one leading `+`.
pub const APPLICANT_PHONE_MAX_DIGITS: usize = 15;
/// An identity document number other than the fixed-format ones (passport, other papers):
/// 1–20 of `[A-Z0-9]`.
pub const APPLICANT_DOCUMENT_MAX_CHARS: usize = 20;
/// The largest plaintext an applicant record can have: every field at its bound, in UTF-8,
/// with its JSON quoting (each character at most 6 bytes escaped), with room for the keys.
pub const APPLICANT_PLAINTEXT_MAX_BYTES: usize = 6
    * (2 * APPLICANT_NAME_MAX_CHARS
        + 2 * APPLICANT_ADDRESS_MAX_CHARS
        + 2 * APPLICANT_EMAIL_MAX_CHARS
        + 2 * (APPLICANT_PHONE_MAX_DIGITS + 1)
        + 2 * APPLICANT_DOCUMENT_MAX_CHARS)
    + 1024;
/// The sealed applicant's ciphertext in the event, in hex digits (plaintext + 16-byte tag, two
/// digits a byte): under 26 KiB at the bound, so the largest `received` event stays under
/// `eventlog::MAX_EVENT_BYTES` (64 KiB).
pub const APPLICANT_SEALED_MAX_HEX: usize = 2 * (APPLICANT_PLAINTEXT_MAX_BYTES + 16);
