//! TX: guest chains to the tap, one `writev` per frame with the guest's
//! virtio-net header passed through as the tap's vnet header.

use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::counters::Counters;
use crate::hdr::{Features, HdrError, NetHdr, HDR_LEN};
use crate::iov::{self, IoVecs};
use crate::tap::TapQueue;

/// TX state of one queue pair.
#[derive(Debug, Default)]
pub struct Tx {
    iovs: IoVecs,
}

/// What a drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxResult {
    /// Chains were put on the used ring.
    pub used: bool,
    /// The budget ran out with chains still available: call again.
    pub more: bool,
}

impl Tx {
    /// Sends up to `budget` frames from the guest to `tap`.
    pub fn drain<G: GuestMemory>(
        &mut self,
        tap: &TapQueue,
        queue: &mut Queue,
        mem: &G,
        f: &Features,
        c: &Counters,
        mut budget: usize,
    ) -> Result<TxResult, virtio_queue::Error> {
        let mut res = TxResult::default();
        let hdr = f.hdr_len();
        loop {
            queue.disable_notification(mem)?;
            while budget > 0 {
                let Some(chain) = queue.pop_descriptor_chain(mem) else {
                    break;
                };
                budget -= 1;
                let head = chain.head_index();
                self.iovs.0.clear();
                match iov::collect(chain, mem, false, &mut self.iovs) {
                    Err(e) => {
                        tracing::debug!(error = %e, "tx chain refused");
                        Counters::inc(&c.tx_bad_chain);
                    }
                    Ok(len) if len < hdr => Counters::inc(&c.tx_short),
                    Ok(len) => self.send(tap, f, c, hdr, len),
                }
                self.iovs.0.clear();
                queue.add_used(mem, head, 0)?;
                res.used = true;
            }
            if budget == 0 {
                res.more = true;
                return Ok(res);
            }
            if !queue.enable_notification(mem)? {
                return Ok(res);
            }
        }
    }

    fn send(&mut self, tap: &TapQueue, f: &Features, c: &Counters, hdr: usize, len: usize) {
        let mut h = [0u8; HDR_LEN];
        iov::read_prefix(&self.iovs.0, &mut h[..hdr]);
        let Some(nh) = NetHdr::parse(&h[..hdr]) else {
            Counters::inc(&c.tx_short);
            return;
        };
        match f.check_tx(&nh, len - hdr) {
            Ok(()) => {}
            Err(HdrError::TooLarge(_)) => {
                Counters::inc(&c.tx_oversize);
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "tx header refused");
                Counters::inc(&c.tx_bad_hdr);
                return;
            }
        }
        loop {
            match tap.writev(&self.iovs.0) {
                Ok(_) => {
                    Counters::inc(&c.tx_packets);
                    Counters::add(&c.tx_bytes, (len - hdr) as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(tap = tap.name(), error = %e, "tap write failed");
                    Counters::inc(&c.tx_tap_errors);
                }
            }
            return;
        }
    }
}
