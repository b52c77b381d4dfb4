//! A backstop against notifications the guest lost.
//!
//! Kick and call suppression (`EVENT_IDX`) is a Dekker handshake: each
//! side stores its index, issues a full barrier, then reads the other's.
//! QEMU under TCG with a single vCPU compiles the guest's barriers and
//! locked instructions to plain host loads and stores (no `CF_PARALLEL`),
//! so the guest's avail-index store can still sit in the host CPU's store
//! buffer when it reads a stale `avail_event` and decides not to kick,
//! while we read the stale avail index and go to sleep. Nothing would
//! ever wake us: the guest only kicks again when its index crosses
//! `avail_event`, and a full TX ring never gets there (TX stalled for
//! good under a UDP flood). The same race can hide a `used_event` update
//! from us and lose the guest's TX completion interrupt.
//!
//! So after a pair did work we look at its rings again a little later: a
//! one-shot timer at 1 ms, doubling up to [`MAX_STEP`] while nothing new
//! turns up. Under load it fires at most once a millisecond (it is only
//! armed when idle-after-work and not already armed), so it costs nothing
//! per packet.

use std::num::Wrapping;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::time::Duration;

use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use vmm_sys_util::timerfd::TimerFd;

/// Re-checks after the last work: 1, 2, 4, ... 128 ms (about 255 ms in all).
pub const MAX_STEP: u32 = 7;

/// The re-check timer of one queue pair and what TX last signalled.
#[derive(Debug)]
pub struct Recheck {
    timer: TimerFd,
    armed: bool,
    step: u32,
    /// The TX used index at our last call to the guest.
    tx_signalled: u16,
}

impl Recheck {
    /// A disarmed re-check timer.
    pub fn new() -> std::io::Result<Recheck> {
        Ok(Recheck {
            timer: TimerFd::new()?,
            armed: false,
            step: 0,
            tx_signalled: 0,
        })
    }

    /// The pair did work: look again 1 ms after (unless already due).
    pub fn activity(&mut self) {
        self.step = 0;
        if !self.armed {
            self.arm();
        }
    }

    /// The timer expired: consume it. Call before re-running the queues.
    pub fn fired(&mut self) {
        if self.armed {
            // Readable (epoll said so) and not re-armed since: no blocking.
            let _ = self.timer.wait();
            self.armed = false;
        }
    }

    /// After a re-check that found nothing: look again later, twice as
    /// late, until [`MAX_STEP`].
    pub fn rearm(&mut self) {
        if !self.armed && self.step < MAX_STEP {
            self.step += 1;
            self.arm();
        }
    }

    fn arm(&mut self) {
        let d = Duration::from_millis(1 << self.step);
        match self.timer.reset(d, None) {
            Ok(()) => self.armed = true,
            Err(e) => tracing::warn!(error = %e, "arming the re-check timer"),
        }
    }

    /// We called the guest with the used index at `next_used`.
    pub fn signalled(&mut self, next_used: u16) {
        self.tx_signalled = next_used;
    }

    /// Whether, with `EVENT_IDX`, the guest's `used_event` now asks for a
    /// call we did not make (its update reached us late).
    pub fn missed_call<M: GuestMemory>(&self, q: &Queue, mem: &M, event_idx: bool) -> bool {
        let used = Wrapping(q.next_used());
        let old = Wrapping(self.tx_signalled);
        if !event_idx || used == old {
            return false;
        }
        // Our used index stores before the read of used_event.
        fence(Ordering::SeqCst);
        let at = q
            .avail_ring()
            .checked_add(4 + 2 * u64::from(q.size()))
            .map(GuestAddress);
        let Some(Ok(ev)) = at.map(|a| mem.load::<u16>(a, Ordering::Acquire)) else {
            return false;
        };
        // vring_need_event(): used_event in [old, used).
        used - Wrapping(u16::from_le(ev)) - Wrapping(1) < used - old
    }
}

impl AsRawFd for Recheck {
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}
