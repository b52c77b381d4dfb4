//! A userspace vhost-user frontend: it plays the VMM's part towards a
//! device daemon so that tests and the load generator can exercise the
//! daemon without a VM.
//!
//! ```no_run
//! use cradle_devices::driver::{Driver, DriverConfig, blk::BlkQueue};
//! let mut drv = Driver::connect("/run/blk0.sock", DriverConfig::default())?;
//! let q = drv.take_queues().remove(0);
//! let mut blk = BlkQueue::new(q, 64 * 1024)?;
//! let data = blk.read(0, 4096)?;
//! # Ok::<(), cradle_devices::driver::DriverError>(())
//! ```

pub mod blk;
pub mod fs;
mod memory;
mod queue;
mod slots;

use std::path::Path;
use std::sync::Arc;

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};

pub use memory::SharedMemory;
pub use queue::{Buffer, RingAddrs, Used, VirtQueue};

/// `VIRTIO_F_VERSION_1`.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_RING_F_INDIRECT_DESC`.
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
/// `VIRTIO_RING_F_EVENT_IDX`.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Errors of the userspace driver.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// vhost-user protocol error
    #[error("vhost-user: {0}")]
    Vhost(#[from] vhost::Error),
    /// creating or mapping the memfd failed
    #[error("guest memory: {0}")]
    Memory(std::io::Error),
    /// accessing guest memory failed
    #[error("guest memory access: {0}")]
    Access(vm_memory::GuestMemoryError),
    /// the guest memory arena is exhausted
    #[error("out of guest memory")]
    OutOfMemory,
    /// a size does not fit this platform
    #[error("size too large")]
    TooLarge,
    /// queue sizes must be powers of two
    #[error("queue size {0} is not a power of two")]
    BadQueueSize(u16),
    /// eventfd error
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    /// not enough free descriptors
    #[error("queue full")]
    QueueFull,
    /// a chain needs at least one buffer
    #[error("empty chain")]
    EmptyChain,
    /// the device returned an id that is not an in-flight head
    #[error("device returned bad used id {0}")]
    BadUsed(u32),
    /// no completion arrived in time
    #[error("timed out waiting for the device")]
    Timeout,
    /// the device lacks a feature the driver requires
    #[error("device lacks required features {0:#x}")]
    MissingFeatures(u64),
    /// the device offers fewer queues than asked for
    #[error("device offers {offered} queues, {wanted} requested")]
    TooFewQueues {
        /// queues the device offers
        offered: u64,
        /// queues requested
        wanted: u16,
    },
    /// the device answered with a config space of the wrong size
    #[error("short config space read")]
    ShortConfig,
}

/// How to set up the connection.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Queues to set up.
    pub num_queues: u16,
    /// Entries per queue (power of two).
    pub queue_size: u16,
    /// Bytes of shared "guest memory" (rounded up to 2 MiB).
    pub memory_bytes: u64,
    /// Virtio feature bits the driver would like (the device's offer is
    /// masked with these; `VERSION_1` is required).
    pub features: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            num_queues: 1,
            queue_size: 256,
            memory_bytes: 64 << 20,
            features: u64::MAX,
        }
    }
}

/// A connected, negotiated vhost-user frontend.
pub struct Driver {
    frontend: Frontend,
    mem: Arc<SharedMemory>,
    features: u64,
    protocol: VhostUserProtocolFeatures,
    queues: Vec<VirtQueue>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("features", &self.features)
            .finish()
    }
}

impl Driver {
    /// Connects to the daemon listening at `path` and runs the vhost-user
    /// handshake: owner, features, protocol features, memory table, and for
    /// each queue its size, addresses, base, call/kick eventfds and enable.
    pub fn connect(path: impl AsRef<Path>, cfg: DriverConfig) -> Result<Self, DriverError> {
        let mut frontend = Frontend::connect(path, u64::from(cfg.num_queues))?;
        frontend.set_owner()?;
        let offered = frontend.get_features()?;
        if offered & VIRTIO_F_VERSION_1 == 0 {
            return Err(DriverError::MissingFeatures(VIRTIO_F_VERSION_1));
        }
        let features = offered
            & (cfg.features
                | VIRTIO_F_VERSION_1
                | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits());
        let mut protocol = VhostUserProtocolFeatures::empty();
        if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let want = VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::REPLY_ACK;
            protocol = frontend.get_protocol_features()? & want;
            frontend.set_protocol_features(protocol)?;
        }
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let offered = frontend.get_queue_num()?;
            if offered < u64::from(cfg.num_queues) {
                return Err(DriverError::TooFewQueues {
                    offered,
                    wanted: cfg.num_queues,
                });
            }
        } else if cfg.num_queues > 1 {
            return Err(DriverError::TooFewQueues {
                offered: 1,
                wanted: cfg.num_queues,
            });
        }
        frontend.set_features(features)?;

        let rings = u64::from(cfg.num_queues) * VirtQueue::ring_bytes(cfg.queue_size);
        let mem = Arc::new(SharedMemory::new(cfg.memory_bytes + rings)?);
        frontend.set_mem_table(&mem.regions()?)?;

        let event_idx = features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for i in 0..usize::from(cfg.num_queues) {
            let q = VirtQueue::new(mem.clone(), i, cfg.queue_size, event_idx)?;
            let r = q.rings();
            frontend.set_vring_num(i, cfg.queue_size)?;
            frontend.set_vring_addr(
                i,
                &VringConfigData {
                    queue_max_size: cfg.queue_size,
                    queue_size: cfg.queue_size,
                    flags: 0,
                    desc_table_addr: mem.host_addr(r.desc)?,
                    used_ring_addr: mem.host_addr(r.used)?,
                    avail_ring_addr: mem.host_addr(r.avail)?,
                    log_addr: None,
                },
            )?;
            frontend.set_vring_base(i, 0)?;
            frontend.set_vring_call(i, q.call_fd())?;
            frontend.set_vring_kick(i, q.kick_fd())?;
            if !protocol.is_empty() {
                frontend.set_vring_enable(i, true)?;
            }
            queues.push(q);
        }
        Ok(Driver {
            frontend,
            mem,
            features,
            protocol,
            queues,
        })
    }

    /// Negotiated virtio features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Negotiated vhost-user protocol features.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// The shared guest memory (allocate buffers from it).
    pub fn memory(&self) -> &Arc<SharedMemory> {
        &self.mem
    }

    /// Hands the queues over to their submitting threads. Each
    /// [`VirtQueue`] is `Send` and independent of the others.
    pub fn take_queues(&mut self) -> Vec<VirtQueue> {
        std::mem::take(&mut self.queues)
    }

    /// Reads `size` bytes of the device config space at `offset`.
    pub fn get_config(&mut self, offset: u32, size: u32) -> Result<Vec<u8>, DriverError> {
        let buf = vec![0u8; size as usize];
        let (_, payload) =
            self.frontend
                .get_config(offset, size, VhostUserConfigFlags::WRITABLE, &buf)?;
        if payload.len() != size as usize {
            return Err(DriverError::ShortConfig);
        }
        Ok(payload)
    }

    /// Writes `data` into the device config space at `offset`.
    pub fn set_config(&mut self, offset: u32, data: &[u8]) -> Result<(), DriverError> {
        self.frontend
            .set_config(offset, VhostUserConfigFlags::WRITABLE, data)?;
        Ok(())
    }

    /// Stops queue `index` (`GET_VRING_BASE`) and returns its next avail
    /// index as the device saw it. The device finishes in-flight requests
    /// of that queue first.
    pub fn stop_queue(&mut self, index: usize) -> Result<u32, DriverError> {
        Ok(self.frontend.get_vring_base(index)?)
    }
}
