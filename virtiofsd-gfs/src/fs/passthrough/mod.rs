//! The passthrough backend: serves a host directory tree.
//!
//! Security model: every operation starts from an inode the guest already
//! holds (an O_PATH fd or a file handle of an object inside the tree) and
//! names exactly one component relative to it, opened with `O_NOFOLLOW`.
//! Names never contain `/`, are never `.` or `..` (the FUSE layer refuses
//! those), so neither a guest-supplied name nor a symlink nor a concurrent
//! rename can make the daemon reach an object outside `--shared-dir`.
//! Files are opened for I/O by re-opening the inode through
//! `/proc/self/fd/N` (held open from before the sandbox) or
//! `open_by_handle_at`, never by path, and only regular files and
//! directories are ever opened.

mod inode;
mod ops;
mod sys;

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use inode::{Anchor, HandleStore, InodeData, InodeFd, InodeStore};
use sys::FileHandle;

use super::{CachePolicy, Entry, Inode};

/// `--inode-file-handles`: how inodes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileHandles {
    /// One O_PATH fd per inode the guest holds (virtiofsd's default).
    Never,
    /// File handles where the filesystem supports them, fds elsewhere.
    Prefer,
    /// File handles only; an inode without one is an error.
    Mandatory,
}

/// Passthrough configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tree served (`--shared-dir`).
    pub root: PathBuf,
    /// Caching the guest may do (`--cache`).
    pub cache: CachePolicy,
    /// Let the guest cache writes (`--writeback`; not with `never`).
    pub writeback: bool,
    /// Serve extended attributes (`--xattr`).
    pub xattr: bool,
    /// POSIX ACLs (`--posix-acl`, needs `xattr`).
    pub posix_acl: bool,
    /// How inodes are kept (`--inode-file-handles`).
    pub file_handles: FileHandles,
}

impl Config {
    /// Defaults for serving `root`: cache auto, no xattrs, fds.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Config {
            root: root.into(),
            cache: CachePolicy::Auto,
            writeback: false,
            xattr: false,
            posix_acl: false,
            file_handles: FileHandles::Never,
        }
    }
}

/// The passthrough filesystem.
pub struct PassthroughFs {
    cfg: Config,
    inodes: InodeStore,
    handles: HandleStore,
    /// `/proc/self/fd`, to re-open O_PATH fds with real access modes.
    proc_fd: OwnedFd,
    /// The root directory opened for reading: `open_by_handle_at`'s mount
    /// fd and the target of `syncfs`.
    mount_fd: OwnedFd,
    /// Mount id of the root, when file handles are used.
    root_mnt: Option<i32>,
    /// WRITEBACK_CACHE was negotiated.
    writeback: AtomicBool,
    /// DONT_MASK was negotiated: apply the guest's umask ourselves.
    dont_mask: AtomicBool,
}

impl std::fmt::Debug for PassthroughFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassthroughFs")
            .field("cfg", &self.cfg)
            .finish()
    }
}

fn cpath(p: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

impl PassthroughFs {
    /// Opens `cfg.root`. Sets the process umask to 0: modes arrive from
    /// the guest already masked (or with the umask to apply).
    pub fn new(cfg: Config) -> io::Result<Self> {
        // SAFETY: umask has no preconditions.
        unsafe { libc::umask(0) };
        let cwd = rustix_cwd();
        let proc_fd = sys::openat(
            cwd.as_fd(),
            c"/proc/self/fd",
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        let root = cpath(&cfg.root)?;
        let root_fd = sys::openat(cwd.as_fd(), &root, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let mount_fd = sys::openat(cwd.as_fd(), &root, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        let st = sys::fstat(root_fd.as_fd())?;
        let mut cfg = cfg;
        let root_mnt = match cfg.file_handles {
            FileHandles::Never => None,
            mode => match FileHandle::of(root_fd.as_fd())
                .and_then(|(h, mnt)| h.open(mount_fd.as_fd(), libc::O_PATH).map(|_| mnt))
            {
                Ok(mnt) => Some(mnt),
                Err(e) if mode == FileHandles::Prefer => {
                    tracing::warn!(error = %e, "file handles unusable here, keeping fds");
                    cfg.file_handles = FileHandles::Never;
                    None
                }
                Err(e) => return Err(e),
            },
        };
        let inodes = InodeStore::new();
        inodes.insert_root((st.st_dev, st.st_ino), libc::S_IFDIR, Anchor::Fd(root_fd));
        Ok(PassthroughFs {
            cfg,
            inodes,
            handles: HandleStore::new(),
            proc_fd,
            mount_fd,
            root_mnt,
            writeback: AtomicBool::new(false),
            dont_mask: AtomicBool::new(false),
        })
    }

    /// Whether inodes are kept as file handles (after the `prefer`
    /// fallback was decided).
    pub fn uses_file_handles(&self) -> bool {
        self.cfg.file_handles != FileHandles::Never
    }

    /// Inodes currently held by the guest (root included).
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// Open file and directory handles.
    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    fn inode(&self, id: Inode) -> io::Result<Arc<InodeData>> {
        self.inodes.get(id)
    }

    fn ifd<'a>(&self, d: &'a InodeData) -> io::Result<InodeFd<'a>> {
        d.fd(self.mount_fd.as_fd())
    }

    /// A directory inode's O_PATH fd (ENOTDIR for anything else).
    fn dir<'a>(&self, d: &'a InodeData) -> io::Result<InodeFd<'a>> {
        if !d.is_dir() {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        self.ifd(d)
    }

    /// Opens the inode with real access `flags` (never by path).
    fn reopen(&self, d: &InodeData, flags: i32) -> io::Result<OwnedFd> {
        let flags = flags & !(libc::O_NOFOLLOW | libc::O_CREAT | libc::O_EXCL);
        match &d.anchor {
            Anchor::Fd(f) => sys::openat(self.proc_fd.as_fd(), &sys::fd_name(f.as_fd()), flags, 0),
            Anchor::Handle(h) => h.open(self.mount_fd.as_fd(), flags),
        }
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

    /// Looks `name` up in `parent` and takes a reference on the result.
    fn do_lookup(&self, parent: Inode, name: &CStr) -> io::Result<Entry> {
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        let fd = sys::openat(pfd.as_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = sys::fstat(fd.as_fd())?;
        let kind = st.st_mode & libc::S_IFMT;
        let anchor = match self.cfg.file_handles {
            FileHandles::Never => Anchor::Fd(fd),
            mode => match FileHandle::of(fd.as_fd()) {
                Ok((h, mnt)) if Some(mnt) == self.root_mnt => Anchor::Handle(h),
                _ if mode == FileHandles::Prefer => Anchor::Fd(fd),
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::EXDEV)),
                Err(e) => return Err(e),
            },
        };
        let id = self
            .inodes
            .get_or_insert((st.st_dev, st.st_ino), kind, anchor);
        Ok(self.entry(id, st))
    }

    /// The mode to create with: the guest's umask applied when the kernel
    /// left that to us (DONT_MASK).
    fn create_mode(&self, mode: u32, umask: u32) -> u32 {
        if self.dont_mask.load(std::sync::atomic::Ordering::Relaxed) {
            mode & !umask
        } else {
            mode
        }
    }

    /// Access flags a guest OPEN/CREATE may pass on to the host.
    fn open_flags(&self, flags: u32) -> i32 {
        let f = flags as i32;
        let mut out = f
            & (libc::O_ACCMODE
                | libc::O_APPEND
                | libc::O_TRUNC
                | libc::O_SYNC
                | libc::O_DSYNC
                | libc::O_NONBLOCK
                | libc::O_LARGEFILE);
        if self.writeback.load(std::sync::atomic::Ordering::Relaxed) {
            // The guest's page cache may read around a write-only open and
            // does appends itself.
            if out & libc::O_ACCMODE == libc::O_WRONLY {
                out = (out & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            out &= !libc::O_APPEND;
        }
        out
    }

    /// `FOPEN_*` flags for a file opened under the cache policy.
    fn fopen_flags(&self) -> u32 {
        use crate::fuse::abi::fopen;
        match self.cfg.cache {
            CachePolicy::Never | CachePolicy::Metadata => fopen::DIRECT_IO,
            CachePolicy::Auto => 0,
            CachePolicy::Always => fopen::KEEP_CACHE,
        }
    }

    fn borrowed_proc(&self) -> BorrowedFd<'_> {
        self.proc_fd.as_fd()
    }
}

/// `AT_FDCWD` as a borrowed fd, for absolute paths at startup.
fn rustix_cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a sentinel valid for the whole process lifetime
    // for *at calls; it is never closed.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

#[cfg(test)]
mod tests;
