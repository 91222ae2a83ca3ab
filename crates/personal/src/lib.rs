//! The applicant's personal data (chủ hồ sơ): validation ([`Applicant`]), envelope encryption
//! with one erasable data key per dossier ([`crypto`]), and the one place where keys, erasure,
//! the access log and citizen lookup hashes are stored ([`Vault`], migrations 60001+).
//!
//! Reading plaintext: [`Vault::open`] with a [`Reader`] (who and why); every call writes an
//! access-log row. Services decide *whether* a caller may read (intake's `ApplicantService`:
//! the agency holding the dossier, or a token granted the `personal_data` scope); this crate
//! records that it happened.
//!
//! Must never: write plaintext personal data anywhere (database, logs, errors: `Debug` of
//! [`Applicant`], [`DataKey`], [`LookupSecret`] and [`Keyring`] is redacted and no error
//! carries a value); rewrite the event log (erasure destroys a key, never an event).

pub mod applicant;
pub mod crypto;
mod vault;

pub use applicant::{
    Applicant, ApplicantError, ApplicantInput, DocumentInput, DocumentKind, IdentityDocument,
    Representative, RepresentativeInput,
};
pub use crypto::{CryptoError, DataKey, Keyring, KeyringError, LookupSecret, SCHEME, WrappedKey};
pub use vault::{
    Access, DossierKey, KeyState, Opened, Reader, Vault, VaultError, erased_among, migrate,
};
