//! The filesystem behind the FUSE server. [`FileSystem`] keeps the protocol
//! apart from the backend so a second backend (native CephFS) slots in
//! beside [`passthrough::PassthroughFs`]. Every method defaults to
//! `ENOSYS`, which the guest kernel remembers and stops asking for.

pub mod ceph;
pub mod passthrough;

use std::ffi::CStr;
use std::io;
use std::time::Duration;

/// Inode id as the guest sees it (`nodeid`); 1 is the root.
pub type Inode = u64;
/// Open file or directory handle id (`fh`).
pub type Handle = u64;

/// Who is asking: the credentials of the guest process behind a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Context {
    /// Caller's uid.
    pub uid: u32,
    /// Caller's gid.
    pub gid: u32,
    /// Caller's pid (in the guest).
    pub pid: u32,
}

/// A looked-up or created name: the inode id and its attributes. Each one
/// returned counts as one lookup that a later FORGET releases.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Inode id.
    pub inode: Inode,
    /// Generation (0: ids are never reused while referenced).
    pub generation: u64,
    /// Attributes.
    pub attr: libc::stat64,
    /// How long the guest may cache the attributes.
    pub attr_timeout: Duration,
    /// How long the guest may cache the name.
    pub entry_timeout: Duration,
}

/// Time to set in SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    /// The server's current time.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At(i64, u32),
}

/// The attributes a SETATTR changes (`None`: unchanged).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits.
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<SetTime>,
    /// New modification time.
    pub mtime: Option<SetTime>,
}

/// One directory entry as read from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Host inode number (informational).
    pub ino: u64,
    /// Offset of the next entry, for the next READDIR.
    pub offset: u64,
    /// `DT_*` type.
    pub typ: u32,
    /// Name bytes (no NUL).
    pub name: Vec<u8>,
}

/// Reply of GETXATTR and LISTXATTR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    /// The guest asked for the size only (size 0 in the request).
    Size(u32),
    /// The value or the NUL-separated name list.
    Data(Vec<u8>),
}

/// Filesystem statistics (STATFS).
pub type StatFs = libc::statvfs64;

/// How aggressively the guest may cache (`--cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// No caching: attributes and names revalidated on every access, file
    /// data never in the guest page cache (direct I/O).
    Never,
    /// Metadata cached for a long time, data never cached.
    Metadata,
    /// Metadata cached for 1 s; data cached, dropped when another writer
    /// changed the file (mtime/size) at open or on attribute refresh.
    Auto,
    /// Metadata and data cached for a long time; page cache kept across opens.
    Always,
}

impl CachePolicy {
    /// Entry and attribute timeout of this policy.
    pub fn timeout(self) -> Duration {
        match self {
            CachePolicy::Never => Duration::ZERO,
            CachePolicy::Auto => Duration::from_secs(1),
            CachePolicy::Metadata | CachePolicy::Always => Duration::from_secs(86400),
        }
    }
}

fn nosys<T>() -> io::Result<T> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

/// A filesystem served over FUSE. Names never contain `/` or NUL and are
/// never `.` or `..` (the server refuses those before calling in).
#[allow(unused_variables, missing_docs)]
pub trait FileSystem: Send + Sync {
    /// Negotiates: `capable` is the guest's INIT flags; returns the flags
    /// the filesystem wants enabled (the server intersects).
    fn init(&self, capable: u64) -> io::Result<u64> {
        Ok(0)
    }
    /// The guest unmounted: drop all inodes and handles.
    fn destroy(&self) {}
    fn lookup(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        nosys()
    }
    /// Releases `count` lookups of `inode`.
    fn forget(&self, inode: Inode, count: u64) {}
    fn getattr(
        &self,
        ctx: Context,
        inode: Inode,
        fh: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        nosys()
    }
    fn setattr(
        &self,
        ctx: Context,
        inode: Inode,
        attr: SetAttr,
        fh: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        nosys()
    }
    fn readlink(&self, ctx: Context, inode: Inode) -> io::Result<Vec<u8>> {
        nosys()
    }
    fn symlink(
        &self,
        ctx: Context,
        target: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        nosys()
    }
    fn mknod(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        nosys()
    }
    fn mkdir(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        nosys()
    }
    fn unlink(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        nosys()
    }
    fn rmdir(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        nosys()
    }
    /// `flags` are `RENAME_NOREPLACE`/`RENAME_EXCHANGE`/`RENAME_WHITEOUT`.
    fn rename(
        &self,
        ctx: Context,
        olddir: Inode,
        oldname: &CStr,
        newdir: Inode,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        nosys()
    }
    fn link(
        &self,
        ctx: Context,
        inode: Inode,
        newparent: Inode,
        newname: &CStr,
    ) -> io::Result<Entry> {
        nosys()
    }
    /// Returns the handle and the `FOPEN_*` flags.
    fn open(&self, ctx: Context, inode: Inode, flags: u32) -> io::Result<(Handle, u32)> {
        nosys()
    }
    fn create(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Handle, u32)> {
        nosys()
    }
    /// An unnamed file in `parent` (`O_TMPFILE`).
    fn tmpfile(
        &self,
        ctx: Context,
        parent: Inode,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Handle, u32)> {
        nosys()
    }
    fn read(
        &self,
        ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        size: u32,
    ) -> io::Result<Vec<u8>> {
        nosys()
    }
    fn write(
        &self,
        ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        data: &[u8],
    ) -> io::Result<usize> {
        nosys()
    }
    fn flush(&self, ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        nosys()
    }
    fn release(&self, ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        nosys()
    }
    fn fsync(&self, ctx: Context, inode: Inode, datasync: bool, fh: Handle) -> io::Result<()> {
        nosys()
    }
    fn statfs(&self, ctx: Context, inode: Inode) -> io::Result<StatFs> {
        nosys()
    }
    fn setxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        nosys()
    }
    fn getxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        nosys()
    }
    fn listxattr(&self, ctx: Context, inode: Inode, size: u32) -> io::Result<XattrReply> {
        nosys()
    }
    fn removexattr(&self, ctx: Context, inode: Inode, name: &CStr) -> io::Result<()> {
        nosys()
    }
    fn opendir(&self, ctx: Context, inode: Inode, flags: u32) -> io::Result<(Handle, u32)> {
        nosys()
    }
    /// Entries from `offset` on; the server takes as many as fit `size`.
    fn readdir(
        &self,
        ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        size: u32,
    ) -> io::Result<Vec<DirEntry>> {
        nosys()
    }
    fn releasedir(&self, ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        nosys()
    }
    fn fsyncdir(&self, ctx: Context, inode: Inode, datasync: bool, fh: Handle) -> io::Result<()> {
        nosys()
    }
    fn access(&self, ctx: Context, inode: Inode, mask: u32) -> io::Result<()> {
        nosys()
    }
    fn fallocate(
        &self,
        ctx: Context,
        inode: Inode,
        fh: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        nosys()
    }
    fn lseek(
        &self,
        ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        nosys()
    }
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: Context,
        inode_in: Inode,
        fh_in: Handle,
        off_in: u64,
        inode_out: Inode,
        fh_out: Handle,
        off_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        nosys()
    }
    fn syncfs(&self, ctx: Context, inode: Inode) -> io::Result<()> {
        nosys()
    }
}
