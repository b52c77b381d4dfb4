//! The vhost-user backend: features, config space, and dispatch of each
//! worker thread's events to its queue's [`Worker`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cradle_devices::daemon::{DaemonBackend, ExitEvents, GuestMemory};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringEpollHandler, VringRwLock};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::device::{Device, CONFIG_LEN, WRITEBACK_OFFSET};
use crate::engine::UringEngine;
use crate::worker::Worker;

/// How long `GET_VRING_BASE` or a disconnect waits for in-flight I/O.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Backend for one frontend connection (a fresh one per connection; the
/// [`Device`] persists).
#[derive(Clone)]
pub struct BlkBackend {
    inner: Arc<Inner>,
}

struct Inner {
    device: Arc<Device>,
    workers: Vec<Mutex<Worker>>,
    exit: ExitEvents,
    event_idx: AtomicBool,
}

impl BlkBackend {
    /// Token of the engine's completion eventfd in each worker's epoll.
    fn completion_token(&self) -> u16 {
        self.inner.device.num_queues + 1
    }

    /// Token of the QoS timer in each worker's epoll.
    fn timer_token(&self) -> u16 {
        self.inner.device.num_queues + 2
    }

    /// Builds workers and io_urings for a new connection.
    pub fn new(device: Arc<Device>, mem: GuestMemory) -> std::io::Result<Self> {
        let n = usize::from(device.num_queues);
        let mut workers = Vec::with_capacity(n);
        for q in 0..n {
            let engine = UringEngine::new(
                device.file.clone(),
                device.disk.is_block_device,
                u32::from(device.queue_size),
            )?;
            workers.push(Mutex::new(Worker::new(
                q,
                device.clone(),
                mem.clone(),
                Box::new(engine),
            )?));
        }
        Ok(BlkBackend {
            inner: Arc::new(Inner {
                exit: ExitEvents::new(n)?,
                device,
                workers,
                event_idx: AtomicBool::new(false),
            }),
        })
    }

    fn worker(&self, i: usize) -> Option<MutexGuard<'_, Worker>> {
        let m = self.inner.workers.get(i)?;
        Some(match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        })
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = VringRwLock<GuestMemory>;

    fn num_queues(&self) -> usize {
        usize::from(self.inner.device.num_queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.inner.device.queue_size)
    }

    fn features(&self) -> u64 {
        self.inner.device.features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn acked_features(&self, features: u64) {
        // virtio 1.x 5.2.5.1: without CONFIG_WCE the cache is writeback
        // exactly when FLUSH was negotiated; a driver that cannot flush gets
        // write-through (RWF_DSYNC). Each connection starts from this.
        let flush = features & (1 << virtio_bindings::virtio_blk::VIRTIO_BLK_F_FLUSH) != 0;
        self.inner.device.writeback.store(flush, Ordering::Relaxed);
    }

    fn set_event_idx(&self, enabled: bool) {
        self.inner.event_idx.store(enabled, Ordering::Relaxed);
        for i in 0..self.inner.workers.len() {
            if let Some(mut w) = self.worker(i) {
                w.event_idx = enabled;
            }
        }
    }

    fn update_memory(&self, _mem: GuestMemory) -> std::io::Result<()> {
        // Workers share the daemon's GuestMemoryAtomic, already updated.
        Ok(())
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = self.inner.device.config_space();
        let mut out = vec![0u8; size as usize];
        let start = (offset as usize).min(CONFIG_LEN);
        let end = (offset as usize)
            .saturating_add(size as usize)
            .min(CONFIG_LEN);
        out[..end - start].copy_from_slice(&cfg[start..end]);
        out
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> std::io::Result<()> {
        // Only `writeback` is writable (CONFIG_WCE).
        if offset == WRITEBACK_OFFSET && buf.len() == 1 {
            let on = buf[0] != 0;
            self.inner.device.writeback.store(on, Ordering::Relaxed);
            tracing::info!(writeback = on, "guest set the write cache mode");
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "read-only config field",
        ))
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.inner.workers.len()).map(|i| 1u64 << i).collect()
    }

    fn exit_event(&self, thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.inner.exit.get(thread_index)
    }

    fn stop_vring(&self, queue_index: u32) -> std::io::Result<()> {
        let q = queue_index as usize;
        let dev = &self.inner.device;
        if q < dev.in_flight.len()
            && !dev.wait_until(STOP_TIMEOUT, |d| {
                d.in_flight[q].load(Ordering::Acquire) == 0
            })
        {
            tracing::warn!(queue = q, "requests still in flight after stop timeout");
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
        let (Some(vring), Some(mut w)) = (vrings.first(), self.worker(thread_id)) else {
            return Ok(());
        };
        match device_event {
            0 => w.on_kick(vring),
            t if t == self.completion_token() => w.on_completion(vring),
            t if t == self.timer_token() => w.on_timer(vring),
            _ => {}
        }
        Ok(())
    }
}

impl DaemonBackend for BlkBackend {
    fn attach(&self, handlers: &[Arc<VringEpollHandler<Self>>]) -> std::io::Result<()> {
        for (i, h) in handlers.iter().enumerate() {
            let (engine, timer) = match self.worker(i) {
                Some(w) => (w.engine_fd(), w.timer_fd()),
                None => continue,
            };
            h.register_listener(engine, EventSet::IN, u64::from(self.completion_token()))?;
            h.register_listener(timer, EventSet::IN, u64::from(self.timer_token()))?;
        }
        Ok(())
    }

    fn exit_events(&self) -> Option<&ExitEvents> {
        Some(&self.inner.exit)
    }

    fn detach(&self) {
        // Taking each worker's lock once guarantees that no worker is in
        // the middle of popping; after that none will pop again.
        for i in 0..self.inner.workers.len() {
            if let Some(mut w) = self.worker(i) {
                w.closed = true;
            }
        }
        let dev = &self.inner.device;
        if !dev.wait_until(STOP_TIMEOUT, |d| d.total_in_flight() == 0) {
            tracing::warn!("requests still in flight after disconnect");
        }
        tracing::info!(counters = %dev.counters_line(), "connection closed");
    }
}
