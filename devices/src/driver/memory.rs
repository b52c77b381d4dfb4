//! memfd-backed "guest memory" shared with the backend over vhost-user.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};

use super::DriverError;

/// Guest memory: one shared memfd region starting at guest address 0, plus a
/// bump allocator that hands out never-freed, aligned ranges of it.
#[derive(Debug)]
pub struct SharedMemory {
    mem: GuestMemoryMmap<()>,
    size: u64,
    next: AtomicU64,
}

impl SharedMemory {
    /// Creates `size` bytes of zeroed shared memory (rounded up to 2 MiB).
    pub fn new(size: u64) -> Result<Self, DriverError> {
        let size = size.div_ceil(2 << 20) * (2 << 20);
        // SAFETY: the name is a valid NUL-terminated string; memfd_create
        // does not touch other memory.
        let fd = unsafe { libc::memfd_create(c"cradle-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(DriverError::Memory(std::io::Error::last_os_error()));
        }
        // SAFETY: fd was just returned by memfd_create and nothing else owns it.
        let file = unsafe { File::from_raw_fd(fd) };
        file.set_len(size).map_err(DriverError::Memory)?;
        let len = usize::try_from(size).map_err(|_| DriverError::TooLarge)?;
        let region = MmapRegion::from_file(FileOffset::new(file, 0), len)
            .map_err(|e| DriverError::Memory(std::io::Error::other(e)))?;
        let region = GuestRegionMmap::new(region, GuestAddress(0)).ok_or(DriverError::TooLarge)?;
        let mem = GuestMemoryMmap::from_regions(vec![region])
            .map_err(|e| DriverError::Memory(std::io::Error::other(e)))?;
        Ok(SharedMemory {
            mem,
            size,
            // Keep page 0 unused so that address 0 is never a valid buffer.
            next: AtomicU64::new(4096),
        })
    }

    /// The mapping, for reading and writing with [`vm_memory::Bytes`].
    pub fn mem(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reserves `len` bytes aligned to `align` (a power of two) and returns
    /// their guest address.
    pub fn alloc(&self, len: u64, align: u64) -> Result<GuestAddress, DriverError> {
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = cur.div_ceil(align) * align;
            let end = start.checked_add(len).ok_or(DriverError::OutOfMemory)?;
            if end > self.size {
                return Err(DriverError::OutOfMemory);
            }
            match self
                .next
                .compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(GuestAddress(start)),
                Err(now) => cur = now,
            }
        }
    }

    /// Host virtual address of guest address `addr` (vhost-user ring
    /// addresses are given in the frontend's address space).
    pub fn host_addr(&self, addr: GuestAddress) -> Result<u64, DriverError> {
        let ptr = self
            .mem
            .get_host_address(addr)
            .map_err(|_| DriverError::OutOfMemory)?;
        Ok(ptr as u64)
    }

    /// The region table sent with `VHOST_USER_SET_MEM_TABLE`.
    pub fn regions(&self) -> Result<Vec<VhostUserMemoryRegionInfo>, DriverError> {
        self.mem
            .iter()
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).map_err(DriverError::Vhost))
            .collect()
    }

    /// Raw fd of the memfd (for diagnostics).
    pub fn fd(&self) -> Option<i32> {
        use vm_memory::GuestMemoryRegion;
        self.mem
            .iter()
            .next()
            .and_then(|r| r.file_offset().map(|f| f.file().as_raw_fd()))
    }
}
