//! The ELF `vmlinux` inside a bzImage, for tests of ELF/PVH boot.
//!
//! A bzImage carries the kernel ELF compressed as its payload; the setup
//! header says where (`payload_offset`, `payload_length`, relative to the
//! protected-mode code after the setup sectors). The compression is found by
//! its magic, as the kernel's own `scripts/extract-vmlinux` does. Debian's
//! cloud kernel uses LZ4 (legacy frame); gzip is handled too. The result is
//! cached next to the initramfs images, keyed by the bzImage's size and
//! modification time.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::{cache_dir, TestbedError};

/// ELF magic, which the extracted payload must start with.
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
/// LZ4 legacy frame magic (`lz4 -l`, what the kernel build uses).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];
/// gzip magic with the deflate method.
const GZIP_MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
/// Largest uncompressed block of the LZ4 legacy format.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

fn bad(image: &Path, why: &str) -> TestbedError {
    TestbedError::MissingKernel(format!("{}: {why}", image.display()))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// The compressed payload of the bzImage `data`.
fn payload<'a>(image: &Path, data: &'a [u8]) -> Result<&'a [u8], TestbedError> {
    if data.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad(image, "not a bzImage (no HdrS setup header)"));
    }
    // setup_sects 0 means 4, as in the boot protocol.
    let setup_sects = match data.get(0x1f1) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return Err(bad(image, "truncated setup header")),
    };
    let (offset, len) = le32(data, 0x248)
        .zip(le32(data, 0x24c))
        .ok_or_else(|| bad(image, "truncated setup header"))?;
    let start = (setup_sects + 1) * 512 + offset as usize;
    data.get(start..start + len as usize)
        .ok_or_else(|| bad(image, "payload outside the file"))
}

/// Decompresses an LZ4 legacy stream: blocks of (u32 compressed size,
/// data), each at most 8 MiB uncompressed, until the input ends. The
/// kernel appends the uncompressed size as a last u32, which is not a block.
fn lz4_legacy(image: &Path, mut input: &[u8]) -> Result<Vec<u8>, TestbedError> {
    input = &input[4..];
    let mut out = Vec::new();
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while input.len() > 4 {
        let size = le32(input, 0).unwrap_or(0) as usize;
        if size == u32::from_le_bytes(LZ4_LEGACY_MAGIC) as usize {
            input = &input[4..];
            continue;
        }
        let Some(compressed) = input.get(4..4 + size) else {
            break; // the trailing size field
        };
        let n = lz4_flex::block::decompress_into(compressed, &mut block)
            .map_err(|e| bad(image, &format!("LZ4 block: {e}")))?;
        out.extend_from_slice(&block[..n]);
        input = &input[4 + size..];
    }
    Ok(out)
}

/// Extracts the ELF kernel from the bzImage bytes `data`.
pub fn extract_vmlinux(image: &Path, data: &[u8]) -> Result<Vec<u8>, TestbedError> {
    let payload = payload(image, data)?;
    let elf = if payload.starts_with(&LZ4_LEGACY_MAGIC) {
        lz4_legacy(image, payload)?
    } else if payload.starts_with(&GZIP_MAGIC) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(payload)
            .read_to_end(&mut out)
            .map_err(|e| bad(image, &format!("gzip payload: {e}")))?;
        out
    } else {
        let magic: Vec<String> = payload.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(bad(
            image,
            &format!(
                "payload compression {} not supported (lz4, gzip are)",
                magic.join(" ")
            ),
        ));
    };
    if !elf.starts_with(ELF_MAGIC) {
        return Err(bad(image, "the decompressed payload is not an ELF file"));
    }
    Ok(elf)
}

/// The ELF `vmlinux` of the bzImage at `image`, extracted once and cached.
pub fn cached_vmlinux(image: &Path) -> Result<PathBuf, TestbedError> {
    let meta = fs::metadata(image).map_err(|e| TestbedError::io(image, e))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let name = image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = cache_dir();
    let path = dir.join(format!("vmlinux-{name}-{}-{mtime}", meta.len()));
    if path.exists() {
        return Ok(path);
    }
    let data = fs::read(image).map_err(|e| TestbedError::io(image, e))?;
    let elf = extract_vmlinux(image, &data)?;
    fs::create_dir_all(&dir).map_err(|e| TestbedError::io(&dir, e))?;
    // Written under a unique name and renamed: parallel tests never see a
    // half-written file.
    let tmp = dir.join(format!(".tmp-vmlinux-{}", std::process::id()));
    fs::write(&tmp, &elf).map_err(|e| TestbedError::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| TestbedError::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_bzimage_is_refused() {
        let err = extract_vmlinux(Path::new("x"), &[0u8; 1024]).unwrap_err();
        assert!(err.to_string().contains("not a bzImage"), "{err}");
    }

    #[test]
    fn installed_kernel_yields_an_elf_vmlinux() {
        let Ok(kernel) = crate::Kernel::debian() else {
            return;
        };
        let path = cached_vmlinux(&kernel.image).unwrap();
        let mut head = [0u8; 4];
        fs::File::open(&path)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert_eq!(&head, ELF_MAGIC);
        // Decompressed, the kernel is several times the bzImage.
        let (elf, bz) = (
            fs::metadata(&path).unwrap().len(),
            fs::metadata(&kernel.image).unwrap().len(),
        );
        assert!(elf > 2 * bz, "{elf} vs {bz}");
    }
}
