//! [`FileSystem`] for [`CephFs`]: each FUSE operation as `ceph_ll_*` calls
//! with the caller's credentials.

use std::ffi::{c_char, CStr};
use std::io;
use std::ptr;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ffi::{self, check};
use super::inode::{HandleData, Open};
use super::{CephFs, Perm};
use crate::fs::{
    CachePolicy, Context, DirEntry, Entry, FileSystem, Handle, Inode, SetAttr, SetTime, StatFs,
    XattrReply,
};
use crate::fuse::abi::{fopen, init};

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

/// `ceph_statx` → `stat64`.
pub(crate) fn to_stat(x: &ffi::ceph_statx) -> libc::stat64 {
    // SAFETY: stat64 is plain old data; all-zero is a valid value.
    let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
    st.st_dev = x.stx_dev;
    st.st_ino = x.stx_ino;
    st.st_nlink = u64::from(x.stx_nlink);
    st.st_mode = u32::from(x.stx_mode);
    st.st_uid = x.stx_uid;
    st.st_gid = x.stx_gid;
    st.st_rdev = x.stx_rdev;
    st.st_size = x.stx_size as i64;
    st.st_blksize = i64::from(x.stx_blksize);
    st.st_blocks = x.stx_blocks as i64;
    st.st_atime = x.stx_atime.tv_sec;
    st.st_atime_nsec = x.stx_atime.tv_nsec;
    st.st_mtime = x.stx_mtime.tv_sec;
    st.st_mtime_nsec = x.stx_mtime.tv_nsec;
    st.st_ctime = x.stx_ctime.tv_sec;
    st.st_ctime_nsec = x.stx_ctime.tv_nsec;
    st
}

fn now() -> ffi::Timespec {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ffi::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

fn time(t: SetTime) -> ffi::Timespec {
    match t {
        SetTime::Now => now(),
        SetTime::At(s, ns) => ffi::Timespec {
            tv_sec: s,
            tv_nsec: i64::from(ns.min(999_999_999)),
        },
    }
}

fn is_acl(name: &CStr) -> bool {
    let b = name.to_bytes();
    b == b"system.posix_acl_access" || b == b"system.posix_acl_default"
}

const WANT: u32 = ffi::CEPH_STATX_BASIC_STATS;

impl CephFs {
    fn m(&self) -> *mut ffi::ceph_mount_info {
        self.mnt.ptr()
    }

    fn api(&self) -> &'static ffi::Api {
        self.mnt.api
    }

    fn stat(&self, inode: Inode, perm: &Perm) -> io::Result<libc::stat64> {
        let n = self.node(inode)?;
        let mut stx = ffi::ceph_statx::default();
        // SAFETY: valid mount, inode reference, out struct and perms.
        check(unsafe {
            self.api().ceph_ll_getattr(
                self.m(),
                n.ptr(),
                &mut stx,
                WANT,
                ffi::AT_SYMLINK_NOFOLLOW,
                perm.0,
            )
        })?;
        Ok(to_stat(&stx))
    }

    fn open_flags(&self, flags: u32) -> i32 {
        let mut out = flags as i32
            & (libc::O_ACCMODE | libc::O_APPEND | libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC);
        if self.writeback.load(Ordering::Relaxed) {
            if out & libc::O_ACCMODE == libc::O_WRONLY {
                out = (out & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            out &= !libc::O_APPEND;
        }
        out
    }

    fn fopen_flags(&self) -> u32 {
        match self.cfg.cache {
            CachePolicy::Never | CachePolicy::Metadata => fopen::DIRECT_IO,
            CachePolicy::Auto => 0,
            CachePolicy::Always => fopen::KEEP_CACHE,
        }
    }

    fn create_mode(&self, mode: u32, umask: u32) -> u32 {
        if self.dont_mask.load(Ordering::Relaxed) {
            mode & !umask
        } else {
            mode
        }
    }

    fn file(
        &self,
        fh: Handle,
        inode: Inode,
    ) -> io::Result<(std::sync::Arc<HandleData>, *mut ffi::Fh)> {
        let h = self.handles.get(fh, inode)?;
        match h.open {
            Open::File(f, _) => Ok((h.clone(), f)),
            Open::Dir(_) => Err(err(libc::EISDIR)),
        }
    }

    fn xattrs(&self, name: Option<&CStr>) -> io::Result<()> {
        if !self.cfg.xattr {
            return Err(err(libc::ENOSYS));
        }
        if name.is_some_and(is_acl) && !self.cfg.posix_acl {
            return Err(err(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    /// Runs a `ceph_ll_*` call that hands back a new inode reference and
    /// its attributes, then counts the lookup.
    fn made(
        &self,
        call: impl FnOnce(*mut *mut ffi::Inode, *mut ffi::ceph_statx) -> i32,
    ) -> io::Result<Entry> {
        let mut out = ptr::null_mut();
        let mut stx = ffi::ceph_statx::default();
        check(call(&mut out, &mut stx))?;
        if out.is_null() {
            return Err(err(libc::EIO));
        }
        Ok(self.adopt(out, &stx))
    }
}

impl FileSystem for CephFs {
    fn init(&self, capable: u64) -> io::Result<u64> {
        let mut want = init::DO_READDIRPLUS | init::READDIRPLUS_AUTO;
        match self.cfg.cache {
            CachePolicy::Auto => want |= init::AUTO_INVAL_DATA,
            CachePolicy::Always => want |= init::CACHE_SYMLINKS,
            _ => {}
        }
        let wb = self.cfg.writeback
            && self.cfg.cache != CachePolicy::Never
            && capable & init::WRITEBACK_CACHE != 0;
        if wb {
            want |= init::WRITEBACK_CACHE;
        }
        self.writeback.store(wb, Ordering::Relaxed);
        let acl = self.cfg.posix_acl
            && self.cfg.xattr
            && capable & (init::POSIX_ACL | init::DONT_MASK) == (init::POSIX_ACL | init::DONT_MASK);
        if acl {
            want |= init::POSIX_ACL | init::DONT_MASK;
        }
        self.dont_mask.store(acl, Ordering::Relaxed);
        Ok(want)
    }

    fn destroy(&self) {
        self.handles.clear();
        self.inodes.clear();
    }

    fn lookup(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        let p = self.node(parent)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, parent reference, C string, out pointers.
        self.made(|out, stx| unsafe {
            self.api().ceph_ll_lookup(
                self.m(),
                p.ptr(),
                name.as_ptr(),
                out,
                stx,
                WANT,
                ffi::AT_SYMLINK_NOFOLLOW,
                perm.0,
            )
        })
    }

    fn forget(&self, inode: Inode, count: u64) {
        self.inodes.forget(inode, count);
    }

    fn getattr(
        &self,
        ctx: Context,
        inode: Inode,
        _fh: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        let perm = Perm::new(self.api(), ctx)?;
        Ok((self.stat(inode, &perm)?, self.cfg.cache.timeout()))
    }

    fn setattr(
        &self,
        ctx: Context,
        inode: Inode,
        a: SetAttr,
        _fh: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        if let Some(size) = a.size {
            // On its own: a truncate stamps mtime itself, which must not
            // override an mtime set in the same request.
            i64::try_from(size).map_err(|_| err(libc::EFBIG))?;
            let mut stx = ffi::ceph_statx {
                stx_size: size,
                ..Default::default()
            };
            // SAFETY: valid mount, inode reference, statx and perms.
            check(unsafe {
                self.api().ceph_ll_setattr(
                    self.m(),
                    n.ptr(),
                    &mut stx,
                    ffi::CEPH_SETATTR_SIZE,
                    perm.0,
                )
            })
            .map_err(osd_timeout)?;
        }
        let mut stx = ffi::ceph_statx::default();
        let mut mask = 0;
        if let Some(m) = a.mode {
            stx.stx_mode = (m & 0o7777) as u16;
            mask |= ffi::CEPH_SETATTR_MODE;
        }
        if let Some(u) = a.uid {
            stx.stx_uid = u;
            mask |= ffi::CEPH_SETATTR_UID;
        }
        if let Some(g) = a.gid {
            stx.stx_gid = g;
            mask |= ffi::CEPH_SETATTR_GID;
        }
        if let Some(t) = a.atime {
            stx.stx_atime = time(t);
            mask |= ffi::CEPH_SETATTR_ATIME;
        }
        if let Some(t) = a.mtime {
            stx.stx_mtime = time(t);
            mask |= ffi::CEPH_SETATTR_MTIME;
        }
        if mask != 0 {
            // SAFETY: valid mount, inode reference, statx and perms.
            check(unsafe {
                self.api()
                    .ceph_ll_setattr(self.m(), n.ptr(), &mut stx, mask, perm.0)
            })?;
        }
        Ok((self.stat(inode, &perm)?, self.cfg.cache.timeout()))
    }

    fn readlink(&self, ctx: Context, inode: Inode) -> io::Result<Vec<u8>> {
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: buf is valid for its length.
        let len = check(unsafe {
            self.api().ceph_ll_readlink(
                self.m(),
                n.ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
                perm.0,
            )
        })?;
        buf.truncate(len as usize);
        Ok(buf)
    }

    fn symlink(
        &self,
        ctx: Context,
        target: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        let p = self.node(parent)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, parent reference, C strings, out pointers.
        self.made(|out, stx| unsafe {
            self.api().ceph_ll_symlink(
                self.m(),
                p.ptr(),
                name.as_ptr(),
                target.as_ptr(),
                out,
                stx,
                WANT,
                ffi::AT_SYMLINK_NOFOLLOW,
                perm.0,
            )
        })
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
        let p = self.node(parent)?;
        let perm = Perm::new(self.api(), ctx)?;
        let mode = self.create_mode(mode, umask);
        let rdev = crate::fuse::server::decode_dev(rdev);
        // SAFETY: valid mount, parent reference, C string, out pointers.
        self.made(|out, stx| unsafe {
            self.api().ceph_ll_mknod(
                self.m(),
                p.ptr(),
                name.as_ptr(),
                mode,
                rdev,
                out,
                stx,
                WANT,
                ffi::AT_SYMLINK_NOFOLLOW,
                perm.0,
            )
        })
    }

    fn mkdir(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        let p = self.node(parent)?;
        let perm = Perm::new(self.api(), ctx)?;
        let mode = self.create_mode(mode, umask);
        // SAFETY: valid mount, parent reference, C string, out pointers.
        self.made(|out, stx| unsafe {
            self.api().ceph_ll_mkdir(
                self.m(),
                p.ptr(),
                name.as_ptr(),
                mode,
                out,
                stx,
                WANT,
                ffi::AT_SYMLINK_NOFOLLOW,
                perm.0,
            )
        })
    }

    fn unlink(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        let p = self.node(parent)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, parent reference, C string, perms.
        check(unsafe {
            self.api()
                .ceph_ll_unlink(self.m(), p.ptr(), name.as_ptr(), perm.0)
        })?;
        Ok(())
    }

    fn rmdir(&self, ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        let p = self.node(parent)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, parent reference, C string, perms.
        check(unsafe {
            self.api()
                .ceph_ll_rmdir(self.m(), p.ptr(), name.as_ptr(), perm.0)
        })?;
        Ok(())
    }

    fn rename(
        &self,
        ctx: Context,
        olddir: Inode,
        oldname: &CStr,
        newdir: Inode,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        // libcephfs has no renameat2: NOREPLACE/EXCHANGE/WHITEOUT would be
        // racy emulations, so they are refused like on a filesystem
        // without them.
        if flags != 0 {
            return Err(err(libc::EINVAL));
        }
        let o = self.node(olddir)?;
        let n = self.node(newdir)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, references, C strings, perms.
        check(unsafe {
            self.api().ceph_ll_rename(
                self.m(),
                o.ptr(),
                oldname.as_ptr(),
                n.ptr(),
                newname.as_ptr(),
                perm.0,
            )
        })?;
        Ok(())
    }

    fn link(
        &self,
        ctx: Context,
        inode: Inode,
        newparent: Inode,
        newname: &CStr,
    ) -> io::Result<Entry> {
        let n = self.node(inode)?;
        let p = self.node(newparent)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, references, C string, perms.
        check(unsafe {
            self.api()
                .ceph_ll_link(self.m(), n.ptr(), p.ptr(), newname.as_ptr(), perm.0)
        })?;
        // The new name is one more lookup of the same node.
        self.lookup(ctx, newparent, newname)
    }

    fn open(&self, ctx: Context, inode: Inode, flags: u32) -> io::Result<(Handle, u32)> {
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        let kind = self.stat(inode, &perm)?.st_mode & libc::S_IFMT;
        match kind {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(err(libc::EISDIR)),
            libc::S_IFLNK => return Err(err(libc::ELOOP)),
            _ => return Err(err(libc::ENXIO)),
        }
        let mut fh = ptr::null_mut();
        // SAFETY: valid mount, inode reference, out pointer and perms.
        check(unsafe {
            self.api()
                .ceph_ll_open(self.m(), n.ptr(), self.open_flags(flags), &mut fh, perm.0)
        })?;
        let append = self.open_flags(flags) & libc::O_APPEND != 0;
        let h = self.handles.insert(HandleData {
            inode,
            node: n,
            open: Open::File(fh, append),
        });
        Ok((h, self.fopen_flags()))
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
        let p = self.node(parent)?;
        let perm = Perm::new(self.api(), ctx)?;
        let oflags = self.open_flags(flags) | libc::O_CREAT | (flags as i32 & libc::O_EXCL);
        let mut fh = ptr::null_mut();
        let mode = self.create_mode(mode, umask) | libc::S_IFREG;
        // SAFETY: valid mount, parent reference, C string, out pointers.
        let e = self.made(|out, stx| unsafe {
            self.api().ceph_ll_create(
                self.m(),
                p.ptr(),
                name.as_ptr(),
                mode,
                oflags,
                out,
                &mut fh,
                stx,
                WANT,
                ffi::AT_SYMLINK_NOFOLLOW,
                perm.0,
            )
        })?;
        let node = self.node(e.inode)?;
        let h = self.handles.insert(HandleData {
            inode: e.inode,
            node,
            open: Open::File(fh, oflags & libc::O_APPEND != 0),
        });
        Ok((e, h, self.fopen_flags()))
    }

    fn read(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        size: u32,
    ) -> io::Result<Vec<u8>> {
        let (_h, f) = self.file(fh, inode)?;
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is valid for `size` bytes.
        let n = check(unsafe {
            self.api().ceph_ll_read(
                self.m(),
                f,
                off,
                u64::from(size),
                buf.as_mut_ptr().cast::<c_char>(),
            )
        })
        .map_err(osd_timeout)?;
        buf.truncate(n as usize);
        Ok(buf)
    }

    fn write(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        data: &[u8],
    ) -> io::Result<usize> {
        let (h, f) = self.file(fh, inode)?;
        let mut off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        if matches!(h.open, Open::File(_, true)) {
            // Negative: at the end of the file, decided under Ceph's caps.
            off = -1;
        }
        // SAFETY: data is valid for its length.
        let n = check(unsafe {
            self.api().ceph_ll_write(
                self.m(),
                f,
                off,
                data.len() as u64,
                data.as_ptr().cast::<c_char>(),
            )
        })
        .map_err(osd_timeout)?;
        Ok(n as usize)
    }

    fn flush(&self, _ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        self.file(fh, inode).map(|_| ())
    }

    fn release(&self, _ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        self.handles.remove(fh, inode)
    }

    fn fsync(&self, _ctx: Context, inode: Inode, datasync: bool, fh: Handle) -> io::Result<()> {
        let (_h, f) = self.file(fh, inode)?;
        // SAFETY: valid mount and open file.
        check(unsafe { self.api().ceph_ll_fsync(self.m(), f, i32::from(datasync)) })
            .map_err(osd_timeout)?;
        Ok(())
    }

    fn statfs(&self, _ctx: Context, inode: Inode) -> io::Result<StatFs> {
        let n = self.node(inode)?;
        // SAFETY: statvfs is plain old data.
        let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid mount, reference and out struct.
        check(unsafe { self.api().ceph_ll_statfs(self.m(), n.ptr(), &mut v) })?;
        // SAFETY: statvfs64 is plain old data.
        let mut s: StatFs = unsafe { std::mem::zeroed() };
        s.f_bsize = v.f_bsize;
        s.f_frsize = v.f_frsize;
        s.f_blocks = v.f_blocks;
        s.f_bfree = v.f_bfree;
        s.f_bavail = v.f_bavail;
        s.f_files = v.f_files;
        s.f_ffree = v.f_ffree;
        s.f_favail = v.f_favail;
        s.f_fsid = v.f_fsid;
        s.f_flag = v.f_flag;
        s.f_namemax = v.f_namemax;
        Ok(s)
    }

    fn setxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.xattrs(Some(name))?;
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, reference, C string and value buffer.
        check(unsafe {
            self.api().ceph_ll_setxattr(
                self.m(),
                n.ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags as i32,
                perm.0,
            )
        })?;
        Ok(())
    }

    fn getxattr(
        &self,
        ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        self.xattrs(Some(name))?;
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is valid for `size` bytes (none when size is 0).
        let len = check(unsafe {
            self.api().ceph_ll_getxattr(
                self.m(),
                n.ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                perm.0,
            )
        })?;
        if size == 0 {
            return Ok(XattrReply::Size(len));
        }
        buf.truncate(len as usize);
        Ok(XattrReply::Data(buf))
    }

    fn listxattr(&self, ctx: Context, inode: Inode, size: u32) -> io::Result<XattrReply> {
        self.xattrs(None)?;
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        let mut buf = vec![0u8; size as usize];
        let mut len = 0usize;
        // SAFETY: buf is valid for `size` bytes; valid out pointer.
        check(unsafe {
            self.api().ceph_ll_listxattr(
                self.m(),
                n.ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
                &mut len,
                perm.0,
            )
        })?;
        if size == 0 {
            return Ok(XattrReply::Size(
                u32::try_from(len).map_err(|_| err(libc::E2BIG))?,
            ));
        }
        buf.truncate(len.min(buf.len()));
        Ok(XattrReply::Data(buf))
    }

    fn removexattr(&self, ctx: Context, inode: Inode, name: &CStr) -> io::Result<()> {
        self.xattrs(Some(name))?;
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        // SAFETY: valid mount, reference, C string and perms.
        check(unsafe {
            self.api()
                .ceph_ll_removexattr(self.m(), n.ptr(), name.as_ptr(), perm.0)
        })?;
        Ok(())
    }

    fn opendir(&self, ctx: Context, inode: Inode, _flags: u32) -> io::Result<(Handle, u32)> {
        let n = self.node(inode)?;
        let perm = Perm::new(self.api(), ctx)?;
        let mut d = ptr::null_mut();
        // SAFETY: valid mount, reference, out pointer and perms.
        check(unsafe {
            self.api()
                .ceph_ll_opendir(self.m(), n.ptr(), &mut d, perm.0)
        })?;
        let h = self.handles.insert(HandleData {
            inode,
            node: n,
            open: Open::Dir(Mutex::new(d)),
        });
        let flags = if self.cfg.cache == CachePolicy::Always {
            fopen::CACHE_DIR | fopen::KEEP_CACHE
        } else {
            0
        };
        Ok((h, flags))
    }

    fn readdir(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        size: u32,
    ) -> io::Result<Vec<DirEntry>> {
        let h = self.handles.get(fh, inode)?;
        let Open::Dir(d) = &h.open else {
            return Err(err(libc::ENOTDIR));
        };
        let d = d.lock().unwrap_or_else(|p| p.into_inner());
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        // SAFETY: valid mount and directory stream (locked).
        unsafe { self.api().ceph_seekdir(self.m(), *d, off) };
        let mut out = Vec::new();
        let mut used = 0usize;
        while used < size as usize {
            // SAFETY: dirent is plain old data.
            let mut de: libc::dirent = unsafe { std::mem::zeroed() };
            // SAFETY: valid mount, stream and out struct.
            let r = check(unsafe { self.api().ceph_readdir_r(self.m(), *d, &mut de) })?;
            if r == 0 {
                break;
            }
            // SAFETY: valid mount and stream.
            let next = unsafe { self.api().ceph_telldir(self.m(), *d) };
            let name: Vec<u8> = de
                .d_name
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            used += (24 + name.len() + 7) & !7;
            out.push(DirEntry {
                ino: de.d_ino,
                offset: next as u64,
                typ: u32::from(de.d_type),
                name,
            });
        }
        Ok(out)
    }

    fn releasedir(&self, _ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        self.handles.remove(fh, inode)
    }

    fn fsyncdir(&self, _ctx: Context, inode: Inode, datasync: bool, _fh: Handle) -> io::Result<()> {
        let n = self.node(inode)?;
        // SAFETY: valid mount and reference.
        check(unsafe {
            self.api()
                .ceph_ll_sync_inode(self.m(), n.ptr(), i32::from(datasync))
        })?;
        Ok(())
    }

    fn access(&self, ctx: Context, inode: Inode, mask: u32) -> io::Result<()> {
        let perm = Perm::new(self.api(), ctx)?;
        let st = self.stat(inode, &perm)?;
        let mask = mask & 7;
        if mask == 0 {
            return Ok(());
        }
        let mode = st.st_mode;
        let dir = mode & libc::S_IFMT == libc::S_IFDIR;
        if ctx.uid == 0 {
            if mask & 1 != 0 && !dir && mode & 0o111 == 0 {
                return Err(err(libc::EACCES));
            }
            return Ok(());
        }
        let bits = if st.st_uid == ctx.uid {
            (mode >> 6) & 7
        } else if st.st_gid == ctx.gid {
            (mode >> 3) & 7
        } else {
            mode & 7
        };
        if bits & mask == mask {
            Ok(())
        } else {
            Err(err(libc::EACCES))
        }
    }

    fn fallocate(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        mode: u32,
        offset: u64,
        length: u64,
    ) -> io::Result<()> {
        let (_h, f) = self.file(fh, inode)?;
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        let len = i64::try_from(length).map_err(|_| err(libc::EINVAL))?;
        // SAFETY: valid mount and open file.
        check(unsafe {
            self.api()
                .ceph_ll_fallocate(self.m(), f, mode as i32, off, len)
        })?;
        Ok(())
    }

    fn lseek(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let (_h, f) = self.file(fh, inode)?;
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        // SAFETY: valid mount and open file.
        let r = unsafe { self.api().ceph_ll_lseek(self.m(), f, off, whence as i32) };
        if r < 0 {
            return Err(ffi::errno(r));
        }
        Ok(r as u64)
    }

    fn syncfs(&self, _ctx: Context, _inode: Inode) -> io::Result<()> {
        // SAFETY: valid mount.
        check(unsafe { self.api().ceph_sync_fs(self.m()) })?;
        Ok(())
    }
}

/// An OSD that did not answer within `rados_osd_op_timeout` is reported by
/// libcephfs as ETIMEDOUT; to the guest that is an I/O error.
fn osd_timeout(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ETIMEDOUT) {
        err(libc::EIO)
    } else {
        e
    }
}
