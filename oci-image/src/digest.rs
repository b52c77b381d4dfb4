//! Content digests (`sha256:HEX`, `sha512:HEX`) and a reader that checks one.

use std::fmt;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256, Sha512};

use crate::error::{ImageError, Result};

/// Digest algorithms the crate verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-256, what every registry uses.
    Sha256,
    /// SHA-512, allowed by the OCI spec.
    Sha512,
}

/// A parsed, validated digest: the hex part is lowercase hex of the
/// algorithm's length, so it is safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses `ALG:HEX`, rejecting unknown algorithms and malformed hex.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || ImageError::BadDigest(s.to_string());
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let (alg, len) = match alg {
            "sha256" => (Algorithm::Sha256, 64),
            "sha512" => (Algorithm::Sha512, 128),
            _ => return Err(bad()),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest {
            alg,
            hex: hex.to_string(),
        })
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        Digest {
            alg: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(data)),
        }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The algorithm's name as used in paths (`sha256`).
    pub fn algorithm_name(&self) -> &'static str {
        match self.alg {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm_name(), self.hex)
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Hashes everything read through it; [`finish`](Self::finish) drains the
/// rest and compares with the expected digest (and size, when known).
pub struct DigestReader<R> {
    inner: R,
    hasher: Hasher,
    expected: Digest,
    expected_size: Option<u64>,
    read: u64,
    what: String,
}

impl<R: Read> DigestReader<R> {
    /// Wraps `inner`, which should produce exactly the bytes of `expected`.
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>, what: &str) -> Self {
        let hasher = match expected.alg {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        };
        DigestReader {
            inner,
            hasher,
            expected,
            expected_size,
            read: 0,
            what: what.to_string(),
        }
    }

    /// Reads what is left, then checks size and digest.
    pub fn finish(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| ImageError::io(&self.what, e))?;
        if let Some(size) = self.expected_size {
            if size != self.read {
                return Err(ImageError::SizeMismatch {
                    what: self.what,
                    expected: size,
                    actual: self.read,
                });
            }
        }
        let actual = match self.hasher {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        if actual != self.expected.hex {
            return Err(ImageError::DigestMismatch {
                what: self.what,
                expected: self.expected.to_string(),
                actual: format!("{}:{actual}", self.expected.algorithm_name()),
            });
        }
        Ok(())
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(&buf[..n]),
            Hasher::Sha512(h) => h.update(&buf[..n]),
        }
        self.read += n as u64;
        // A blob longer than its descriptor says is refused early, so a
        // hostile source cannot stream without bound.
        if let Some(size) = self.expected_size {
            if self.read > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is longer than its descriptor's {size} bytes", self.what),
                ));
            }
        }
        Ok(n)
    }
}

/// Reads a whole small blob (manifest, config), checking size and digest.
pub fn read_verified<R: Read>(
    inner: R,
    expected: &Digest,
    expected_size: Option<u64>,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let mut r = DigestReader::new(inner.take(limit), expected.clone(), expected_size, what);
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)
        .map_err(|e| ImageError::io(what, e))?;
    if buf.len() as u64 >= limit {
        return Err(ImageError::Unsupported(format!(
            "{what} is larger than {limit} bytes"
        )));
    }
    r.finish()?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_traversal_and_unknown() {
        let h = "a".repeat(64);
        assert!(Digest::parse(&format!("sha256:{h}")).is_ok());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("md5:{h}")).is_err());
        assert!(Digest::parse(&h).is_err());
        assert!(Digest::parse(&format!("sha512:{}", "0".repeat(128))).is_ok());
    }

    #[test]
    fn reader_checks_digest_and_size() {
        let d = Digest::sha256_of(b"hello");
        DigestReader::new(&b"hello"[..], d.clone(), Some(5), "x")
            .finish()
            .unwrap();
        assert!(matches!(
            DigestReader::new(&b"hellO"[..], d.clone(), Some(5), "x").finish(),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(DigestReader::new(&b"hello!"[..], d.clone(), Some(5), "x")
            .finish()
            .is_err());
        assert!(matches!(
            DigestReader::new(&b"hell"[..], d.clone(), Some(4), "x").finish(),
            Err(ImageError::DigestMismatch { .. })
        ));
        assert!(read_verified(&b"hello"[..], &d, Some(5), 4, "x").is_err());
        assert_eq!(
            read_verified(&b"hello"[..], &d, Some(5), 100, "x").unwrap(),
            b"hello"
        );
    }
}
