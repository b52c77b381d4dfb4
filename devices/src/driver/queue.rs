//! Driver side of a split virtqueue (virtio 1.x, 2.6): descriptor table,
//! available ring written by us, used ring read back.

use std::num::Wrapping;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::memory::SharedMemory;
use super::DriverError;

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;
const VRING_DESC_F_INDIRECT: u16 = 4;
/// `VRING_USED_F_NO_NOTIFY`: the device asks not to be kicked (without
/// EVENT_IDX).
const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// A descriptor as laid out in the table (virtio 1.x, 2.7.5), written with
/// one store instead of four.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

// SAFETY: Desc is repr(C) plain integers with no padding (8 + 4 + 2 + 2),
// so every byte pattern is a valid value.
unsafe impl ByteValued for Desc {}

/// A used-ring element (virtio 1.x, 2.7.8), read with one load.
#[derive(Clone, Copy, Default)]
#[repr(C)]
struct UsedElem {
    id: u32,
    len: u32,
}

// SAFETY: UsedElem is repr(C), two u32 without padding; every byte pattern
// is a valid value.
unsafe impl ByteValued for UsedElem {}

/// One buffer of a descriptor chain, as the driver describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    /// Guest address of the buffer. Need not be inside guest memory: tests
    /// use bad addresses on purpose.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (`VRING_DESC_F_WRITE`).
    pub write: bool,
}

impl Buffer {
    /// A device-readable buffer.
    pub fn readable(addr: GuestAddress, len: u32) -> Self {
        Buffer {
            addr: addr.0,
            len,
            write: false,
        }
    }

    /// A device-writable buffer.
    pub fn writable(addr: GuestAddress, len: u32) -> Self {
        Buffer {
            addr: addr.0,
            len,
            write: true,
        }
    }
}

/// An element of the used ring: the chain's head and the number of bytes
/// the device says it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    /// Head descriptor index returned by [`VirtQueue::add_chain`].
    pub head: u16,
    /// Bytes written by the device into the chain's writable buffers.
    pub len: u32,
}

/// Ring addresses of a queue, in guest physical addresses.
#[derive(Debug, Clone, Copy)]
pub struct RingAddrs {
    /// Descriptor table.
    pub desc: GuestAddress,
    /// Available ring.
    pub avail: GuestAddress,
    /// Used ring.
    pub used: GuestAddress,
}

/// One split virtqueue owned by one submitting thread.
pub struct VirtQueue {
    mem: Arc<SharedMemory>,
    index: usize,
    size: u16,
    rings: RingAddrs,
    kick: EventFd,
    call: EventFd,
    event_idx: bool,
    /// Free descriptor indices.
    free: Vec<u16>,
    /// Per head: number of descriptors the chain holds, 0 when the head is
    /// not in flight (to free them on completion).
    chain_len: Vec<u16>,
    /// Per descriptor: the next one of its chain (our copy, as the table
    /// is shared with the device and must not be trusted on the way back).
    chain_next: Vec<u16>,
    /// Index of the next avail slot to fill; entries between `avail_idx`
    /// and this are staged but not yet published.
    staged_idx: Wrapping<u16>,
    avail_idx: Wrapping<u16>,
    /// Value of `avail_idx` at the last kick (for EVENT_IDX suppression).
    kicked_idx: Wrapping<u16>,
    last_used: Wrapping<u16>,
    /// `used_event` as last written (EVENT_IDX): rewriting an unchanged
    /// value would only bounce the cache line the device reads.
    used_event: Option<Wrapping<u16>>,
    in_flight: usize,
    /// Kicks actually sent (EVENT_IDX may suppress some).
    pub kicks_sent: u64,
    /// How long [`VirtQueue::wait_used`] polls the used ring before it
    /// sleeps on the call eventfd.
    spin: Duration,
}

impl std::fmt::Debug for VirtQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtQueue")
            .field("index", &self.index)
            .field("size", &self.size)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl VirtQueue {
    /// Allocates the rings of a queue of `size` entries (a power of two) in
    /// `mem`.
    pub(crate) fn new(
        mem: Arc<SharedMemory>,
        index: usize,
        size: u16,
        event_idx: bool,
    ) -> Result<Self, DriverError> {
        if size == 0 || !size.is_power_of_two() {
            return Err(DriverError::BadQueueSize(size));
        }
        let n = u64::from(size);
        let desc = mem.alloc(16 * n, 4096)?;
        let avail = mem.alloc(6 + 2 * n, 4096)?;
        let used = mem.alloc(6 + 8 * n, 4096)?;
        let kick = EventFd::new(EFD_NONBLOCK).map_err(DriverError::EventFd)?;
        let call = EventFd::new(EFD_NONBLOCK).map_err(DriverError::EventFd)?;
        Ok(VirtQueue {
            mem,
            index,
            size,
            rings: RingAddrs { desc, avail, used },
            kick,
            call,
            event_idx,
            free: (0..size).rev().collect(),
            chain_len: vec![0; usize::from(size)],
            chain_next: vec![0; usize::from(size)],
            staged_idx: Wrapping(0),
            avail_idx: Wrapping(0),
            kicked_idx: Wrapping(0),
            last_used: Wrapping(0),
            used_event: None,
            in_flight: 0,
            kicks_sent: 0,
            spin: Duration::ZERO,
        })
    }

    /// Queue index in the device.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of ring entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Ring addresses.
    pub fn rings(&self) -> RingAddrs {
        self.rings
    }

    /// The memory the queue lives in.
    pub fn memory(&self) -> &Arc<SharedMemory> {
        &self.mem
    }

    pub(crate) fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    pub(crate) fn call_fd(&self) -> &EventFd {
        &self.call
    }

    /// Chains submitted and not yet seen in the used ring.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Free descriptors.
    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    fn write_desc(
        &self,
        table: GuestAddress,
        i: u16,
        b: Buffer,
        flags: u16,
        next: u16,
    ) -> Result<(), DriverError> {
        let at = table
            .checked_add(16 * u64::from(i))
            .ok_or(DriverError::OutOfMemory)?;
        let d = Desc {
            addr: b.addr.to_le(),
            len: b.len.to_le(),
            flags: flags.to_le(),
            next: next.to_le(),
        };
        self.mem.mem().write_obj(d, at).map_err(DriverError::Access)
    }

    fn desc_flags(b: Buffer, has_next: bool) -> u16 {
        let mut f = 0;
        if b.write {
            f |= VRING_DESC_F_WRITE;
        }
        if has_next {
            f |= VRING_DESC_F_NEXT;
        }
        f
    }

    /// Places a chain of `bufs` in the descriptor table and publishes it in
    /// the available ring (without kicking). Returns the head index.
    pub fn add_chain(&mut self, bufs: &[Buffer]) -> Result<u16, DriverError> {
        let head = self.stage_chain(bufs)?;
        self.publish()?;
        Ok(head)
    }

    /// Places a chain of `bufs` in the descriptor table and its head in the
    /// next available-ring slot, but does not make it visible to the
    /// device: [`VirtQueue::publish`] (or [`VirtQueue::kick`]) publishes
    /// every staged chain with one index store, so a batch costs one
    /// index update and one notification. Returns the head index.
    pub fn stage_chain(&mut self, bufs: &[Buffer]) -> Result<u16, DriverError> {
        if bufs.is_empty() {
            return Err(DriverError::EmptyChain);
        }
        let n = u16::try_from(bufs.len()).map_err(|_| DriverError::QueueFull)?;
        if bufs.len() > self.free.len() {
            return Err(DriverError::QueueFull);
        }
        // Write the table back to front so each descriptor knows its next
        // without a scratch list.
        let mut next: Option<u16> = None;
        for (done, b) in bufs.iter().rev().enumerate() {
            let i = self.free.pop().ok_or(DriverError::QueueFull)?;
            let flags = Self::desc_flags(*b, next.is_some());
            if let Err(e) = self.write_desc(self.rings.desc, i, *b, flags, next.unwrap_or(0)) {
                // Give back this descriptor and the ones already written.
                self.free.push(i);
                let mut j = next;
                for _ in 0..done {
                    if let Some(d) = j {
                        self.free.push(d);
                        j = Some(self.chain_next[usize::from(d)]);
                    }
                }
                return Err(e);
            }
            self.chain_next[usize::from(i)] = next.unwrap_or(0);
            next = Some(i);
        }
        let head = next.ok_or(DriverError::EmptyChain)?;
        self.chain_len[usize::from(head)] = n;
        self.stage_head(head)?;
        Ok(head)
    }

    /// Like [`VirtQueue::add_chain`] but through one `VRING_DESC_F_INDIRECT`
    /// descriptor pointing at a table of `bufs` placed at `table` (which
    /// must hold `16 * bufs.len()` bytes).
    pub fn add_indirect_chain(
        &mut self,
        table: GuestAddress,
        bufs: &[Buffer],
    ) -> Result<u16, DriverError> {
        if bufs.is_empty() {
            return Err(DriverError::EmptyChain);
        }
        let head = self.free.pop().ok_or(DriverError::QueueFull)?;
        let n = u16::try_from(bufs.len()).map_err(|_| DriverError::QueueFull)?;
        for (k, b) in bufs.iter().enumerate() {
            let k = k as u16; // < n, fits.
            let has_next = k + 1 < n;
            self.write_desc(
                table,
                k,
                *b,
                Self::desc_flags(*b, has_next),
                if has_next { k + 1 } else { 0 },
            )?;
        }
        let len = 16 * u32::from(n);
        self.write_desc(
            self.rings.desc,
            head,
            Buffer {
                addr: table.0,
                len,
                write: false,
            },
            VRING_DESC_F_INDIRECT,
            0,
        )?;
        self.chain_len[usize::from(head)] = 1;
        self.stage_head(head)?;
        self.publish()?;
        Ok(head)
    }

    /// Puts `head` in the next avail slot, unpublished.
    fn stage_head(&mut self, head: u16) -> Result<(), DriverError> {
        let slot = u64::from(self.staged_idx.0 % self.size);
        self.mem
            .mem()
            .write_obj(head.to_le(), self.rings.avail.unchecked_add(4 + 2 * slot))
            .map_err(DriverError::Access)?;
        self.staged_idx += Wrapping(1);
        self.in_flight += 1;
        Ok(())
    }

    /// Chains staged with [`VirtQueue::stage_chain`] and not yet published.
    pub fn staged(&self) -> usize {
        usize::from((self.staged_idx - self.avail_idx).0)
    }

    /// Makes every staged chain visible to the device with one store of the
    /// available index (no kick).
    pub fn publish(&mut self) -> Result<(), DriverError> {
        if self.staged_idx == self.avail_idx {
            return Ok(());
        }
        // The ring entries must be visible before the index that covers them.
        fence(Ordering::Release);
        self.mem
            .mem()
            .write_obj(self.staged_idx.0.to_le(), self.rings.avail.unchecked_add(2))
            .map_err(DriverError::Access)?;
        self.avail_idx = self.staged_idx;
        Ok(())
    }

    /// Publishes staged chains and notifies the device of new chains,
    /// unless it said it does not want to be woken yet (`avail_event` with
    /// EVENT_IDX, `VRING_USED_F_NO_NOTIFY` without).
    pub fn kick(&mut self) -> Result<(), DriverError> {
        self.publish()?;
        // Our avail idx store must be visible before we read avail_event.
        fence(Ordering::SeqCst);
        let new = self.avail_idx;
        let old = self.kicked_idx;
        self.kicked_idx = new;
        if !self.event_idx {
            let flags: u16 = u16::from_le(
                self.mem
                    .mem()
                    .read_obj(self.rings.used)
                    .map_err(DriverError::Access)?,
            );
            if flags & VRING_USED_F_NO_NOTIFY != 0 {
                return Ok(());
            }
        } else {
            let at = self.rings.used.unchecked_add(4 + 8 * u64::from(self.size));
            let event: u16 =
                u16::from_le(self.mem.mem().read_obj(at).map_err(DriverError::Access)?);
            // vring_need_event(): kick only if `event` lies in (old, new].
            if (new - Wrapping(event) - Wrapping(1)) >= (new - old) {
                return Ok(());
            }
        }
        self.kicks_sent += 1;
        self.kick.write(1).map_err(DriverError::EventFd)
    }

    /// Collects what the device has put in the used ring so far.
    pub fn poll_used(&mut self) -> Result<Vec<Used>, DriverError> {
        let mut out = Vec::new();
        self.poll_used_into(&mut out)?;
        Ok(out)
    }

    /// Like [`VirtQueue::poll_used`], but appends to `out` (no allocation
    /// once `out` has grown) and returns how many elements it appended.
    pub fn poll_used_into(&mut self, out: &mut Vec<Used>) -> Result<usize, DriverError> {
        let m = self.mem.mem();
        let used_idx: u16 = u16::from_le(
            m.read_obj(self.rings.used.unchecked_add(2))
                .map_err(DriverError::Access)?,
        );
        // Entries must be read after the index that covers them.
        fence(Ordering::Acquire);
        let first = out.len();
        while self.last_used != Wrapping(used_idx) {
            let slot = u64::from(self.last_used.0 % self.size);
            let at = self.rings.used.unchecked_add(4 + 8 * slot);
            let e: UsedElem = m.read_obj(at).map_err(DriverError::Access)?;
            let (id, len) = (u32::from_le(e.id), u32::from_le(e.len));
            let head = u16::try_from(id)
                .ok()
                .filter(|h| *h < self.size && self.chain_len[usize::from(*h)] != 0)
                .ok_or(DriverError::BadUsed(id))?;
            let n = std::mem::take(&mut self.chain_len[usize::from(head)]);
            let mut d = head;
            for _ in 0..n {
                self.free.push(d);
                d = self.chain_next[usize::from(d)];
            }
            self.in_flight -= 1;
            self.last_used += Wrapping(1);
            out.push(Used { head, len });
        }
        if self.event_idx && self.used_event != Some(self.last_used) {
            // Ask for an interrupt as soon as anything new is used.
            let at = self.rings.avail.unchecked_add(4 + 2 * u64::from(self.size));
            m.write_obj(self.last_used.0.to_le(), at)
                .map_err(DriverError::Access)?;
            self.used_event = Some(self.last_used);
            fence(Ordering::SeqCst);
        }
        Ok(out.len() - first)
    }

    /// Makes [`VirtQueue::wait_used`] poll the used ring for up to `spin`
    /// (yielding the CPU between looks) before sleeping on the call
    /// eventfd, as a guest vCPU under KVM's halt polling or the guest's
    /// haltpoll cpuidle driver does. Zero (the default) never polls.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// Waits until at least one chain is used (or `timeout` passes) and
    /// returns every used element available then.
    pub fn wait_used(&mut self, timeout: Duration) -> Result<Vec<Used>, DriverError> {
        let deadline = Instant::now() + timeout;
        if !self.spin.is_zero() {
            let until = Instant::now() + self.spin.min(timeout);
            loop {
                let got = self.poll_used()?;
                if !got.is_empty() {
                    return Ok(got);
                }
                if Instant::now() >= until {
                    break;
                }
                std::thread::yield_now();
            }
        }
        loop {
            let got = self.poll_used()?;
            if !got.is_empty() {
                return Ok(got);
            }
            // Re-check after arming (EVENT_IDX) to not miss a completion.
            let got = self.poll_used()?;
            if !got.is_empty() {
                return Ok(got);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout);
            }
            let mut pfd = libc::pollfd {
                fd: self.call.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: pfd is a valid pollfd array of length 1 for the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(DriverError::EventFd(e));
                }
            }
            // Drain the counter; WouldBlock just means a spurious wakeup.
            let _ = self.call.read();
        }
    }

    /// Waits for the completion of one specific chain, keeping others that
    /// complete meanwhile in `others`.
    pub fn wait_head(
        &mut self,
        head: u16,
        timeout: Duration,
        others: &mut Vec<Used>,
    ) -> Result<Used, DriverError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = others.iter().position(|u| u.head == head) {
                return Ok(others.remove(pos));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let got = self.wait_used(left)?;
            others.extend(got);
        }
    }

    /// Bytes of guest memory needed for the rings of a queue of `size`.
    pub fn ring_bytes(size: u16) -> u64 {
        3 * 4096 + 26 * u64::from(size)
    }

    /// Reads the current available index (for tests).
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx.0
    }

    /// Guest memory helper: read `len` bytes at `addr`.
    pub fn read(&self, addr: GuestAddress, len: usize) -> Result<Vec<u8>, DriverError> {
        let mut v = vec![0u8; len];
        self.mem
            .mem()
            .read_slice(&mut v, addr)
            .map_err(DriverError::Access)?;
        Ok(v)
    }

    /// Guest memory helper: write `data` at `addr`.
    pub fn write(&self, addr: GuestAddress, data: &[u8]) -> Result<(), DriverError> {
        self.mem
            .mem()
            .write_slice(data, addr)
            .map_err(DriverError::Access)
    }

    /// True if `addr..addr+len` is inside guest memory.
    pub fn in_memory(&self, addr: GuestAddress, len: u64) -> bool {
        self.mem.mem().check_range(addr, len as usize)
    }
}
