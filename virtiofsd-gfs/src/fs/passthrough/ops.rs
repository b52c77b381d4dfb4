//! [`FileSystem`] for [`PassthroughFs`]: each operation on the host.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::inode::Anchor;
use super::sys::{self, cvt, Creds};
use super::PassthroughFs;
use crate::fs::{
    CachePolicy, Context, DirEntry, Entry, FileSystem, Handle, Inode, SetAttr, SetTime, StatFs,
    XattrReply,
};
use crate::fuse::abi::{fopen, init};
use crate::fuse::server::decode_dev;

fn err(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

fn cvt_size(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

fn timespec(t: Option<SetTime>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At(s, ns)) => libc::timespec {
            tv_sec: s,
            tv_nsec: i64::from(ns.min(999_999_999)),
        },
    }
}

/// The ACL xattrs, refused unless `--posix-acl`.
fn is_acl(name: &CStr) -> bool {
    let b = name.to_bytes();
    b == b"system.posix_acl_access" || b == b"system.posix_acl_default"
}

/// Parses `getdents64` output, bounds-checked.
fn parse_dirents(buf: &[u8]) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 19 <= buf.len() {
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[i..i + 8]);
            u64::from_ne_bytes(a)
        };
        let ino = u64_at(at);
        let off = u64_at(at + 8);
        let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
        let typ = buf[at + 18];
        if reclen < 19 || at + reclen > buf.len() {
            break;
        }
        let raw = &buf[at + 19..at + reclen];
        let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        out.push(DirEntry {
            ino,
            offset: off,
            typ: u32::from(typ),
            name: name.to_vec(),
        });
        at += reclen;
    }
    out
}

impl PassthroughFs {
    fn xattr_fd(&self, ino: Inode) -> io::Result<std::os::fd::OwnedFd> {
        if !self.cfg.xattr {
            return Err(err(libc::ENOSYS));
        }
        let d = self.inode(ino)?;
        match d.kind {
            libc::S_IFREG => self.reopen(&d, libc::O_RDONLY | libc::O_NONBLOCK),
            libc::S_IFDIR => self.reopen(&d, libc::O_RDONLY | libc::O_DIRECTORY),
            _ => Err(err(libc::EOPNOTSUPP)),
        }
    }

    fn check_acl(&self, name: &CStr) -> io::Result<()> {
        if is_acl(name) && !self.cfg.posix_acl {
            return Err(err(libc::EOPNOTSUPP));
        }
        Ok(())
    }

    fn handle(
        &self,
        fh: Handle,
        ino: Inode,
    ) -> io::Result<std::sync::Arc<super::inode::HandleData>> {
        self.handles.get(fh, ino)
    }

    fn proc_name(fd: BorrowedFd<'_>) -> std::ffi::CString {
        sys::fd_name(fd)
    }
}

impl FileSystem for PassthroughFs {
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

    fn lookup(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<Entry> {
        self.do_lookup(parent, name)
    }

    fn forget(&self, inode: Inode, count: u64) {
        self.inodes.forget(inode, count);
    }

    fn getattr(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        let st = match fh.and_then(|fh| self.handle(fh, inode).ok()) {
            Some(h) => sys::fstat(h.file.as_fd())?,
            None => {
                let d = self.inode(inode)?;
                sys::fstat(self.ifd(&d)?.as_fd())?
            }
        };
        Ok((st, self.cfg.cache.timeout()))
    }

    fn setattr(
        &self,
        ctx: Context,
        inode: Inode,
        a: SetAttr,
        fh: Option<Handle>,
    ) -> io::Result<(libc::stat64, Duration)> {
        let d = self.inode(inode)?;
        let ifd = self.ifd(&d)?;
        let h = fh.and_then(|fh| self.handle(fh, inode).ok());
        let link = d.kind == libc::S_IFLNK;
        let pname = Self::proc_name(ifd.as_fd());
        if let Some(mode) = a.mode {
            if link {
                return Err(err(libc::EOPNOTSUPP));
            }
            // SAFETY: valid fds and C string.
            cvt(unsafe {
                libc::fchmodat(self.borrowed_proc().as_raw_fd(), pname.as_ptr(), mode, 0)
            })?;
        }
        if a.uid.is_some() || a.gid.is_some() {
            let uid = a.uid.unwrap_or(u32::MAX);
            let gid = a.gid.unwrap_or(u32::MAX);
            // SAFETY: empty path on an O_PATH fd with AT_EMPTY_PATH.
            cvt(unsafe {
                libc::fchownat(
                    ifd.as_fd().as_raw_fd(),
                    c"".as_ptr(),
                    uid,
                    gid,
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        if let Some(size) = a.size {
            let size = i64::try_from(size).map_err(|_| err(libc::EFBIG))?;
            let own;
            let fd = match &h {
                Some(h) => h.file.as_fd(),
                None => {
                    if d.kind != libc::S_IFREG {
                        return Err(err(if d.is_dir() {
                            libc::EISDIR
                        } else {
                            libc::EINVAL
                        }));
                    }
                    own = self.reopen(&d, libc::O_WRONLY)?;
                    own.as_fd()
                }
            };
            // SAFETY: valid fd.
            cvt(unsafe { libc::ftruncate64(fd.as_raw_fd(), size) })?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            if link {
                return Err(err(libc::EOPNOTSUPP));
            }
            let ts = [timespec(a.atime), timespec(a.mtime)];
            // SAFETY: valid fds, C string and a two-element timespec array.
            cvt(unsafe {
                libc::utimensat(
                    self.borrowed_proc().as_raw_fd(),
                    pname.as_ptr(),
                    ts.as_ptr(),
                    0,
                )
            })?;
        }
        drop(ifd);
        self.getattr(ctx, inode, None)
    }

    fn readlink(&self, _ctx: Context, inode: Inode) -> io::Result<Vec<u8>> {
        let d = self.inode(inode)?;
        let fd = self.ifd(&d)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let n = cvt_size(unsafe {
            libc::readlinkat(
                fd.as_fd().as_raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        buf.truncate(n);
        Ok(buf)
    }

    fn symlink(
        &self,
        ctx: Context,
        target: &CStr,
        parent: Inode,
        name: &CStr,
    ) -> io::Result<Entry> {
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        {
            let _c = Creds::switch(ctx.uid, ctx.gid)?;
            // SAFETY: valid C strings and dir fd.
            cvt(unsafe {
                libc::symlinkat(target.as_ptr(), pfd.as_fd().as_raw_fd(), name.as_ptr())
            })?;
        }
        self.do_lookup(parent, name)
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
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        {
            let _c = Creds::switch(ctx.uid, ctx.gid)?;
            let mode = self.create_mode(mode, umask);
            // SAFETY: valid C string and dir fd.
            cvt(unsafe {
                libc::mknodat(
                    pfd.as_fd().as_raw_fd(),
                    name.as_ptr(),
                    mode,
                    decode_dev(rdev),
                )
            })?;
        }
        self.do_lookup(parent, name)
    }

    fn mkdir(
        &self,
        ctx: Context,
        parent: Inode,
        name: &CStr,
        mode: u32,
        umask: u32,
    ) -> io::Result<Entry> {
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        {
            let _c = Creds::switch(ctx.uid, ctx.gid)?;
            let mode = self.create_mode(mode, umask);
            // SAFETY: valid C string and dir fd.
            cvt(unsafe { libc::mkdirat(pfd.as_fd().as_raw_fd(), name.as_ptr(), mode) })?;
        }
        self.do_lookup(parent, name)
    }

    fn unlink(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        // SAFETY: valid C string and dir fd.
        cvt(unsafe { libc::unlinkat(pfd.as_fd().as_raw_fd(), name.as_ptr(), 0) }).map(drop)
    }

    fn rmdir(&self, _ctx: Context, parent: Inode, name: &CStr) -> io::Result<()> {
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        // SAFETY: valid C string and dir fd.
        cvt(unsafe { libc::unlinkat(pfd.as_fd().as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
            .map(drop)
    }

    fn rename(
        &self,
        _ctx: Context,
        olddir: Inode,
        oldname: &CStr,
        newdir: Inode,
        newname: &CStr,
        flags: u32,
    ) -> io::Result<()> {
        let allowed = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
        if flags & !allowed != 0 {
            return Err(err(libc::EINVAL));
        }
        let o = self.inode(olddir)?;
        let n = self.inode(newdir)?;
        let ofd = self.dir(&o)?;
        let nfd = self.dir(&n)?;
        // SAFETY: valid C strings and dir fds.
        cvt(unsafe {
            libc::renameat2(
                ofd.as_fd().as_raw_fd(),
                oldname.as_ptr(),
                nfd.as_fd().as_raw_fd(),
                newname.as_ptr(),
                flags,
            )
        })
        .map(drop)
    }

    fn link(
        &self,
        _ctx: Context,
        inode: Inode,
        newparent: Inode,
        newname: &CStr,
    ) -> io::Result<Entry> {
        let d = self.inode(inode)?;
        if d.is_dir() {
            return Err(err(libc::EPERM));
        }
        let fd = self.ifd(&d)?;
        let p = self.inode(newparent)?;
        let pfd = self.dir(&p)?;
        let pname = Self::proc_name(fd.as_fd());
        // SAFETY: valid fds and C strings; following the /proc magic link
        // names exactly the inode's object.
        cvt(unsafe {
            libc::linkat(
                self.borrowed_proc().as_raw_fd(),
                pname.as_ptr(),
                pfd.as_fd().as_raw_fd(),
                newname.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })?;
        self.do_lookup(newparent, newname)
    }

    fn open(&self, _ctx: Context, inode: Inode, flags: u32) -> io::Result<(Handle, u32)> {
        let d = self.inode(inode)?;
        match d.kind {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(err(libc::EISDIR)),
            libc::S_IFLNK => return Err(err(libc::ELOOP)),
            _ => return Err(err(libc::ENXIO)),
        }
        let f = self.reopen(&d, self.open_flags(flags))?;
        Ok((self.handles.insert(inode, f), self.fopen_flags()))
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
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        let oflags = self.open_flags(flags)
            | libc::O_CREAT
            | libc::O_NOFOLLOW
            | (flags as i32 & libc::O_EXCL);
        let f = {
            let _c = Creds::switch(ctx.uid, ctx.gid)?;
            sys::openat(pfd.as_fd(), name, oflags, self.create_mode(mode, umask))?
        };
        let e = self.do_lookup(parent, name)?;
        Ok((e, self.handles.insert(e.inode, f), self.fopen_flags()))
    }

    fn tmpfile(
        &self,
        ctx: Context,
        parent: Inode,
        mode: u32,
        flags: u32,
        umask: u32,
    ) -> io::Result<(Entry, Handle, u32)> {
        let p = self.inode(parent)?;
        let pfd = self.dir(&p)?;
        let mut oflags = self.open_flags(flags);
        if oflags & libc::O_ACCMODE == libc::O_RDONLY {
            oflags |= libc::O_RDWR;
        }
        let f = {
            let _c = Creds::switch(ctx.uid, ctx.gid)?;
            sys::openat(
                pfd.as_fd(),
                c".",
                oflags | libc::O_TMPFILE,
                self.create_mode(mode, umask),
            )?
        };
        let st = sys::fstat(f.as_fd())?;
        let path = sys::openat(
            self.proc_fd.as_fd(),
            &sys::fd_name(f.as_fd()),
            libc::O_PATH,
            0,
        )?;
        let id = self
            .inodes
            .get_or_insert((st.st_dev, st.st_ino), libc::S_IFREG, Anchor::Fd(path));
        Ok((
            self.entry(id, st),
            self.handles.insert(id, f),
            self.fopen_flags(),
        ))
    }

    fn read(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        size: u32,
    ) -> io::Result<Vec<u8>> {
        let h = self.handle(fh, inode)?;
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is valid for its length.
        let n = cvt_size(unsafe {
            libc::pread64(h.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), off)
        })?;
        buf.truncate(n);
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
        let h = self.handle(fh, inode)?;
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        // SAFETY: data is valid for its length.
        cvt_size(unsafe {
            libc::pwrite64(h.file.as_raw_fd(), data.as_ptr().cast(), data.len(), off)
        })
    }

    fn flush(&self, _ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        let h = self.handle(fh, inode)?;
        // close(dup(fd)): what close(2) would do for locks and NFS-like
        // filesystems, without closing the handle itself.
        let dup = h.file.try_clone()?;
        drop(dup);
        Ok(())
    }

    fn release(&self, _ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        self.handles.remove(fh, inode)
    }

    fn fsync(&self, _ctx: Context, inode: Inode, datasync: bool, fh: Handle) -> io::Result<()> {
        let h = self.handle(fh, inode)?;
        // SAFETY: valid fd.
        cvt(unsafe {
            if datasync {
                libc::fdatasync(h.file.as_raw_fd())
            } else {
                libc::fsync(h.file.as_raw_fd())
            }
        })
        .map(drop)
    }

    fn statfs(&self, _ctx: Context, inode: Inode) -> io::Result<StatFs> {
        let d = self.inode(inode)?;
        let fd = self.ifd(&d)?;
        // SAFETY: plain data, filled by a successful call.
        let mut s: libc::statvfs64 = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out pointer.
        cvt(unsafe { libc::fstatvfs64(fd.as_fd().as_raw_fd(), &mut s) })?;
        Ok(s)
    }

    fn setxattr(
        &self,
        _ctx: Context,
        inode: Inode,
        name: &CStr,
        value: &[u8],
        flags: u32,
    ) -> io::Result<()> {
        self.check_acl(name)?;
        let f = self.xattr_fd(inode)?;
        // SAFETY: valid fd, C string and value buffer.
        cvt(unsafe {
            libc::fsetxattr(
                f.as_raw_fd(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags as i32,
            )
        })
        .map(drop)
    }

    fn getxattr(
        &self,
        _ctx: Context,
        inode: Inode,
        name: &CStr,
        size: u32,
    ) -> io::Result<XattrReply> {
        self.check_acl(name).map_err(|_| err(libc::ENODATA))?;
        let f = self.xattr_fd(inode)?;
        let mut buf = vec![0u8; size as usize];
        // SAFETY: valid fd and C string; buf valid for its length (0: probe).
        let n = cvt_size(unsafe {
            libc::fgetxattr(
                f.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        })?;
        if size == 0 {
            return Ok(XattrReply::Size(n as u32));
        }
        buf.truncate(n);
        Ok(XattrReply::Data(buf))
    }

    fn listxattr(&self, _ctx: Context, inode: Inode, size: u32) -> io::Result<XattrReply> {
        let f = self.xattr_fd(inode)?;
        let mut buf = vec![0u8; size as usize];
        // SAFETY: valid fd; buf valid for its length (0: probe).
        let n = cvt_size(unsafe {
            libc::flistxattr(f.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        })?;
        if size == 0 {
            return Ok(XattrReply::Size(n as u32));
        }
        buf.truncate(n);
        Ok(XattrReply::Data(buf))
    }

    fn removexattr(&self, _ctx: Context, inode: Inode, name: &CStr) -> io::Result<()> {
        self.check_acl(name)?;
        let f = self.xattr_fd(inode)?;
        // SAFETY: valid fd and C string.
        cvt(unsafe { libc::fremovexattr(f.as_raw_fd(), name.as_ptr()) }).map(drop)
    }

    fn opendir(&self, _ctx: Context, inode: Inode, _flags: u32) -> io::Result<(Handle, u32)> {
        let d = self.inode(inode)?;
        if !d.is_dir() {
            return Err(err(libc::ENOTDIR));
        }
        let f = self.reopen(&d, libc::O_RDONLY | libc::O_DIRECTORY)?;
        let flags = if self.cfg.cache == CachePolicy::Always {
            fopen::CACHE_DIR | fopen::KEEP_CACHE
        } else {
            0
        };
        Ok((self.handles.insert(inode, f), flags))
    }

    fn readdir(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        size: u32,
    ) -> io::Result<Vec<DirEntry>> {
        let h = self.handle(fh, inode)?;
        let _g = h.dir_lock.lock().unwrap_or_else(|p| p.into_inner());
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        // SAFETY: valid fd.
        if unsafe { libc::lseek64(h.file.as_raw_fd(), off, libc::SEEK_SET) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; (size as usize).clamp(1024, 64 * 1024)];
        // SAFETY: buf valid for its length; getdents64 writes at most that.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                h.file.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        let n = cvt_size(n as isize)?;
        Ok(parse_dirents(&buf[..n.min(buf.len())]))
    }

    fn releasedir(&self, _ctx: Context, inode: Inode, fh: Handle) -> io::Result<()> {
        self.handles.remove(fh, inode)
    }

    fn fsyncdir(&self, ctx: Context, inode: Inode, datasync: bool, fh: Handle) -> io::Result<()> {
        self.fsync(ctx, inode, datasync, fh)
    }

    fn access(&self, ctx: Context, inode: Inode, mask: u32) -> io::Result<()> {
        let d = self.inode(inode)?;
        let st = sys::fstat(self.ifd(&d)?.as_fd())?;
        let mask = mask & 7;
        if mask == 0 {
            return Ok(());
        }
        let mode = st.st_mode;
        if ctx.uid == 0 {
            // root may do anything but execute a file nobody may execute.
            if mask & 1 != 0 && d.kind != libc::S_IFDIR && mode & 0o111 == 0 {
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
        let h = self.handle(fh, inode)?;
        let off = i64::try_from(offset).map_err(|_| err(libc::EINVAL))?;
        let len = i64::try_from(length).map_err(|_| err(libc::EINVAL))?;
        // SAFETY: valid fd.
        cvt(unsafe { libc::fallocate64(h.file.as_raw_fd(), mode as i32, off, len) }).map(drop)
    }

    fn lseek(
        &self,
        _ctx: Context,
        inode: Inode,
        fh: Handle,
        offset: u64,
        whence: u32,
    ) -> io::Result<u64> {
        let h = self.handle(fh, inode)?;
        // SAFETY: valid fd; the kernel validates whence and offset.
        let r = unsafe { libc::lseek64(h.file.as_raw_fd(), offset as i64, whence as i32) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as u64)
    }

    fn copy_file_range(
        &self,
        _ctx: Context,
        inode_in: Inode,
        fh_in: Handle,
        off_in: u64,
        inode_out: Inode,
        fh_out: Handle,
        off_out: u64,
        len: u64,
    ) -> io::Result<usize> {
        let hi = self.handle(fh_in, inode_in)?;
        let ho = self.handle(fh_out, inode_out)?;
        let mut oi = i64::try_from(off_in).map_err(|_| err(libc::EINVAL))?;
        let mut oo = i64::try_from(off_out).map_err(|_| err(libc::EINVAL))?;
        // SAFETY: valid fds and offset pointers.
        cvt_size(unsafe {
            libc::copy_file_range(
                hi.file.as_raw_fd(),
                &mut oi,
                ho.file.as_raw_fd(),
                &mut oo,
                len as usize,
                0,
            )
        })
    }

    fn syncfs(&self, _ctx: Context, _inode: Inode) -> io::Result<()> {
        // SAFETY: valid fd.
        cvt(unsafe { libc::syncfs(self.mount_fd.as_raw_fd()) }).map(drop)
    }
}
