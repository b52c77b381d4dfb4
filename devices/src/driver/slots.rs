//! Book-keeping shared by the request helpers ([`super::blk`],
//! [`super::fs`]): a fixed set of buffer slots, which chain head holds
//! which slot (and what the helper needs to finish it), and completions
//! that arrived while a caller waited for a particular one.

use super::queue::{Used, VirtQueue};
use super::DriverError;

/// A completion that carries the caller's tag.
pub(crate) trait Tagged {
    /// The tag given at submission.
    fn tag(&self) -> u64;
}

/// Slots, in-flight heads and the backlog of a request helper. `P` is what
/// the helper keeps per request, `C` its completion type.
#[derive(Debug)]
pub(crate) struct Slots<P, C> {
    free: Vec<usize>,
    pending: Vec<Option<(usize, P)>>,
    total: usize,
    backlog: Vec<C>,
}

impl<P, C: Tagged> Slots<P, C> {
    /// `total` slots for a queue of `queue_size` heads.
    pub(crate) fn new(total: usize, queue_size: u16) -> Self {
        Slots {
            free: (0..total).rev().collect(),
            pending: (0..queue_size).map(|_| None).collect(),
            total,
            backlog: Vec::new(),
        }
    }

    /// Slots free for new requests.
    pub(crate) fn free(&self) -> usize {
        self.free.len()
    }

    /// Requests in flight.
    pub(crate) fn in_flight(&self) -> usize {
        self.total - self.free.len()
    }

    /// The slot the next request will use.
    pub(crate) fn next(&self) -> Result<usize, DriverError> {
        self.free.last().copied().ok_or(DriverError::QueueFull)
    }

    /// Records that `head` now holds the slot [`Slots::next`] returned.
    pub(crate) fn start(&mut self, head: u16, data: P) {
        if let Some(slot) = self.free.pop() {
            self.pending[usize::from(head)] = Some((slot, data));
        }
    }

    /// Frees the slot of a used head; its slot and data.
    pub(crate) fn finish(&mut self, u: Used) -> Result<(usize, P), DriverError> {
        let (slot, data) = self
            .pending
            .get_mut(usize::from(u.head))
            .and_then(Option::take)
            .ok_or(DriverError::BadUsed(u32::from(u.head)))?;
        self.free.push(slot);
        Ok((slot, data))
    }

    /// Completions kept from an earlier wait, if any.
    pub(crate) fn take_backlog(&mut self) -> Vec<C> {
        std::mem::take(&mut self.backlog)
    }

    /// The backlog if there is one, else at least one new completion from
    /// `q` (waiting up to `timeout`).
    pub(crate) fn reap(
        &mut self,
        q: &mut VirtQueue,
        timeout: std::time::Duration,
        mut complete: impl FnMut(&mut Self, &VirtQueue, Vec<Used>) -> Result<Vec<C>, DriverError>,
    ) -> Result<Vec<C>, DriverError> {
        if !self.backlog.is_empty() {
            return Ok(self.take_backlog());
        }
        let used = q.wait_used(timeout)?;
        complete(self, q, used)
    }

    /// Waits on `q` until the completion tagged `tag` arrives, turning used
    /// elements into completions with `complete`; the others are kept for
    /// the next reap.
    pub(crate) fn wait_for(
        &mut self,
        q: &mut VirtQueue,
        tag: u64,
        mut complete: impl FnMut(&mut Self, &VirtQueue, Vec<Used>) -> Result<Vec<C>, DriverError>,
    ) -> Result<C, DriverError> {
        let mut others = self.take_backlog();
        loop {
            let used = q.wait_used(super::blk::TIMEOUT)?;
            let mut got = complete(self, q, used)?;
            if let Some(pos) = got.iter().position(|c| c.tag() == tag) {
                let c = got.remove(pos);
                others.extend(got);
                self.backlog = others;
                return Ok(c);
            }
            others.extend(got);
        }
    }
}
