//! A virtio device served by a vhost-user daemon: the VMM connects, learns
//! the daemon's features and config, and at activation hands it the guest
//! memory table and each queue's rings, kick (ioeventfd) and call (irqfd).
//! After that the VMM is out of the data path.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{ActiveQueue, VirtioBackend, VIRTIO_F_VERSION_1};
use crate::signals;

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
    #[error("vhost-user socket {path} did not answer within {timeout:?}: {err}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// How long we tried.
        timeout: Duration,
        /// The last error.
        err: std::io::Error,
    },
    /// A stop signal came while kcradle waited for the daemon.
    #[error("stopped by signal {signal} while connecting to {path}")]
    Stopped {
        /// The socket.
        path: PathBuf,
        /// The signal.
        signal: i32,
    },
    /// The handshake failed.
    #[error("vhost-user handshake with {path}: {err}")]
    Handshake {
        /// The socket.
        path: PathBuf,
        /// The protocol error.
        err: vhost::Error,
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

/// What kind of device to present and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Virtio device type.
    pub device_type: u16,
    /// Queues the guest sees (and the daemon must serve).
    pub num_queues: u16,
    /// Largest queue size offered.
    pub queue_size: u16,
    /// Where the config space comes from.
    pub config: DeviceConfig,
    /// Daemon features that may be offered to the guest.
    pub offer_mask: u64,
    /// Features the VMM itself provides through the config space it
    /// builds (a MAC, a link status); never acked to the daemon unless
    /// the daemon offers them too.
    pub vmm_features: u64,
    /// Daemon features this device cannot work without (checked at
    /// connect).
    pub required_features: u64,
    /// The daemon must serve exactly `num_queues` queues, not at least:
    /// true when a queue's role depends on its index from the end (the
    /// net control queue comes after the last pair).
    pub exact_queue_count: bool,
}

impl DeviceSpec {
    /// A vhost-user-blk disk.
    pub fn blk(num_queues: u16, queue_size: u16) -> Self {
        DeviceSpec {
            device_type: VIRTIO_ID_BLOCK,
            num_queues,
            queue_size,
            config: DeviceConfig::FromBackend(BLK_CONFIG_LEN),
            offer_mask: u64::MAX,
            vmm_features: 0,
            required_features: 0,
            exact_queue_count: false,
        }
    }

    /// A vhost-user-fs share: a high-priority queue plus `request_queues`.
    pub fn fs(tag: &str, request_queues: u16, queue_size: u16) -> Self {
        DeviceSpec {
            device_type: VIRTIO_ID_FS,
            num_queues: request_queues.saturating_add(1),
            queue_size,
            config: DeviceConfig::Local(fs_config(tag, u32::from(request_queues))),
            offer_mask: u64::MAX,
            vmm_features: 0,
            required_features: 0,
            exact_queue_count: false,
        }
    }

    /// A vhost-user-net interface with `pairs` RX/TX queue pairs.
    ///
    /// With one pair there is no control queue, so every feature that
    /// needs one is withheld from the guest. With more, the guest gets
    /// `VIRTIO_NET_F_MQ` and a control queue (the last of `2 * pairs + 1`
    /// queues), and that queue goes to the daemon like the data queues:
    /// the daemon owns the tap queues that `VQ_PAIRS_SET` attaches and
    /// detaches (net-tap serves it), whereas serving it here would make
    /// kcradle read guest buffers, which it otherwise never does, and
    /// then tell the daemon through a message vhost-user does not have.
    /// Only MQ is offered on that queue; the other control features (RX
    /// filters, VLANs, MAC changes, guest offloads, announcements) stay
    /// withheld, and so is every feature whose config field only the
    /// daemon knows (kcradle builds the config space).
    pub fn net(mac: [u8; 6], pairs: u16, queue_size: u16) -> Self {
        let daemon_config = (1 << NET_F_MTU)
            | (1 << NET_F_HASH_REPORT)
            | (1 << NET_F_RSS)
            | (1 << NET_F_SPEED_DUPLEX);
        let needs_ctrl_vq = daemon_config
            | (1 << NET_F_CTRL_GUEST_OFFLOADS)
            | (1 << NET_F_CTRL_VQ)
            | (1 << NET_F_CTRL_RX)
            | (1 << NET_F_CTRL_VLAN)
            | (1 << NET_F_GUEST_ANNOUNCE)
            | (1 << NET_F_MQ)
            | (1 << NET_F_CTRL_MAC_ADDR);
        let pairs = pairs.max(1);
        let mq = if pairs > 1 {
            (1 << NET_F_CTRL_VQ) | (1 << NET_F_MQ)
        } else {
            0
        };
        DeviceSpec {
            device_type: VIRTIO_ID_NET,
            num_queues: 2 * pairs + u16::from(pairs > 1),
            queue_size,
            config: DeviceConfig::Local(net_config(mac, pairs)),
            offer_mask: !needs_ctrl_vq | mq,
            vmm_features: (1 << NET_F_MAC) | (1 << NET_F_STATUS),
            required_features: mq,
            exact_queue_count: pairs > 1,
        }
    }
}

/// Virtio network device type.
pub const VIRTIO_ID_NET: u16 = 1;
const NET_F_CTRL_GUEST_OFFLOADS: u64 = 2;
const NET_F_MTU: u64 = 3;
const NET_F_HASH_REPORT: u64 = 57;
const NET_F_RSS: u64 = 60;
const NET_F_SPEED_DUPLEX: u64 = 63;
/// Bytes of `struct virtio_net_config` through `supported_hash_types`:
/// reads of fields we do not offer still stay inside the config space.
pub const NET_CONFIG_LEN: usize = 24;
const NET_F_MAC: u64 = 5;
const NET_F_STATUS: u64 = 16;
const NET_F_CTRL_VQ: u64 = 17;
const NET_F_CTRL_RX: u64 = 18;
const NET_F_CTRL_VLAN: u64 = 19;
const NET_F_GUEST_ANNOUNCE: u64 = 21;
const NET_F_MQ: u64 = 22;
const NET_F_CTRL_MAC_ADDR: u64 = 23;
/// `VIRTIO_NET_S_LINK_UP`.
const NET_S_LINK_UP: u16 = 1;

/// The virtio-net config space: the MAC, link up, the queue pairs, MTU
/// 1500, speed and duplex unknown, no RSS.
pub fn net_config(mac: [u8; 6], pairs: u16) -> Vec<u8> {
    let mut config = mac.to_vec();
    config.extend_from_slice(&NET_S_LINK_UP.to_le_bytes());
    config.extend_from_slice(&pairs.to_le_bytes());
    config.extend_from_slice(&1500u16.to_le_bytes());
    config.extend_from_slice(&u32::MAX.to_le_bytes()); // speed: unknown
    config.push(0xff); // duplex: unknown
    config.resize(NET_CONFIG_LEN, 0);
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
    offer_mask: u64,
    vmm_features: u64,
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

/// Connects to the socket at `path`, retrying while it is missing or not
/// listening yet, for up to `timeout` or until a stop signal is caught.
fn connect(path: &Path, queues: u64, timeout: Duration) -> Result<Frontend, VhostUserError> {
    let deadline = Instant::now() + timeout;
    loop {
        // Polled between attempts: the retry may last the whole timeout.
        if let Some(signal) = signals::stop_requested() {
            return Err(VhostUserError::Stopped {
                path: path.to_path_buf(),
                signal,
            });
        }
        match UnixStream::connect(path) {
            Ok(sock) => return Ok(Frontend::from_stream(sock, queues)),
            Err(err) if Instant::now() >= deadline => {
                return Err(VhostUserError::Connect {
                    path: path.to_path_buf(),
                    timeout,
                    err,
                })
            }
            Err(_) => std::thread::sleep(CONNECT_RETRY),
        }
    }
}

impl VhostUserDevice {
    /// Connects to the daemon at `path` (retrying for up to `timeout`, or
    /// until kcradle catches a stop signal: [`crate::signals`]), reads its
    /// features and sets up the device config.
    pub fn connect(
        path: &Path,
        spec: DeviceSpec,
        mem: GuestMemoryMmap,
        timeout: Duration,
    ) -> Result<Self, VhostUserError> {
        let DeviceSpec {
            device_type,
            num_queues,
            queue_size,
            config: device_config,
            offer_mask,
            vmm_features,
            required_features,
            exact_queue_count,
        } = spec;
        let mut frontend = connect(path, u64::from(num_queues), timeout)?;
        // A daemon that accepted but never answers would block a handshake
        // read for good: a stop signal shuts the socket down instead. The
        // guard is declared after `frontend`, so it is dropped (and the
        // descriptor forgotten) before the socket can be closed.
        let _shut_on_stop = signals::ShutOnStop::new(frontend.as_raw_fd());
        let hs = |err| VhostUserError::Handshake {
            path: path.to_path_buf(),
            err,
        };
        frontend.set_owner().map_err(hs)?;
        let backend_features = frontend.get_features().map_err(hs)?;
        if backend_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(VhostUserError::Unsupported {
                path: path.to_path_buf(),
                what: "no VIRTIO_F_VERSION_1".into(),
            });
        }
        let missing = required_features & !backend_features;
        if missing != 0 {
            return Err(VhostUserError::Unsupported {
                path: path.to_path_buf(),
                what: format!("the daemon does not offer features {missing:#x} (needed here)"),
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
            let wanted = u64::from(num_queues);
            if offered < wanted || (exact_queue_count && offered != wanted) {
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
            offer_mask,
            vmm_features,
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
        // The daemon hears only about its own features.
        let mut acked = features & self.backend_features;
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
        (self.backend_features
            & self.offer_mask
            & !VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits())
            | self.vmm_features
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

    fn hangup_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.frontend))
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
    fn net_withholds_control_queue_features_and_provides_mac_and_status() {
        let spec = DeviceSpec::net([0x52, 0x54, 0, 0x12, 0x34, 0x56], 1, 256);
        assert_eq!(spec.num_queues, 2);
        assert_eq!(spec.required_features, 0);
        assert_eq!(spec.offer_mask & (1 << NET_F_CTRL_VQ), 0);
        assert_eq!(spec.offer_mask & (1 << NET_F_MQ), 0);
        assert_ne!(spec.offer_mask & (1 << 0), 0, "checksum offload passes");
        assert_eq!(spec.vmm_features, (1 << 5) | (1 << 16));
        let DeviceConfig::Local(cfg) = spec.config else {
            panic!("net config is built by the VMM")
        };
        assert_eq!(cfg.len(), NET_CONFIG_LEN);
        assert_eq!(
            &cfg[..12],
            [0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0, 1, 0, 0xdc, 0x05]
        );
        assert_eq!(spec.offer_mask & (1 << NET_F_MTU), 0);
    }

    #[test]
    fn multi_queue_net_offers_mq_with_a_control_queue_for_the_daemon() {
        let spec = DeviceSpec::net([0x52, 0x54, 0, 0x12, 0x34, 0x56], 3, 256);
        // Three RX/TX pairs, then the control queue.
        assert_eq!(spec.num_queues, 7);
        assert!(spec.exact_queue_count);
        let mq = (1 << NET_F_CTRL_VQ) | (1 << NET_F_MQ);
        assert_eq!(spec.offer_mask & mq, mq);
        assert_eq!(spec.required_features, mq);
        for withheld in [
            NET_F_CTRL_RX,
            NET_F_CTRL_VLAN,
            NET_F_CTRL_MAC_ADDR,
            NET_F_MTU,
        ] {
            assert_eq!(spec.offer_mask & (1 << withheld), 0, "bit {withheld}");
        }
        let DeviceConfig::Local(cfg) = spec.config else {
            panic!("net config is built by the VMM")
        };
        // max_virtqueue_pairs
        assert_eq!(&cfg[8..10], [3, 0]);
    }

    #[test]
    fn fs_config_pads_the_tag_and_counts_request_queues() {
        let c = fs_config("gfs", 2);
        assert_eq!(c.len(), 40);
        assert_eq!(&c[..4], b"gfs\0");
        assert!(c[3..36].iter().all(|&b| b == 0));
        assert_eq!(&c[36..], &2u32.to_le_bytes());
    }
}
