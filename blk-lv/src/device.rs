//! State that outlives a frontend connection: the disk, limits, config
//! space, counters and the drain bookkeeping.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::config::{Config, Disk};
use crate::metrics::Counters;
use crate::qos::Qos;
use crate::request::{Limits, SECTOR};

/// Largest single data descriptor we announce (`size_max`).
pub const SIZE_MAX: u32 = 1 << 20;
/// Largest discard / write-zeroes segment, in sectors.
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22; // 2 GiB
/// Byte offset of `writeback` in `struct virtio_blk_config`.
pub const WRITEBACK_OFFSET: u32 = 32;
/// Size of the config space we expose (through `write_zeroes_may_unmap` and padding).
pub const CONFIG_LEN: usize = 60;

/// One served disk.
#[derive(Debug)]
pub struct Device {
    /// The backing store, shared with every worker's engine.
    pub file: Arc<std::fs::File>,
    /// Geometry and open mode.
    pub disk: Disk,
    /// Validation limits.
    pub limits: Limits,
    /// Queues offered.
    pub num_queues: u16,
    /// Maximum queue size offered.
    pub queue_size: u16,
    /// GET_ID answer.
    pub serial: Vec<u8>,
    /// Counters, one set per queue.
    pub counters: Vec<Counters>,
    /// Writeback cache on (guest may switch it off via CONFIG_WCE).
    pub writeback: AtomicBool,
    /// SIGTERM seen: take no new requests.
    pub draining: AtomicBool,
    /// Requests handed to the engine and not completed, per queue.
    pub in_flight: Vec<AtomicUsize>,
    /// Token buckets, if any limit is set.
    pub qos: Option<Qos>,
    /// How long a worker busy-polls after its last activity.
    pub poll: Duration,
}

impl Device {
    /// Opens the disk described by `cfg`.
    pub fn open(cfg: &Config) -> std::io::Result<Device> {
        let mut disk = Disk::open(&cfg.path, cfg.common.readonly, cfg.direct)?;
        let file = Arc::new(disk.file.try_clone()?);
        // Keep a handle in `disk` too (for fdatasync on drain).
        disk.file = file.try_clone()?;
        let queue_size = cfg.common.queue_size;
        let limits = Limits {
            capacity: disk.size / SECTOR,
            // Linux sizes its scatter lists from seg_max; stay under IOV_MAX.
            seg_max: u32::from(queue_size).saturating_sub(2).clamp(1, 1022),
            readonly: cfg.common.readonly,
            max_discard_sectors: MAX_DISCARD_SECTORS,
            max_write_zeroes_sectors: MAX_DISCARD_SECTORS,
        };
        Ok(Device {
            file,
            disk,
            limits,
            num_queues: cfg.common.num_queues,
            queue_size,
            serial: cfg.serial.clone(),
            counters: (0..cfg.common.num_queues)
                .map(|_| Counters::default())
                .collect(),
            writeback: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            in_flight: (0..cfg.common.num_queues)
                .map(|_| AtomicUsize::new(0))
                .collect(),
            qos: Qos::new(cfg.qos),
            poll: cfg.poll,
        })
    }

    /// Virtio features offered.
    pub fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_RING_F_INDIRECT_DESC)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | (1 << VIRTIO_BLK_F_SIZE_MAX)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_TOPOLOGY)
            | (1 << VIRTIO_BLK_F_CONFIG_WCE)
            | (1 << VIRTIO_BLK_F_MQ);
        if self.limits.readonly {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES);
        }
        f
    }

    /// `struct virtio_blk_config`, little-endian.
    pub fn config_space(&self) -> [u8; CONFIG_LEN] {
        let mut c = [0u8; CONFIG_LEN];
        let lbs = self.disk.logical_block;
        c[0..8].copy_from_slice(&self.limits.capacity.to_le_bytes());
        c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
        c[12..16].copy_from_slice(&self.limits.seg_max.to_le_bytes());
        // geometry (16..20) left zero.
        c[20..24].copy_from_slice(&lbs.to_le_bytes());
        // topology: physical_block_exp, alignment_offset, min_io_size, opt_io_size.
        let exp = (self.disk.physical_block / lbs).max(1).trailing_zeros();
        c[24] = exp as u8;
        c[25] = 0;
        c[26..28].copy_from_slice(&1u16.to_le_bytes());
        c[28..32].copy_from_slice(&0u32.to_le_bytes());
        c[32] = u8::from(self.writeback.load(Ordering::Relaxed));
        c[34..36].copy_from_slice(&self.num_queues.to_le_bytes());
        let align = lbs / SECTOR as u32;
        c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[40..44].copy_from_slice(&1u32.to_le_bytes());
        c[44..48].copy_from_slice(&align.to_le_bytes());
        c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[52..56].copy_from_slice(&1u32.to_le_bytes());
        c[56] = 1; // write_zeroes_may_unmap
        c
    }

    /// A counter summed over all queues (0 if the name is unknown).
    pub fn counter(&self, name: &str) -> u64 {
        crate::metrics::total(&self.counters)
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| v)
    }

    /// Non-zero counter totals as one `name=value ...` line.
    pub fn counters_line(&self) -> String {
        crate::metrics::line(&self.counters)
    }

    /// Requests in flight on all queues.
    pub fn total_in_flight(&self) -> usize {
        self.in_flight
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .sum()
    }

    /// Waits until `pred` holds or `timeout` passes; returns whether it held.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&Device) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !pred(self) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// SIGTERM path: stop taking requests, wait for in-flight ones, make
    /// written data durable.
    pub fn drain(&self, timeout: Duration) -> bool {
        self.draining.store(true, Ordering::Release);
        let idle = self.wait_until(timeout, |d| d.total_in_flight() == 0);
        if !self.limits.readonly {
            let _ = self.disk.file.sync_data();
        }
        tracing::info!(idle, counters = %self.counters_line(), "drain finished");
        idle
    }
}
