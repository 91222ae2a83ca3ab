//! The keys and the access log in PostgreSQL (migrations 60001+): the one way to read, erase
//! and re-wrap personal data.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use domain::{DossierId, SealedApplicant};
use sqlx::{PgPool, Row};

use crate::applicant::Applicant;
use crate::crypto::{CryptoError, DataKey, Keyring, LookupSecret, WrappedKey};

/// Runs the crate's migrations (60001+) on `pool`; each service that uses a [`Vault`] runs it.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// Which of `dossiers` had their applicant data erased (readers that show "erased" without
/// decrypting: replay). Needs no keyring.
pub async fn erased_among(
    pool: &PgPool,
    dossiers: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if dossiers.is_empty() {
        return Ok(Default::default());
    }
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT dossier_id FROM personal_keys WHERE dossier_id = ANY($1) AND erased_at IS NOT NULL",
    )
    .bind(dossiers)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Who reads personal data and why, as the access log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reader {
    /// The token's name, or the service's name.
    pub name: String,
    /// The reader's agency (`None` for a service or an all-agency token).
    pub agency: Option<String>,
    /// Why: `get_applicant`, `national portal synchronisation`…
    pub purpose: String,
}

impl Reader {
    /// A service reading for its own purpose (e.g. the portal synchronisation).
    pub fn service(name: &str, purpose: &str) -> Reader {
        Reader {
            name: name.to_owned(),
            agency: None,
            purpose: purpose.to_owned(),
        }
    }
}

/// What [`Vault::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Applicant(Applicant),
    /// The data key was destroyed at this time: the fields are gone for good.
    Erased {
        erased_at: DateTime<Utc>,
    },
}

/// A dossier's key state, for readers that show "erased" without decrypting (replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Live,
    Erased { erased_at: DateTime<Utc> },
}

/// One access-log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub dossier_id: String,
    pub reader: String,
    pub agency: Option<String>,
    pub purpose: String,
    /// `read`, `erased_data` (asked after erasure), `denied`, `erased` (the erasure itself).
    pub outcome: String,
}

/// Why a vault operation failed. No variant carries personal data.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// PostgreSQL cannot be reached or failed: retry.
    #[error("personal data store unavailable: {0}")]
    Unavailable(#[from] sqlx::Error),
    /// The dossier has no key (received without an applicant, or unknown).
    #[error("dossier {0} has no applicant data")]
    NoKey(String),
    /// The dossier's applicant data was erased (reception cannot record it again).
    #[error("the applicant data of dossier {dossier_id} was erased at {erased_at}")]
    Erased {
        dossier_id: String,
        erased_at: DateTime<Utc>,
    },
    /// A key or ciphertext does not open: the keyring misses a master key or data is corrupt.
    #[error("personal data of dossier {dossier_id} cannot be opened: {source}")]
    Crypto {
        dossier_id: String,
        #[source]
        source: CryptoError,
    },
}

/// A dossier's data key, ready to seal and derive with.
#[derive(Debug, Clone)]
pub struct DossierKey {
    pub key: DataKey,
    /// Whether this call created it (a retry finds the one its first attempt created).
    pub created: bool,
}

/// The keys, the access log and the lookup hashes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Vault {
    pool: PgPool,
    keyring: std::sync::Arc<Keyring>,
}

/// Rows re-wrapped per transaction by [`Vault::rewrap`].
const REWRAP_BATCH: i64 = 500;

impl Vault {
    pub fn new(pool: PgPool, keyring: Keyring) -> Vault {
        Vault {
            pool,
            keyring: std::sync::Arc::new(keyring),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn crypto(dossier: &str) -> impl FnOnce(CryptoError) -> VaultError + '_ {
        move |source| VaultError::Crypto {
            dossier_id: dossier.to_owned(),
            source,
        }
    }

    /// The dossier's data key: the stored one, or a new one stored now with its lookup hash.
    /// Called before the `received` event is appended; a reception that then fails leaves a
    /// key with no ciphertext (harmless; a retry uses it).
    pub async fn dossier_key(&self, dossier: &DossierId) -> Result<DossierKey, VaultError> {
        let id = dossier.as_str();
        let fresh = DataKey::generate().map_err(Self::crypto(id))?;
        let wrapped = self
            .keyring
            .wrap(dossier, &fresh)
            .map_err(Self::crypto(id))?;
        let inserted = sqlx::query(
            "INSERT INTO personal_keys (dossier_id, master_key_id, wrap_nonce, wrapped_key, lookup_sha256)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dossier_id) DO NOTHING",
        )
        .bind(id)
        .bind(&wrapped.master_key_id)
        .bind(&wrapped.nonce)
        .bind(&wrapped.ciphertext)
        .bind(&fresh.lookup_secret(dossier).digest(dossier)[..])
        .execute(&self.pool)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(DossierKey {
                key: fresh,
                created: true,
            });
        }
        match self.stored_key(dossier).await? {
            Some(key) => Ok(DossierKey {
                key,
                created: false,
            }),
            None => Err(VaultError::NoKey(id.to_owned())),
        }
    }

    /// The stored key, `None` if there is none; `Erased` if it was destroyed.
    async fn stored_key(&self, dossier: &DossierId) -> Result<Option<DataKey>, VaultError> {
        let id = dossier.as_str();
        let Some(row) = sqlx::query(
            "SELECT master_key_id, wrap_nonce, wrapped_key, erased_at FROM personal_keys WHERE dossier_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        if let Some(erased_at) = row.try_get::<Option<DateTime<Utc>>, _>("erased_at")? {
            return Err(VaultError::Erased {
                dossier_id: id.to_owned(),
                erased_at,
            });
        }
        let wrapped = WrappedKey {
            master_key_id: row.try_get("master_key_id")?,
            nonce: row.try_get("wrap_nonce")?,
            ciphertext: row.try_get("wrapped_key")?,
        };
        self.keyring
            .unwrap(dossier, &wrapped)
            .map(Some)
            .map_err(Self::crypto(id))
    }

    /// Opens a dossier's sealed applicant for `reader`, and records the access (also when the
    /// data was erased). The caller has checked that `reader` may read it.
    pub async fn open(
        &self,
        reader: &Reader,
        dossier: &DossierId,
        sealed: &SealedApplicant,
    ) -> Result<Opened, VaultError> {
        let opened = match self.stored_key(dossier).await {
            Ok(Some(key)) => Opened::Applicant(
                key.open(dossier, sealed)
                    .map_err(Self::crypto(dossier.as_str()))?,
            ),
            Ok(None) => return Err(VaultError::NoKey(dossier.to_string())),
            Err(VaultError::Erased { erased_at, .. }) => Opened::Erased { erased_at },
            Err(e) => return Err(e),
        };
        let outcome = match opened {
            Opened::Applicant(_) => "read",
            Opened::Erased { .. } => "erased_data",
        };
        self.record(reader, dossier, outcome).await?;
        Ok(opened)
    }

    /// Writes one access-log row (`denied` for a refused reader).
    pub async fn record(
        &self,
        reader: &Reader,
        dossier: &DossierId,
        outcome: &str,
    ) -> Result<(), VaultError> {
        sqlx::query(
            "INSERT INTO personal_access_log (dossier_id, reader, agency, purpose, outcome)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(dossier.as_str())
        .bind(&reader.name)
        .bind(&reader.agency)
        .bind(&reader.purpose)
        .bind(outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Destroys the dossier's data key (right to erasure), records who did it and under which
    /// request reference, and logs it. Erasing twice answers the first erasure's time.
    pub async fn erase(
        &self,
        by: &Reader,
        dossier: &DossierId,
        reference: &str,
    ) -> Result<DateTime<Utc>, VaultError> {
        let mut tx = self.pool.begin().await?;
        let row =
            sqlx::query("SELECT erased_at FROM personal_keys WHERE dossier_id = $1 FOR UPDATE")
                .bind(dossier.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| VaultError::NoKey(dossier.to_string()))?;
        if let Some(at) = row.try_get::<Option<DateTime<Utc>>, _>("erased_at")? {
            return Ok(at);
        }
        let at: DateTime<Utc> = sqlx::query_scalar(
            "UPDATE personal_keys SET master_key_id = NULL, wrap_nonce = NULL, wrapped_key = NULL,
                    erased_at = clock_timestamp(), erased_by = $2, erasure_ref = $3
             WHERE dossier_id = $1 RETURNING erased_at",
        )
        .bind(dossier.as_str())
        .bind(&by.name)
        .bind(reference)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO personal_access_log (dossier_id, reader, agency, purpose, outcome)
             VALUES ($1, $2, $3, $4, 'erased')",
        )
        .bind(dossier.as_str())
        .bind(&by.name)
        .bind(&by.agency)
        .bind(&by.purpose)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        // The old row version (with the wrapped key) stays in the table file until vacuumed:
        // remove it now rather than at autovacuum's leisure. Best effort; WAL and backups keep
        // it until they are recycled (README "Applicant data").
        if let Err(e) = sqlx::query("VACUUM personal_keys")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "VACUUM personal_keys after an erasure failed");
        }
        Ok(at)
    }

    /// Re-wraps every data key not wrapped by the active master key; returns how many. After
    /// it returns, the older master keys can be removed from the keyring.
    pub async fn rewrap(&self) -> Result<u64, VaultError> {
        let mut total = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(
                "SELECT dossier_id, master_key_id, wrap_nonce, wrapped_key FROM personal_keys
                 WHERE master_key_id IS NOT NULL AND master_key_id <> $1
                 LIMIT $2 FOR UPDATE SKIP LOCKED",
            )
            .bind(self.keyring.active_id())
            .bind(REWRAP_BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(total);
            }
            for row in &rows {
                let id: String = row.try_get("dossier_id")?;
                let dossier = DossierId::parse(id.clone()).map_err(|_| VaultError::Crypto {
                    dossier_id: id.clone(),
                    source: CryptoError::Malformed("stored dossier id"),
                })?;
                let old = WrappedKey {
                    master_key_id: row.try_get("master_key_id")?,
                    nonce: row.try_get("wrap_nonce")?,
                    ciphertext: row.try_get("wrapped_key")?,
                };
                let key = self
                    .keyring
                    .unwrap(&dossier, &old)
                    .map_err(Self::crypto(&id))?;
                let new = self
                    .keyring
                    .wrap(&dossier, &key)
                    .map_err(Self::crypto(&id))?;
                sqlx::query(
                    "UPDATE personal_keys SET master_key_id = $2, wrap_nonce = $3, wrapped_key = $4
                     WHERE dossier_id = $1",
                )
                .bind(&id)
                .bind(&new.master_key_id)
                .bind(&new.nonce)
                .bind(&new.ciphertext)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            total += rows.len() as u64;
        }
    }

    /// The key state of each of `dossiers` that has a key.
    pub async fn key_states(
        &self,
        dossiers: &[String],
    ) -> Result<HashMap<String, KeyState>, VaultError> {
        let rows = sqlx::query(
            "SELECT dossier_id, erased_at FROM personal_keys WHERE dossier_id = ANY($1)",
        )
        .bind(dossiers)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state = match row.try_get::<Option<DateTime<Utc>>, _>("erased_at")? {
                    Some(erased_at) => KeyState::Erased { erased_at },
                    None => KeyState::Live,
                };
                Ok((row.try_get("dossier_id")?, state))
            })
            .collect()
    }

    /// Whether `secret` is the dossier's lookup secret (compared as stored hashes).
    pub async fn lookup_matches(
        &self,
        dossier: &DossierId,
        secret: &LookupSecret,
    ) -> Result<bool, VaultError> {
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT lookup_sha256 FROM personal_keys WHERE dossier_id = $1")
                .bind(dossier.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(stored.is_some_and(|s| s == secret.digest(dossier)))
    }

    /// The access log, oldest first, after row `after_id`, optionally of one dossier.
    pub async fn access_log(
        &self,
        dossier: Option<&DossierId>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<Access>, VaultError> {
        let rows = sqlx::query(
            "SELECT id, at, dossier_id, reader, agency, purpose, outcome FROM personal_access_log
             WHERE id > $1 AND ($2::text IS NULL OR dossier_id = $2) ORDER BY id LIMIT $3",
        )
        .bind(after_id)
        .bind(dossier.map(DossierId::as_str))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Access {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    dossier_id: r.try_get("dossier_id")?,
                    reader: r.try_get("reader")?,
                    agency: r.try_get("agency")?,
                    purpose: r.try_get("purpose")?,
                    outcome: r.try_get("outcome")?,
                })
            })
            .collect()
    }
}
