//! A virtio device served by a vhost-user daemon: the VMM connects, learns
//! the daemon's features and config, and at activation hands it the guest
//! memory table and each queue's rings, kick (ioeventfd) and call (irqfd).
//! After that the VMM is out of the data path.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{ActiveQueue, VirtioBackend, VIRTIO_F_VERSION_1};

/// Virtio block device type.
pub const VIRTIO_ID_BLOCK: u16 = 2;
/// Virtio filesystem device type.
pub const VIRTIO_ID_FS: u16 = 26;
/// Bytes of the virtio-fs tag in its config space.
pub const FS_TAG_LEN: usize = 36;
/// `struct virtio_blk_config` up to `write_zeroes` fields.
pub const BLK_CONFIG_LEN: u32 = 60;
/// How often a socket that is not there yet is retried.
const CONNECT_RETRY: Duration = Duration::from_millis(50);

/// Why a vhost-user device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// The daemon's socket did not accept a connection in time.
    #[error("vhost-user socket {path} did not answer within {timeout:?}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// How long we tried.
        timeout: Duration,
        /// The last error.
        #[source]
        source: vhost::Error,
    },
    /// The handshake failed.
    #[error("vhost-user handshake with {path}: {source}")]
    Handshake {
        /// The socket.
        path: PathBuf,
        /// The protocol error.
        #[source]
        source: vhost::Error,
    },
    /// The daemon lacks something we need.
    #[error("vhost-user daemon at {path}: {what}")]
    Unsupported {
        /// The socket.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
}

/// Where the device's config space comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceConfig {
    /// Read `len` bytes from the daemon (VHOST_USER_GET_CONFIG), as for
    /// blk whose capacity only the daemon knows.
    FromBackend(u32),
    /// Built by the VMM, as for fs (tag and queue count).
    Local(Vec<u8>),
}

/// The virtio-fs config space: the tag, NUL-padded to 36 bytes, and the
/// number of request queues.
pub fn fs_config(tag: &str, request_queues: u32) -> Vec<u8> {
    let mut config = vec![0u8; FS_TAG_LEN + 4];
    let n = tag.len().min(FS_TAG_LEN);
    config[..n].copy_from_slice(&tag.as_bytes()[..n]);
    config[FS_TAG_LEN..].copy_from_slice(&request_queues.to_le_bytes());
    config
}

/// A vhost-user device as seen by the transport.
pub struct VhostUserDevice {
    path: PathBuf,
    frontend: Frontend,
    mem: GuestMemoryMmap,
    device_type: u16,
    backend_features: u64,
    protocol: VhostUserProtocolFeatures,
    num_queues: u16,
    queue_size: u16,
    config: Vec<u8>,
    config_from_backend: bool,
    active: bool,
}

impl std::fmt::Debug for VhostUserDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserDevice")
            .field("path", &self.path)
            .field("device_type", &self.device_type)
            .field("num_queues", &self.num_queues)
            .finish_non_exhaustive()
    }
}

fn connect(path: &Path, queues: u64, timeout: Duration) -> Result<Frontend, VhostUserError> {
    let deadline = Instant::now() + timeout;
    loop {
        match Frontend::connect(path, queues) {
            Ok(f) => return Ok(f),
            Err(source) if Instant::now() >= deadline => {
                return Err(VhostUserError::Connect {
                    path: path.to_path_buf(),
                    timeout,
                    source,
                })
            }
            Err(_) => std::thread::sleep(CONNECT_RETRY),
        }
    }
}

impl VhostUserDevice {
    /// Connects to the daemon at `path` (retrying for up to `timeout`),
    /// reads its features and sets up the device config.
    pub fn connect(
        path: &Path,
        device_type: u16,
        num_queues: u16,
        queue_size: u16,
        device_config: DeviceConfig,
        mem: GuestMemoryMmap,
        timeout: Duration,
    ) -> Result<Self, VhostUserError> {
        let mut frontend = connect(path, u64::from(num_queues), timeout)?;
        let hs = |source| VhostUserError::Handshake {
            path: path.to_path_buf(),
            source,
        };
        frontend.set_owner().map_err(hs)?;
        let backend_features = frontend.get_features().map_err(hs)?;
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(VhostUserError::Unsupported {
                path: path.to_path_buf(),
                what: "no VIRTIO_F_VERSION_1".into(),
            });
        }
        let mut protocol = VhostUserProtocolFeatures::empty();
        if backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            let want = VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::REPLY_ACK;
            protocol = frontend.get_protocol_features().map_err(hs)? & want;
            frontend.set_protocol_features(protocol).map_err(hs)?;
        }
        if num_queues > 1 {
            let offered = if protocol.contains(VhostUserProtocolFeatures::MQ) {
                frontend.get_queue_num().map_err(hs)?
            } else {
                1
            };
            if offered < u64::from(num_queues) {
                return Err(VhostUserError::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("{offered} queues offered, {num_queues} configured"),
                });
            }
        }
        let config_from_backend = matches!(device_config, DeviceConfig::FromBackend(_));
        let config = match device_config {
            DeviceConfig::Local(bytes) => bytes,
            DeviceConfig::FromBackend(len) => {
                if !protocol.contains(VhostUserProtocolFeatures::CONFIG) {
                    return Err(VhostUserError::Unsupported {
                        path: path.to_path_buf(),
                        what: "no CONFIG protocol feature to read the device config".into(),
                    });
                }
                let buf = vec![0u8; len as usize];
                let (_, payload) = frontend
                    .get_config(0, len, VhostUserConfigFlags::WRITABLE, &buf)
                    .map_err(hs)?;
                payload
            }
        };

        Ok(VhostUserDevice {
            path: path.to_path_buf(),
            frontend,
            mem,
            device_type,
            backend_features,
            protocol,
            num_queues,
            queue_size,
            config,
            config_from_backend,
            active: false,
        })
    }

    fn host_addr(&self, gpa: u64, what: &str) -> Result<u64, String> {
        self.mem
            .get_host_address(GuestAddress(gpa))
            .map(|p| p as u64)
            .map_err(|e| format!("{what} ring at {gpa:#x} is not in guest RAM: {e}"))
    }

    fn start(&mut self, features: u64, queues: &[ActiveQueue<'_>]) -> Result<(), String> {
        let err = |e: vhost::Error| format!("{}: {e}", self.path.display());
        let mut acked = features;
        if self.backend_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0 {
            acked |= VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        }
        self.frontend.set_features(acked).map_err(err)?;
        let regions: Vec<VhostUserMemoryRegionInfo> = self
            .mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<_, _>>()
            .map_err(err)?;
        self.frontend.set_mem_table(&regions).map_err(err)?;
        for q in queues {
            let s = q.state;
            let config = VringConfigData {
                queue_max_size: s.max_size,
                queue_size: s.size,
                flags: 0,
                desc_table_addr: self.host_addr(s.desc, "descriptor")?,
                used_ring_addr: self.host_addr(s.used, "used")?,
                avail_ring_addr: self.host_addr(s.avail, "available")?,
                log_addr: None,
            };
            let err = |e: vhost::Error| format!("{} queue {}: {e}", self.path.display(), q.index);
            self.frontend.set_vring_num(q.index, s.size).map_err(err)?;
            self.frontend
                .set_vring_addr(q.index, &config)
                .map_err(err)?;
            self.frontend.set_vring_base(q.index, 0).map_err(err)?;
            self.frontend.set_vring_call(q.index, q.call).map_err(err)?;
            self.frontend.set_vring_kick(q.index, q.kick).map_err(err)?;
            if !self.protocol.is_empty() {
                self.frontend.set_vring_enable(q.index, true).map_err(err)?;
            }
        }
        Ok(())
    }
}

impl VirtioBackend for VhostUserDevice {
    fn device_type(&self) -> u16 {
        self.device_type
    }

    fn features(&self) -> u64 {
        // The guest never sees the vhost-user-only bit.
        self.backend_features & !VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn num_queues(&self) -> u16 {
        self.num_queues
    }

    fn max_queue_size(&self) -> u16 {
        self.queue_size
    }

    fn config_len(&self) -> u32 {
        self.config.len() as u32
    }

    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let start = (offset as usize).min(self.config.len());
        let end = start.saturating_add(data.len()).min(self.config.len());
        data[..end - start].copy_from_slice(&self.config[start..end]);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let Ok(off) = u32::try_from(offset) else {
            return;
        };
        if self.config_from_backend {
            if let Err(e) = self
                .frontend
                .set_config(off, VhostUserConfigFlags::WRITABLE, data)
            {
                tracing::warn!(path = %self.path.display(), error = %e, "vhost-user SET_CONFIG failed");
                return;
            }
        }
        let start = (off as usize).min(self.config.len());
        let end = start.saturating_add(data.len()).min(self.config.len());
        self.config[start..end].copy_from_slice(&data[..end - start]);
    }

    fn activate(&mut self, features: u64, queues: &[ActiveQueue<'_>]) -> Result<(), String> {
        self.start(features, queues)?;
        self.active = true;
        tracing::info!(
            path = %self.path.display(),
            queues = queues.len(),
            features = format_args!("{features:#x}"),
            "vhost-user device started"
        );
        Ok(())
    }

    fn reset(&mut self) {
        if self.active {
            for i in 0..usize::from(self.num_queues) {
                if !self.protocol.is_empty() {
                    let _ = self.frontend.set_vring_enable(i, false);
                }
                let _ = self.frontend.get_vring_base(i);
            }
            self.active = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_config_pads_the_tag_and_counts_request_queues() {
        let c = fs_config("gfs", 2);
        assert_eq!(c.len(), 40);
        assert_eq!(&c[..4], b"gfs\0");
        assert!(c[3..36].iter().all(|&b| b == 0));
        assert_eq!(&c[36..], &2u32.to_le_bytes());
    }
}
