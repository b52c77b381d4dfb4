//! The native CephFS backend: FUSE requests served through libcephfs's
//! low-level `ceph_ll_*` API, with no kernel or ceph-fuse mount in between.
//! Each daemon is its own Ceph client with its own capabilities, so
//! coherence between VMs on different hosts is Ceph's (caps), not ours.
//!
//! Inodes: every FUSE node id maps to one Ceph `Inode*` reference, taken by
//! `ceph_ll_lookup`/`create`/`mkdir`/... and held while the guest's lookup
//! count is above zero; FORGET to zero drops the map entry, and the
//! reference itself goes back to Ceph (`ceph_ll_put`) once no request in
//! flight still uses it. The root (node 1) is the `--ceph-root` subtree the
//! client was mounted at and is never forgotten; since the FUSE layer
//! refuses `..` and names with `/`, nothing above it is reachable.

pub mod conf;
mod ffi;
mod inode;
mod ops;

pub use ffi::{LoadError, LIBRARY_ENV, SONAME};

use std::ffi::CString;
use std::io;
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use inode::{HandleStore, InodeStore, NodeRef};

use super::{CachePolicy, Context, Entry, Inode};

/// Native CephFS configuration (`--backend cephfs`).
#[derive(Debug, Clone)]
pub struct Config {
    /// `ceph.conf` to read (`--ceph-conf`; default: libcephfs's search).
    pub conf: Option<PathBuf>,
    /// Client name without `client.` (`--ceph-id`).
    pub id: String,
    /// Keyring (`--ceph-keyring`; default: what the conf says).
    pub keyring: Option<PathBuf>,
    /// Filesystem name (`--ceph-fs`; default: the cluster's default).
    pub fs_name: Option<String>,
    /// Subtree served as the root (`--ceph-root`).
    pub root: String,
    /// How long to try reaching the cluster at start.
    pub mount_timeout: Duration,
    /// OSD request timeout: past it, I/O fails with EIO instead of hanging.
    pub osd_timeout: Duration,
    /// Caching the guest may do (`--cache`).
    pub cache: CachePolicy,
    /// Let the guest cache writes (`--writeback`; not with `never`).
    pub writeback: bool,
    /// Serve extended attributes (`--xattr`).
    pub xattr: bool,
    /// POSIX ACLs (`--posix-acl`).
    pub posix_acl: bool,
}

impl Config {
    /// Defaults: client `admin`, the whole default filesystem, cache auto.
    pub fn new() -> Self {
        Config {
            conf: None,
            id: "admin".into(),
            keyring: None,
            fs_name: None,
            root: "/".into(),
            mount_timeout: Duration::from_secs(30),
            osd_timeout: Duration::from_secs(30),
            cache: CachePolicy::Auto,
            writeback: false,
            xattr: false,
            posix_acl: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the client could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// libcephfs is not installed (or too old).
    #[error(transparent)]
    Library(#[from] LoadError),
    /// A setting was refused before any connection was tried.
    #[error("ceph: {what}: {source}")]
    Setup {
        /// The step that failed.
        what: String,
        /// The errno.
        source: io::Error,
    },
    /// The cluster did not answer, refused us, or has no such fs/root.
    #[error("ceph: cannot mount {fs}:{root} as client.{id} within {secs} s: {source}")]
    Mount {
        /// Filesystem name.
        fs: String,
        /// Subtree.
        root: String,
        /// Client id.
        id: String,
        /// The bound that applied.
        secs: u64,
        /// The errno.
        source: io::Error,
    },
}

/// A client's settings with every file already read and libcephfs
/// loaded (before the sandbox).
#[derive(Clone)]
pub struct Prepared {
    cfg: Config,
    options: Vec<(String, String)>,
    api: &'static ffi::Api,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("cfg", &self.cfg).finish()
    }
}

/// Loads libcephfs (see [`LIBRARY_ENV`]), then reads `--ceph-conf` and
/// the keyring (see [`conf::load`]): every file the client needs.
pub fn prepare(cfg: Config) -> Result<Prepared, MountError> {
    let api = ffi::load()?;
    let options = conf::load(cfg.conf.as_deref(), cfg.keyring.as_deref(), &cfg.id)?;
    Ok(Prepared { cfg, options, api })
}

/// One mounted libcephfs client. Shared by every inode and handle
/// reference so that it is unmounted only after all of them are gone.
pub(crate) struct Mount {
    ptr: *mut ffi::ceph_mount_info,
    api: &'static ffi::Api,
}

// SAFETY: libcephfs serialises access to a mount internally (client_lock);
// its API is documented as safe to call from many threads at once.
unsafe impl Send for Mount {}
// SAFETY: as above.
unsafe impl Sync for Mount {}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: the mount is valid and no reference into it outlives
        // this (every NodeRef / open file holds an Arc<Mount>).
        unsafe {
            self.api.ceph_unmount(self.ptr);
            self.api.ceph_release(self.ptr);
        }
    }
}

impl Mount {
    fn ptr(&self) -> *mut ffi::ceph_mount_info {
        self.ptr
    }

    fn set(&self, opt: &str, val: &str) -> Result<(), MountError> {
        let setup = |source| MountError::Setup {
            what: format!("setting {opt}={val}"),
            source,
        };
        let o = CString::new(opt).map_err(|_| setup(einval()))?;
        let v = CString::new(val).map_err(|_| setup(einval()))?;
        // SAFETY: valid mount and C strings.
        ffi::check(unsafe { self.api.ceph_conf_set(self.ptr, o.as_ptr(), v.as_ptr()) })
            .map(|_| ())
            .map_err(setup)
    }
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// The credentials of one request as a Ceph `UserPerm`.
pub(crate) struct Perm(*mut ffi::UserPerm, &'static ffi::Api);

impl Perm {
    fn new(api: &'static ffi::Api, ctx: Context) -> io::Result<Perm> {
        // SAFETY: no supplementary groups: a null list with count 0.
        let p = unsafe { api.ceph_userperm_new(ctx.uid, ctx.gid, 0, ptr::null_mut()) };
        if p.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        Ok(Perm(p, api))
    }
}

impl Drop for Perm {
    fn drop(&mut self) {
        // SAFETY: created by ceph_userperm_new, destroyed once.
        unsafe { self.1.ceph_userperm_destroy(self.0) }
    }
}

/// The native CephFS filesystem.
pub struct CephFs {
    cfg: Config,
    mnt: Arc<Mount>,
    inodes: InodeStore,
    handles: HandleStore,
    /// WRITEBACK_CACHE was negotiated.
    writeback: AtomicBool,
    /// DONT_MASK was negotiated: apply the guest's umask ourselves.
    dont_mask: AtomicBool,
}

impl std::fmt::Debug for CephFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CephFs").field("cfg", &self.cfg).finish()
    }
}

impl CephFs {
    /// Reads the configuration files and connects: [`prepare`] then
    /// [`CephFs::connect`].
    pub fn new(cfg: Config) -> Result<Self, MountError> {
        Self::connect(prepare(cfg)?)
    }

    /// Creates the client and mounts `cfg.root`, with no file access (the
    /// options were read by [`prepare`]). Gives up after
    /// `cfg.mount_timeout` if the cluster does not answer.
    pub fn connect(p: Prepared) -> Result<Self, MountError> {
        let Prepared { cfg, options, api } = p;
        let id = CString::new(cfg.id.as_str()).map_err(|_| MountError::Setup {
            what: "client id".into(),
            source: einval(),
        })?;
        let mut raw = ptr::null_mut();
        // SAFETY: valid out pointer and C string.
        ffi::check(unsafe { api.ceph_create(&mut raw, id.as_ptr()) }).map_err(|source| {
            MountError::Setup {
                what: "ceph_create".into(),
                source,
            }
        })?;
        let mnt = Arc::new(Mount { ptr: raw, api });
        for (k, v) in &options {
            if let Err(e) = mnt.set(k, v) {
                // Options of other Ceph versions or daemons: not ours.
                tracing::debug!(option = %k, error = %e, "ceph option ignored");
            }
        }
        // No file exists in the sandbox: no log file, no admin socket.
        mnt.set("admin_socket", "")?;
        let secs = cfg.mount_timeout.as_secs().max(1);
        mnt.set("client_mount_timeout", &secs.to_string())?;
        mnt.set("rados_mon_op_timeout", &secs.to_string())?;
        mnt.set(
            "rados_osd_op_timeout",
            &cfg.osd_timeout.as_secs().max(1).to_string(),
        )?;
        mnt.set("log_file", "")?;
        mnt.set("log_to_stderr", "false")?;
        let mount_err = |source| MountError::Mount {
            fs: cfg.fs_name.clone().unwrap_or_else(|| "(default)".into()),
            root: cfg.root.clone(),
            id: cfg.id.clone(),
            secs,
            source,
        };
        // SAFETY: valid mount.
        ffi::check(unsafe { api.ceph_init(mnt.ptr()) }).map_err(mount_err)?;
        if let Some(fs) = &cfg.fs_name {
            let f = CString::new(fs.as_str()).map_err(|_| mount_err(einval()))?;
            // SAFETY: valid mount and C string.
            ffi::check(unsafe { api.ceph_select_filesystem(mnt.ptr(), f.as_ptr()) })
                .map_err(mount_err)?;
        }
        let root = CString::new(cfg.root.as_str()).map_err(|_| mount_err(einval()))?;
        // SAFETY: valid mount and C string.
        ffi::check(unsafe { api.ceph_mount(mnt.ptr(), root.as_ptr()) }).map_err(mount_err)?;
        let mut rp = ptr::null_mut();
        // SAFETY: valid mount, valid out pointer.
        ffi::check(unsafe { api.ceph_ll_lookup_root(mnt.ptr(), &mut rp) }).map_err(mount_err)?;
        let root_ref = NodeRef::new(mnt.clone(), rp);
        Ok(CephFs {
            inodes: InodeStore::new(root_ref),
            handles: HandleStore::new(),
            mnt,
            cfg,
            writeback: AtomicBool::new(false),
            dont_mask: AtomicBool::new(false),
        })
    }

    /// Inodes currently held by the guest (root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Open file and directory handles.
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    fn node(&self, id: Inode) -> io::Result<Arc<NodeRef>> {
        self.inodes.get(id)
    }

    fn entry(&self, id: Inode, st: libc::stat64) -> Entry {
        let t = self.cfg.cache.timeout();
        Entry {
            inode: id,
            generation: 0,
            attr: st,
            attr_timeout: t,
            entry_timeout: t,
        }
    }

    /// Registers a reference Ceph just handed us (one guest lookup).
    fn adopt(&self, ptr: *mut ffi::Inode, stx: &ffi::ceph_statx) -> Entry {
        let node = NodeRef::new(self.mnt.clone(), ptr);
        let id = self.inodes.get_or_insert(stx.stx_ino, node);
        self.entry(id, ops::to_stat(stx))
    }
}
