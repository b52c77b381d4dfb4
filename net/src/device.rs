//! What outlives a frontend connection: the tap, the device identity
//! (MAC, MTU, queue pairs) and the counters.

use crate::config::{Config, Mac, TapSource};
use crate::counters::Counters;
use crate::tap::{adopt_fd, Tap, TapError};

/// The device one daemon serves.
#[derive(Debug)]
pub struct Device {
    /// The tap, one queue per pair.
    pub tap: Tap,
    /// Guest MAC.
    pub mac: Mac,
    /// MTU offered to the guest.
    pub mtu: u16,
    /// Queue pairs.
    pub queue_pairs: u16,
    /// Entries per virtqueue.
    pub queue_size: u16,
    /// Offer checksum/TSO offloads.
    pub offload: bool,
    /// Counters per queue pair, cumulative over connections.
    pub counters: Vec<Counters>,
}

impl Device {
    /// Opens (or creates) the tap the configuration names.
    pub fn open(cfg: &Config) -> Result<Device, TapError> {
        let tap = match &cfg.tap {
            TapSource::Name(name) => Tap::open(name, usize::from(cfg.queue_pairs), cfg.mtu)?,
            TapSource::Fds(fds) => {
                let owned = fds
                    .iter()
                    .map(|&fd| adopt_fd(fd))
                    .collect::<Result<Vec<_>, _>>()?;
                Tap::from_fds(owned)?
            }
        };
        Ok(Device {
            tap,
            mac: cfg.mac,
            mtu: cfg.mtu,
            queue_pairs: cfg.queue_pairs,
            queue_size: cfg.common.queue_size,
            offload: cfg.offload,
            counters: (0..cfg.queue_pairs).map(|_| Counters::default()).collect(),
        })
    }
}
