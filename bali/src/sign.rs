//! The bali image signature format.
//!
//! An image is one gzip stream whose decompressed bytes are
//! `TAR || 0u8 x 8 || "iksig\0\0\0" || SIG`, where `SIG` is the 64-byte
//! Ed25519ph signature (RFC 8032, SHA-512 prehash, context `bali`) over the
//! exact `TAR` bytes. `tar xzf` ignores the trailer because it comes after
//! the tar end-of-archive blocks.
//!
//! Verification is streaming: [`VerifyingReader`] yields the tar bytes while
//! hashing them and holds back the last 80 bytes, so a caller can unpack and
//! check in one pass and only trust the result after [`VerifyingReader::finish`].
//!
//! The gzip header carries bytes that no checksum covers (flags, mtime,
//! extra flags, OS). They are required to be canonical (FLG = 0, MTIME = 0,
//! XFL in {0, 2, 4}, OS in {3, 255}) so that a changed header byte is
//! rejected too; data after the gzip member is rejected.

use std::io::{self, BufRead, BufReader, Read, Write};

use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha512};

/// Ed25519ph context string.
pub const CONTEXT: &[u8] = b"bali";
/// The 8 magic bytes that follow the 8 zero bytes.
pub const MAGIC: [u8; 8] = *b"iksig\0\0\0";
/// Length of the trailer after the tar bytes.
pub const TRAILER_LEN: usize = 80;
/// Tar streams are made of 512-byte blocks.
const TAR_BLOCK: u64 = 512;
/// A tar stream holds at least its two end-of-archive blocks.
const MIN_TAR_LEN: u64 = 2 * TAR_BLOCK;

/// Why an image failed verification. The doc comment is the message.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// not a gzip file
    #[error("not a gzip file")]
    NotGzip,
    /// gzip header is not canonical (flags, mtime, xfl or os byte changed)
    #[error("gzip header is not canonical (byte {0} is {1:#04x})")]
    HeaderNotCanonical(usize, u8),
    /// corrupt gzip stream
    #[error("corrupt or truncated gzip stream: {0}")]
    Corrupt(io::Error),
    /// reading failed
    #[error("read error: {0}")]
    Io(io::Error),
    /// decompressed data too short to hold a tar stream and a trailer
    #[error("image too short: {0} bytes of tar data and trailer")]
    TooShort(u64),
    /// tar data length is not a multiple of 512
    #[error("missing signature trailer (tar data is {0} bytes, not a multiple of 512)")]
    Misaligned(u64),
    /// the trailer does not start with 8 zero bytes and the magic
    #[error("missing signature trailer (no iksig magic)")]
    NoMagic,
    /// bytes after the end of the gzip stream
    #[error("unexpected data after the end of the gzip stream")]
    TrailingData,
    /// the signature does not verify with the given key
    #[error("signature does not match key {0}")]
    BadSignature(String),
    /// writing failed
    #[error("write error: {0}")]
    Write(io::Error),
}

/// Writes `TAR || trailer` into a gzip stream, hashing the tar bytes.
pub struct SigningWriter<W: Write> {
    gz: GzEncoder<W>,
    hasher: Sha512,
}

impl<W: Write> SigningWriter<W> {
    /// Starts a gzip stream with the canonical header (mtime 0, OS 255).
    pub fn new(out: W) -> Self {
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(out, Compression::default());
        SigningWriter {
            gz,
            hasher: Sha512::new(),
        }
    }

    /// Appends the trailer signed by `key` and ends the gzip stream.
    pub fn finish(mut self, key: &SigningKey) -> Result<W, SignError> {
        let sig = key
            .sign_prehashed(self.hasher.clone(), Some(CONTEXT))
            // Only fails for a context longer than 255 bytes.
            .map_err(|e| SignError::Write(io::Error::other(e.to_string())))?;
        let mut trailer = [0u8; TRAILER_LEN];
        trailer[8..16].copy_from_slice(&MAGIC);
        trailer[16..].copy_from_slice(&sig.to_bytes());
        self.gz.write_all(&trailer).map_err(SignError::Write)?;
        self.gz.finish().map_err(SignError::Write)
    }
}

impl<W: Write> Write for SigningWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.gz.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.gz.flush()
    }
}

/// Counts raw (compressed) bytes and keeps the 10-byte gzip header.
struct RawTap<R> {
    inner: R,
    header: [u8; 10],
    seen: usize,
}

impl<R: Read> Read for RawTap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let want = self.header.len().saturating_sub(self.seen).min(n);
        self.header[self.seen..self.seen + want].copy_from_slice(&buf[..want]);
        self.seen += want;
        Ok(n)
    }
}

/// Yields the tar bytes of a signed image while hashing them.
///
/// Everything read from it is untrusted until [`finish`](Self::finish)
/// returns `Ok`.
pub struct VerifyingReader<R: Read> {
    gz: GzDecoder<BufReader<RawTap<R>>>,
    hasher: Sha512,
    /// Decompressed bytes not yet released; the last 80 may be the trailer.
    pending: Vec<u8>,
    released: u64,
    eof: bool,
    /// First decode error, kept so `finish` can report it precisely.
    error: Option<SignError>,
}

impl<R: Read> VerifyingReader<R> {
    /// Wraps a reader of the signed `.tar.gz` bytes.
    pub fn new(raw: R) -> Self {
        let tap = RawTap {
            inner: raw,
            header: [0; 10],
            seen: 0,
        };
        VerifyingReader {
            gz: GzDecoder::new(BufReader::new(tap)),
            hasher: Sha512::new(),
            pending: Vec::with_capacity(TRAILER_LEN + 64 * 1024),
            released: 0,
            eof: false,
            error: None,
        }
    }

    fn classify(&self, e: io::Error) -> SignError {
        let tap = self.gz.get_ref().get_ref();
        if tap.seen >= 2 && tap.header[..2] != [0x1f, 0x8b] {
            return SignError::NotGzip;
        }
        if tap.seen < 2 {
            return SignError::NotGzip;
        }
        let msg = e.to_string();
        if msg.contains("gzip") || msg.contains("deflate") {
            return SignError::Corrupt(e);
        }
        match e.kind() {
            io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof => SignError::Corrupt(e),
            _ => SignError::Io(e),
        }
    }

    /// Reads the rest of the stream, then checks trailer, header and
    /// signature. `Ok` means every tar byte handed out was signed by `key`.
    pub fn finish(mut self, key: &VerifyingKey) -> Result<u64, SignError> {
        if let Err(e) = io::copy(&mut self, &mut io::sink()) {
            return Err(self.error.take().unwrap_or(SignError::Io(e)));
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let tap = self.gz.get_ref().get_ref();
        if tap.seen < 10 || tap.header[..2] != [0x1f, 0x8b] {
            return Err(SignError::NotGzip);
        }
        check_header(&tap.header)?;
        // Anything after the gzip member is not covered by anything.
        let rest = self.gz.get_mut().fill_buf().map_err(SignError::Io)?;
        if !rest.is_empty() {
            return Err(SignError::TrailingData);
        }
        let total = self.released + self.pending.len() as u64;
        if self.pending.len() < TRAILER_LEN || self.released < MIN_TAR_LEN {
            return Err(SignError::TooShort(total));
        }
        if self.released % TAR_BLOCK != 0 {
            return Err(SignError::Misaligned(self.released));
        }
        let trailer = &self.pending[..];
        if trailer[..8] != [0u8; 8] || trailer[8..16] != MAGIC {
            return Err(SignError::NoMagic);
        }
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&trailer[16..]);
        let sig = Signature::from_bytes(&sig);
        key.verify_prehashed(self.hasher, Some(CONTEXT), &sig)
            .map_err(|_| SignError::BadSignature(crate::key::key_id(key)))?;
        Ok(self.released)
    }
}

/// Rejects header bytes that no checksum covers unless they are canonical.
fn check_header(h: &[u8; 10]) -> Result<(), SignError> {
    let bad = |i: usize| Err(SignError::HeaderNotCanonical(i, h[i]));
    if h[2] != 8 {
        return bad(2);
    }
    if h[3] != 0 {
        return bad(3);
    }
    if let Some(i) = (4..8).find(|&i| h[i] != 0) {
        return bad(i);
    }
    if ![0, 2, 4].contains(&h[8]) {
        return bad(8);
    }
    if ![3, 255].contains(&h[9]) {
        return bad(9);
    }
    Ok(())
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let releasable = self.pending.len().saturating_sub(TRAILER_LEN);
            if releasable > 0 {
                let n = releasable.min(buf.len());
                buf[..n].copy_from_slice(&self.pending[..n]);
                self.hasher.update(&buf[..n]);
                self.pending.drain(..n);
                self.released += n as u64;
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.gz.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = e.to_string();
                    let kind = e.kind();
                    self.error = Some(self.classify(e));
                    self.eof = true;
                    return Err(io::Error::new(kind, msg));
                }
            }
        }
    }
}

/// Verifies a whole signed image held in memory (used by the fuzz target).
pub fn verify_bytes(data: &[u8], key: &VerifyingKey) -> Result<u64, SignError> {
    verify_reader(data, key)
}

/// Verifies a signed image from any reader.
pub fn verify_reader<R: Read>(raw: R, key: &VerifyingKey) -> Result<u64, SignError> {
    VerifyingReader::new(raw).finish(key)
}

/// Signs an existing uncompressed tar stream into a bali image.
pub fn sign_tar<R: Read, W: Write>(mut tar: R, out: W, key: &SigningKey) -> Result<W, SignError> {
    let mut w = SigningWriter::new(out);
    io::copy(&mut tar, &mut w).map_err(SignError::Write)?;
    w.finish(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn tar_bytes() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let data = b"hello bali\n".repeat(50);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &data[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn round_trip_and_plain_gunzip_sees_tar_then_trailer() {
        let tar = tar_bytes();
        let img = sign_tar(&tar[..], Vec::new(), &key(1)).unwrap();
        assert_eq!(
            verify_bytes(&img, &key(1).verifying_key()).unwrap(),
            tar.len() as u64
        );
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&img[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(&plain[..tar.len()], &tar[..]);
        assert_eq!(plain.len(), tar.len() + 80);
        assert_eq!(&plain[tar.len()..tar.len() + 8], &[0u8; 8]);
        assert_eq!(&plain[tar.len() + 8..tar.len() + 16], b"iksig\0\0\0");
        // The signature is plain Ed25519ph over SHA-512(tar) with context "bali".
        let sig = Signature::from_slice(&plain[tar.len() + 16..]).unwrap();
        let mut h = Sha512::new();
        h.update(&tar);
        key(1)
            .verifying_key()
            .verify_prehashed(h, Some(b"bali"), &sig)
            .unwrap();
    }

    /// Every changed byte is rejected, with one exception no gzip reader can
    /// see: unused padding bits of the last deflate byte. A flip there must
    /// leave the decompressed bytes identical, so nothing extracted changes.
    #[test]
    fn every_byte_flip_is_rejected() {
        let img = sign_tar(&tar_bytes()[..], Vec::new(), &key(2)).unwrap();
        let vk = key(2).verifying_key();
        let padding_byte = img.len() - 9;
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&img[..])
            .read_to_end(&mut plain)
            .unwrap();
        for off in 0..img.len() {
            for x in [0xffu8, 0x01, 0x80, 0x10] {
                let mut bad = img.clone();
                bad[off] ^= x;
                if verify_bytes(&bad, &vk).is_err() {
                    continue;
                }
                assert_eq!(off, padding_byte, "flip {x:#x} at {off} accepted");
                assert_ne!(x, 0xff, "flipping all bits of the last byte accepted");
                let mut got = Vec::new();
                flate2::read::GzDecoder::new(&bad[..])
                    .read_to_end(&mut got)
                    .unwrap();
                assert_eq!(got, plain);
            }
        }
    }

    #[test]
    fn wrong_key_truncation_trailing_and_unsigned_are_rejected() {
        let tar = tar_bytes();
        let img = sign_tar(&tar[..], Vec::new(), &key(3)).unwrap();
        let vk = key(3).verifying_key();
        assert!(matches!(
            verify_bytes(&img, &key(4).verifying_key()),
            Err(SignError::BadSignature(_))
        ));
        for cut in [0, 1, 9, 10, 20, img.len() / 2, img.len() - 8, img.len() - 1] {
            assert!(verify_bytes(&img[..cut], &vk).is_err(), "cut at {cut}");
        }
        let mut long = img.clone();
        long.extend_from_slice(&img);
        assert!(matches!(
            verify_bytes(&long, &vk),
            Err(SignError::TrailingData)
        ));
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&tar).unwrap();
        let unsigned = gz.finish().unwrap();
        assert!(verify_bytes(&unsigned, &vk).is_err());
        assert!(matches!(
            verify_bytes(b"plain text, not gzip", &vk),
            Err(SignError::NotGzip)
        ));
        assert!(matches!(verify_bytes(&tar, &vk), Err(SignError::NotGzip)));
    }
}
