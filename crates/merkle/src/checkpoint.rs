//! Signed checkpoints: C2SP `tlog-checkpoint` notes signed with Ed25519 as C2SP `signed-note`
//! specifies, so that existing transparency-log tooling (e.g. Go's `golang.org/x/mod/sumdb/note`)
//! can check them.
//!
//! # Format
//!
//! The note text (the signed bytes, UTF-8, each line ending in `\n`):
//!
//! ```text
//! <origin>
//! <tree size, decimal, no leading zeros>
//! <root hash, standard base64 with padding>
//! timestamp <UTC, RFC 3339, exactly 6 fractional digits, Z>
//! ```
//!
//! The fourth line is a `tlog-checkpoint` extension line: the log's clock when it signed, so
//! an auditor can say "the log as it stood at time T" with the log's signature behind it.
//! Tools that do not know it ignore it.
//!
//! The signed note is the text, an empty line, then one signature line:
//! `— <key name> <base64(key id || signature)>\n` (U+2014 em dash, space). The key name is the
//! origin. The signature is Ed25519 (RFC 8032) over the note text, final newline included;
//! the key id is the first four bytes of `SHA-256(key name || 0x0A || 0x01 || public key)`,
//! big-endian.
//!
//! Keys are written as the Go `note` package writes them:
//! verifier key `<name>+<key id, 8 hex digits>+<base64(0x01 || 32-byte public key)>`, signer key
//! `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || 32-byte seed)>`.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::tree::Hash;

/// The signature type byte of Ed25519 in signed notes.
const ED25519: u8 = 0x01;
const SIGNATURE_PREFIX: &str = "\u{2014} ";
const TIMESTAMP_KEY: &str = "timestamp ";
const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// A tree head: what a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, also the signing key's name (e.g. `motcua/dossier-log`).
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// When the log signed it, at microsecond precision.
    pub timestamp: DateTime<Utc>,
}

/// A checkpoint with its signed-note text, exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The whole signed note: text, blank line, signature line.
    pub note: String,
}

/// Why a checkpoint's text is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("origin {0:?} is empty or contains a space, a '+' or a control character")]
    Origin(String),
    #[error("checkpoint text: {0}")]
    Malformed(&'static str),
}

/// Why a signed note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a signed note: {0}")]
    Malformed(&'static str),
    /// No signature line of the trusted key (name and key id) is present.
    #[error("the note carries no signature by key {name} ({key_id:08x})")]
    NotSignedByKey { name: String, key_id: u32 },
    /// A signature of the trusted key is present and wrong: the text or signature was altered.
    #[error("the signature by key {name} does not verify: the note was altered")]
    BadSignature { name: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("malformed key: {0}")]
    Malformed(&'static str),
    #[error("key id {stated:08x} does not match the key ({computed:08x})")]
    KeyIdMismatch { stated: u32, computed: u32 },
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, big-endian.
pub fn key_id(name: &str, key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', ED25519]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// RFC 3339, UTC, exactly six fractional digits, `Z` (the event log's format as well).
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let t = DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&Utc);
    // Only the canonical spelling, so a note has exactly one text per checkpoint.
    (format_timestamp(&t) == text).then_some(t)
}

impl Checkpoint {
    /// The note text (the bytes that are signed).
    pub fn text(&self) -> Result<String, CheckpointError> {
        if !valid_name(&self.origin) {
            return Err(CheckpointError::Origin(self.origin.clone()));
        }
        Ok(format!(
            "{}\n{}\n{}\n{TIMESTAMP_KEY}{}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root),
            format_timestamp(&self.timestamp)
        ))
    }

    /// Parses a note text written by [`Checkpoint::text`]; strict, so that one checkpoint has
    /// exactly one text.
    pub fn parse_text(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("does not end in a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if !valid_name(origin) {
            return Err(CheckpointError::Origin(origin.to_owned()));
        }
        let size_line = lines
            .next()
            .ok_or(CheckpointError::Malformed("no tree size line"))?;
        let size: u64 = size_line
            .parse()
            .map_err(|_| CheckpointError::Malformed("tree size is not a decimal number"))?;
        if size.to_string() != size_line {
            return Err(CheckpointError::Malformed(
                "tree size is not in canonical decimal",
            ));
        }
        let root_line = lines
            .next()
            .ok_or(CheckpointError::Malformed("no root hash line"))?;
        let root: Hash = BASE64
            .decode(root_line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "root hash is not base64 of 32 bytes",
            ))?;
        if BASE64.encode(root) != root_line {
            return Err(CheckpointError::Malformed(
                "root hash is not canonical base64",
            ));
        }
        let timestamp = lines
            .next()
            .and_then(|l| l.strip_prefix(TIMESTAMP_KEY))
            .and_then(parse_timestamp)
            .ok_or(CheckpointError::Malformed(
                "no line \"timestamp <RFC 3339 UTC with 6 fractional digits>\"",
            ))?;
        if lines.next().is_some() {
            return Err(CheckpointError::Malformed("unexpected extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            timestamp,
        })
    }
}

/// The log's signing key, named (the name is the checkpoints' origin).
pub struct Signer {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.verifier().key_id))
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer from a 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Signer, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::Malformed(
                "key name is empty or contains a space, a '+' or a control character",
            ));
        }
        Ok(Signer {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>` (surrounding whitespace
    /// ignored).
    pub fn parse(text: &str) -> Result<Signer, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(PRIVATE_PREFIX)
            .ok_or(KeyError::Malformed("a signer key starts with PRIVATE+KEY+"))?;
        let (name, stated, seed) = split_key(rest)?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| KeyError::Malformed("the seed is not 32 bytes"))?;
        let signer = Signer::from_seed(name, seed)?;
        let computed = signer.verifier().key_id;
        if stated != computed {
            return Err(KeyError::KeyIdMismatch { stated, computed });
        }
        Ok(signer)
    }

    /// The text [`Signer::parse`] reads. Secret: write it to a file only the service can read.
    pub fn to_private_text(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!(
            "{PRIVATE_PREFIX}{}+{:08x}+{}",
            self.name,
            self.verifier().key_id,
            BASE64.encode(key)
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn verifier(&self) -> VerifierKey {
        let key = self.key.verifying_key();
        VerifierKey {
            key_id: key_id(&self.name, &key),
            name: self.name.clone(),
            key,
        }
    }

    /// Signs `checkpoint`, whose origin must be this key's name.
    pub fn sign(&self, checkpoint: Checkpoint) -> Result<SignedCheckpoint, CheckpointError> {
        if checkpoint.origin != self.name {
            return Err(CheckpointError::Origin(checkpoint.origin));
        }
        let text = checkpoint.text()?;
        let signature = ed25519_dalek::Signer::sign(&self.key, text.as_bytes());
        let mut sig = self.verifier().key_id.to_be_bytes().to_vec();
        sig.extend_from_slice(&signature.to_bytes());
        let note = format!(
            "{text}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(sig)
        );
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

/// A public key that checkpoints are checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    pub key_id: u32,
    pub key: VerifyingKey,
}

fn split_key(text: &str) -> Result<(&str, u32, Vec<u8>), KeyError> {
    // The base64 key may itself contain '+': only the first two separate fields.
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(KeyError::Malformed("expected <name>+<key id>+<base64 key>"));
    };
    if !valid_name(name) {
        return Err(KeyError::Malformed("invalid key name"));
    }
    if id.len() != 8 {
        return Err(KeyError::Malformed("the key id is not 8 hex digits"));
    }
    let id = u32::from_str_radix(id, 16)
        .map_err(|_| KeyError::Malformed("the key id is not 8 hex digits"))?;
    let bytes = BASE64
        .decode(key)
        .map_err(|_| KeyError::Malformed("the key is not base64"))?;
    match bytes.split_first() {
        Some((&ED25519, rest)) => Ok((name, id, rest.to_vec())),
        _ => Err(KeyError::Malformed("not an Ed25519 key (type byte 0x01)")),
    }
}

impl VerifierKey {
    /// A verifier from the raw 32-byte public key and the name it signs under.
    pub fn new(name: &str, key: [u8; 32]) -> Result<VerifierKey, KeyError> {
        if !valid_name(name) {
            return Err(KeyError::Malformed("invalid key name"));
        }
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| KeyError::Malformed("not a valid Ed25519 public key"))?;
        Ok(VerifierKey {
            key_id: key_id(name, &key),
            name: name.to_owned(),
            key,
        })
    }

    /// Parses `<name>+<key id>+<base64(0x01 || public key)>` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<VerifierKey, KeyError> {
        let (name, stated, key) = split_key(text.trim())?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| KeyError::Malformed("the public key is not 32 bytes"))?;
        let verifier = VerifierKey::new(name, key)?;
        if verifier.key_id != stated {
            return Err(KeyError::KeyIdMismatch {
                stated,
                computed: verifier.key_id,
            });
        }
        Ok(verifier)
    }

    /// The text [`VerifierKey::parse`] reads; safe to publish.
    pub fn to_text(&self) -> String {
        let mut key = vec![ED25519];
        key.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.key_id, BASE64.encode(key))
    }

    /// Checks a signed note and returns the checkpoint it states.
    ///
    /// Per the signed-note spec, signature lines of other keys are ignored; the note is
    /// refused unless it carries a signature line with this key's name and id, and any such
    /// line that does not verify refuses it.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, NoteError> {
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed("contains a control character"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, signatures) = (&note[..=split], &note[split + 2..]);
        if signatures.is_empty() || !signatures.ends_with('\n') {
            return Err(NoteError::Malformed(
                "signature lines must end in a newline",
            ));
        }
        let mut verified = false;
        for line in signatures.lines() {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or(NoteError::Malformed(
                    "a signature line starts with an em dash",
                ))?;
            let (name, sig) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("a signature line is <name> <base64>"))?;
            let sig = BASE64
                .decode(sig)
                .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            if sig.len() < 4 {
                return Err(NoteError::Malformed(
                    "a signature is shorter than its key id",
                ));
            }
            let id = u32::from_be_bytes([sig[0], sig[1], sig[2], sig[3]]);
            if name != self.name || id != self.key_id {
                continue;
            }
            let bad = || NoteError::BadSignature {
                name: self.name.clone(),
            };
            let signature = Signature::from_slice(&sig[4..]).map_err(|_| bad())?;
            self.key
                .verify_strict(text.as_bytes(), &signature)
                .map_err(|_| bad())?;
            verified = true;
        }
        if !verified {
            return Err(NoteError::NotSignedByKey {
                name: self.name.clone(),
                key_id: self.key_id,
            });
        }
        Ok(Checkpoint::parse_text(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn signer() -> Signer {
        Signer::from_seed("example.com/log", [7; 32]).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/log".into(),
            size: 20852163,
            root: [0x0a; 32],
            timestamp: Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
                + chrono::Duration::microseconds(42),
        }
    }

    #[test]
    fn the_note_is_the_c2sp_layout() {
        let signed = signer().sign(checkpoint()).unwrap();
        let (text, sig) = signed.note.split_once("\n\n").unwrap();
        assert_eq!(
            text,
            "example.com/log\n20852163\nCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=\ntimestamp 2024-05-06T07:08:09.000042Z"
        );
        assert!(sig.starts_with("\u{2014} example.com/log "));
        assert!(sig.ends_with('\n'));
        let raw = BASE64
            .decode(sig.trim_end().rsplit(' ').next().unwrap())
            .unwrap();
        assert_eq!(raw.len(), 4 + 64);
        assert_eq!(
            u32::from_be_bytes(raw[..4].try_into().unwrap()),
            signer().verifier().key_id
        );
    }

    #[test]
    fn key_id_is_the_truncated_hash_of_name_type_and_key() {
        let v = signer().verifier();
        let mut input = b"example.com/log\n\x01".to_vec();
        input.extend_from_slice(v.key.as_bytes());
        let digest = Sha256::digest(&input);
        assert_eq!(v.key_id.to_be_bytes(), digest[..4]);
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_round_trips() {
        let signed = signer().sign(checkpoint()).unwrap();
        assert_eq!(
            signer().verifier().verify(&signed.note).unwrap(),
            checkpoint()
        );
        assert_eq!(
            Checkpoint::parse_text(&checkpoint().text().unwrap()).unwrap(),
            checkpoint()
        );
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let note = signer().sign(checkpoint()).unwrap().note;
        let verifier = signer().verifier();
        for (i, _) in note.char_indices() {
            let mut bytes = note.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(altered) = String::from_utf8(bytes) else {
                continue;
            };
            assert!(verifier.verify(&altered).is_err(), "byte {i} altered");
        }
    }

    #[test]
    fn another_key_is_not_trusted() {
        let note = signer().sign(checkpoint()).unwrap().note;
        let other = Signer::from_seed("example.com/log", [8; 32]).unwrap();
        assert!(matches!(
            other.verifier().verify(&note),
            Err(NoteError::NotSignedByKey { .. })
        ));
    }

    #[test]
    fn unknown_signatures_are_ignored() {
        let signed = signer().sign(checkpoint()).unwrap();
        let witness = Signer::from_seed("witness.example", [9; 32]).unwrap();
        let extra = witness
            .sign(Checkpoint {
                origin: "witness.example".into(),
                ..checkpoint()
            })
            .unwrap();
        let witness_line = extra.note.rsplit_once("\n\n").unwrap().1;
        let cosigned = format!("{}{witness_line}", signed.note);
        assert_eq!(signer().verifier().verify(&cosigned).unwrap(), checkpoint());
    }

    #[test]
    fn keys_round_trip_in_the_go_note_format() {
        let s = signer();
        let private = s.to_private_text();
        assert!(private.starts_with("PRIVATE+KEY+example.com/log+"));
        let again = Signer::parse(&format!("{private}\n")).unwrap();
        assert_eq!(again.verifier(), s.verifier());
        let public = s.verifier().to_text();
        assert_eq!(VerifierKey::parse(&public).unwrap(), s.verifier());
        let mut parts: Vec<&str> = public.split('+').collect();
        parts[1] = "00000000";
        assert!(matches!(
            VerifierKey::parse(&parts.join("+")),
            Err(KeyError::KeyIdMismatch { .. })
        ));
    }

    #[test]
    fn keys_whose_base64_holds_a_plus_round_trip() {
        let mut with_plus = 0;
        for seed in 0..=255u8 {
            let s = Signer::from_seed("example.com/log", [seed; 32]).unwrap();
            let private = s.to_private_text();
            let public = s.verifier().to_text();
            if private.matches('+').count() > 4 || public.matches('+').count() > 2 {
                with_plus += 1;
            }
            assert_eq!(Signer::parse(&private).unwrap().verifier(), s.verifier());
            assert_eq!(VerifierKey::parse(&public).unwrap(), s.verifier());
        }
        assert!(
            with_plus > 0,
            "no key of the sample had a '+' in its base64"
        );
    }

    #[test]
    fn malformed_texts_are_refused() {
        let good = checkpoint().text().unwrap();
        for bad in [
            good.replace("20852163", "020852163"),
            good.replace("20852163", "-1"),
            good.replace(".000042Z", "Z"),
            good.trim_end().to_owned(),
            format!("{good}extra\n"),
            good.replacen("example.com/log", "bad name", 1),
        ] {
            assert!(Checkpoint::parse_text(&bad).is_err(), "{bad:?}");
        }
        assert!(
            Checkpoint {
                origin: "a+b".into(),
                ..checkpoint()
            }
            .text()
            .is_err()
        );
    }
}
