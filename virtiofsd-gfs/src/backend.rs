//! The vhost-user-fs backend: queue 0 is the hiprio queue (FORGET,
//! INTERRUPT), queues 1..=N the request queues. Every queue has its own
//! worker thread, so queues proceed in parallel; with `--thread-pool-size`
//! a request queue's chains are further spread over a pool.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::fs::FileSystem;
use crate::fuse::Server;
use crate::queue::{serve_chain, Descs};

/// Guest memory as the backend sees it.
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;
type Vring = VringRwLock<Mem>;

/// `VIRTIO_F_VERSION_1`.
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_RING_F_INDIRECT_DESC`.
const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// `VIRTIO_RING_F_EVENT_IDX`.
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// Length of the tag in the device config space.
pub const TAG_LEN: usize = 36;
/// How long GET_VRING_BASE waits for pool requests in flight.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Device parameters fixed for the daemon's lifetime.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Request queues (the hiprio queue is extra).
    pub request_queues: u16,
    /// Maximum queue size.
    pub queue_size: u16,
    /// Tag offered in the config space (at most 36 bytes).
    pub tag: Option<String>,
    /// Pool threads per daemon for request queues (0: serve inline).
    pub thread_pool_size: usize,
    /// How long a request queue's thread watches the available ring after
    /// serving before it re-arms notifications and sleeps (zero: never).
    /// Only used when the request queues do not outnumber the CPUs the
    /// daemon may run on.
    pub poll: Duration,
}

/// The backend for one frontend connection; the [`Server`] (and so the
/// FUSE session) outlives connections.
pub struct FsBackend<F> {
    inner: Arc<Inner<F>>,
}

impl<F> Clone for FsBackend<F> {
    fn clone(&self) -> Self {
        FsBackend {
            inner: self.inner.clone(),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

struct Inner<F> {
    server: Arc<Server<F>>,
    dev: DeviceConfig,
    mem: Mem,
    event_idx: AtomicBool,
    exit: Vec<(EventConsumer, EventNotifier)>,
    pool: Option<Mutex<mpsc::Sender<Job>>>,
    in_flight: Arc<Vec<AtomicUsize>>,
    /// How long a request queue's thread polls after serving (see
    /// [`DeviceConfig::poll`]); zero when the queues outnumber our CPUs.
    poll: Duration,
}

impl<F: FileSystem + 'static> FsBackend<F> {
    /// A backend around `server` for a connection whose memory is `mem`.
    pub fn new(server: Arc<Server<F>>, dev: DeviceConfig, mem: Mem) -> std::io::Result<Self> {
        let queues = usize::from(dev.request_queues) + 1;
        let exit = (0..queues)
            .map(|_| new_event_consumer_and_notifier(EventFlag::CLOEXEC | EventFlag::NONBLOCK))
            .collect::<Result<Vec<_>, _>>()?;
        let pool = (dev.thread_pool_size > 0)
            .then(|| spawn_pool(dev.thread_pool_size))
            .transpose()?
            .map(Mutex::new);
        // A spinning thread keeps the CPU from the other queues' threads
        // when they share it: poll only if every request queue can have a
        // CPU of its own.
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let poll = if usize::from(dev.request_queues) <= cpus {
            dev.poll
        } else {
            Duration::ZERO
        };
        Ok(FsBackend {
            inner: Arc::new(Inner {
                poll,
                server,
                mem,
                event_idx: AtomicBool::new(false),
                exit,
                pool,
                in_flight: Arc::new((0..queues).map(|_| AtomicUsize::new(0)).collect()),
                dev,
            }),
        })
    }

    /// The device config space (`struct virtio_fs_config`).
    pub fn config_space(&self) -> [u8; TAG_LEN + 4] {
        let mut c = [0u8; TAG_LEN + 4];
        if let Some(t) = &self.inner.dev.tag {
            let n = t.len().min(TAG_LEN);
            c[..n].copy_from_slice(&t.as_bytes()[..n]);
        }
        c[TAG_LEN..].copy_from_slice(&u32::from(self.inner.dev.request_queues).to_le_bytes());
        c
    }

    /// Requests handed to the pool and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.inner
            .in_flight
            .iter()
            .map(|n| n.load(Ordering::Acquire))
            .sum()
    }

    /// Waits until no pool request is in flight on `queue` (all: `None`).
    pub fn wait_idle(&self, queue: Option<usize>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let busy = match queue {
                Some(q) => self
                    .inner
                    .in_flight
                    .get(q)
                    .map_or(0, |n| n.load(Ordering::Acquire)),
                None => self.in_flight(),
            };
            if busy == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Pops and serves every available chain of `vring` (queue `q`).
    fn process(&self, vring: &Vring, q: usize) {
        let event_idx = self.inner.event_idx.load(Ordering::Relaxed);
        let limit = usize::from(self.inner.dev.queue_size);
        loop {
            if event_idx {
                let _ = vring.disable_notification();
            }
            let mut used = false;
            // Bounded by the queue size so a driver that keeps refilling
            // cannot hold this worker forever without a notification pass.
            for _ in 0..limit {
                let mem = self.inner.mem.memory().into_inner();
                let Some(chain) = vring
                    .get_mut()
                    .get_queue_mut()
                    .pop_descriptor_chain(mem.clone())
                else {
                    break;
                };
                let head = chain.head_index();
                let descs: Descs = chain
                    .map(|d| (d.addr(), d.len(), d.is_write_only()))
                    .collect();
                match (&self.inner.pool, q) {
                    (Some(pool), q) if q > 0 => {
                        let server = self.inner.server.clone();
                        let v = vring.clone();
                        let in_flight = self.inner.in_flight.clone();
                        in_flight[q].fetch_add(1, Ordering::AcqRel);
                        let job: Job = Box::new(move || {
                            let len = serve(&mem, &descs, &server, q);
                            let _ = v.add_used(head, len);
                            notify(&v);
                            in_flight[q].fetch_sub(1, Ordering::AcqRel);
                        });
                        let sent = pool.lock().map(|p| p.send(job).is_ok()).unwrap_or(false);
                        if !sent {
                            self.inner.in_flight[q].fetch_sub(1, Ordering::AcqRel);
                            let _ = vring.add_used(head, 0);
                            used = true;
                        }
                    }
                    _ => {
                        let len = serve(&mem, &descs, &self.inner.server, q);
                        let _ = vring.add_used(head, len);
                        used = true;
                    }
                }
            }
            if used {
                notify(vring);
                // A guest waiting on this reply sends its next request
                // within microseconds: catching it here saves it a kick and
                // us a wake-up. Inline queues only (pool replies come later).
                let inline = q > 0 && self.inner.pool.is_none();
                if inline && poll_avail(vring, &self.inner.mem, self.inner.poll) {
                    continue;
                }
            }
            if !event_idx {
                break;
            }
            match vring.enable_notification() {
                Ok(true) => continue,
                _ => break,
            }
        }
    }
}

fn serve<F: FileSystem>(
    mem: &GuestMemoryMmap<()>,
    descs: &Descs,
    server: &Server<F>,
    q: usize,
) -> u32 {
    let (n, res) = serve_chain(mem, descs, server);
    if let Err(e) = res {
        tracing::debug!(queue = q, error = %e, "refused descriptor chain");
        server.counters.malformed.fetch_add(1, Ordering::Relaxed);
    }
    n
}

/// Watches `vring`'s available ring for up to `window`; true as soon as a
/// chain is there. It spins rather than yields: a yield with notifications
/// still off would let the driver's next request wait (unkicked) for the
/// scheduler to come back to this thread.
fn poll_avail(vring: &Vring, mem: &Mem, window: Duration) -> bool {
    if window.is_zero() {
        return false;
    }
    let mem = mem.memory();
    let deadline = Instant::now() + window;
    loop {
        let pending = {
            let v = vring.get_ref();
            let q = v.get_queue();
            q.avail_idx(&*mem, Ordering::Acquire)
                .map(|idx| idx.0 != q.next_avail())
                .unwrap_or(false)
        };
        if pending {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::hint::spin_loop();
    }
}

fn notify(vring: &Vring) {
    if vring.needs_notification().unwrap_or(true) {
        let _ = vring.signal_used_queue();
    }
}

fn spawn_pool(n: usize) -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("fs-pool-{i}"))
            .spawn(move || loop {
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            })?;
    }
    Ok(tx)
}

impl<F: FileSystem + 'static> VhostUserBackend for FsBackend<F> {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.inner.dev.request_queues) + 1
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.inner.dev.queue_size)
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_INDIRECT_DESC
            | VIRTIO_RING_F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, enabled: bool) {
        self.inner.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn update_memory(&self, _mem: Mem) -> std::io::Result<()> {
        // The daemon's GuestMemoryAtomic, shared with us, is already updated.
        Ok(())
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.config_space();
        let start = (offset as usize).min(cfg.len());
        let end = (offset as usize)
            .saturating_add(size as usize)
            .min(cfg.len());
        let mut out = cfg[start..end].to_vec();
        out.resize(size as usize, 0);
        out
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.num_queues()).map(|i| 1u64 << i).collect()
    }

    fn exit_event(&self, thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (c, n) = self.inner.exit.get(thread_index)?;
        Some((c.try_clone().ok()?, n.try_clone().ok()?))
    }

    fn stop_vring(&self, queue_index: u32) -> std::io::Result<()> {
        if !self.wait_idle(Some(queue_index as usize), STOP_TIMEOUT) {
            tracing::warn!(queue = queue_index, "requests still in flight at stop");
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        thread_id: usize,
    ) -> std::io::Result<()> {
        if let Some(vring) = vrings.get(usize::from(device_event)) {
            self.process(vring, thread_id);
        }
        Ok(())
    }
}

impl<F: FileSystem + 'static> cradle_devices::daemon::DaemonBackend for FsBackend<F> {
    fn detach(&self) {
        if !self.wait_idle(None, STOP_TIMEOUT) {
            tracing::warn!("pool requests still in flight after disconnect");
        }
        let c = &self.inner.server.counters;
        tracing::info!(
            requests = c.requests.load(Ordering::Relaxed),
            errors = c.errors.load(Ordering::Relaxed),
            malformed = c.malformed.load(Ordering::Relaxed),
            unsupported = c.unsupported.load(Ordering::Relaxed),
            "connection closed"
        );
    }
}
