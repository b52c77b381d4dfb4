//! virtio-blk requests on top of a [`VirtQueue`] (virtio 1.x, 5.2.6).

use std::time::Duration;

use vm_memory::{Address, GuestAddress};

use super::queue::{Buffer, Used, VirtQueue};
use super::slots::{Slots, Tagged};
use super::DriverError;

/// `VIRTIO_BLK_T_IN`.
pub const T_IN: u32 = 0;
/// `VIRTIO_BLK_T_OUT`.
pub const T_OUT: u32 = 1;
/// `VIRTIO_BLK_T_FLUSH`.
pub const T_FLUSH: u32 = 4;
/// `VIRTIO_BLK_T_GET_ID`.
pub const T_GET_ID: u32 = 8;
/// `VIRTIO_BLK_T_DISCARD`.
pub const T_DISCARD: u32 = 11;
/// `VIRTIO_BLK_T_WRITE_ZEROES`.
pub const T_WRITE_ZEROES: u32 = 13;
/// `VIRTIO_BLK_S_OK`.
pub const S_OK: u8 = 0;
/// `VIRTIO_BLK_S_IOERR`.
pub const S_IOERR: u8 = 1;
/// `VIRTIO_BLK_S_UNSUPP`.
pub const S_UNSUPP: u8 = 2;
/// Bytes of a `GET_ID` answer.
pub const ID_BYTES: u32 = 20;

/// Default per-request timeout of the blocking helpers.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A virtio-blk request.
#[derive(Debug, Clone, Copy)]
pub enum BlkRequest<'a> {
    /// Read `len` bytes at `sector` (512-byte units).
    Read {
        /// First sector.
        sector: u64,
        /// Bytes to read.
        len: u32,
    },
    /// Write `data` at `sector`.
    Write {
        /// First sector.
        sector: u64,
        /// Bytes to write.
        data: &'a [u8],
    },
    /// Make completed writes durable.
    Flush,
    /// Read the device serial (20 bytes).
    GetId,
    /// Discard `sectors` at `sector`.
    Discard {
        /// First sector.
        sector: u64,
        /// Sector count.
        sectors: u32,
    },
    /// Zero `sectors` at `sector`, deallocating if `unmap`.
    WriteZeroes {
        /// First sector.
        sector: u64,
        /// Sector count.
        sectors: u32,
        /// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`.
        unmap: bool,
    },
    /// Any request type with no data (for "unsupported type" tests).
    Raw {
        /// Request type.
        kind: u32,
        /// Sector field.
        sector: u64,
    },
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Caller's tag from [`BlkQueue::submit`].
    pub tag: u64,
    /// Status byte the device wrote.
    pub status: u8,
    /// Used length the device reported.
    pub used_len: u32,
    /// Data read (reads and `GET_ID`, when copying is on).
    pub data: Vec<u8>,
}

/// What a request in flight needs at completion: (tag, bytes to read).
type Pending = (u64, u32);

impl Tagged for Completion {
    fn tag(&self) -> u64 {
        self.tag
    }
}

/// A virtqueue used for virtio-blk, with one fixed buffer area ("slot") per
/// request that can be in flight.
#[derive(Debug)]
pub struct BlkQueue {
    q: VirtQueue,
    slots: Vec<GuestAddress>,
    book: Slots<Pending, Completion>,
    max_data: u32,
    copy_reads: bool,
}

/// Offset of the data buffer in a slot: 4 KiB so that O_DIRECT works.
const DATA_OFF: u64 = 4096;
const STATUS_OFF: u64 = 64;
const SEG_OFF: u64 = 128;

impl BlkQueue {
    /// Wraps `q`, allocating slots of `max_data` bytes of data each. Up to
    /// `q.size() / 3` requests can be in flight.
    pub fn new(q: VirtQueue, max_data: u32) -> Result<Self, DriverError> {
        let n = usize::from(q.size() / 3).max(1);
        let slot_bytes = DATA_OFF + u64::from(max_data).div_ceil(4096) * 4096;
        let mut slots = Vec::with_capacity(n);
        for _ in 0..n {
            slots.push(q.memory().alloc(slot_bytes, 4096)?);
        }
        Ok(BlkQueue {
            book: Slots::new(n, q.size()),
            q,
            slots,
            max_data,
            copy_reads: true,
        })
    }

    /// Whether completions carry a copy of the data read (off for load
    /// generation).
    pub fn set_copy_reads(&mut self, on: bool) {
        self.copy_reads = on;
    }

    /// Polls for completions this long before sleeping (see
    /// [`VirtQueue::set_spin`]).
    pub fn set_spin(&mut self, spin: Duration) {
        self.q.set_spin(spin);
    }

    /// Requests that can still be submitted.
    pub fn free_slots(&self) -> usize {
        self.book.free()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.book.in_flight()
    }

    /// The underlying virtqueue (for malformed-chain tests).
    pub fn queue(&mut self) -> &mut VirtQueue {
        &mut self.q
    }

    /// Guest address of the data buffer of a free slot, for tests that build
    /// their own chains.
    pub fn scratch(&self) -> GuestAddress {
        self.slots[self.book.next().unwrap_or(0)]
    }

    /// Places `req` in the available ring; call [`BlkQueue::kick`] to
    /// notify the device.
    pub fn submit(&mut self, req: BlkRequest<'_>, tag: u64) -> Result<(), DriverError> {
        let slot = self.book.next()?;
        let base = self.slots[slot];
        let hdr = base;
        let status = base.unchecked_add(STATUS_OFF);
        let data = base.unchecked_add(DATA_OFF);
        let seg = base.unchecked_add(SEG_OFF);
        let (kind, sector) = match req {
            BlkRequest::Read { sector, .. } => (T_IN, sector),
            BlkRequest::Write { sector, .. } => (T_OUT, sector),
            BlkRequest::Flush => (T_FLUSH, 0),
            BlkRequest::GetId => (T_GET_ID, 0),
            BlkRequest::Discard { .. } => (T_DISCARD, 0),
            BlkRequest::WriteZeroes { .. } => (T_WRITE_ZEROES, 0),
            BlkRequest::Raw { kind, sector } => (kind, sector),
        };
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.q.write(hdr, &h)?;
        self.q.write(status, &[0xff])?;
        let mut bufs = vec![Buffer::readable(hdr, 16)];
        let mut read_len = 0;
        match req {
            BlkRequest::Read { len, .. } => {
                if len > self.max_data {
                    return Err(DriverError::TooLarge);
                }
                bufs.push(Buffer::writable(data, len));
                read_len = len;
            }
            BlkRequest::Write { data: d, .. } => {
                let len = u32::try_from(d.len()).map_err(|_| DriverError::TooLarge)?;
                if len > self.max_data {
                    return Err(DriverError::TooLarge);
                }
                self.q.write(data, d)?;
                bufs.push(Buffer::readable(data, len));
            }
            BlkRequest::GetId => {
                bufs.push(Buffer::writable(data, ID_BYTES));
                read_len = ID_BYTES;
            }
            BlkRequest::Discard { sector, sectors }
            | BlkRequest::WriteZeroes {
                sector,
                sectors,
                unmap: false,
            } => {
                self.q
                    .write(seg, &discard_segment(sector, sectors, false))?;
                bufs.push(Buffer::readable(seg, 16));
            }
            BlkRequest::WriteZeroes {
                sector,
                sectors,
                unmap: true,
            } => {
                self.q.write(seg, &discard_segment(sector, sectors, true))?;
                bufs.push(Buffer::readable(seg, 16));
            }
            BlkRequest::Flush | BlkRequest::Raw { .. } => {}
        }
        bufs.push(Buffer::writable(status, 1));
        let head = self.q.add_chain(&bufs)?;
        self.book.start(head, (tag, read_len));
        Ok(())
    }

    /// Notifies the device.
    pub fn kick(&mut self) -> Result<(), DriverError> {
        self.q.kick()
    }

    /// Turns used elements into completions, freeing their slots.
    fn complete(
        slots: &[GuestAddress],
        copy_reads: bool,
    ) -> impl FnMut(
        &mut Slots<Pending, Completion>,
        &VirtQueue,
        Vec<Used>,
    ) -> Result<Vec<Completion>, DriverError>
           + '_ {
        move |book, q, used| {
            let mut out = Vec::with_capacity(used.len());
            for u in used {
                let (slot, (tag, read_len)) = book.finish(u)?;
                let base = slots[slot];
                let status = q.read(base.unchecked_add(STATUS_OFF), 1)?[0];
                let data = if copy_reads && read_len > 0 {
                    q.read(base.unchecked_add(DATA_OFF), read_len as usize)?
                } else {
                    Vec::new()
                };
                out.push(Completion {
                    tag,
                    status,
                    used_len: u.len,
                    data,
                });
            }
            Ok(out)
        }
    }

    /// Waits for at least one completion.
    pub fn reap(&mut self, timeout: Duration) -> Result<Vec<Completion>, DriverError> {
        let complete = Self::complete(&self.slots, self.copy_reads);
        self.book.reap(&mut self.q, timeout, complete)
    }

    /// Returns completions available now, without waiting.
    pub fn poll(&mut self) -> Result<Vec<Completion>, DriverError> {
        let mut done = self.book.take_backlog();
        let used = self.q.poll_used()?;
        let mut complete = Self::complete(&self.slots, self.copy_reads);
        done.extend(complete(&mut self.book, &self.q, used)?);
        Ok(done)
    }

    /// Submits one request, kicks and waits for it. Other completions that
    /// arrive meanwhile are kept for the next [`BlkQueue::reap`].
    pub fn execute(&mut self, req: BlkRequest<'_>) -> Result<Completion, DriverError> {
        const TAG: u64 = u64::MAX;
        self.submit(req, TAG)?;
        self.kick()?;
        let complete = Self::complete(&self.slots, self.copy_reads);
        self.book.wait_for(&mut self.q, TAG, complete)
    }

    /// Reads `len` bytes at `sector`; a non-OK status is an error.
    pub fn read(&mut self, sector: u64, len: u32) -> Result<Vec<u8>, BlkError> {
        let c = self.execute(BlkRequest::Read { sector, len })?;
        ok(c.status)?;
        Ok(c.data)
    }

    /// Writes `data` at `sector`; a non-OK status is an error.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
        let c = self.execute(BlkRequest::Write { sector, data })?;
        ok(c.status)
    }

    /// Runs a request and returns its status byte.
    pub fn status(&mut self, req: BlkRequest<'_>) -> Result<u8, DriverError> {
        Ok(self.execute(req)?.status)
    }
}

fn ok(status: u8) -> Result<(), BlkError> {
    if status == S_OK {
        Ok(())
    } else {
        Err(BlkError::Status(status))
    }
}

/// Errors of the blocking blk helpers.
#[derive(Debug, thiserror::Error)]
pub enum BlkError {
    /// the transport failed
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// the device answered with a non-OK status
    #[error("device status {0}")]
    Status(u8),
}

/// Encodes a `virtio_blk_discard_write_zeroes` segment.
pub fn discard_segment(sector: u64, sectors: u32, unmap: bool) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&u32::from(unmap).to_le_bytes());
    s
}
