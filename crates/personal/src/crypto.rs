//! Envelope encryption. Pure apart from drawing random keys and wrapping nonces.
//!
//! - Each dossier has its own random 256-bit **data key**. The applicant is sealed under it
//!   with XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`), the dossier id as associated
//!   data (a ciphertext cannot be moved to another dossier's event).
//! - The nonce is **synthetic**: HMAC-SHA-256 of the dossier id and the plaintext under a
//!   subkey, cut to 192 bits. Sealing is therefore deterministic for one key and plaintext: a
//!   retried `ReceiveDossier` or a re-sent import batch produces byte-identical events (the
//!   idempotency checks compare them), and two different plaintexts under one key get
//!   different nonces except with probability ~2^-192 per pair. The cost, equality of two equal
//!   plaintexts under one dossier key, reveals nothing (one dossier has one applicant record).
//! - The data key is **wrapped** by the active master key (XChaCha20-Poly1305, random nonce,
//!   the dossier id as associated data); the wrapped record names its master key's id, so master
//!   keys rotate by re-wrapping ([`crate::Vault::rewrap`]).
//! - Subkeys (`enc`, `nonce`, `fingerprint`, `lookup`) are HMAC-SHA-256 of a label under the data
//!   key, so no key is used for two purposes. Destroying the data key (erasure) makes the
//!   ciphertext, the request fingerprint's personal part and the lookup secret's derivation
//!   unrecoverable at once.

use std::collections::BTreeMap;
use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use domain::{DossierId, SealedApplicant};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::applicant::Applicant;

/// The sealing scheme's name, stored in each [`SealedApplicant`].
pub const SCHEME: &str = "xchacha20poly1305-siv-v1";

const SEAL_AAD: &[u8] = b"motcua/applicant/v1\0";
const WRAP_AAD: &[u8] = b"motcua/data-key/v1\0";
const LOOKUP_DOMAIN: &[u8] = b"motcua/lookup/v1\0";

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Why randomness, a key or a ciphertext could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    /// The wrapped key names a master key the keyring does not hold (removed too early).
    #[error("master key {0:?} is not in the keyring")]
    UnknownMasterKey(String),
    /// Authentication failed: the bytes were altered, or belong to another dossier or key.
    #[error("ciphertext does not authenticate")]
    Forged,
    #[error("sealed applicant is malformed: {0}")]
    Malformed(&'static str),
}

/// A dossier's data key. `Debug` never shows it.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<secret>)")
    }
}

fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(CryptoError::Random)?;
    Ok(bytes)
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

impl DataKey {
    pub fn generate() -> Result<DataKey, CryptoError> {
        random().map(DataKey)
    }

    fn subkey(&self, label: &str) -> [u8; 32] {
        hmac(&self.0, &[b"motcua/subkey/", label.as_bytes()])
    }

    /// Seals the applicant of `dossier` (deterministic: see the module's doc).
    pub fn seal(&self, dossier: &DossierId, applicant: &Applicant) -> SealedApplicant {
        let plaintext = serde_json::to_vec(applicant).expect("an applicant always serialises");
        let synthetic = hmac(
            &self.subkey("nonce"),
            &[dossier.as_str().as_bytes(), &[0], &plaintext],
        );
        let nonce = XNonce::from_slice(&synthetic[..24]);
        let aad = [SEAL_AAD, dossier.as_str().as_bytes()].concat();
        let ciphertext = cipher(&self.subkey("enc"))
            .encrypt(
                nonce,
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any message of this size");
        SealedApplicant {
            alg: SCHEME.to_owned(),
            nonce: hex::encode(nonce),
            ciphertext: hex::encode(ciphertext),
        }
    }

    /// Opens what [`seal`](Self::seal) produced for the same dossier.
    pub fn open(
        &self,
        dossier: &DossierId,
        sealed: &SealedApplicant,
    ) -> Result<Applicant, CryptoError> {
        if sealed.alg != SCHEME {
            return Err(CryptoError::Malformed("unknown scheme"));
        }
        let mut nonce = [0u8; 24];
        hex::decode_to_slice(&sealed.nonce, &mut nonce)
            .map_err(|_| CryptoError::Malformed("nonce is not 48 hex digits"))?;
        let ciphertext =
            hex::decode(&sealed.ciphertext).map_err(|_| CryptoError::Malformed("not hex"))?;
        let aad = [SEAL_AAD, dossier.as_str().as_bytes()].concat();
        let plaintext = cipher(&self.subkey("enc"))
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Forged)?;
        serde_json::from_slice(&plaintext).map_err(|_| CryptoError::Malformed("plaintext"))
    }

    /// A keyed digest of personal bytes, for request fingerprints: stable for retries, and
    /// meaningless once the key is erased (an unkeyed hash of a phone number or an identity
    /// number could be found by trying them all).
    pub fn fingerprint(&self, bytes: &[u8]) -> [u8; 32] {
        hmac(&self.subkey("fingerprint"), &[bytes])
    }

    /// The dossier's lookup secret, derived so a retried reception answers the same one.
    pub fn lookup_secret(&self, dossier: &DossierId) -> LookupSecret {
        let bytes = hmac(&self.subkey("lookup"), &[dossier.as_str().as_bytes()]);
        LookupSecret(base32(&bytes[..LOOKUP_SECRET_BYTES]))
    }
}

/// The lookup secret's entropy: 100 bits (20 base-32 characters).
const LOOKUP_SECRET_BYTES: usize = 13;
const LOOKUP_SECRET_CHARS: usize = 20;
/// Crockford's base 32: no I, L, O, U (read aloud and typed from paper without confusion).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(LOOKUP_SECRET_CHARS);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < LOOKUP_SECRET_CHARS {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
        acc &= (1 << bits) - 1;
    }
    out
}

/// The secret printed on the receipt: 20 characters of Crockford base 32 (100 random bits),
/// shown in groups of four (`XXXX-XXXX-XXXX-XXXX-XXXX`). `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct LookupSecret(String);

impl fmt::Debug for LookupSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LookupSecret(<secret>)")
    }
}

impl LookupSecret {
    /// The printed form, in groups of four.
    pub fn printed(&self) -> String {
        self.0
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).expect("ASCII"))
            .collect::<Vec<_>>()
            .join("-")
    }

    /// What a citizen typed: dashes and spaces ignored, case-insensitive, Crockford's
    /// look-alikes (O→0, I/L→1) read as digits. `None` when it cannot be a secret.
    pub fn parse(typed: &str) -> Option<LookupSecret> {
        let mut out = String::with_capacity(LOOKUP_SECRET_CHARS);
        for c in typed.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
                _ => return None,
            };
            if out.len() == LOOKUP_SECRET_CHARS {
                return None;
            }
            out.push(c);
        }
        (out.len() == LOOKUP_SECRET_CHARS).then_some(LookupSecret(out))
    }

    /// What the database stores: SHA-256 of a domain label, the dossier id and the secret.
    /// A plain (unpeppered, fast) hash is enough: the secret is 100 uniformly random bits, so
    /// trying candidates against a stolen hash is hopeless (2^99 tries on average), unlike a
    /// password; and binding the dossier id makes each hash useful for one dossier only.
    pub fn digest(&self, dossier: &DossierId) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(LOOKUP_DOMAIN);
        h.update(dossier.as_str().as_bytes());
        h.update([0]);
        h.update(self.0.as_bytes());
        h.finalize().into()
    }
}

/// A data key wrapped by a master key, as stored in `personal_keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub master_key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The master keys: the active one wraps new data keys; older ones only unwrap until every
/// data key has been re-wrapped ([`crate::Vault::rewrap`]), then they can be removed.
///
/// The keyring file (or the `MOTCUA_MASTER_KEYS` variable holding the same text):
///
/// ```toml
/// active = "2026-01"
/// [[key]]
/// id = "2026-01"
/// hex = "…64 hex digits (32 random bytes)…"
/// ```
#[derive(Clone)]
pub struct Keyring {
    active: String,
    keys: BTreeMap<String, [u8; 32]>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    active: String,
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    hex: String,
}

/// Why the keyring was refused (the service does not start). Never shows a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("cannot read the master keys file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid master keys: {0}")]
    Invalid(String),
}

impl Keyring {
    pub fn load(path: &std::path::Path) -> Result<Keyring, KeyringError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyringError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Keyring::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        // toml's message may quote the offending line, i.e. a key: say only where it is.
        let file: KeyringFile = toml::from_str(text).map_err(|e| {
            KeyringError::Invalid(format!(
                "not a keyring (TOML: active, [[key]] id and hex) near byte {:?}",
                e.span().map(|s| s.start)
            ))
        })?;
        let mut keys = BTreeMap::new();
        for entry in file.key {
            if entry.id.is_empty()
                || entry.id.len() > 64
                || !entry
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(KeyringError::Invalid(
                    "a key id is 1-64 of [A-Za-z0-9._-]".into(),
                ));
            }
            let mut key = [0u8; 32];
            hex::decode_to_slice(entry.hex.trim(), &mut key).map_err(|_| {
                KeyringError::Invalid(format!("key {:?}: hex must be 64 hex digits", entry.id))
            })?;
            if keys.insert(entry.id.clone(), key).is_some() {
                return Err(KeyringError::Invalid(format!(
                    "key {:?} appears twice",
                    entry.id
                )));
            }
        }
        if !keys.contains_key(&file.active) {
            return Err(KeyringError::Invalid(format!(
                "the active key {:?} is not among the keys",
                file.active
            )));
        }
        Ok(Keyring {
            active: file.active,
            keys,
        })
    }

    /// A keyring of one fresh random key (tests, first installation).
    pub fn generate(id: &str) -> Result<Keyring, CryptoError> {
        Ok(Keyring {
            active: id.to_owned(),
            keys: BTreeMap::from([(id.to_owned(), random()?)]),
        })
    }

    /// The keyring file's text for this keyring (the `personal` tool and tests write it).
    pub fn to_file_text(&self) -> String {
        let mut out = format!("active = {:?}\n", self.active);
        for (id, key) in &self.keys {
            out.push_str(&format!(
                "\n[[key]]\nid = {id:?}\nhex = \"{}\"\n",
                hex::encode(key)
            ));
        }
        out
    }

    /// This keyring with a new active key added (rotation: old keys stay to unwrap).
    pub fn rotated(&self, id: &str) -> Result<Keyring, CryptoError> {
        let mut next = self.clone();
        next.keys.insert(id.to_owned(), random()?);
        next.active = id.to_owned();
        Ok(next)
    }

    /// This keyring without `id` (after a complete re-wrap). The active key stays.
    pub fn without(&self, id: &str) -> Keyring {
        let mut next = self.clone();
        if id != next.active {
            next.keys.remove(id);
        }
        next
    }

    pub fn active_id(&self) -> &str {
        &self.active
    }

    pub fn wrap(&self, dossier: &DossierId, key: &DataKey) -> Result<WrappedKey, CryptoError> {
        let master = &self.keys[&self.active];
        let nonce: [u8; 24] = random()?;
        let aad = [WRAP_AAD, dossier.as_str().as_bytes()].concat();
        let ciphertext = cipher(master)
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &key.0,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts 32 bytes");
        Ok(WrappedKey {
            master_key_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    pub fn unwrap(
        &self,
        dossier: &DossierId,
        wrapped: &WrappedKey,
    ) -> Result<DataKey, CryptoError> {
        let master = self
            .keys
            .get(&wrapped.master_key_id)
            .ok_or_else(|| CryptoError::UnknownMasterKey(wrapped.master_key_id.clone()))?;
        if wrapped.nonce.len() != 24 {
            return Err(CryptoError::Malformed("wrapping nonce"));
        }
        let aad = [WRAP_AAD, dossier.as_str().as_bytes()].concat();
        let bytes = cipher(master)
            .decrypt(
                XNonce::from_slice(&wrapped.nonce),
                Payload {
                    msg: &wrapped.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Forged)?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| CryptoError::Malformed("data key length"))?;
        Ok(DataKey(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applicant::{DocumentKind, IdentityDocument};

    fn applicant() -> Applicant {
        Applicant {
            owner_name: "Trần Thị B".into(),
            document: IdentityDocument {
                kind: DocumentKind::Cccd,
                number: "079188001234".into(),
            },
            phone: Some("0987654321".into()),
            email: None,
            address: Some("Quận 1".into()),
            representative: None,
        }
    }

    #[test]
    fn sealing_is_deterministic_bound_to_the_dossier_and_hides_the_plaintext() {
        let key = DataKey::generate().unwrap();
        let d1 = DossierId::parse("H40.1-0001").unwrap();
        let d2 = DossierId::parse("H40.1-0002").unwrap();
        let sealed = key.seal(&d1, &applicant());
        assert_eq!(sealed, key.seal(&d1, &applicant()));
        assert_eq!(key.open(&d1, &sealed).unwrap(), applicant());
        assert!(matches!(key.open(&d2, &sealed), Err(CryptoError::Forged)));
        let other = DataKey::generate().unwrap();
        assert!(matches!(other.open(&d1, &sealed), Err(CryptoError::Forged)));
        let json = serde_json::to_string(&sealed).unwrap();
        for s in applicant().personal_strings() {
            assert!(!json.contains(s));
        }
        let mut changed = applicant();
        changed.phone = Some("0987654322".into());
        assert_ne!(key.seal(&d1, &changed).nonce, sealed.nonce);
    }

    #[test]
    fn wrapped_keys_survive_rotation_until_their_master_key_is_removed() {
        let d = DossierId::parse("D-1").unwrap();
        let ring = Keyring::generate("k1").unwrap();
        let key = DataKey::generate().unwrap();
        let wrapped = ring.wrap(&d, &key).unwrap();
        assert_eq!(wrapped.master_key_id, "k1");
        let ring2 = Keyring::parse(&ring.rotated("k2").unwrap().to_file_text()).unwrap();
        assert_eq!(ring2.active_id(), "k2");
        let again = ring2.unwrap(&d, &wrapped).unwrap();
        assert_eq!(again.0, key.0);
        let rewrapped = ring2.wrap(&d, &again).unwrap();
        let ring3 = ring2.without("k1");
        assert!(matches!(
            ring3.unwrap(&d, &wrapped),
            Err(CryptoError::UnknownMasterKey(_))
        ));
        assert_eq!(ring3.unwrap(&d, &rewrapped).unwrap().0, key.0);
        let d2 = DossierId::parse("D-2").unwrap();
        assert!(matches!(
            ring3.unwrap(&d2, &rewrapped),
            Err(CryptoError::Forged)
        ));
        assert!(!format!("{ring3:?}").contains(&hex::encode(key.0)));
    }

    #[test]
    fn lookup_secrets_print_and_parse_back() {
        let key = DataKey::generate().unwrap();
        let d = DossierId::parse("D-1").unwrap();
        let secret = key.lookup_secret(&d);
        assert_eq!(secret, key.lookup_secret(&d));
        let printed = secret.printed();
        assert_eq!(printed.len(), 24);
        assert_eq!(LookupSecret::parse(&printed), Some(secret.clone()));
        assert_eq!(
            LookupSecret::parse(&printed.to_lowercase().replace('-', " ")),
            Some(secret.clone())
        );
        assert_eq!(LookupSecret::parse(&printed[..20]), None);
        assert_eq!(LookupSecret::parse(&format!("{printed}0")), None);
        assert_eq!(LookupSecret::parse("ÀAAA-AAAA-AAAA-AAAA-AAAA"), None);
        assert_ne!(
            secret.digest(&d),
            secret.digest(&DossierId::parse("D-2").unwrap())
        );
    }
}
