//! Opcode dispatch: one request body in, one reply out. Every malformed
//! request is answered with an error; nothing the guest sends can panic.

use std::ffi::{CStr, CString};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::abi::{self, opcode as op, Wire};
use super::reader::{Malformed, Reader};
use crate::fs::{Context, Entry, FileSystem, SetAttr, SetTime, XattrReply};

/// Largest READ/WRITE payload we negotiate (`max_write`, `max_pages`).
pub const MAX_IO: u32 = 1 << 20;
/// Largest request we accept: a full WRITE plus headers.
pub const MAX_REQUEST: usize = MAX_IO as usize + 4096;
/// `max_pages` offered in INIT.
const MAX_PAGES: u16 = (MAX_IO / 4096) as u16;

/// Counters of what the server did, readable by tests and the perf harness.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests handled.
    pub requests: AtomicU64,
    /// Replies carrying an error.
    pub errors: AtomicU64,
    /// Requests refused as malformed (short, inconsistent, bad names).
    pub malformed: AtomicU64,
    /// Unknown or unsupported opcodes.
    pub unsupported: AtomicU64,
    /// Requests being handled right now (SIGTERM waits for 0).
    pub in_flight: AtomicU64,
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Server policy that applies to any backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerConfig {
    /// Refuse every modifying request with EROFS.
    pub readonly: bool,
}

/// The FUSE server around a [`FileSystem`].
#[derive(Debug)]
pub struct Server<F> {
    fs: F,
    cfg: ServerConfig,
    initialized: AtomicBool,
    minor: AtomicU32,
    /// What the server counted.
    pub counters: Counters,
}

type OpResult = Result<Vec<u8>, i32>;

fn errno(e: io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl From<Malformed> for i32 {
    fn from(_: Malformed) -> i32 {
        libc::EINVAL
    }
}

/// A name component the guest may use: non-empty, no `/`, not `.`/`..`.
fn name<'a>(r: &mut Reader<'a>) -> Result<&'a CStr, i32> {
    let n = r.cstr()?;
    let b = n.to_bytes();
    if b.is_empty() || b.contains(&b'/') || b == b"." || b == b".." {
        return Err(libc::EINVAL);
    }
    if b.len() > 255 {
        return Err(libc::ENAMETOOLONG);
    }
    Ok(n)
}

/// Names and values end the request: bytes after them (a name with an
/// embedded NUL, a length that disagrees with the body) are refused.
fn end(r: &Reader<'_>) -> Result<(), i32> {
    if r.remaining() == 0 {
        Ok(())
    } else {
        Err(libc::EINVAL)
    }
}

/// The request's one and last name.
fn only_name<'a>(r: &mut Reader<'a>) -> Result<&'a CStr, i32> {
    let n = name(r)?;
    end(r)?;
    Ok(n)
}

/// Encodes a `dev_t` the way the FUSE kernel decodes it (`new_decode_dev`).
fn encode_dev(rdev: u64) -> u32 {
    let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
    (mi & 0xff) | ((ma & 0xfff) << 8) | ((mi & !0xff) << 12)
}

/// Decodes a FUSE `rdev` (`new_encode_dev` form) into a host `dev_t`.
pub fn decode_dev(rdev: u32) -> u64 {
    let ma = (rdev & 0xfff00) >> 8;
    let mi = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(ma, mi)
}

fn attr(st: &libc::stat64) -> abi::Attr {
    abi::Attr {
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: st.st_atime as u64,
        mtime: st.st_mtime as u64,
        ctime: st.st_ctime as u64,
        atimensec: st.st_atime_nsec as u32,
        mtimensec: st.st_mtime_nsec as u32,
        ctimensec: st.st_ctime_nsec as u32,
        mode: st.st_mode,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: encode_dev(st.st_rdev),
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn encode_entry(e: &Entry, out: &mut Vec<u8>) {
    abi::EntryOutHead {
        nodeid: e.inode,
        generation: e.generation,
        entry_valid: e.entry_timeout.as_secs(),
        attr_valid: e.attr_timeout.as_secs(),
        entry_valid_nsec: e.entry_timeout.subsec_nanos(),
        attr_valid_nsec: e.attr_timeout.subsec_nanos(),
    }
    .encode(out);
    attr(&e.attr).encode(out);
}

fn entry_reply(e: io::Result<Entry>) -> OpResult {
    let e = e.map_err(errno)?;
    let mut out = Vec::with_capacity(128);
    encode_entry(&e, &mut out);
    Ok(out)
}

fn attr_reply(r: io::Result<(libc::stat64, Duration)>) -> OpResult {
    let (st, t) = r.map_err(errno)?;
    let mut out = Vec::with_capacity(104);
    abi::AttrOutHead {
        attr_valid: t.as_secs(),
        attr_valid_nsec: t.subsec_nanos(),
        dummy: 0,
    }
    .encode(&mut out);
    attr(&st).encode(&mut out);
    Ok(out)
}

fn open_reply(fh: u64, flags: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    abi::OpenOut {
        fh,
        open_flags: flags,
        padding: 0,
    }
    .encode(&mut out);
    out
}

fn empty(r: io::Result<()>) -> OpResult {
    r.map(|()| Vec::new()).map_err(errno)
}

fn xattr_reply(r: io::Result<XattrReply>) -> OpResult {
    match r.map_err(errno)? {
        XattrReply::Size(size) => {
            let mut out = Vec::new();
            abi::GetxattrOut { size, padding: 0 }.encode(&mut out);
            Ok(out)
        }
        XattrReply::Data(d) => Ok(d),
    }
}

fn write_out(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    abi::WriteOut {
        size: u32::try_from(n).unwrap_or(u32::MAX),
        padding: 0,
    }
    .encode(&mut out);
    out
}

/// Opcodes that change the tree, refused with EROFS under `--readonly`.
fn modifies(opcode: u32) -> bool {
    matches!(
        opcode,
        op::SETATTR
            | op::SYMLINK
            | op::MKNOD
            | op::MKDIR
            | op::UNLINK
            | op::RMDIR
            | op::RENAME
            | op::RENAME2
            | op::LINK
            | op::WRITE
            | op::SETXATTR
            | op::REMOVEXATTR
            | op::CREATE
            | op::TMPFILE
            | op::FALLOCATE
            | op::COPY_FILE_RANGE
    )
}

impl<F: FileSystem> Server<F> {
    /// A server for `fs`.
    pub fn new(fs: F, cfg: ServerConfig) -> Self {
        Server {
            fs,
            cfg,
            initialized: AtomicBool::new(false),
            minor: AtomicU32::new(0),
            counters: Counters::default(),
        }
    }

    /// Waits until no request is being handled (or `timeout` passed);
    /// returns whether the server went idle.
    pub fn drain(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while self.counters.in_flight.load(Ordering::Acquire) > 0 {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// The filesystem.
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// Handles one request; returns the reply bytes (header included), or
    /// `None` for requests that take no reply (FORGET, INTERRUPT).
    pub fn handle(&self, req: &[u8]) -> Option<Vec<u8>> {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.in_flight.fetch_add(1, Ordering::AcqRel);
        let _guard = InFlight(&self.counters.in_flight);
        let mut r = Reader::new(req);
        let Ok(h) = r.read::<abi::InHeader>() else {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return Some(self.reply(0, Err(libc::EINVAL)));
        };
        if h.len as usize != req.len() {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return Some(self.reply(h.unique, Err(libc::EINVAL)));
        }
        // Extensions (security context, supplementary groups) sit at the
        // end; we negotiate none, so just cut them off.
        let ext = usize::from(h.total_extlen) * 8;
        let Some(body_len) = r.remaining().checked_sub(ext) else {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
            return Some(self.reply(h.unique, Err(libc::EINVAL)));
        };
        let body = r.rest().get(..body_len).unwrap_or_default();
        let res = self.dispatch(&h, Reader::new(body))?;
        if res == Err(libc::EINVAL) {
            self.counters.malformed.fetch_add(1, Ordering::Relaxed);
        }
        Some(self.reply(h.unique, res))
    }

    fn reply(&self, unique: u64, res: OpResult) -> Vec<u8> {
        let (error, body) = match res {
            Ok(b) => (0, b),
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                (-e, Vec::new())
            }
        };
        let mut out = Vec::with_capacity(abi::OutHeader::SIZE + body.len());
        abi::OutHeader {
            len: (abi::OutHeader::SIZE + body.len()) as u32,
            error,
            unique,
        }
        .encode(&mut out);
        out.extend_from_slice(&body);
        out
    }

    fn dispatch(&self, h: &abi::InHeader, mut r: Reader<'_>) -> Option<OpResult> {
        let ctx = Context {
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
        };
        let ino = h.nodeid;
        if h.opcode == op::INIT {
            return Some(self.init(&mut r));
        }
        if !self.initialized.load(Ordering::Acquire) {
            return Some(Err(libc::EIO));
        }
        if self.cfg.readonly && modifies(h.opcode) {
            return Some(Err(libc::EROFS));
        }
        let fs = &self.fs;
        let res = match h.opcode {
            op::FORGET => {
                if let Ok(f) = r.read::<abi::ForgetIn>() {
                    fs.forget(ino, f.nlookup);
                }
                return None;
            }
            op::BATCH_FORGET => {
                if let Ok(b) = r.read::<abi::BatchForgetIn>() {
                    for _ in 0..b.count {
                        let Ok(f) = r.read::<abi::ForgetOne>() else {
                            break;
                        };
                        fs.forget(f.nodeid, f.nlookup);
                    }
                }
                return None;
            }
            op::INTERRUPT => return None,
            op::DESTROY => {
                fs.destroy();
                self.initialized.store(false, Ordering::Release);
                Ok(Vec::new())
            }
            op::LOOKUP => only_name(&mut r).and_then(|n| entry_reply(fs.lookup(ctx, ino, n))),
            op::GETATTR => {
                let fh = r
                    .read::<abi::GetattrIn>()
                    .ok()
                    .filter(|g| g.getattr_flags & abi::GETATTR_FH != 0)
                    .map(|g| g.fh);
                attr_reply(fs.getattr(ctx, ino, fh))
            }
            op::SETATTR => self.setattr(ctx, ino, &mut r),
            op::READLINK => fs.readlink(ctx, ino).map_err(errno),
            op::SYMLINK => (|| {
                let n = name(&mut r)?;
                let target = r.cstr()?;
                end(&r)?;
                entry_reply(fs.symlink(ctx, target, ino, n))
            })(),
            op::MKNOD => (|| {
                let a = r.read::<abi::MknodIn>()?;
                let n = only_name(&mut r)?;
                entry_reply(fs.mknod(ctx, ino, n, a.mode, a.rdev, a.umask))
            })(),
            op::MKDIR => (|| {
                let a = r.read::<abi::MkdirIn>()?;
                let n = only_name(&mut r)?;
                entry_reply(fs.mkdir(ctx, ino, n, a.mode, a.umask))
            })(),
            op::UNLINK => only_name(&mut r).and_then(|n| empty(fs.unlink(ctx, ino, n))),
            op::RMDIR => only_name(&mut r).and_then(|n| empty(fs.rmdir(ctx, ino, n))),
            op::RENAME | op::RENAME2 => (|| {
                let (newdir, flags) = if h.opcode == op::RENAME {
                    (r.read::<abi::RenameIn>()?.newdir, 0)
                } else {
                    let a = r.read::<abi::Rename2In>()?;
                    (a.newdir, a.flags)
                };
                let old = name(&mut r)?;
                let new = only_name(&mut r)?;
                empty(fs.rename(ctx, ino, old, newdir, new, flags))
            })(),
            op::LINK => (|| {
                let a = r.read::<abi::LinkIn>()?;
                let n = only_name(&mut r)?;
                entry_reply(fs.link(ctx, a.oldnodeid, ino, n))
            })(),
            op::OPEN | op::OPENDIR => (|| {
                let a = r.read::<abi::OpenIn>()?;
                if h.opcode == op::OPEN {
                    let f = a.flags as i32;
                    if self.cfg.readonly
                        && ((f & libc::O_ACCMODE) != libc::O_RDONLY || f & libc::O_TRUNC != 0)
                    {
                        return Err(libc::EROFS);
                    }
                    let (fh, f) = fs.open(ctx, ino, a.flags).map_err(errno)?;
                    Ok(open_reply(fh, f))
                } else {
                    let (fh, f) = fs.opendir(ctx, ino, a.flags).map_err(errno)?;
                    Ok(open_reply(fh, f))
                }
            })(),
            op::CREATE | op::TMPFILE => (|| {
                let a = r.read::<abi::CreateIn>()?;
                let res = if h.opcode == op::CREATE {
                    let n = only_name(&mut r)?;
                    fs.create(ctx, ino, n, a.mode, a.flags, a.umask)
                } else {
                    fs.tmpfile(ctx, ino, a.mode, a.flags, a.umask)
                };
                let (e, fh, f) = res.map_err(errno)?;
                let mut out = Vec::with_capacity(144);
                encode_entry(&e, &mut out);
                out.extend_from_slice(&open_reply(fh, f));
                Ok(out)
            })(),
            op::READ => (|| {
                let a = r.read::<abi::ReadIn>()?;
                fs.read(ctx, ino, a.fh, a.offset, a.size.min(MAX_IO))
                    .map_err(errno)
            })(),
            op::WRITE => (|| {
                let a = r.read::<abi::WriteIn>()?;
                let data = r.rest();
                if data.len() != a.size as usize {
                    return Err(libc::EINVAL);
                }
                let n = fs.write(ctx, ino, a.fh, a.offset, data).map_err(errno)?;
                Ok(write_out(n))
            })(),
            op::STATFS => (|| {
                let s = fs.statfs(ctx, ino).map_err(errno)?;
                let mut out = Vec::new();
                abi::StatfsOut {
                    blocks: s.f_blocks,
                    bfree: s.f_bfree,
                    bavail: s.f_bavail,
                    files: s.f_files,
                    ffree: s.f_ffree,
                    bsize: s.f_bsize as u32,
                    namelen: s.f_namemax as u32,
                    frsize: s.f_frsize as u32,
                    padding: 0,
                    spare: [0; 6],
                }
                .encode(&mut out);
                Ok(out)
            })(),
            op::RELEASE | op::RELEASEDIR => (|| {
                let a = r.read::<abi::ReleaseIn>()?;
                if h.opcode == op::RELEASE {
                    empty(fs.release(ctx, ino, a.fh))
                } else {
                    empty(fs.releasedir(ctx, ino, a.fh))
                }
            })(),
            op::FSYNC | op::FSYNCDIR => (|| {
                let a = r.read::<abi::FsyncIn>()?;
                let ds = a.fsync_flags & abi::FSYNC_FDATASYNC != 0;
                if h.opcode == op::FSYNC {
                    empty(fs.fsync(ctx, ino, ds, a.fh))
                } else {
                    empty(fs.fsyncdir(ctx, ino, ds, a.fh))
                }
            })(),
            op::FLUSH => (|| {
                let a = r.read::<abi::FlushIn>()?;
                empty(fs.flush(ctx, ino, a.fh))
            })(),
            op::SETXATTR => (|| {
                let a = r.read::<abi::SetxattrIn>()?;
                let n = r.cstr()?;
                let v = r.bytes(a.size as usize)?;
                end(&r)?;
                empty(fs.setxattr(ctx, ino, n, v, a.flags))
            })(),
            op::GETXATTR => (|| {
                let a = r.read::<abi::GetxattrIn>()?;
                let n = r.cstr()?;
                end(&r)?;
                xattr_reply(fs.getxattr(ctx, ino, n, a.size.min(MAX_IO)))
            })(),
            op::LISTXATTR => (|| {
                let a = r.read::<abi::GetxattrIn>()?;
                xattr_reply(fs.listxattr(ctx, ino, a.size.min(MAX_IO)))
            })(),
            op::REMOVEXATTR => (|| {
                let n = r.cstr()?;
                end(&r)?;
                empty(fs.removexattr(ctx, ino, n))
            })(),
            op::READDIR | op::READDIRPLUS => (|| {
                let a = r.read::<abi::ReadIn>()?;
                self.readdir(ctx, ino, &a, h.opcode == op::READDIRPLUS)
            })(),
            op::ACCESS => (|| {
                let a = r.read::<abi::AccessIn>()?;
                empty(fs.access(ctx, ino, a.mask))
            })(),
            op::FALLOCATE => (|| {
                let a = r.read::<abi::FallocateIn>()?;
                empty(fs.fallocate(ctx, ino, a.fh, a.mode, a.offset, a.length))
            })(),
            op::LSEEK => (|| {
                let a = r.read::<abi::LseekIn>()?;
                let off = fs
                    .lseek(ctx, ino, a.fh, a.offset, a.whence)
                    .map_err(errno)?;
                let mut out = Vec::new();
                abi::LseekOut { offset: off }.encode(&mut out);
                Ok(out)
            })(),
            op::COPY_FILE_RANGE => (|| {
                let a = r.read::<abi::CopyFileRangeIn>()?;
                let n = fs
                    .copy_file_range(
                        ctx,
                        ino,
                        a.fh_in,
                        a.off_in,
                        a.nodeid_out,
                        a.fh_out,
                        a.off_out,
                        a.len.min(u64::from(u32::MAX)),
                    )
                    .map_err(errno)?;
                Ok(write_out(n))
            })(),
            op::SYNCFS => empty(fs.syncfs(ctx, ino)),
            _ => {
                self.counters.unsupported.fetch_add(1, Ordering::Relaxed);
                Err(libc::ENOSYS)
            }
        };
        Some(res)
    }

    fn init(&self, r: &mut Reader<'_>) -> OpResult {
        let a = r.read::<abi::InitInHead>()?;
        if a.major < abi::KERNEL_VERSION {
            return Err(libc::EPROTO);
        }
        let mut out = Vec::new();
        if a.major > abi::KERNEL_VERSION {
            // The kernel retries with our major.
            abi::InitOut {
                major: abi::KERNEL_VERSION,
                minor: abi::KERNEL_MINOR_VERSION,
                ..Default::default()
            }
            .encode(&mut out);
            return Ok(out);
        }
        let mut capable = u64::from(a.flags);
        if capable & abi::init::INIT_EXT != 0 {
            if let Ok(b) = r.bytes(4) {
                let mut w = [0u8; 4];
                w.copy_from_slice(b);
                capable |= u64::from(u32::from_le_bytes(w)) << 32;
            }
        }
        if self.initialized.swap(false, Ordering::AcqRel) {
            // A rebooted guest starts a new session without DESTROY.
            self.fs.destroy();
        }
        let ours = abi::init::ASYNC_READ
            | abi::init::BIG_WRITES
            | abi::init::ATOMIC_O_TRUNC
            | abi::init::PARALLEL_DIROPS
            | abi::init::MAX_PAGES
            | abi::init::ABORT_ERROR
            | abi::init::INIT_EXT
            | self.fs.init(capable).map_err(errno)?;
        let flags = capable & ours;
        let minor = a.minor.min(abi::KERNEL_MINOR_VERSION);
        self.minor.store(minor, Ordering::Relaxed);
        abi::InitOut {
            major: abi::KERNEL_VERSION,
            minor,
            max_readahead: a.max_readahead,
            flags: flags as u32,
            max_background: 64,
            congestion_threshold: 48,
            max_write: MAX_IO,
            time_gran: 1,
            max_pages: MAX_PAGES,
            map_alignment: 0,
            flags2: (flags >> 32) as u32,
            unused: [0; 6],
            unused2: 0,
        }
        .encode(&mut out);
        if minor < 23 {
            out.truncate(24);
        }
        self.initialized.store(true, Ordering::Release);
        tracing::info!(
            minor,
            flags = format_args!("{flags:#x}"),
            "FUSE session initialised"
        );
        Ok(out)
    }

    fn setattr(&self, ctx: Context, ino: u64, r: &mut Reader<'_>) -> OpResult {
        use abi::fattr;
        let a = r.read::<abi::SetattrIn>()?;
        let v = a.valid;
        let time = |set: u32, now: u32, s: u64, ns: u32| {
            if v & now != 0 {
                Some(SetTime::Now)
            } else if v & set != 0 {
                Some(SetTime::At(s as i64, ns))
            } else {
                None
            }
        };
        let attr = SetAttr {
            mode: (v & fattr::MODE != 0).then_some(a.mode),
            uid: (v & fattr::UID != 0).then_some(a.uid),
            gid: (v & fattr::GID != 0).then_some(a.gid),
            size: (v & fattr::SIZE != 0).then_some(a.size),
            atime: time(fattr::ATIME, fattr::ATIME_NOW, a.atime, a.atimensec),
            mtime: time(fattr::MTIME, fattr::MTIME_NOW, a.mtime, a.mtimensec),
        };
        let fh = (v & fattr::FH != 0).then_some(a.fh);
        attr_reply(self.fs.setattr(ctx, ino, attr, fh))
    }

    fn readdir(&self, ctx: Context, ino: u64, a: &abi::ReadIn, plus: bool) -> OpResult {
        let size = a.size.min(MAX_IO) as usize;
        let entries = self
            .fs
            .readdir(ctx, ino, a.fh, a.offset, a.size.min(MAX_IO))
            .map_err(errno)?;
        let mut out = Vec::with_capacity(size.min(64 * 1024));
        for e in entries {
            let dlen = abi::DirentHead::SIZE + e.name.len();
            let padded = (dlen + 7) & !7;
            let need = padded + if plus { 128 } else { 0 };
            if out.len() + need > size {
                break;
            }
            if plus {
                let dot = e.name == b"." || e.name == b"..";
                let looked = if dot {
                    None
                } else {
                    CString::new(e.name.clone())
                        .ok()
                        .and_then(|n| self.fs.lookup(ctx, ino, &n).ok())
                };
                match looked {
                    Some(entry) => encode_entry(&entry, &mut out),
                    // nodeid 0: the kernel skips the entry's attributes.
                    None => out.resize(out.len() + 128, 0),
                }
            }
            abi::DirentHead {
                ino: e.ino,
                off: e.offset,
                namelen: e.name.len() as u32,
                typ: e.typ,
            }
            .encode(&mut out);
            out.extend_from_slice(&e.name);
            out.resize(out.len() + padded - dlen, 0);
        }
        Ok(out)
    }
}
