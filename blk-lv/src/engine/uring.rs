//! The io_uring engine: one ring per queue worker, completions signalled
//! through an eventfd the worker's epoll loop watches.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use io_uring::register::Restriction;
use io_uring::{opcode, squeue, types, IoUring};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Done, Engine, Op};

/// `BLKDISCARD` from `<linux/fs.h>`.
pub const BLKDISCARD: u32 = 0x1277;

/// io_uring on a file or block device.
pub struct UringEngine {
    ring: IoUring,
    file: Arc<File>,
    block_device: bool,
    event: EventFd,
    queued: usize,
    /// Operations done synchronously (block-device discard), reported at
    /// the next [`Engine::complete`].
    sync_done: Vec<Done>,
}

impl std::fmt::Debug for UringEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringEngine")
            .field("queued", &self.queued)
            .finish()
    }
}

impl UringEngine {
    /// A ring of `entries` submission slots (completion queue twice as big)
    /// on `file`.
    pub fn new(file: Arc<File>, block_device: bool, entries: u32) -> std::io::Result<Self> {
        // Created disabled so that, before any submission, the ring is
        // restricted to the four opcodes a block device needs: seccomp does
        // not see io_uring operations, these restrictions do.
        let ring = IoUring::builder()
            .setup_cqsize(entries * 2)
            .setup_r_disabled()
            .build(entries)?;
        let event = EventFd::new(EFD_NONBLOCK)?;
        let sub = ring.submitter();
        sub.register_eventfd(event.as_raw_fd())?;
        sub.register_restrictions(&mut [
            Restriction::sqe_op(opcode::Readv::CODE),
            Restriction::sqe_op(opcode::Writev::CODE),
            Restriction::sqe_op(opcode::Fsync::CODE),
            Restriction::sqe_op(opcode::Fallocate::CODE),
        ])?;
        sub.register_enable_rings()?;
        Ok(UringEngine {
            ring,
            file,
            block_device,
            event,
            queued: 0,
            sync_done: Vec::new(),
        })
    }

    fn entry(&self, op: Op) -> squeue::Entry {
        let fd = types::Fd(self.file.as_raw_fd());
        match op {
            Op::Read {
                iov,
                iovcnt,
                offset,
            } => opcode::Readv::new(fd, iov, iovcnt).offset(offset).build(),
            Op::Write {
                iov,
                iovcnt,
                offset,
                dsync,
            } => opcode::Writev::new(fd, iov, iovcnt)
                .offset(offset)
                .rw_flags(if dsync { libc::RWF_DSYNC } else { 0 })
                .build(),
            Op::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Op::Fallocate { offset, len, mode } => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(mode)
                .build(),
            Op::Discard { offset, len } => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
        }
    }

    /// `ioctl(BLKDISCARD)`: io_uring has no plain discard for block devices
    /// on every kernel we run on, and fallocate(PUNCH_HOLE) on a block
    /// device means write-zeroes, which many NVMe drives lack. It blocks
    /// this queue's worker only.
    fn blk_discard(&mut self, offset: u64, len: u64, tag: u64) {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD reads two u64 from the pointer, which points at
        // a live local array.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::c_ulong::from(BLKDISCARD),
                range.as_ptr(),
            )
        };
        let result = if r == 0 {
            0
        } else {
            -std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)
        };
        self.sync_done.push(Done { tag, result });
        // Wake the worker's epoll loop so that the completion is reaped.
        let _ = self.event.write(1);
    }
}

impl Engine for UringEngine {
    unsafe fn push(&mut self, op: Op, tag: u64) -> std::io::Result<()> {
        if let (Op::Discard { offset, len }, true) = (op, self.block_device) {
            self.blk_discard(offset, len, tag);
            return Ok(());
        }
        let e = self.entry(op).user_data(tag);
        loop {
            // SAFETY: the caller guarantees the buffers in `op` stay valid
            // until completion; the entry references nothing else.
            let pushed = unsafe { self.ring.submission().push(&e) };
            if pushed.is_ok() {
                self.queued += 1;
                return Ok(());
            }
            // Submission queue full: hand the batch to the kernel first.
            self.submit()?;
        }
    }

    fn submit(&mut self) -> std::io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => {
                    self.queued = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // EBUSY/EAGAIN: completions must be reaped first; the
                // caller's completion path resubmits.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EAGAIN)) => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn complete(&mut self, out: &mut Vec<Done>) {
        out.append(&mut self.sync_done);
        for cqe in self.ring.completion() {
            out.push(Done {
                tag: cqe.user_data(),
                result: cqe.result(),
            });
        }
    }

    fn ready(&mut self) -> bool {
        !self.sync_done.is_empty() || !self.ring.completion().is_empty()
    }

    fn event_fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    fn clear_event(&self) {
        let _ = self.event.read();
    }
}
