//! The inode table: guest inode ids → host objects, kept either as an
//! O_PATH fd or as a kernel file handle (no fd held), deduplicated by
//! (device, inode number) so hard links share one id. Also the table of
//! open file handles.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::sys::FileHandle;
use crate::fs::Inode;

/// How the host object behind an inode is kept.
#[derive(Debug)]
pub enum Anchor {
    /// An O_PATH fd.
    Fd(OwnedFd),
    /// A file handle on the shared directory's filesystem.
    Handle(FileHandle),
}

/// One inode the guest knows.
#[derive(Debug)]
pub struct InodeData {
    /// Guest id.
    pub id: Inode,
    /// (st_dev, st_ino) on the host.
    pub key: (u64, u64),
    /// `S_IFMT` bits of the host object.
    pub kind: u32,
    /// The host object.
    pub anchor: Anchor,
    /// Lookups the guest holds.
    refs: AtomicU64,
}

/// An fd for an inode: borrowed from the table, or opened from a handle.
pub enum InodeFd<'a> {
    /// The table's own O_PATH fd.
    Borrowed(BorrowedFd<'a>),
    /// Opened from a file handle for this operation.
    Owned(OwnedFd),
}

impl AsFd for InodeFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            InodeFd::Borrowed(b) => *b,
            InodeFd::Owned(o) => o.as_fd(),
        }
    }
}

impl InodeData {
    /// An O_PATH fd for this inode; `mount` opens handles.
    pub fn fd<'a>(&'a self, mount: BorrowedFd<'_>) -> io::Result<InodeFd<'a>> {
        match &self.anchor {
            Anchor::Fd(f) => Ok(InodeFd::Borrowed(f.as_fd())),
            Anchor::Handle(h) => Ok(InodeFd::Owned(h.open(mount, libc::O_PATH)?)),
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<Inode, Arc<InodeData>>,
    by_key: HashMap<(u64, u64), Inode>,
}

/// The inode table.
pub struct InodeStore {
    maps: RwLock<Maps>,
    next: AtomicU64,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Whether two anchors for the same (dev, ino) name the same object: file
/// handles carry a generation number, fds pin their inode.
fn same_object(a: &Anchor, b: &Anchor) -> bool {
    match (a, b) {
        (Anchor::Handle(x), Anchor::Handle(y)) => x == y,
        _ => true,
    }
}

impl InodeStore {
    /// An empty table; ids start after the root's.
    pub fn new() -> Self {
        InodeStore {
            maps: RwLock::new(Maps::default()),
            next: AtomicU64::new(crate::fuse::abi::ROOT_ID + 1),
        }
    }

    /// Number of inodes held.
    pub fn len(&self) -> usize {
        read(&self.maps).by_id.len()
    }

    /// The inode `id`, or EBADF... as the kernel would say for a stale id.
    pub fn get(&self, id: Inode) -> io::Result<Arc<InodeData>> {
        read(&self.maps)
            .by_id
            .get(&id)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// Inserts the root (id 1) with a permanent reference.
    pub fn insert_root(&self, key: (u64, u64), kind: u32, anchor: Anchor) {
        let mut m = write(&self.maps);
        let id = crate::fuse::abi::ROOT_ID;
        m.by_key.insert(key, id);
        m.by_id.insert(
            id,
            Arc::new(InodeData {
                id,
                key,
                kind,
                anchor,
                refs: AtomicU64::new(1 << 62),
            }),
        );
    }

    /// Takes one more lookup of the object `key`, creating its entry with
    /// `anchor` if it is new (otherwise `anchor` is dropped).
    pub fn get_or_insert(&self, key: (u64, u64), kind: u32, anchor: Anchor) -> Inode {
        let mut m = write(&self.maps);
        if let Some(id) = m.by_key.get(&key).copied() {
            if let Some(d) = m.by_id.get(&id) {
                // Same key but a different file type or file handle: the
                // inode number was reused after the old file went away on
                // the host (possible when no fd pins it). Replace.
                if d.kind == kind && same_object(&d.anchor, &anchor) {
                    d.refs.fetch_add(1, Ordering::Relaxed);
                    return id;
                }
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        m.by_key.insert(key, id);
        m.by_id.insert(
            id,
            Arc::new(InodeData {
                id,
                key,
                kind,
                anchor,
                refs: AtomicU64::new(1),
            }),
        );
        id
    }

    /// Releases `count` lookups; drops the entry when none are left.
    pub fn forget(&self, id: Inode, count: u64) {
        if id == crate::fuse::abi::ROOT_ID {
            return;
        }
        let mut m = write(&self.maps);
        let Some(d) = m.by_id.get(&id) else { return };
        let left = d.refs.load(Ordering::Relaxed).saturating_sub(count);
        d.refs.store(left, Ordering::Relaxed);
        if left == 0 {
            let key = d.key;
            m.by_id.remove(&id);
            if m.by_key.get(&key) == Some(&id) {
                m.by_key.remove(&key);
            }
        }
    }

    /// Drops everything but the root.
    pub fn clear(&self) {
        let mut m = write(&self.maps);
        let root = m.by_id.remove(&crate::fuse::abi::ROOT_ID);
        m.by_id.clear();
        m.by_key.clear();
        if let Some(r) = root {
            m.by_key.insert(r.key, r.id);
            m.by_id.insert(r.id, r);
        }
    }
}

impl Default for InodeStore {
    fn default() -> Self {
        Self::new()
    }
}

/// An open file or directory.
#[derive(Debug)]
pub struct HandleData {
    /// The inode it was opened on.
    pub inode: Inode,
    /// The open fd.
    pub file: OwnedFd,
    /// Serialises seek+getdents on directories.
    pub dir_lock: Mutex<()>,
}

/// The open-handle table.
pub struct HandleStore {
    map: RwLock<HashMap<u64, Arc<HandleData>>>,
    next: AtomicU64,
}

impl HandleStore {
    /// An empty table.
    pub fn new() -> Self {
        HandleStore {
            map: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Registers an open fd; returns its handle id.
    pub fn insert(&self, inode: Inode, file: OwnedFd) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        write(&self.map).insert(
            id,
            Arc::new(HandleData {
                inode,
                file,
                dir_lock: Mutex::new(()),
            }),
        );
        id
    }

    /// The handle `fh`, which must belong to `inode` (EBADF otherwise).
    pub fn get(&self, fh: u64, inode: Inode) -> io::Result<Arc<HandleData>> {
        match read(&self.map).get(&fh) {
            Some(h) if h.inode == inode => Ok(h.clone()),
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Closes `fh` (once no request uses it any more).
    pub fn remove(&self, fh: u64, inode: Inode) -> io::Result<()> {
        let mut m = write(&self.map);
        match m.get(&fh) {
            Some(h) if h.inode == inode => {
                m.remove(&fh);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        read(&self.map).len()
    }

    /// Closes everything.
    pub fn clear(&self) {
        write(&self.map).clear();
    }
}

impl Default for HandleStore {
    fn default() -> Self {
        Self::new()
    }
}
