//! virtio-fs requests on top of a [`VirtQueue`] (virtio 1.x, 5.11): one
//! FUSE request per chain, a readable request buffer followed by a
//! writable reply buffer (none for requests that take no reply, such as
//! FORGET on the hiprio queue).

use std::time::Duration;

use vm_memory::GuestAddress;

use super::queue::{Buffer, Used, VirtQueue};
use super::slots::{Slots, Tagged};
use super::DriverError;
use crate::fuse::abi::{self, opcode as op, Wire};
use crate::fuse::client::Client;

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsCompletion {
    /// Caller's tag from [`FsQueue::submit`].
    pub tag: u64,
    /// Used length the device reported (0: no reply written).
    pub used_len: u32,
    /// The reply bytes: all of them, or only the header when copying is
    /// off (see [`FsQueue::set_copy_replies`]).
    pub reply: Vec<u8>,
}

impl FsCompletion {
    /// The reply header's error (`-errno` or 0); `None` without a header.
    pub fn error(&self) -> Option<i32> {
        let h = self.reply.get(..abi::OutHeader::SIZE)?;
        Some(abi::OutHeader::decode(h).error)
    }
}

impl Tagged for FsCompletion {
    fn tag(&self) -> u64 {
        self.tag
    }
}

/// A virtqueue used for virtio-fs, with one request and one reply buffer
/// ("slot") per request that can be in flight.
#[derive(Debug)]
pub struct FsQueue {
    q: VirtQueue,
    slots: Vec<(GuestAddress, GuestAddress)>,
    /// Per request in flight: its tag.
    book: Slots<u64, FsCompletion>,
    max_request: u32,
    max_reply: u32,
    copy_replies: bool,
}

/// Where the opcode sits in a request header.
const OPCODE: std::ops::Range<usize> = 4..8;

impl FsQueue {
    /// Wraps `q` with `depth` slots (at most `q.size() / 2`, chains take
    /// two descriptors) of `max_request` request and `max_reply` reply
    /// bytes each.
    pub fn new(
        q: VirtQueue,
        depth: usize,
        max_request: u32,
        max_reply: u32,
    ) -> Result<Self, DriverError> {
        let depth = depth.clamp(1, usize::from(q.size() / 2).max(1));
        let mut slots = Vec::with_capacity(depth);
        for _ in 0..depth {
            let m = q.memory();
            slots.push((
                m.alloc(u64::from(max_request), 4096)?,
                m.alloc(u64::from(max_reply), 4096)?,
            ));
        }
        Ok(FsQueue {
            book: Slots::new(depth, q.size()),
            q,
            slots,
            max_request,
            max_reply,
            copy_replies: true,
        })
    }

    /// Whether completions carry the whole reply (on by default) or only
    /// its header (for load generation).
    pub fn set_copy_replies(&mut self, on: bool) {
        self.copy_replies = on;
    }

    /// Requests that can still be submitted.
    pub fn free_slots(&self) -> usize {
        self.book.free()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.book.in_flight()
    }

    /// The underlying virtqueue.
    pub fn queue(&mut self) -> &mut VirtQueue {
        &mut self.q
    }

    /// Reply room the Linux driver would give `req`: exactly header + data
    /// for READ (virtiofsd refuses a larger buffer), the slot otherwise.
    pub fn reply_room(&self, req: &[u8]) -> u32 {
        let opcode = req.get(OPCODE).map(abi::Field::get);
        let read = req
            .get(abi::InHeader::SIZE..abi::InHeader::SIZE + abi::ReadIn::SIZE)
            .map(abi::ReadIn::decode);
        match (opcode, read) {
            (Some(op::READ), Some(r)) => r
                .size
                .saturating_add(abi::OutHeader::SIZE as u32)
                .min(self.max_reply),
            _ => self.max_reply,
        }
    }

    /// Places `req` in the available ring with `reply_len` bytes of reply
    /// room (0: a request without reply); call [`FsQueue::kick`] to notify
    /// the device.
    pub fn submit(&mut self, req: &[u8], reply_len: u32, tag: u64) -> Result<(), DriverError> {
        let len = u32::try_from(req.len()).map_err(|_| DriverError::TooLarge)?;
        if len > self.max_request || reply_len > self.max_reply {
            return Err(DriverError::TooLarge);
        }
        let slot = self.book.next()?;
        let (rq, rp) = self.slots[slot];
        self.q.write(rq, req)?;
        let head = if reply_len == 0 {
            self.q.add_chain(&[Buffer::readable(rq, len)])?
        } else {
            self.q
                .add_chain(&[Buffer::readable(rq, len), Buffer::writable(rp, reply_len)])?
        };
        self.book.start(head, tag);
        Ok(())
    }

    /// Notifies the device.
    pub fn kick(&mut self) -> Result<(), DriverError> {
        self.q.kick()
    }

    /// Turns used elements into completions, freeing their slots.
    fn complete(
        slots: &[(GuestAddress, GuestAddress)],
        max: u32,
    ) -> impl FnMut(
        &mut Slots<u64, FsCompletion>,
        &VirtQueue,
        Vec<Used>,
    ) -> Result<Vec<FsCompletion>, DriverError>
           + '_ {
        move |book, q, used| {
            let mut out = Vec::with_capacity(used.len());
            for u in used {
                let (slot, tag) = book.finish(u)?;
                let reply = q.read(slots[slot].1, u.len.min(max) as usize)?;
                out.push(FsCompletion {
                    tag,
                    used_len: u.len,
                    reply,
                });
            }
            Ok(out)
        }
    }

    /// Bytes of each reply to copy out.
    fn copy_limit(&self) -> u32 {
        if self.copy_replies {
            self.max_reply
        } else {
            self.max_reply.min(abi::OutHeader::SIZE as u32)
        }
    }

    /// Waits for at least one completion.
    pub fn reap(&mut self, timeout: Duration) -> Result<Vec<FsCompletion>, DriverError> {
        let complete = Self::complete(&self.slots, self.copy_limit());
        self.book.reap(&mut self.q, timeout, complete)
    }

    /// Submits one request, kicks and waits for it; returns its reply
    /// (`None` when the device wrote none). Other completions that arrive
    /// meanwhile are kept for the next [`FsQueue::reap`].
    pub fn send(&mut self, req: &[u8], reply_len: u32) -> Result<Option<Vec<u8>>, DriverError> {
        const TAG: u64 = u64::MAX;
        self.submit(req, reply_len, TAG)?;
        self.kick()?;
        let complete = Self::complete(&self.slots, self.copy_limit());
        let c = self.book.wait_for(&mut self.q, TAG, complete)?;
        Ok((c.used_len > 0).then_some(c.reply))
    }

    /// A FUSE [`Client`] over this queue, with the reply room the Linux
    /// driver would give each request. Transport errors become `EPROTO`.
    pub fn client(&mut self) -> Client<impl FnMut(&[u8]) -> Option<Vec<u8>> + '_> {
        Client::new(move |req: &[u8]| {
            let room = self.reply_room(req);
            self.send(req, room).ok().flatten()
        })
    }
}
