//! Signing keys and their text ids.
//!
//! A key id is `bali1` followed by the lowercase RFC 4648 base32 (no
//! padding) encoding of 36 bytes: the 32-byte Ed25519 public key and the
//! first 4 bytes of SHA-256 over it, so a mistyped id is caught instead of
//! being taken for another key. Ids are 63 characters long; decoding
//! ignores case.
//!
//! The secret key file holds the 32-byte Ed25519 seed as 64 hex digits and a
//! newline, mode 0600. Its path is `$BALI_KEY` if set, else
//! `$XDG_CONFIG_HOME/bali/key`, else `$HOME/.config/bali/key`.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Prefix of every key id.
pub const ID_PREFIX: &str = "bali1";

/// Key handling errors. The doc comment is the message.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// key id does not start with bali1
    #[error("key id must start with {ID_PREFIX}")]
    Prefix,
    /// key id is not valid base32
    #[error("key id is not valid base32")]
    Encoding,
    /// key id has the wrong length
    #[error("key id has the wrong length")]
    Length,
    /// key id checksum mismatch (mistyped id?)
    #[error("key id checksum does not match (mistyped id?)")]
    Checksum,
    /// bytes are not an Ed25519 public key
    #[error("key id does not hold a valid Ed25519 public key")]
    NotAKey,
    /// no place for the key file
    #[error("no key path: set BALI_KEY or HOME")]
    NoPath,
    /// key file missing
    #[error("no signing key at {0} (create one with `bali key`)")]
    Missing(PathBuf),
    /// key file exists already
    #[error("a key already exists at {0}; move it away to create a new one")]
    Exists(PathBuf),
    /// key file content is not 64 hex digits
    #[error("key file {0} is not 64 hex digits")]
    BadFile(PathBuf),
    /// key file is readable by others
    #[error("key file {0} is readable by others (mode {1:o}); chmod 600 it")]
    Mode(PathBuf, u32),
    /// I/O on the key file
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    /// no randomness
    #[error("cannot get random bytes: {0}")]
    Random(String),
}

fn checksum(key: &[u8; 32]) -> [u8; 4] {
    let d = Sha256::digest(key);
    [d[0], d[1], d[2], d[3]]
}

/// Encodes a public key as its text id.
pub fn key_id(key: &VerifyingKey) -> String {
    let mut raw = [0u8; 36];
    raw[..32].copy_from_slice(key.as_bytes());
    raw[32..].copy_from_slice(&checksum(key.as_bytes()));
    let enc = data_encoding::BASE32_NOPAD
        .encode(&raw)
        .to_ascii_lowercase();
    format!("{ID_PREFIX}{enc}")
}

/// Decodes a text id back to a public key, checking the checksum.
pub fn parse_key_id(id: &str) -> Result<VerifyingKey, KeyError> {
    let id = id.trim();
    let rest = match id.get(..ID_PREFIX.len()) {
        Some(p) if p.eq_ignore_ascii_case(ID_PREFIX) => &id[ID_PREFIX.len()..],
        _ => return Err(KeyError::Prefix),
    };
    let raw = data_encoding::BASE32_NOPAD
        .decode(rest.to_ascii_uppercase().as_bytes())
        .map_err(|_| KeyError::Encoding)?;
    if raw.len() != 36 {
        return Err(KeyError::Length);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&raw[..32]);
    if raw[32..] != checksum(&key) {
        return Err(KeyError::Checksum);
    }
    VerifyingKey::from_bytes(&key).map_err(|_| KeyError::NotAKey)
}

/// Where the secret key lives.
pub fn key_path() -> Result<PathBuf, KeyError> {
    if let Some(p) = std::env::var_os("BALI_KEY").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    if let Some(c) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(c).join("bali").join("key"));
    }
    match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("bali").join("key")),
        None => Err(KeyError::NoPath),
    }
}

/// Loads the secret key from `path`.
pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(KeyError::Missing(path.to_owned()))
        }
        Err(e) => return Err(KeyError::Io(path.to_owned(), e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Mode(path.to_owned(), mode));
    }
    let text = fs::read_to_string(path).map_err(|e| KeyError::Io(path.to_owned(), e))?;
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::BadFile(path.to_owned()))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyError::BadFile(path.to_owned()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Creates a new key at `path` (mode 0600); refuses to replace one.
pub fn create(path: &Path) -> Result<SigningKey, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| KeyError::Io(dir.to_owned(), e))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_owned()),
            _ => KeyError::Io(path.to_owned(), e),
        })?;
    writeln!(f, "{}", hex::encode(seed)).map_err(|e| KeyError::Io(path.to_owned(), e))?;
    f.sync_all().map_err(|e| KeyError::Io(path.to_owned(), e))?;
    Ok(key)
}

/// Loads the key at `path`, creating it on first use.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyError> {
    match load(path) {
        Err(KeyError::Missing(_)) => match create(path) {
            // Lost a race with another bali creating it: use theirs.
            Err(KeyError::Exists(_)) => load(path),
            r => r,
        },
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_and_catches_typos() {
        let k = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let id = key_id(&k);
        assert!(id.starts_with("bali1"));
        assert_eq!(id.len(), 63);
        assert_eq!(parse_key_id(&id).unwrap(), k);
        assert_eq!(parse_key_id(&id.to_ascii_uppercase()).unwrap(), k);
        // Change one character: the checksum or decoding must catch it.
        for i in ID_PREFIX.len()..id.len() {
            let mut b = id.clone().into_bytes();
            b[i] = if b[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(b).unwrap();
            assert!(parse_key_id(&typo).is_err(), "typo at {i} accepted");
        }
        assert!(matches!(parse_key_id("xyz"), Err(KeyError::Prefix)));
        assert!(parse_key_id("bali1abc").is_err());
    }

    #[test]
    fn key_file_is_created_once_with_mode_600() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key");
        let k1 = load_or_create(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = load_or_create(&p).unwrap();
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        assert!(matches!(create(&p), Err(KeyError::Exists(_))));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(load(&p), Err(KeyError::Mode(_, 0o644))));
    }
}
