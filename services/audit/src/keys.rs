//! The checkpoint signing key file: `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>` (the
//! format of Go's `note` package), created with mode 0600 on first start when missing.

use std::io::Write;
use std::path::{Path, PathBuf};

use merkle::{KeyError, Signer, VerifierKey};

/// The key name (and checkpoint origin) given to a key created without one.
pub const DEFAULT_ORIGIN: &str = "motcua/dossier-log";

/// Why the signing key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read signing key file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create signing key file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("signing key file {path}: {source}")]
    Invalid {
        path: PathBuf,
        #[source]
        source: KeyError,
    },
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// Reads the signing key at `path`, or creates one named `origin` there (parent directories
/// too, file mode 0600, never overwriting: if another instance created it first, that one is
/// read). Returns the key and whether it was created now.
pub fn load_or_create(path: &Path, origin: &str) -> Result<(Signer, bool), KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => return parse(path, &text).map(|s| (s, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(KeyFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| KeyFileError::Random(e.to_string()))?;
    let signer = Signer::from_seed(origin, seed).map_err(|source| KeyFileError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    let create = |source| KeyFileError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(create)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(format!("{}\n", signer.to_private_text()).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(create)?;
            Ok((signer, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
                path: path.to_owned(),
                source,
            })?;
            parse(path, &text).map(|s| (s, false))
        }
        Err(e) => Err(create(e)),
    }
}

fn parse(path: &Path, text: &str) -> Result<Signer, KeyFileError> {
    Signer::parse(text).map_err(|source| KeyFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Reads a verifier key given on the command line: the verifier key text
/// (`<name>+<key id>+<base64>`), or a file holding it.
pub fn read_verifier(arg: &str) -> Result<VerifierKey, KeyFileError> {
    let path = Path::new(arg);
    let text = if path.is_file() {
        std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
            path: path.to_owned(),
            source,
        })?
    } else {
        arg.to_owned()
    };
    VerifierKey::parse(&text).map_err(|source| KeyFileError::Invalid {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/checkpoint.key");
        let (created, fresh) = load_or_create(&path, "test/log").unwrap();
        assert!(fresh);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, fresh) = load_or_create(&path, "ignored/name").unwrap();
        assert!(!fresh);
        assert_eq!(again.verifier(), created.verifier());
        assert_eq!(again.name(), "test/log");

        let public = created.verifier().to_text();
        assert_eq!(read_verifier(&public).unwrap(), created.verifier());
        let file = dir.path().join("checkpoint.pub");
        std::fs::write(&file, format!("{public}\n")).unwrap();
        assert_eq!(
            read_verifier(file.to_str().unwrap()).unwrap(),
            created.verifier()
        );
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_or_create(&path, "x").is_err());
    }
}
