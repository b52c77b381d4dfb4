//! The driver's batching API (`stage_chain`, `publish`, `kick`,
//! `poll_used_into`) against a real vhost-user backend on a real socket: a
//! one-queue sink device served by `vhost-user-backend` that records every
//! chain it consumes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cradle_devices::driver::{
    Buffer, Driver, DriverConfig, Used, VirtQueue, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueOwnedT;
use vm_memory::{Address, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Consumes every chain of queue 0, recording its descriptor lengths.
struct Sink {
    mem: Mem,
    /// Per pass over the ring that found chains: the chains seen
    /// (descriptor lengths each).
    passes: Mutex<Vec<Vec<Vec<u32>>>>,
    /// Re-enable notifications after a pass (a sink that stops asking to
    /// be kicked models a device that is still busy polling).
    rearm: AtomicBool,
}

impl VhostUserBackend for Sink {
    type Bitmap = ();
    type Vring = VringRwLock<Mem>;

    fn num_queues(&self) -> usize {
        1
    }

    fn max_queue_size(&self) -> usize {
        256
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, _enabled: bool) {}

    fn update_memory(&self, _mem: Mem) -> std::io::Result<()> {
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock<Mem>],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let (0, Some(v)) = (device_event, vrings.first()) else {
            return Ok(());
        };
        let err = |e| std::io::Error::other(format!("{e:?}"));
        let mem = self.mem.memory();
        loop {
            v.disable_notification().map_err(err)?;
            let chains: Vec<_> = v
                .get_mut()
                .get_queue_mut()
                .iter(mem.clone())
                .map_err(err)?
                .collect();
            let mut pass = Vec::new();
            for c in chains {
                let head = c.head_index();
                pass.push(c.map(|d| d.len()).collect());
                v.add_used(head, 0).map_err(err)?;
            }
            if !pass.is_empty() {
                self.passes.lock().unwrap().push(pass);
            }
            if !self.rearm.load(Ordering::Relaxed) || !v.enable_notification().map_err(err)? {
                break;
            }
        }
        if v.needs_notification().map_err(err)? {
            v.signal_used_queue()?;
        }
        Ok(())
    }
}

struct Setup {
    sink: Arc<Sink>,
    q: VirtQueue,
    _drv: Driver,
    path: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn setup(tag: &str, features: u64) -> Setup {
    let path = std::env::temp_dir().join(format!(
        "cradle-driver-batch-{}-{tag}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let sink = Arc::new(Sink {
        mem: mem.clone(),
        passes: Mutex::new(Vec::new()),
        rearm: AtomicBool::new(true),
    });
    let mut listener = Listener::new(&path, true).unwrap();
    let mut daemon = VhostUserDaemon::new("sink".into(), sink.clone(), mem).unwrap();
    std::thread::spawn(move || {
        daemon.start(&mut listener).unwrap();
        let _ = daemon.wait();
    });
    let mut drv = Driver::connect(
        &path,
        DriverConfig {
            num_queues: 1,
            queue_size: 256,
            memory_bytes: 4 << 20,
            features,
        },
    )
    .unwrap();
    let q = drv.take_queues().remove(0);
    Setup {
        sink,
        q,
        _drv: drv,
        path,
    }
}

/// Collects `n` used elements, waiting on the call eventfd.
fn collect(q: &mut VirtQueue, n: usize) -> Vec<Used> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        out.extend(q.wait_used(left).unwrap());
    }
    out
}

/// The available index as the device reads it from the ring.
fn ring_avail_idx(q: &VirtQueue) -> u16 {
    let b = q.read(q.rings().avail.unchecked_add(2), 2).unwrap();
    u16::from_le_bytes([b[0], b[1]])
}

#[test]
fn staged_chains_are_published_with_one_store_and_one_kick() {
    let mut s = setup("batch", u64::MAX);
    let q = &mut s.q;
    let buf = q.memory().alloc(64 * 100, 64).unwrap();
    let mut heads = Vec::new();
    for i in 0..64u32 {
        let b = Buffer::readable(GuestAddress(buf.0 + u64::from(i) * 100), 10 + i);
        heads.push(q.stage_chain(&[b]).unwrap());
    }
    // A chain of three descriptors in the same batch.
    let three: Vec<Buffer> = (0..3u32)
        .map(|k| Buffer::writable(GuestAddress(buf.0 + 90 * 64 + u64::from(k) * 8), 8 - k))
        .collect();
    heads.push(q.stage_chain(&three).unwrap());
    assert_eq!(q.staged(), 65);
    assert_eq!(q.in_flight(), 65);
    assert_eq!(q.free_descriptors(), 256 - 67);
    // Nothing is visible before the index store.
    assert_eq!(ring_avail_idx(q), 0);
    assert_eq!(q.avail_idx(), 0);
    q.kick().unwrap();
    assert_eq!(ring_avail_idx(q), 65);
    assert_eq!(q.staged(), 0);
    assert_eq!(q.kicks_sent, 1);

    let mut used = collect(q, 65);
    // One kick after one store: the device saw the whole batch in its
    // first pass.
    let passes = s.sink.passes.lock().unwrap().clone();
    assert_eq!(passes[0].len(), 65, "{passes:?}");
    let mut want: Vec<Vec<u32>> = (0..64).map(|i| vec![10 + i]).collect();
    want.push(vec![8, 7, 6]);
    assert_eq!(passes[0], want);
    used.sort_by_key(|u| u.head);
    heads.sort();
    assert_eq!(used.iter().map(|u| u.head).collect::<Vec<_>>(), heads);
    // Every descriptor, including the three-long chain's, came back.
    assert_eq!(q.free_descriptors(), 256);
    assert_eq!(q.in_flight(), 0);

    // Re-posting the same buffers reuses the freed descriptors, and
    // poll_used_into appends to a caller's vector.
    for _ in 0..2 {
        for i in 0..200u32 {
            q.stage_chain(&[Buffer::readable(buf, 60 + i % 4)]).unwrap();
        }
        q.kick().unwrap();
        let mut got = Vec::with_capacity(256);
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 200 {
            assert!(Instant::now() < deadline, "only {} used", got.len());
            let before = got.len();
            let n = q.poll_used_into(&mut got).unwrap();
            assert_eq!(got.len(), before + n);
            std::thread::yield_now();
        }
        assert_eq!(q.free_descriptors(), 256);
    }
    let seen: usize = s.sink.passes.lock().unwrap().iter().map(Vec::len).sum();
    assert_eq!(seen, 465);
}

#[test]
fn a_full_queue_refuses_more_and_publish_without_staged_is_a_no_op() {
    let mut s = setup("full", u64::MAX);
    let q = &mut s.q;
    let buf = q.memory().alloc(4096, 64).unwrap();
    q.publish().unwrap();
    assert_eq!(ring_avail_idx(q), 0);
    for _ in 0..256 {
        q.stage_chain(&[Buffer::readable(buf, 60)]).unwrap();
    }
    assert!(q.stage_chain(&[Buffer::readable(buf, 60)]).is_err());
    assert!(q.stage_chain(&[]).is_err());
    q.kick().unwrap();
    assert_eq!(collect(q, 256).len(), 256);
    assert_eq!(q.free_descriptors(), 256);
}

/// A device that stopped asking for kicks (EVENT_IDX: `avail_event` left
/// behind; without it: `VRING_USED_F_NO_NOTIFY` left set) gets no kick
/// for the chains published meanwhile.
fn kicks_follow_the_device(features: u64, tag: &str) {
    let mut s = setup(tag, features);
    s.sink.rearm.store(false, Ordering::Relaxed);
    let q = &mut s.q;
    let buf = q.memory().alloc(4096, 64).unwrap();
    for _ in 0..8 {
        q.stage_chain(&[Buffer::readable(buf, 60)]).unwrap();
    }
    q.kick().unwrap();
    assert_eq!(q.kicks_sent, 1);
    collect(q, 8);
    // The sink did not re-arm: the next batch is published but not kicked.
    for _ in 0..8 {
        q.stage_chain(&[Buffer::readable(buf, 60)]).unwrap();
    }
    q.kick().unwrap();
    assert_eq!(q.kicks_sent, 1);
    assert_eq!(ring_avail_idx(q), 16);
    assert_eq!(q.in_flight(), 8);
    // (Whether the sink still sees them depends on its own wake-ups, which
    // vhost-user-backend may deliver spuriously; the kick is ours.)
}

#[test]
fn kicks_are_suppressed_while_the_device_asks_for_none_with_event_idx() {
    kicks_follow_the_device(u64::MAX, "eventidx");
}

#[test]
fn kicks_are_suppressed_while_the_device_sets_no_notify() {
    kicks_follow_the_device(!VIRTIO_RING_F_EVENT_IDX, "nonotify");
}
