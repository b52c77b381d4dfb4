//! Command-line flags and the validated configuration. Flags virtiofsd
//! also has mean the same thing here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use cradle_devices::daemon::{CommonArgs, DaemonCli};

use crate::backend::{DeviceConfig, TAG_LEN};
use crate::fs::ceph;
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

/// `--backend`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendArg {
    /// A host directory tree (`--shared-dir`).
    Passthrough,
    /// A CephFS filesystem through libcephfs (`--ceph-*`), no mount.
    Cephfs,
}

/// Which filesystem is served.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `--shared-dir` (settings in [`Config::fs`]).
    Passthrough,
    /// Native CephFS.
    Cephfs(ceph::Config),
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
    /// Microseconds a request queue's thread keeps watching its queue
    /// after serving requests before it sleeps (0: sleep at once). The
    /// next request of a guest waiting on the last reply then needs no
    /// kick and no wake-up; the cost is CPU time spent spinning.
    #[arg(long, value_name = "US", default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub poll_us: u32,
    /// Keep inodes as file handles instead of open fds.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = HandlesArg::Never)]
    pub inode_file_handles: HandlesArg,
    /// Open-file limit to set (default: the hard limit).
    #[arg(long, value_name = "N")]
    pub rlimit_nofile: Option<u64>,
    /// What to serve: a directory tree or CephFS directly.
    #[arg(long, value_enum, value_name = "KIND", default_value_t = BackendArg::Passthrough)]
    pub backend: BackendArg,
    /// cephfs: ceph.conf to read (default /etc/ceph/ceph.conf).
    #[arg(long, value_name = "FILE")]
    pub ceph_conf: Option<PathBuf>,
    /// cephfs: client name without `client.`.
    #[arg(long, value_name = "NAME", default_value = "admin")]
    pub ceph_id: String,
    /// cephfs: keyring holding the client's key (default: the conf's).
    #[arg(long, value_name = "FILE")]
    pub ceph_keyring: Option<PathBuf>,
    /// cephfs: filesystem name (default: the cluster's default).
    #[arg(long, value_name = "NAME")]
    pub ceph_fs: Option<String>,
    /// cephfs: the subtree this VM sees as its root.
    #[arg(long, value_name = "PATH", default_value = "/")]
    pub ceph_root: String,
    /// cephfs: how long to wait for the cluster at start, and for an OSD
    /// before I/O fails with EIO.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ceph_timeout: u64,
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
    /// The filesystem served.
    pub backend: Backend,
}

impl DaemonCli for Cli {
    type Config = Config;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    /// Checks what clap cannot; the error is a one-line reason.
    fn into_config(self) -> Result<Config, String> {
        let cephfs = self.backend == BackendArg::Cephfs;
        let root = match (cephfs, self.shared_dir) {
            (false, None) => return Err("--shared-dir is required".into()),
            (false, Some(root)) if !root.is_dir() => {
                return Err(format!("--shared-dir {}: not a directory", root.display()))
            }
            (false, Some(root)) => root,
            (true, Some(_)) => return Err("--shared-dir is not used with --backend cephfs".into()),
            (true, None) => PathBuf::new(),
        };
        let ceph_flags = self.ceph_conf.is_some()
            || self.ceph_keyring.is_some()
            || self.ceph_fs.is_some()
            || self.ceph_root != "/"
            || self.ceph_id != "admin";
        if !cephfs && ceph_flags {
            return Err("--ceph-* flags need --backend cephfs".into());
        }
        if !self.ceph_root.starts_with('/') || self.ceph_root.contains('\0') {
            return Err(format!(
                "--ceph-root '{}' must be an absolute path",
                self.ceph_root
            ));
        }
        if self.ceph_id.is_empty() || self.ceph_id.contains(['\0', ' ']) {
            return Err(format!("--ceph-id '{}' is not a client name", self.ceph_id));
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
        let backend = if cephfs {
            let timeout = Duration::from_secs(self.ceph_timeout);
            Backend::Cephfs(ceph::Config {
                conf: self.ceph_conf,
                id: self.ceph_id,
                keyring: self.ceph_keyring,
                fs_name: self.ceph_fs,
                root: self.ceph_root,
                mount_timeout: timeout,
                osd_timeout: timeout,
                cache,
                writeback: self.writeback,
                xattr: self.xattr || self.posix_acl,
                posix_acl: self.posix_acl,
            })
        } else {
            Backend::Passthrough
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
            poll: Duration::from_micros(u64::from(self.poll_us)),
        };
        Ok(Config {
            server: ServerConfig {
                readonly: self.common.readonly,
            },
            common: self.common,
            fs,
            device,
            rlimit_nofile: self.rlimit_nofile,
            backend,
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
