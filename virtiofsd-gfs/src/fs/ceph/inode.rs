//! FUSE node ids ↔ Ceph inode references, and open file / directory
//! handles. A [`NodeRef`] owns one Ceph reference and returns it on drop;
//! requests in flight hold an `Arc` to it so that a concurrent FORGET
//! never frees an inode still being used.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ffi, Mount};
use crate::fs::{Handle, Inode};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One Ceph inode reference.
pub(crate) struct NodeRef {
    mnt: Arc<Mount>,
    ptr: *mut ffi::Inode,
}

// SAFETY: a Ceph Inode reference may be used from any thread; libcephfs
// locks internally. The pointer stays valid until our ceph_ll_put.
unsafe impl Send for NodeRef {}
// SAFETY: as above.
unsafe impl Sync for NodeRef {}

impl NodeRef {
    /// Takes ownership of one reference returned by a `ceph_ll_*` call.
    pub(crate) fn new(mnt: Arc<Mount>, ptr: *mut ffi::Inode) -> Arc<NodeRef> {
        Arc::new(NodeRef { mnt, ptr })
    }

    pub(crate) fn ptr(&self) -> *mut ffi::Inode {
        self.ptr
    }
}

impl Drop for NodeRef {
    fn drop(&mut self) {
        // SAFETY: we own exactly one reference on a valid inode.
        unsafe { self.mnt.api.ceph_ll_put(self.mnt.ptr(), self.ptr) };
    }
}

struct Node {
    r: Arc<NodeRef>,
    ino: u64,
    lookups: u64,
}

struct Inner {
    by_id: HashMap<Inode, Node>,
    by_ino: HashMap<u64, Inode>,
    next: Inode,
}

/// The guest's inodes. Node ids are never reused while the daemon runs.
pub(crate) struct InodeStore {
    root: Arc<NodeRef>,
    inner: Mutex<Inner>,
}

impl InodeStore {
    pub(crate) fn new(root: Arc<NodeRef>) -> Self {
        InodeStore {
            root,
            inner: Mutex::new(Inner {
                by_id: HashMap::new(),
                by_ino: HashMap::new(),
                next: 2,
            }),
        }
    }

    /// Node `id` (ESTALE if the guest forgot it or never had it).
    pub(crate) fn get(&self, id: Inode) -> io::Result<Arc<NodeRef>> {
        if id == 1 {
            return Ok(self.root.clone());
        }
        lock(&self.inner)
            .by_id
            .get(&id)
            .map(|n| n.r.clone())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESTALE))
    }

    /// Counts one lookup of Ceph inode `ino`, whose fresh reference is `r`
    /// (dropped, i.e. put back, when the node is already known).
    pub(crate) fn get_or_insert(&self, ino: u64, r: Arc<NodeRef>) -> Inode {
        if r.ptr() == self.root.ptr() {
            return 1;
        }
        let mut g = lock(&self.inner);
        if let Some(&id) = g.by_ino.get(&ino) {
            if let Some(n) = g.by_id.get_mut(&id) {
                n.lookups += 1;
                return id;
            }
        }
        let id = g.next;
        g.next += 1;
        g.by_ino.insert(ino, id);
        g.by_id.insert(id, Node { r, ino, lookups: 1 });
        id
    }

    /// Releases `count` lookups; at zero the node is gone.
    pub(crate) fn forget(&self, id: Inode, count: u64) {
        let gone = {
            let mut g = lock(&self.inner);
            let Some(n) = g.by_id.get_mut(&id) else {
                return;
            };
            n.lookups = n.lookups.saturating_sub(count);
            if n.lookups > 0 {
                return;
            }
            let n = g.by_id.remove(&id);
            if let Some(n) = &n {
                g.by_ino.remove(&n.ino);
            }
            n
        };
        // The Ceph reference is put outside our lock.
        drop(gone);
    }

    /// Forgets everything but the root (DESTROY or a new INIT).
    pub(crate) fn clear(&self) {
        let old = {
            let mut g = lock(&self.inner);
            g.by_ino.clear();
            std::mem::take(&mut g.by_id)
        };
        drop(old);
    }

    /// Nodes held, root included.
    pub(crate) fn len(&self) -> usize {
        lock(&self.inner).by_id.len() + 1
    }
}

/// What a handle refers to.
pub(crate) enum Open {
    /// An open file; `append`: opened with O_APPEND (libcephfs ignores
    /// it for writes at an explicit offset, so we pass none).
    File(*mut ffi::Fh, bool),
    /// An open directory stream; readdir seeks it, hence the lock.
    Dir(Mutex<*mut ffi::ceph_dir_result>),
}

/// An open file or directory of one node.
pub(crate) struct HandleData {
    pub(crate) inode: Inode,
    /// Keeps the inode referenced while open.
    pub(crate) node: Arc<NodeRef>,
    pub(crate) open: Open,
}

// SAFETY: Fh and ceph_dir_result may be used from any thread (libcephfs
// locks internally); the directory stream is additionally behind a Mutex.
unsafe impl Send for HandleData {}
// SAFETY: as above.
unsafe impl Sync for HandleData {}

impl Drop for HandleData {
    fn drop(&mut self) {
        let (api, m) = (self.node.mnt.api, self.node.mnt.ptr());
        // SAFETY: each handle is closed exactly once, here, with its mount.
        unsafe {
            match &self.open {
                Open::File(fh, _) => {
                    api.ceph_ll_close(m, *fh);
                }
                Open::Dir(d) => {
                    api.ceph_ll_releasedir(m, *lock(d));
                }
            }
        }
    }
}

/// Open handles by id.
pub(crate) struct HandleStore {
    map: Mutex<HashMap<Handle, Arc<HandleData>>>,
    next: AtomicU64,
}

impl HandleStore {
    pub(crate) fn new() -> Self {
        HandleStore {
            map: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    pub(crate) fn insert(&self, h: HandleData) -> Handle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.map).insert(fh, Arc::new(h));
        fh
    }

    /// Handle `fh` of `inode` (EBADF otherwise).
    pub(crate) fn get(&self, fh: Handle, inode: Inode) -> io::Result<Arc<HandleData>> {
        lock(&self.map)
            .get(&fh)
            .filter(|h| h.inode == inode)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    /// Closes `fh` (once the last request using it is done).
    pub(crate) fn remove(&self, fh: Handle, inode: Inode) -> io::Result<()> {
        let h = {
            let mut m = lock(&self.map);
            match m.get(&fh) {
                Some(h) if h.inode == inode => m.remove(&fh),
                _ => None,
            }
        };
        h.map(drop)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    pub(crate) fn clear(&self) {
        let old = std::mem::take(&mut *lock(&self.map));
        drop(old);
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}
