//! Command-line flags, the validated configuration and the opened disk.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::PathBuf;

use clap::Parser;
use cradle_devices::daemon::{CommonArgs, DaemonCli};

use crate::qos::QosConfig;

/// `blk-lv`: vhost-user-blk daemon serving one file or block device.
#[derive(Parser, Debug, Clone)]
#[command(name = "blk-lv", version, about)]
pub struct Cli {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
    /// Backing file or block device.
    #[arg(long, value_name = "FILE_OR_BLOCKDEV")]
    pub path: Option<PathBuf>,
    /// Open with O_DIRECT (default for block devices).
    #[arg(long, conflicts_with = "buffered")]
    pub direct: bool,
    /// Go through the host page cache (default for files).
    #[arg(long)]
    pub buffered: bool,
    /// Serial returned by GET_ID (at most 20 bytes; default: file name).
    #[arg(long, value_name = "ID")]
    pub serial: Option<String>,
    /// Limit on requests per second (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub iops: u64,
    /// Limit on bytes per second (0 = unlimited).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub bps: u64,
    /// Burst allowance in requests (default: one second of --iops).
    #[arg(long, value_name = "N")]
    pub iops_burst: Option<u64>,
    /// Burst allowance in bytes (default: one second of --bps).
    #[arg(long, value_name = "N")]
    pub bps_burst: Option<u64>,
    /// Busy-poll a queue this long after its last request or completion
    /// before sleeping (0 = never poll).
    #[arg(long, value_name = "US", default_value_t = DEFAULT_POLL_US)]
    pub poll_us: u64,
}

/// Default `--poll-us`: covers an NVMe read and a guest's turnaround, so
/// a queue under load never sleeps, while an idle one stops within 50 µs.
pub const DEFAULT_POLL_US: u64 = 50;
/// Largest `--poll-us`.
pub const MAX_POLL_US: u64 = 10_000;

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared daemon flags.
    pub common: CommonArgs,
    /// Backing file or device.
    pub path: PathBuf,
    /// O_DIRECT: `None` = default for the kind of file.
    pub direct: Option<bool>,
    /// GET_ID answer.
    pub serial: Vec<u8>,
    /// QoS limits.
    pub qos: QosConfig,
    /// Busy-poll window after the last activity of a queue.
    pub poll: std::time::Duration,
}

impl DaemonCli for Cli {
    type Config = Config;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    /// Checks what clap cannot; the error is a one-line reason.
    fn into_config(self) -> Result<Config, String> {
        let path = self.path.ok_or("--path is required")?;
        if self.common.socket.is_none() && self.common.fd.is_none() {
            return Err("one of --socket or --fd is required".into());
        }
        let serial = match self.serial {
            Some(s) if s.len() > 20 => {
                return Err(format!("--serial '{s}' is longer than 20 bytes"))
            }
            Some(s) => s.into_bytes(),
            None => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                name.into_bytes().into_iter().take(20).collect()
            }
        };
        let direct = if self.direct {
            Some(true)
        } else if self.buffered {
            Some(false)
        } else {
            None
        };
        if self.poll_us > MAX_POLL_US {
            return Err(format!("--poll-us {} is above {MAX_POLL_US}", self.poll_us));
        }
        Ok(Config {
            poll: std::time::Duration::from_micros(self.poll_us),
            common: self.common,
            path,
            direct,
            serial,
            qos: QosConfig {
                iops: self.iops,
                bps: self.bps,
                iops_burst: self.iops_burst.unwrap_or(self.iops),
                bps_burst: self.bps_burst.unwrap_or(self.bps),
            },
        })
    }
}

/// The opened backing store and its geometry.
#[derive(Debug)]
pub struct Disk {
    /// Open file.
    pub file: File,
    /// Size in bytes.
    pub size: u64,
    /// Logical block size (config `blk_size`).
    pub logical_block: u32,
    /// Physical block size (topology hint).
    pub physical_block: u32,
    /// A block device rather than a regular file.
    pub is_block_device: bool,
    /// Opened with O_DIRECT.
    pub direct: bool,
}

// From <linux/fs.h>.
const BLKSSZGET: libc::c_ulong = 0x1268;
const BLKPBSZGET: libc::c_ulong = 0x127b;
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

impl Disk {
    /// Opens `path` read-only or read-write, with O_DIRECT per `direct`
    /// (default: on for block devices, off for files).
    pub fn open(
        path: &std::path::Path,
        readonly: bool,
        direct: Option<bool>,
    ) -> std::io::Result<Disk> {
        let meta = std::fs::metadata(path)?;
        let is_block_device = meta.file_type().is_block_device();
        if !is_block_device && !meta.is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            ));
        }
        let direct = direct.unwrap_or(is_block_device);
        let mut flags = libc::O_CLOEXEC;
        if direct {
            flags |= libc::O_DIRECT;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(!readonly)
            .custom_flags(flags)
            .open(path)?;
        let (size, logical_block, physical_block) = if is_block_device {
            let mut size: u64 = 0;
            let mut lbs: libc::c_int = 512;
            let mut pbs: libc::c_uint = 512;
            // SAFETY: these ioctls write one integer of the given type into
            // the pointed-to local; the fd is an open block device.
            unsafe {
                if libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut lbs) != 0 {
                    lbs = 512;
                }
                if libc::ioctl(file.as_raw_fd(), BLKPBSZGET, &mut pbs) != 0 {
                    pbs = lbs as libc::c_uint;
                }
            }
            (
                size,
                u32::try_from(lbs).unwrap_or(512).max(512),
                pbs.max(512),
            )
        } else {
            (meta.len(), 512, 4096)
        };
        Ok(Disk {
            file,
            size,
            logical_block,
            physical_block,
            is_block_device,
            direct,
        })
    }
}
