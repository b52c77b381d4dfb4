//! Host-side I/O engines behind one small trait, so that an NVMe
//! passthrough engine (io_uring `uring_cmd` on `/dev/ngXnY`) can be added
//! beside the io_uring file engine.

mod uring;

pub use uring::{UringEngine, BLKDISCARD};

use std::os::fd::RawFd;

/// One host operation. Buffers are raw pointers into guest memory that the
/// caller keeps mapped and untouched until the operation completes.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    /// `preadv` into `iovcnt` iovecs at `iov`.
    Read {
        /// iovec array, valid until completion.
        iov: *const libc::iovec,
        /// Number of iovecs.
        iovcnt: u32,
        /// Byte offset.
        offset: u64,
    },
    /// `pwritev2`, with `RWF_DSYNC` if `dsync`.
    Write {
        /// iovec array, valid until completion.
        iov: *const libc::iovec,
        /// Number of iovecs.
        iovcnt: u32,
        /// Byte offset.
        offset: u64,
        /// Write through (the guest turned the write cache off).
        dsync: bool,
    },
    /// `fdatasync`.
    Flush,
    /// Discard a range: `BLKDISCARD` on a block device, a punched hole
    /// in a file.
    Discard {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
    },
    /// `fallocate(mode, offset, len)`.
    Fallocate {
        /// Byte offset.
        offset: u64,
        /// Byte count.
        len: u64,
        /// fallocate mode bits.
        mode: i32,
    },
}

/// A completed operation: the caller's tag and the syscall-style result
/// (bytes transferred, or a negative errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// Tag given to [`Engine::push`].
    pub tag: u64,
    /// Result: >= 0 success, < 0 `-errno`.
    pub result: i32,
}

/// An asynchronous I/O engine owned by one queue worker.
pub trait Engine: Send {
    /// Queues `op`; it reaches the kernel at the next [`Engine::submit`]
    /// (or earlier if the submission queue is full).
    ///
    /// # Safety
    /// Every pointer in `op` must stay valid, and the memory it points to
    /// must stay mapped, until the operation is returned by
    /// [`Engine::complete`].
    unsafe fn push(&mut self, op: Op, tag: u64) -> std::io::Result<()>;

    /// Hands queued operations to the kernel (one syscall for the batch).
    fn submit(&mut self) -> std::io::Result<()>;

    /// Appends finished operations to `out`.
    fn complete(&mut self, out: &mut Vec<Done>);

    /// Whether [`Engine::complete`] has something to return now; no
    /// syscall, so that a polling worker can ask it in a loop.
    fn ready(&mut self) -> bool;

    /// An eventfd that becomes readable when completions are available.
    fn event_fd(&self) -> RawFd;

    /// Clears the eventfd (call before [`Engine::complete`]).
    fn clear_event(&self);
}
