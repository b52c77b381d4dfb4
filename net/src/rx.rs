//! RX: frames from the tap into the guest's receive buffers.
//!
//! Each drain pops the guest's buffers into a local pool, `readv`s one
//! frame at a time straight into them (with `VIRTIO_NET_F_MRG_RXBUF` one
//! frame may span several chains), and gives back the chains it did not
//! fill by rewinding the avail index. The tap fd is polled edge-triggered:
//! when the guest has no room we stop reading and remember that the tap
//! may still hold frames, and the next RX kick resumes. A trailing bounce
//! buffer catches frames larger than the guest's buffers, so they are
//! dropped and counted instead of being truncated. When the guest has
//! posted some room but less than the largest possible frame, the frame
//! is read into that bounce buffer instead and held (one frame at most)
//! until it fits.

use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemory;

use crate::counters::Counters;
use crate::hdr::{Features, HDR_LEN, MAX_GSO_FRAME};
use crate::iov::{self, IoVecs, IOV_MAX};
use crate::tap::TapQueue;

#[derive(Debug, Clone, Copy)]
struct Entry {
    head: u16,
    iov_start: usize,
    iov_end: usize,
    cap: usize,
    bad: bool,
}

/// RX state of one queue pair.
#[derive(Debug)]
pub struct Rx {
    /// The tap may hold frames we have not read yet.
    pub tap_pending: bool,
    pool: Vec<Entry>,
    iovs: IoVecs,
    bounce: Vec<u8>,
    /// Length of a frame waiting in `bounce` for the guest to post room.
    held: usize,
}

impl Default for Rx {
    fn default() -> Self {
        Rx {
            tap_pending: true,
            pool: Vec::new(),
            iovs: IoVecs::default(),
            bounce: vec![0; HDR_LEN + MAX_GSO_FRAME + 1],
            held: 0,
        }
    }
}

/// What a drain did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RxResult {
    /// Chains were put on the used ring (the guest may need a call).
    pub used: bool,
    /// Stopped for lack of guest buffers with the tap possibly non-empty.
    pub starved: bool,
}

impl Rx {
    /// Moves frames from `tap` to the guest until the tap is empty or the
    /// guest's buffers run out.
    pub fn drain<G: GuestMemory>(
        &mut self,
        tap: &TapQueue,
        queue: &mut Queue,
        mem: &G,
        f: &Features,
        c: &Counters,
    ) -> Result<RxResult, virtio_queue::Error> {
        let mut res = RxResult::default();
        if !self.tap_pending && self.held == 0 {
            return Ok(res);
        }
        self.pool.clear();
        self.iovs.0.clear();
        // RX kicks are only useful while we wait for buffers.
        queue.disable_notification(mem)?;
        let r = self.drain_inner(tap, queue, mem, f, c, &mut res);
        // Give back the chains we popped but did not fill.
        let unused = self.pool.len() - r.as_ref().copied().unwrap_or(self.pool.len());
        if unused > 0 {
            let back = u16::try_from(unused).unwrap_or(u16::MAX);
            queue.set_next_avail(queue.next_avail().wrapping_sub(back));
        }
        self.pool.clear();
        self.iovs.0.clear();
        r.map(|_| res)
    }

    /// Returns the index of the first pool entry not consumed.
    fn drain_inner<G: GuestMemory>(
        &mut self,
        tap: &TapQueue,
        queue: &mut Queue,
        mem: &G,
        f: &Features,
        c: &Counters,
        res: &mut RxResult,
    ) -> Result<usize, virtio_queue::Error> {
        let hdr = f.hdr_len();
        let mrg = f.mergeable();
        let need = hdr + f.max_rx_frame();
        let mut first = 0usize;
        loop {
            // Chains the guest got wrong are returned empty once they reach the front.
            while let Some(e) = self.pool.get(first).filter(|e| e.bad) {
                queue.add_used(mem, e.head, 0)?;
                res.used = true;
                first += 1;
            }
            // Gather enough room for the largest frame the tap may hand us.
            let (last, cap, exhausted) = loop {
                let (last, cap) = self.room(first, mrg);
                let enough = if mrg {
                    cap >= need.max(self.held)
                } else {
                    cap > 0
                };
                let iov_full = mrg
                    && last > first
                    && self.pool[last - 1].iov_end - self.pool[first].iov_start >= IOV_MAX - 1;
                if enough || iov_full {
                    break (last, cap, false);
                }
                match queue.pop_descriptor_chain(mem) {
                    Some(chain) => {
                        let head = chain.head_index();
                        let start = self.iovs.0.len();
                        let entry = match iov::collect(chain, mem, true, &mut self.iovs) {
                            Ok(cap) if cap >= hdr => Entry {
                                head,
                                iov_start: start,
                                iov_end: self.iovs.0.len(),
                                cap,
                                bad: false,
                            },
                            _ => {
                                self.iovs.0.truncate(start);
                                Counters::inc(&c.rx_bad_chain);
                                Entry {
                                    head,
                                    iov_start: start,
                                    iov_end: start,
                                    cap: 0,
                                    bad: true,
                                }
                            }
                        };
                        self.pool.push(entry);
                        if entry.bad && self.pool.len() - 1 == first {
                            queue.add_used(mem, head, 0)?;
                            res.used = true;
                            first += 1;
                        }
                    }
                    None => {
                        if queue.enable_notification(mem)? {
                            continue;
                        }
                        if cap > 0 {
                            break (last, cap, true);
                        }
                        // Back-pressure: wait for the guest's next RX kick.
                        Counters::inc(&c.rx_no_buffers);
                        res.starved = true;
                        return Ok(first);
                    }
                }
            };
            let Some(start) = self.pool.get(first).map(|e| e.iov_start) else {
                return Ok(first);
            };
            let end = self.pool[last - 1].iov_end;
            if self.held > 0 || exhausted {
                // Short of room for the largest possible frame: go through
                // the bounce buffer so a frame that does not fit yet is
                // held (one frame at most) instead of lost.
                if self.held == 0 {
                    match self.read_bounce(tap) {
                        Ok(n) => self.held = n,
                        Err(e) => return self.read_failed(tap, e, c, first),
                    }
                    if self.held < hdr {
                        self.held = 0;
                        Counters::inc(&c.rx_tap_errors);
                        continue;
                    }
                }
                let n = self.held;
                if n > cap {
                    let whole_ring = self.pool.len() - first >= usize::from(queue.size());
                    if exhausted && (whole_ring || !mrg) {
                        // The guest cannot ever give us more room.
                        self.held = 0;
                        Counters::inc(&c.rx_oversize);
                        continue;
                    }
                    Counters::inc(&c.rx_no_buffers);
                    res.starved = true;
                    return Ok(first);
                }
                iov::write_at(&self.iovs.0[start..end], 0, &self.bounce[..n]);
                self.held = 0;
                first = self.complete(queue, mem, first, last, n, hdr)?;
                res.used = true;
                Counters::inc(&c.rx_packets);
                Counters::add(&c.rx_bytes, (n - hdr) as u64);
                continue;
            }
            let n = match self.read(tap, start, end) {
                Ok(n) => n,
                Err(e) => return self.read_failed(tap, e, c, first),
            };
            if n < hdr {
                Counters::inc(&c.rx_tap_errors);
                continue;
            }
            if n > cap {
                Counters::inc(&c.rx_oversize);
                continue;
            }
            first = self.complete(queue, mem, first, last, n, hdr)?;
            res.used = true;
            Counters::inc(&c.rx_packets);
            Counters::add(&c.rx_bytes, (n - hdr) as u64);
        }
    }

    fn read_failed(
        &mut self,
        tap: &TapQueue,
        e: io::Error,
        c: &Counters,
        first: usize,
    ) -> Result<usize, virtio_queue::Error> {
        if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
            // Detached queue (EBADFD) or device gone: wait for the next event.
            tracing::debug!(tap = tap.name(), error = %e, "tap read failed");
            Counters::inc(&c.rx_tap_errors);
        }
        if e.kind() != io::ErrorKind::Interrupted {
            self.tap_pending = false;
        }
        Ok(first)
    }

    /// One read of a whole frame into the bounce buffer.
    fn read_bounce(&mut self, tap: &TapQueue) -> io::Result<usize> {
        let v = [libc::iovec {
            iov_base: self.bounce.as_mut_ptr().cast(),
            iov_len: self.bounce.len(),
        }];
        tap.readv(&v)
    }

    /// The pool entries from `first` one read may use, as (end index,
    /// total capacity): one chain without mergeable buffers, else as many
    /// as fit in one readv.
    fn room(&self, first: usize, mrg: bool) -> (usize, usize) {
        let mut cap = 0;
        let mut last = first;
        for (i, e) in self.pool.iter().enumerate().skip(first) {
            if !mrg && i > first {
                break;
            }
            if e.iov_end - self.pool[first].iov_start > IOV_MAX - 1 {
                break;
            }
            cap += e.cap;
            last = i + 1;
        }
        (last, cap)
    }

    /// One readv into iovecs `start..end` plus the bounce buffer.
    fn read(&mut self, tap: &TapQueue, start: usize, end: usize) -> io::Result<usize> {
        let bounce = libc::iovec {
            iov_base: self.bounce.as_mut_ptr().cast(),
            iov_len: self.bounce.len(),
        };
        let iovs = &mut self.iovs.0;
        if end == iovs.len() {
            iovs.push(bounce);
            let r = tap.readv(&iovs[start..=end]);
            iovs.pop();
            r
        } else {
            let saved = std::mem::replace(&mut iovs[end], bounce);
            let r = tap.readv(&iovs[start..=end]);
            iovs[end] = saved;
            r
        }
    }

    /// Puts the chains holding an `n`-byte frame on the used ring, after
    /// writing `num_buffers` into its header. Returns the next unused entry.
    fn complete<G: GuestMemory>(
        &mut self,
        queue: &mut Queue,
        mem: &G,
        first: usize,
        last: usize,
        n: usize,
        hdr: usize,
    ) -> Result<usize, virtio_queue::Error> {
        let mut spans = Vec::new();
        let mut rem = n;
        let mut i = first;
        while i < last && (rem > 0 || spans.is_empty()) {
            let e = self.pool[i];
            if e.bad {
                spans.push((e.head, 0u32));
            } else {
                let take = rem.min(e.cap);
                spans.push((e.head, take as u32));
                rem -= take;
            }
            i += 1;
        }
        if hdr == HDR_LEN {
            let bufs = spans.iter().filter(|s| s.1 > 0).count().max(1);
            let nb = u16::try_from(bufs).unwrap_or(u16::MAX).to_le_bytes();
            let e = self.pool[first];
            iov::write_at(&self.iovs.0[e.iov_start..e.iov_end], 10, &nb);
        }
        for (head, len) in spans {
            queue.add_used(mem, head, len)?;
        }
        Ok(i)
    }
}
