//! The initramfs: one or more files concatenated at the top of low RAM.
//!
//! The kernel unpacks concatenated cpio archives (compressed or not) one
//! after the other and skips zero padding between them, so the launcher can
//! add a small archive (a config file, say) to a stock initramfs without
//! rebuilding it. Each part starts 4-byte aligned, as cpio headers must.

use std::path::PathBuf;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{open, BootError};

const PART_ALIGN: u64 = 4;
const PAGE: u64 = 4096;

/// Loads `parts` back to back, ending as close below `limit` as page
/// alignment allows and starting at or above `floor`. Returns the guest
/// address and total size, or `None` when there are no parts.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    parts: &[PathBuf],
    floor: u64,
    limit: u64,
) -> Result<Option<(u64, u64)>, BootError> {
    if parts.is_empty() {
        return Ok(None);
    }
    let mut files = Vec::with_capacity(parts.len());
    let mut total = 0u64;
    for path in parts {
        let file = open(path)?;
        let len = file
            .metadata()
            .map_err(|err| BootError::Read {
                path: path.clone(),
                err,
            })?
            .len();
        total = total.next_multiple_of(PART_ALIGN).saturating_add(len);
        files.push((path, file, len));
    }
    let too_large = BootError::InitrdTooLarge { size: total, limit };
    let start = limit
        .checked_sub(total)
        .map(|s| s & !(PAGE - 1))
        .filter(|&s| s >= floor)
        .ok_or(too_large)?;
    let mut offset = 0u64;
    for (path, mut file, len) in files {
        let padded = offset.next_multiple_of(PART_ALIGN);
        let pad = vec![0u8; (padded - offset) as usize];
        mem.write_slice(&pad, GuestAddress(start + offset))
            .map_err(|err| BootError::GuestMemory {
                what: "initramfs padding",
                err,
            })?;
        // `len` bytes fit in guest memory (checked above), so in usize.
        mem.read_exact_volatile_from(GuestAddress(start + padded), &mut file, len as usize)
            .map_err(|e| BootError::Read {
                path: path.clone(),
                err: std::io::Error::other(e.to_string()),
            })?;
        offset = padded + len;
    }
    Ok(Some((start, total)))
}
