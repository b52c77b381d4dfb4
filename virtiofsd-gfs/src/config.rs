//! Command-line flags and the validated configuration. Flags virtiofsd
//! also has mean the same thing here.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use cradle_devices::daemon::{CommonArgs, DaemonCli};

use crate::backend::{DeviceConfig, TAG_LEN};
use crate::fs::passthrough::{self, FileHandles};
use crate::fs::CachePolicy;
use crate::fuse::ServerConfig;

/// `--cache`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheArg {
    /// No caching in the guest: every access goes to the host.
    Never,
    /// Metadata cached (long timeouts), file data never.
    Metadata,
    /// Metadata for 1 s, data until the file changes on the host.
    Auto,
    /// Metadata and data cached for a long time.
    Always,
}

/// `--inode-file-handles`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlesArg {
    /// One O_PATH fd per inode.
    Never,
    /// File handles where possible, fds elsewhere.
    Prefer,
    /// File handles only.
    Mandatory,
}

/// `virtiofsd-gfs`: vhost-user-fs daemon serving a directory tree to VMs.
#[derive(Parser, Debug, Clone)]
#[command(name = "virtiofsd-gfs", version, about)]
pub struct Cli {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
    /// Directory to share (a local directory, an NFS or CephFS mount).
    #[arg(long, value_name = "DIR")]
    pub shared_dir: Option<PathBuf>,
    /// Tag offered in the device config space (at most 36 bytes).
    #[arg(long, value_name = "TAG")]
    pub tag: Option<String>,
    /// How much the guest may cache.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = CacheArg::Auto)]
    pub cache: CacheArg,
    /// Let the guest cache writes (ignored with --cache never).
    #[arg(long)]
    pub writeback: bool,
    /// Serve extended attributes.
    #[arg(long)]
    pub xattr: bool,
    /// Serve POSIX ACLs (implies --xattr).
    #[arg(long)]
    pub posix_acl: bool,
    /// Threads serving the request queues' requests (0: each queue's own
    /// thread serves them inline).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub thread_pool_size: u16,
    /// Keep inodes as file handles instead of open fds.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = HandlesArg::Never)]
    pub inode_file_handles: HandlesArg,
    /// Open-file limit to set (default: the hard limit).
    #[arg(long, value_name = "N")]
    pub rlimit_nofile: Option<u64>,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared daemon flags.
    pub common: CommonArgs,
    /// The passthrough backend's settings.
    pub fs: passthrough::Config,
    /// Server policy.
    pub server: ServerConfig,
    /// Device parameters.
    pub device: DeviceConfig,
    /// RLIMIT_NOFILE to set, if any.
    pub rlimit_nofile: Option<u64>,
}

impl DaemonCli for Cli {
    type Config = Config;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    /// Checks what clap cannot; the error is a one-line reason.
    fn into_config(self) -> Result<Config, String> {
        let root = self.shared_dir.ok_or("--shared-dir is required")?;
        if !root.is_dir() {
            return Err(format!("--shared-dir {}: not a directory", root.display()));
        }
        if self.common.socket.is_none() && self.common.fd.is_none() {
            return Err("one of --socket or --fd is required".into());
        }
        if let Some(t) = &self.tag {
            if t.is_empty() || t.len() > TAG_LEN {
                return Err(format!("--tag '{t}' must be 1 to {TAG_LEN} bytes"));
            }
        }
        if self.rlimit_nofile == Some(0) {
            return Err("--rlimit-nofile must be positive".into());
        }
        let cache = match self.cache {
            CacheArg::Never => CachePolicy::Never,
            CacheArg::Metadata => CachePolicy::Metadata,
            CacheArg::Auto => CachePolicy::Auto,
            CacheArg::Always => CachePolicy::Always,
        };
        let fs = passthrough::Config {
            root,
            cache,
            writeback: self.writeback,
            xattr: self.xattr || self.posix_acl,
            posix_acl: self.posix_acl,
            file_handles: match self.inode_file_handles {
                HandlesArg::Never => FileHandles::Never,
                HandlesArg::Prefer => FileHandles::Prefer,
                HandlesArg::Mandatory => FileHandles::Mandatory,
            },
        };
        let device = DeviceConfig {
            request_queues: self.common.num_queues,
            queue_size: self.common.queue_size,
            tag: self.tag,
            thread_pool_size: usize::from(self.thread_pool_size),
        };
        Ok(Config {
            server: ServerConfig {
                readonly: self.common.readonly,
            },
            common: self.common,
            fs,
            device,
            rlimit_nofile: self.rlimit_nofile,
        })
    }
}

/// Raises RLIMIT_NOFILE to `want` (default: the hard limit). Returns the
/// limit now in effect.
pub fn set_rlimit_nofile(want: Option<u64>) -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = want.unwrap_or(lim.rlim_max);
    let new = libc::rlimit {
        rlim_cur: n,
        rlim_max: lim.rlim_max.max(n),
    };
    // SAFETY: valid pointer to an initialised rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n)
}
