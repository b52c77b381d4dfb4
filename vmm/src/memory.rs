//! Guest RAM: one memfd, mapped shared, so every vhost-user daemon can map
//! the same pages from the fd the VMM hands it in the memory table.
//!
//! RAM is laid out around the 32-bit device hole: up to 3 GiB from address
//! 0, the rest from 4 GiB. Both regions are windows into the same memfd.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::mmap::FromRangesError;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout::{FIRST_ADDR_PAST_32BITS, MEM_32BIT_GAP_START};

/// RAM size granularity without hugepages.
pub const PAGE_SIZE: u64 = 4096;
/// RAM size granularity with hugepages (2 MiB pages).
pub const HUGE_PAGE_SIZE: u64 = 2 << 20;

const MEMFD_NAME: &CStr = c"cradle-guest-ram";

/// Why guest RAM could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The size is zero or not a multiple of the page size in use.
    #[error("guest memory size {size} is not a positive multiple of {granule} bytes")]
    BadSize {
        /// Requested size in bytes.
        size: u64,
        /// Page size it must be a multiple of.
        granule: u64,
    },
    /// memfd_create failed (with hugepages: none configured on the host?).
    #[error("memfd_create for guest memory failed: {0}")]
    Memfd(io::Error),
    /// Sizing the memfd failed (not enough hugepages, or a size limit).
    #[error("cannot size the guest memory memfd to {size} bytes: {err}")]
    Truncate {
        /// Requested size in bytes.
        size: u64,
        /// The OS error.
        err: io::Error,
    },
    /// Sealing the memfd's size failed.
    #[error("cannot seal the guest memory memfd: {0}")]
    Seal(io::Error),
    /// Mapping the memfd failed.
    #[error("cannot map guest memory: {0}")]
    Map(FromRangesError),
    /// KVM refused a memory slot.
    #[error("KVM_SET_USER_MEMORY_REGION for slot {slot} failed: {err}")]
    SetMemoryRegion {
        /// KVM memory slot.
        slot: u32,
        /// The KVM error.
        err: kvm_ioctls::Error,
    },
}

/// Where `size` bytes of RAM go in guest-physical space: below the 32-bit
/// device hole first, the remainder from 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MEM_32BIT_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MEM_32BIT_GAP_START),
            (
                GuestAddress(FIRST_ADDR_PAST_32BITS),
                size - MEM_32BIT_GAP_START,
            ),
        ]
    }
}

fn create_memfd(size: u64, hugepages: bool) -> Result<File, MemoryError> {
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if hugepages {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: the name is a valid NUL-terminated string; the call only
    // returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(MEMFD_NAME.as_ptr(), flags) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody
    // else.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|err| MemoryError::Truncate { size, err })?;
    // A daemon sharing the fd must not be able to shrink it under our
    // mappings (SIGBUS in the VMM) or grow it.
    // SAFETY: fcntl on an fd we own, with integer arguments only.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    };
    if rc < 0 {
        return Err(MemoryError::Seal(io::Error::last_os_error()));
    }
    Ok(file)
}

/// Creates `size` bytes of guest RAM in one memfd (2 MiB hugetlb pages when
/// `hugepages`), mapped shared at [`ram_ranges`].
pub fn create_guest_memory(size: u64, hugepages: bool) -> Result<GuestMemoryMmap, MemoryError> {
    let granule = if hugepages { HUGE_PAGE_SIZE } else { PAGE_SIZE };
    if size == 0 || size % granule != 0 || usize::try_from(size).is_err() {
        return Err(MemoryError::BadSize { size, granule });
    }
    let file = std::sync::Arc::new(create_memfd(size, hugepages)?);
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (addr, len) in ram_ranges(size) {
        // `len <= size`, which fits in usize (checked above).
        let len = len as usize;
        regions.push((addr, len, Some(FileOffset::from_arc(file.clone(), offset))));
        offset += len as u64;
    }
    GuestMemoryMmap::from_ranges_with_files(regions).map_err(MemoryError::Map)
}

/// Gives every region of `mem` to KVM, one slot per region from slot 0.
pub fn register_guest_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let desc = kvm_userspace_memory_region {
            slot,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
            flags: 0,
        };
        // SAFETY: the region is a live mapping owned by `mem`; callers keep
        // `mem` alive for as long as the VM exists.
        unsafe { vm.set_user_memory_region(desc) }
            .map_err(|err| MemoryError::SetMemoryRegion { slot, err })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use vm_memory::Bytes;

    #[test]
    fn small_ram_is_one_range_large_ram_skips_the_hole() {
        assert_eq!(ram_ranges(512 << 20), vec![(GuestAddress(0), 512 << 20)]);
        assert_eq!(
            ram_ranges(MEM_32BIT_GAP_START),
            vec![(GuestAddress(0), MEM_32BIT_GAP_START)]
        );
        assert_eq!(
            ram_ranges(4 << 30),
            vec![(GuestAddress(0), 3 << 30), (GuestAddress(4 << 30), 1 << 30)]
        );
    }

    #[test]
    fn guest_writes_are_visible_through_the_memfd() {
        let mem = create_guest_memory(64 << 20, false).unwrap();
        mem.write_slice(b"shared", GuestAddress(0x30_0000)).unwrap();
        // Read through the fd, as a vhost-user daemon mapping it would.
        let region = mem.find_region(GuestAddress(0)).unwrap();
        let fo = region.file_offset().unwrap();
        let mut buf = [0u8; 6];
        fo.file()
            .read_exact_at(&mut buf, fo.start() + 0x30_0000)
            .unwrap();
        assert_eq!(&buf, b"shared");
        // And the other way round.
        fo.file()
            .write_all_at(b"daemon", fo.start() + 0x1000)
            .unwrap();
        let mut back = [0u8; 6];
        mem.read_slice(&mut back, GuestAddress(0x1000)).unwrap();
        assert_eq!(&back, b"daemon");
    }

    #[test]
    fn regions_above_the_hole_share_the_same_memfd() {
        // 3 GiB + 2 MiB of sparse memfd: nothing is touched but two pages.
        let size = MEM_32BIT_GAP_START + (2 << 20);
        let mem = create_guest_memory(size, false).unwrap();
        assert_eq!(mem.num_regions(), 2);
        mem.write_slice(b"high", GuestAddress(FIRST_ADDR_PAST_32BITS))
            .unwrap();
        assert!(mem
            .write_slice(b"x", GuestAddress(MEM_32BIT_GAP_START))
            .is_err());
        let high = mem
            .find_region(GuestAddress(FIRST_ADDR_PAST_32BITS))
            .unwrap();
        let fo = high.file_offset().unwrap();
        assert_eq!(fo.start(), MEM_32BIT_GAP_START);
        let mut buf = [0u8; 4];
        fo.file()
            .read_exact_at(&mut buf, MEM_32BIT_GAP_START)
            .unwrap();
        assert_eq!(&buf, b"high");
    }

    #[test]
    fn memfd_size_is_sealed() {
        let mem = create_guest_memory(4 << 20, false).unwrap();
        let fo = mem
            .find_region(GuestAddress(0))
            .unwrap()
            .file_offset()
            .unwrap();
        assert!(fo.file().set_len(1 << 20).is_err());
        assert!(fo.file().set_len(8 << 20).is_err());
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(matches!(
            create_guest_memory(0, false),
            Err(MemoryError::BadSize { .. })
        ));
        assert!(matches!(
            create_guest_memory(4097, false),
            Err(MemoryError::BadSize { .. })
        ));
        assert!(matches!(
            create_guest_memory(4096, true),
            Err(MemoryError::BadSize {
                granule: HUGE_PAGE_SIZE,
                ..
            })
        ));
    }
}
