//! The vhost-user backend: one worker thread per queue pair (RX, TX and
//! that pair's tap queue in one epoll loop), the control queue on the
//! first worker, the config space, and feature negotiation.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use cradle_devices::daemon::{DaemonBackend, ExitEvents, GuestMemory};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringEpollHandler, VringRwLock, VringT};
use virtio_bindings::virtio_net::{VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_S_LINK_UP};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::counters::Counters;
use crate::ctrl::{self, Command, Outcome};
use crate::device::Device;
use crate::hdr::Features;
use crate::recheck::Recheck;
use crate::rx::Rx;
use crate::tx::Tx;

/// Bytes of config space we expose: mac, status, max_virtqueue_pairs, mtu.
pub const CONFIG_LEN: usize = 12;

#[derive(Debug)]
struct PairState {
    rx: Rx,
    tx: Tx,
    recheck: Recheck,
}

struct Inner {
    dev: Arc<Device>,
    mem: GuestMemory,
    acked: AtomicU64,
    pairs: Vec<Mutex<PairState>>,
    resume: Vec<EventFd>,
    /// Pairs the guest enabled with VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET.
    active_pairs: AtomicU16,
    /// The driver acked CTRL_VQ to us, so we serve the control queue and
    /// [`Inner::active_pairs`] decides which pairs carry traffic. A
    /// frontend that keeps the control queue to itself (QEMU does not
    /// pass CTRL_VQ on) disables unused pairs' rings instead.
    ctrl_in_use: AtomicBool,
    exit: ExitEvents,
}

/// The backend of one frontend connection.
#[derive(Clone)]
pub struct NetBackend {
    inner: Arc<Inner>,
}

impl NetBackend {
    /// A backend for one connection, around that connection's guest memory.
    pub fn new(dev: Arc<Device>, mem: GuestMemory) -> std::io::Result<Self> {
        let n = usize::from(dev.queue_pairs);
        let resume = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let pairs = (0..n)
            .map(|_| {
                Ok(Mutex::new(PairState {
                    rx: Rx::default(),
                    tx: Tx::default(),
                    recheck: Recheck::new()?,
                }))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(NetBackend {
            inner: Arc::new(Inner {
                exit: ExitEvents::new(n)?,
                pairs,
                resume,
                active_pairs: AtomicU16::new(1),
                ctrl_in_use: AtomicBool::new(false),
                acked: AtomicU64::new(0),
                mem,
                dev,
            }),
        })
    }

    /// epoll token of the pair's tap queue fd.
    fn tap_token(&self) -> u16 {
        self.queues() + 1
    }

    /// epoll token of the pair's resume eventfd (more TX work, or the
    /// active pairs changed).
    fn resume_token(&self) -> u16 {
        self.queues() + 2
    }

    /// epoll token of the pair's re-check timer (see [`Recheck`]).
    fn recheck_token(&self) -> u16 {
        self.queues() + 3
    }

    fn queues(&self) -> u16 {
        2 * self.inner.dev.queue_pairs + 1
    }

    fn features_now(&self) -> Features {
        Features {
            acked: self.inner.acked.load(Ordering::Acquire),
            mtu: self.inner.dev.mtu,
        }
    }

    fn pair(&self, i: usize) -> Option<MutexGuard<'_, PairState>> {
        let m = self.inner.pairs.get(i)?;
        // A poisoned lock means a worker panicked; the state is still plain data.
        Some(m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn pair_active(&self, pair: usize) -> bool {
        !self.inner.ctrl_in_use.load(Ordering::Acquire)
            || pair < usize::from(self.inner.active_pairs.load(Ordering::Acquire))
    }

    /// Applies a queue pair count: detach the tap queues of pairs the
    /// guest stopped using at once, and wake every worker to re-check its
    /// own pair (re-attaching the ones now in use).
    fn set_active_pairs(&self, n: u16) {
        self.inner.active_pairs.store(n, Ordering::Release);
        for (i, q) in self.inner.dev.tap.queues.iter().enumerate() {
            if i >= usize::from(n) && i > 0 {
                if let Err(e) = q.set_attached(false) {
                    tracing::warn!(error = %e, "detaching tap queue");
                }
            }
            if let Some(ev) = self.inner.resume.get(i) {
                let _ = ev.write(1);
            }
        }
    }

    fn run_rx(&self, pair: usize, st: &mut PairState, vring: &VringRwLock<GuestMemory>) {
        let dev = &self.inner.dev;
        let (Some(tap), Some(c)) = (dev.tap.queues.get(pair), dev.counters.get(pair)) else {
            return;
        };
        let mut v = vring.get_mut();
        let usable = v.is_enabled() && v.get_queue().ready() && self.pair_active(pair);
        // The first queue stays attached (the kernel needs one, and pair 0
        // is always in use once the driver runs); frames wait there.
        if pair > 0 {
            if let Err(e) = tap.set_attached(usable) {
                tracing::warn!(pair, error = %e, "tap queue attach/detach");
            }
        }
        if !usable {
            return;
        }
        let mem = self.inner.mem.memory();
        let f = self.features_now();
        match st.rx.drain(tap, v.get_queue_mut(), &*mem, &f, c) {
            Ok(r) => {
                if r.used && v.needs_notification().unwrap_or(true) {
                    if let Err(e) = v.signal_used_queue() {
                        tracing::warn!(pair, error = %e, "rx call");
                    }
                }
                if r.starved {
                    st.recheck.activity();
                }
            }
            Err(e) => tracing::warn!(pair, error = %e, "rx queue broken"),
        }
    }

    /// Returns whether it moved chains or called the guest.
    fn run_tx(&self, pair: usize, st: &mut PairState, vring: &VringRwLock<GuestMemory>) -> bool {
        let dev = &self.inner.dev;
        let (Some(tap), Some(c)) = (dev.tap.queues.get(pair), dev.counters.get(pair)) else {
            return false;
        };
        let mut v = vring.get_mut();
        if !v.is_enabled() || !v.get_queue().ready() {
            return false;
        }
        let mem = self.inner.mem.memory();
        let f = self.features_now();
        let budget = usize::from(v.get_queue().size());
        match st.tx.drain(tap, v.get_queue_mut(), &*mem, &f, c, budget) {
            Ok(r) => {
                let event_idx = f.has(VIRTIO_RING_F_EVENT_IDX);
                let signal = if r.used {
                    v.needs_notification().unwrap_or(true)
                } else {
                    st.recheck.missed_call(v.get_queue(), &*mem, event_idx)
                };
                if signal {
                    st.recheck.signalled(v.get_queue().next_used());
                    if let Err(e) = v.signal_used_queue() {
                        tracing::warn!(pair, error = %e, "tx call");
                    }
                }
                if r.used {
                    st.recheck.activity();
                }
                if r.more {
                    // Let the other events of this worker run, then continue.
                    if let Some(ev) = self.inner.resume.get(pair) {
                        let _ = ev.write(1);
                    }
                }
                r.used || signal
            }
            Err(e) => {
                tracing::warn!(pair, error = %e, "tx queue broken");
                false
            }
        }
    }

    fn run_ctrl(&self, vring: &VringRwLock<GuestMemory>) {
        let mut v = vring.get_mut();
        if !v.is_enabled() || !v.get_queue().ready() {
            return;
        }
        let Some(c) = self.inner.dev.counters.first() else {
            return;
        };
        let mem = self.inner.mem.memory();
        let f = self.features_now();
        let max = self.inner.dev.queue_pairs;
        let mut budget = usize::from(v.get_queue().size());
        let mut used = false;
        let q = v.get_queue_mut();
        loop {
            if q.disable_notification(&*mem).is_err() {
                break;
            }
            while budget > 0 {
                let Some(chain) = q.pop_descriptor_chain(&*mem) else {
                    break;
                };
                budget -= 1;
                let head = chain.head_index();
                let len = match ctrl::handle(chain, &mem, &f, max) {
                    Outcome::Answered { cmd, used_len } => {
                        match cmd {
                            Command::SetQueuePairs(n) => {
                                tracing::info!(pairs = n, "guest set active queue pairs");
                                self.set_active_pairs(n);
                                Counters::inc(&c.ctrl_ok);
                            }
                            Command::Refused(r) => {
                                tracing::debug!(reason = %r, "control command refused");
                                Counters::inc(&c.ctrl_err);
                            }
                        }
                        used_len
                    }
                    Outcome::Malformed => {
                        Counters::inc(&c.ctrl_malformed);
                        0
                    }
                };
                if let Err(e) = q.add_used(&*mem, head, len) {
                    tracing::warn!(error = %e, "control queue broken");
                    return;
                }
                used = true;
            }
            if budget == 0 || !q.enable_notification(&*mem).unwrap_or(false) {
                break;
            }
        }
        if used && v.needs_notification().unwrap_or(true) {
            let _ = v.signal_used_queue();
        }
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock<GuestMemory>;

    fn num_queues(&self) -> usize {
        usize::from(self.queues())
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.inner.dev.queue_size)
    }

    fn features(&self) -> u64 {
        Features::offered(self.inner.dev.offload)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        self.inner.acked.store(features, Ordering::Release);
        let f = self.features_now();
        let ctrl = f.has(VIRTIO_NET_F_CTRL_VQ);
        self.inner.ctrl_in_use.store(ctrl, Ordering::Release);
        if ctrl {
            // Until the driver sends VQ_PAIRS_SET only the first pair is used.
            self.set_active_pairs(1);
        }
        for q in &self.inner.dev.tap.queues {
            if let Err(e) = q.set_vnet_hdr_size(f.hdr_len()) {
                tracing::warn!(error = %e, "setting the tap header size");
            }
            if let Err(e) = q.set_offloads(f.rx_offloads()) {
                tracing::warn!(error = %e, "setting tap offloads");
            }
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The library sets EVENT_IDX on every queue itself; virtio-queue's
        // needs_notification/enable_notification follow it.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let dev = &self.inner.dev;
        let mut cfg = [0u8; CONFIG_LEN];
        cfg[..6].copy_from_slice(&dev.mac.0);
        cfg[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        cfg[8..10].copy_from_slice(&dev.queue_pairs.to_le_bytes());
        cfg[10..12].copy_from_slice(&dev.mtu.to_le_bytes());
        // Out-of-range bytes read as zero; the size is capped so a hostile
        // frontend cannot make us allocate much.
        let size = (size as usize).min(256);
        let mut out = vec![0u8; size];
        let off = offset as usize;
        if off < CONFIG_LEN {
            let n = (CONFIG_LEN - off).min(size);
            out[..n].copy_from_slice(&cfg[off..off + n]);
        }
        out
    }

    fn update_memory(
        &self,
        _mem: vm_memory::GuestMemoryAtomic<vm_memory::GuestMemoryMmap<()>>,
    ) -> std::io::Result<()> {
        // The library updates the GuestMemoryAtomic we share with it.
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        let n = u32::from(self.inner.dev.queue_pairs);
        (0..n)
            .map(|i| {
                let mask = 0b11u64 << (2 * i);
                if i == 0 {
                    mask | 1u64 << (2 * n)
                } else {
                    mask
                }
            })
            .collect()
    }

    fn exit_event(&self, thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.inner.exit.get(thread_index)
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock<GuestMemory>],
        thread_id: usize,
    ) -> std::io::Result<()> {
        let pair = thread_id;
        let Some(mut st) = self.pair(pair) else {
            return Ok(());
        };
        let (Some(rx), Some(tx)) = (vrings.first(), vrings.get(1)) else {
            return Ok(());
        };
        match device_event {
            // RX kick: the guest added buffers.
            0 => self.run_rx(pair, &mut st, rx),
            1 => {
                let _ = self.run_tx(pair, &mut st, tx);
            }
            2 => {
                drop(st);
                if let Some(v) = vrings.get(2) {
                    self.run_ctrl(v);
                }
            }
            t if t == self.tap_token() => {
                st.rx.tap_pending = true;
                self.run_rx(pair, &mut st, rx);
            }
            t if t == self.recheck_token() => {
                st.recheck.fired();
                if self.run_tx(pair, &mut st, tx) {
                    if let Some(c) = self.inner.dev.counters.get(pair) {
                        Counters::inc(&c.recheck_found);
                    }
                }
                self.run_rx(pair, &mut st, rx);
                st.recheck.rearm();
            }
            t if t == self.resume_token() => {
                if let Some(ev) = self.inner.resume.get(pair) {
                    let _ = ev.read();
                }
                let _ = self.run_tx(pair, &mut st, tx);
                self.run_rx(pair, &mut st, rx);
            }
            _ => {}
        }
        Ok(())
    }
}

impl DaemonBackend for NetBackend {
    fn attach(&self, handlers: &[Arc<VringEpollHandler<Self>>]) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        for (i, h) in handlers.iter().enumerate() {
            if let Some(q) = self.inner.dev.tap.queues.get(i) {
                // Edge-triggered: a tap we stop reading for lack of guest
                // buffers must not wake us again and again.
                h.register_listener(
                    q.as_raw_fd(),
                    EventSet::IN | EventSet::EDGE_TRIGGERED,
                    u64::from(self.tap_token()),
                )?;
            }
            if let Some(ev) = self.inner.resume.get(i) {
                h.register_listener(ev.as_raw_fd(), EventSet::IN, u64::from(self.resume_token()))?;
            }
            if let Some(st) = self.pair(i) {
                h.register_listener(
                    st.recheck.as_raw_fd(),
                    EventSet::IN,
                    u64::from(self.recheck_token()),
                )?;
            }
        }
        Ok(())
    }

    fn detach(&self) {
        for (i, c) in self.inner.dev.counters.iter().enumerate() {
            tracing::info!(pair = i, "counters {c}");
        }
    }
}

/// Counters as a log line per pair, for the end of the process.
pub fn log_counters(dev: &Device) {
    for (i, c) in dev.counters.iter().enumerate() {
        tracing::info!(pair = i, "counters {c}");
    }
}
