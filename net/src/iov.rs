//! Turning a descriptor chain into host iovecs that point straight into
//! guest memory, so frames move between the tap and the guest with one
//! `readv`/`writev` and no copy.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{GuestMemory, Permissions};

/// Most segments one `readv`/`writev` takes (`IOV_MAX`).
pub const IOV_MAX: usize = 1024;

/// A list of iovecs into guest memory (or a local buffer).
///
/// The pointers are only handed to the kernel in `readv`/`writev` while
/// the caller holds the guest memory guard they were taken under; between
/// drains the list is empty.
#[derive(Debug, Default)]
pub struct IoVecs(pub Vec<libc::iovec>);

// SAFETY: an IoVecs is plain data (addresses and lengths). It is only
// dereferenced by the kernel during readv/writev on the thread that built
// it, under the memory guard that keeps the mapping alive; moving the
// (empty between uses) vector to another thread is harmless.
unsafe impl Send for IoVecs {}

/// What is wrong with a chain the guest gave us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Guest gave a device-readable descriptor where a writable one was
    /// needed, or the other way round.
    #[error("guest gave a descriptor of the wrong direction")]
    WrongDirection,
    /// Guest gave a descriptor outside guest memory.
    #[error("guest gave a descriptor outside guest memory")]
    OutOfMemory,
    /// Guest gave more segments than one readv/writev takes.
    #[error("guest gave more segments than one readv/writev takes")]
    TooManySegments,
}

/// Appends the buffers of `chain` to `out` (all of them device-writable if
/// `writable`, else all device-readable), resolving addresses in `mem`.
/// Returns the chain's byte length. On error `out` is restored to its
/// length on entry.
pub fn collect<M, G>(
    chain: DescriptorChain<M>,
    mem: &G,
    writable: bool,
    out: &mut IoVecs,
) -> Result<usize, ChainError>
where
    M: Deref,
    M::Target: GuestMemory,
    G: GuestMemory + ?Sized,
{
    let start = out.0.len();
    let r = collect_inner(chain, mem, writable, out, start);
    if r.is_err() {
        out.0.truncate(start);
    }
    r
}

fn collect_inner<M, G>(
    chain: DescriptorChain<M>,
    mem: &G,
    writable: bool,
    out: &mut IoVecs,
    start: usize,
) -> Result<usize, ChainError>
where
    M: Deref,
    M::Target: GuestMemory,
    G: GuestMemory + ?Sized,
{
    let access = if writable {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let mut total = 0usize;
    for desc in chain {
        if desc.is_write_only() != writable {
            return Err(ChainError::WrongDirection);
        }
        let len = desc.len() as usize;
        if len == 0 {
            continue;
        }
        let slices = mem
            .get_slices(desc.addr(), len, access)
            .map_err(|_| ChainError::OutOfMemory)?;
        for s in slices {
            let s = s.map_err(|_| ChainError::OutOfMemory)?;
            // One slot stays free for RX's bounce buffer.
            if out.0.len() - start >= IOV_MAX - 1 {
                return Err(ChainError::TooManySegments);
            }
            out.0.push(libc::iovec {
                iov_base: s.ptr_guard_mut().as_ptr().cast(),
                iov_len: s.len(),
            });
        }
        total += len;
    }
    Ok(total)
}

/// Copies `data` into the buffers `iovs` starting `offset` bytes in.
/// Returns false (writing nothing) if they are too short.
pub fn write_at(iovs: &[libc::iovec], mut offset: usize, data: &[u8]) -> bool {
    let total: usize = iovs.iter().map(|v| v.iov_len).sum();
    if offset.checked_add(data.len()).is_none_or(|end| end > total) {
        return false;
    }
    let mut rest = data;
    for v in iovs {
        if rest.is_empty() {
            break;
        }
        if offset >= v.iov_len {
            offset -= v.iov_len;
            continue;
        }
        let n = (v.iov_len - offset).min(rest.len());
        // SAFETY: the iovec describes a live writable buffer of iov_len
        // bytes (guest memory under the caller's guard); offset + n stays
        // within it, and `rest` does not overlap guest memory.
        unsafe {
            std::ptr::copy_nonoverlapping(rest.as_ptr(), v.iov_base.cast::<u8>().add(offset), n);
        }
        rest = &rest[n..];
        offset = 0;
    }
    true
}

/// Copies up to `out.len()` bytes from the start of `iovs` into `out`.
/// Returns how many bytes were copied.
pub fn read_prefix(iovs: &[libc::iovec], out: &mut [u8]) -> usize {
    let mut done = 0;
    for v in iovs {
        if done == out.len() {
            break;
        }
        let n = v.iov_len.min(out.len() - done);
        // SAFETY: the iovec describes a live readable buffer of iov_len
        // bytes (guest memory under the caller's guard); n <= iov_len and
        // `out[done..done + n]` is in bounds.
        unsafe {
            std::ptr::copy_nonoverlapping(v.iov_base.cast::<u8>(), out[done..].as_mut_ptr(), n);
        }
        done += n;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
    }

    #[test]
    fn collects_writable_chain_and_writes_across_segments() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        let descs = [
            desc(0x8000, 5, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
            desc(0x9000, 100, VRING_DESC_F_WRITE, 0),
        ];
        vq.build_desc_chain(&descs).unwrap();
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&m).unwrap().next().unwrap();
        let mut iovs = IoVecs::default();
        assert_eq!(collect(chain, &m, true, &mut iovs), Ok(105));
        assert_eq!(iovs.0.len(), 2);
        assert!(write_at(&iovs.0, 3, &[1, 2, 3, 4]));
        assert!(!write_at(&iovs.0, 102, &[1, 2, 3, 4]));
        let mut b = [0u8; 2];
        m.read_slice(&mut b, GuestAddress(0x8003)).unwrap();
        assert_eq!(b, [1, 2]);
        m.read_slice(&mut b, GuestAddress(0x9000)).unwrap();
        assert_eq!(b, [3, 4]);
        let mut p = [0u8; 6];
        assert_eq!(read_prefix(&iovs.0, &mut p), 6);
        assert_eq!(p, [0, 0, 0, 1, 2, 3]);
    }

    fn collect_one(d: RawDescriptor) -> Result<usize, ChainError> {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        vq.build_desc_chain(&[d]).unwrap();
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(&m).unwrap().next().unwrap();
        let mut iovs = IoVecs::default();
        let r = collect(chain, &m, true, &mut iovs);
        if r.is_err() {
            assert!(iovs.0.is_empty());
        }
        r
    }

    #[test]
    fn refuses_wrong_direction_and_outside_memory() {
        assert_eq!(
            collect_one(desc(0x8000, 64, 0, 0)),
            Err(ChainError::WrongDirection)
        );
        assert_eq!(
            collect_one(desc(0xff_f000, 0x2000, VRING_DESC_F_WRITE, 0)),
            Err(ChainError::OutOfMemory)
        );
        assert_eq!(
            collect_one(desc(0xf_f000, 0x1000, VRING_DESC_F_WRITE, 0)),
            Ok(0x1000)
        );
    }
}
