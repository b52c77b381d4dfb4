//! Loading a bzImage with linux-loader and checking it can boot the 64-bit
//! way in the memory the guest has.

use std::path::Path;

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::KernelLoader;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{open, BootError};
use crate::arch::x86_64::bootparams::XLF_KERNEL_64;
use crate::arch::x86_64::layout::HIMEM_START;

/// Offset of `startup_64` from the load address.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// First boot protocol with `xloadflags`.
pub const MIN_BOOT_PROTOCOL: u16 = 0x020c;

/// A kernel in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Where the protected-mode kernel was copied.
    pub load_addr: u64,
    /// 64-bit entry point.
    pub entry: u64,
    /// End of the area the kernel decompresses itself into
    /// (`load_addr + init_size`): nothing else may live below it.
    pub decompress_end: u64,
    /// The image's setup header, `code32_start` set to `load_addr`.
    pub header: setup_header,
}

/// Loads the bzImage at `path` at 1 MiB; `low_ram_end` is the end of RAM
/// below the 32-bit hole.
pub fn load_bzimage(
    mem: &GuestMemoryMmap,
    path: &Path,
    low_ram_end: u64,
) -> Result<LoadedKernel, BootError> {
    let mut file = open(path)?;
    // The protected-mode kernel is most of the file: if the file does not
    // fit above 1 MiB, say so instead of failing halfway through the copy.
    let file_len = file
        .metadata()
        .map_err(|err| BootError::Read {
            path: path.to_path_buf(),
            err,
        })?
        .len();
    if HIMEM_START.saturating_add(file_len) > low_ram_end {
        return Err(BootError::MemoryTooSmall {
            needed: HIMEM_START.saturating_add(file_len),
            have: low_ram_end,
        });
    }
    let loaded =
        BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(|err| {
            BootError::NotBzImage {
                path: path.to_path_buf(),
                err,
            }
        })?;
    let header = loaded.setup_header.ok_or_else(|| BootError::NotBzImage {
        path: path.to_path_buf(),
        err: linux_loader::loader::Error::InvalidKernelStartAddress,
    })?;
    if header.version < MIN_BOOT_PROTOCOL {
        return Err(BootError::OldBootProtocol {
            path: path.to_path_buf(),
            version: header.version,
        });
    }
    if header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BootError::Not64Bit(path.to_path_buf()));
    }
    let load_addr = loaded.kernel_load.0;
    let decompress_end = load_addr
        .saturating_add(u64::from(header.init_size))
        .max(loaded.kernel_end);
    if decompress_end > low_ram_end {
        return Err(BootError::MemoryTooSmall {
            needed: decompress_end,
            have: low_ram_end,
        });
    }
    Ok(LoadedKernel {
        load_addr,
        entry: load_addr + ENTRY_64_OFFSET,
        decompress_end,
        header,
    })
}
