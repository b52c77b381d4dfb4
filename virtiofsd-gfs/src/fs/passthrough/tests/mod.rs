//! The FUSE server and the passthrough backend together, on a real temp
//! tree, checking every effect on the host side.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;
use crate::fuse::abi::{self, opcode as op, Wire};
use crate::fuse::client::{body, request, Client, Reply};
use crate::fuse::{Server, ServerConfig};

mod hostile;

type Srv = Server<PassthroughFs>;

fn server(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Srv {
    let mut cfg = Config::new(dir);
    tweak(&mut cfg);
    Server::new(PassthroughFs::new(cfg).unwrap(), ServerConfig::default())
}

fn client(s: &Srv) -> Client<impl FnMut(&[u8]) -> Option<Vec<u8>> + '_> {
    let mut c = Client::new(move |r: &[u8]| s.handle(r));
    c.init(37, 0xffff_ffff).unwrap();
    c
}

fn raw(s: &Srv, opcode: u32, nodeid: u64, b: &[u8]) -> Reply {
    Reply::parse(&s.handle(&request(opcode, nodeid, 9, 0, 0, b)).unwrap()).unwrap()
}

#[test]
fn init_negotiates_version_and_flags() {
    let t = tempfile::tempdir().unwrap();
    let s = server(t.path(), |_| {});
    // Before INIT everything fails.
    assert_eq!(raw(&s, op::GETATTR, 1, &[0; 16]).error, -libc::EIO);
    let mut c = Client::new(|r: &[u8]| s.handle(r));
    let o = c
        .init(
            37,
            abi::init::ASYNC_READ as u32 | abi::init::MAX_PAGES as u32,
        )
        .unwrap();
    assert_eq!((o.major, o.minor), (7, 37));
    assert_eq!(o.max_write, 1 << 20);
    assert_eq!(o.max_pages, 256);
    // Only what both sides want.
    assert_eq!(
        u64::from(o.flags) & !abi::init::INIT_EXT,
        abi::init::ASYNC_READ | abi::init::MAX_PAGES
    );
    // A newer guest gets our minor; an ancient one a short reply.
    let o = c.init(99, 0).unwrap();
    assert_eq!(o.minor, abi::KERNEL_MINOR_VERSION);
    let mut b = Vec::new();
    abi::InitInHead {
        major: 7,
        minor: 12,
        max_readahead: 0,
        flags: 0,
    }
    .encode(&mut b);
    assert_eq!(raw(&s, op::INIT, 0, &b).body.len(), 24);
    // Wrong majors.
    let mut b = Vec::new();
    abi::InitInHead {
        major: 6,
        minor: 0,
        max_readahead: 0,
        flags: 0,
    }
    .encode(&mut b);
    assert_eq!(raw(&s, op::INIT, 0, &b).error, -libc::EPROTO);
    let mut b = Vec::new();
    abi::InitInHead {
        major: 8,
        minor: 0,
        max_readahead: 0,
        flags: 0,
    }
    .encode(&mut b);
    let r = raw(&s, op::INIT, 0, &b);
    assert_eq!((r.error, abi::InitOut::decode(&r.body).major), (0, 7));
    // DESTROY ends the session.
    assert_eq!(raw(&s, op::DESTROY, 0, &[]).error, 0);
    assert_eq!(raw(&s, op::GETATTR, 1, &[0; 16]).error, -libc::EIO);
}

#[test]
fn files_directories_and_host_view() {
    let t = tempfile::tempdir().unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    let d = c.mkdir(1, b"dir", 0o750).unwrap();
    assert!(t.path().join("dir").is_dir());
    assert_eq!(
        std::fs::metadata(t.path().join("dir")).unwrap().mode() & 0o777,
        0o750
    );
    let (f, fh) = c
        .create(d.nodeid, b"f", 0o640, libc::O_RDWR as u32)
        .unwrap();
    assert_eq!(c.write(f.nodeid, fh, 0, b"hello world").unwrap(), 11);
    assert_eq!(c.write(f.nodeid, fh, 11, b"!").unwrap(), 1);
    assert_eq!(
        std::fs::read(t.path().join("dir/f")).unwrap(),
        b"hello world!"
    );
    assert_eq!(c.read(f.nodeid, fh, 6, 100).unwrap(), b"world!");
    c.release(f.nodeid, fh, false).unwrap();
    // The host writes; the guest reads it back through a fresh open.
    std::fs::write(t.path().join("dir/f"), b"from host").unwrap();
    let e = c.lookup(d.nodeid, b"f").unwrap();
    assert_eq!(e.nodeid, f.nodeid, "same object, same node id");
    assert_eq!(e.attr.size, 9);
    let (fh, flags) = c.open(f.nodeid, libc::O_RDONLY as u32, false).unwrap();
    assert_eq!(flags, 0, "cache=auto: page cache allowed");
    assert_eq!(c.read(f.nodeid, fh, 0, 4096).unwrap(), b"from host");
    c.release(f.nodeid, fh, false).unwrap();
    assert_eq!(c.release(f.nodeid, fh, false), Err(libc::EBADF));
    // Append through O_APPEND.
    let (fh, _) = c
        .open(f.nodeid, (libc::O_WRONLY | libc::O_APPEND) as u32, false)
        .unwrap();
    c.write(f.nodeid, fh, 0, b"+").unwrap();
    c.release(f.nodeid, fh, false).unwrap();
    assert_eq!(
        std::fs::read(t.path().join("dir/f")).unwrap(),
        b"from host+"
    );
    // Unlink and rmdir.
    assert_eq!(c.call(op::RMDIR, 1, b"dir\0"), Err(libc::ENOTEMPTY));
    c.call(op::UNLINK, d.nodeid, b"f\0").unwrap();
    assert!(!t.path().join("dir/f").exists());
    assert_eq!(c.lookup(d.nodeid, b"f").unwrap_err(), libc::ENOENT);
    c.call(op::RMDIR, 1, b"dir\0").unwrap();
    assert!(!t.path().join("dir").exists());
    assert_eq!(s.fs().handle_count(), 0);
}

#[test]
fn setattr_changes_mode_size_times_owner() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"0123456789").unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    let f = c.lookup(1, b"f").unwrap();
    let a = c
        .setattr(
            f.nodeid,
            abi::SetattrIn {
                valid: abi::fattr::MODE | abi::fattr::SIZE | abi::fattr::MTIME | abi::fattr::ATIME,
                mode: 0o600,
                size: 4,
                mtime: 1_000_000,
                mtimensec: 5,
                atime: 2_000_000,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (a.size, a.mode & 0o777, a.mtime, a.mtimensec),
        (4, 0o600, 1_000_000, 5)
    );
    let m = std::fs::metadata(t.path().join("f")).unwrap();
    assert_eq!(
        (m.len(), m.mode() & 0o777, m.mtime(), m.atime()),
        (4, 0o600, 1_000_000, 2_000_000)
    );
    let a = c
        .setattr(
            f.nodeid,
            abi::SetattrIn {
                valid: abi::fattr::UID | abi::fattr::GID,
                uid: 1234,
                gid: 4321,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((a.uid, a.gid), (1234, 4321));
    let m = std::fs::metadata(t.path().join("f")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 4321));
    // Through an open handle.
    let (fh, _) = c.open(f.nodeid, libc::O_RDWR as u32, false).unwrap();
    let a = c
        .setattr(
            f.nodeid,
            abi::SetattrIn {
                valid: abi::fattr::SIZE | abi::fattr::FH,
                fh,
                size: 1,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.size, 1);
    c.release(f.nodeid, fh, false).unwrap();
}

#[test]
fn links_symlinks_renames_mknod() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("a"), b"A").unwrap();
    std::fs::write(t.path().join("b"), b"B").unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    // symlink + readlink
    let l = c.call(op::SYMLINK, 1, b"l\0a\0").unwrap();
    let l = crate::fuse::client::EntryOut::parse(&l).unwrap();
    assert_eq!(l.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        std::fs::read_link(t.path().join("l")).unwrap(),
        Path::new("a")
    );
    assert_eq!(c.call(op::READLINK, l.nodeid, &[]).unwrap(), b"a");
    // hard link: same node id, nlink 2
    let a = c.lookup(1, b"a").unwrap();
    let h = c
        .call(
            op::LINK,
            1,
            &body(
                Some(abi::LinkIn {
                    oldnodeid: a.nodeid,
                }),
                &[b"h"],
            ),
        )
        .unwrap();
    let h = crate::fuse::client::EntryOut::parse(&h).unwrap();
    assert_eq!((h.nodeid, h.attr.nlink), (a.nodeid, 2));
    assert_eq!(
        std::fs::metadata(t.path().join("h")).unwrap().ino(),
        std::fs::metadata(t.path().join("a")).unwrap().ino()
    );
    // rename, rename2 NOREPLACE and EXCHANGE
    c.call(
        op::RENAME,
        1,
        &body(Some(abi::RenameIn { newdir: 1 }), &[b"h", b"h2"]),
    )
    .unwrap();
    assert!(t.path().join("h2").exists() && !t.path().join("h").exists());
    let r2 = |flags| {
        body(
            Some(abi::Rename2In {
                newdir: 1,
                flags,
                padding: 0,
            }),
            &[b"a", b"b"],
        )
    };
    assert_eq!(
        c.call(op::RENAME2, 1, &r2(libc::RENAME_NOREPLACE)),
        Err(libc::EEXIST)
    );
    c.call(op::RENAME2, 1, &r2(libc::RENAME_EXCHANGE)).unwrap();
    assert_eq!(std::fs::read(t.path().join("a")).unwrap(), b"B");
    assert_eq!(c.call(op::RENAME2, 1, &r2(1 << 20)), Err(libc::EINVAL));
    // mknod a fifo
    let m = c
        .call(
            op::MKNOD,
            1,
            &body(
                Some(abi::MknodIn {
                    mode: libc::S_IFIFO | 0o644,
                    ..Default::default()
                }),
                &[b"p"],
            ),
        )
        .unwrap();
    let m = crate::fuse::client::EntryOut::parse(&m).unwrap();
    assert_eq!(m.attr.mode & libc::S_IFMT, libc::S_IFIFO);
    // Only regular files are ever opened.
    assert_eq!(c.open(m.nodeid, 0, false), Err(libc::ENXIO));
    assert_eq!(c.open(l.nodeid, 0, false), Err(libc::ELOOP));
    assert_eq!(c.open(1, 0, false), Err(libc::EISDIR));
}

#[test]
fn readdir_and_readdirplus_page_through_a_directory() {
    let t = tempfile::tempdir().unwrap();
    for i in 0..300 {
        std::fs::write(t.path().join(format!("file-{i:04}")), b"x").unwrap();
    }
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    for plus in [false, true] {
        let (fh, _) = c.open(1, libc::O_RDONLY as u32, true).unwrap();
        let mut names = Vec::new();
        let mut off = 0;
        let mut pages = 0;
        loop {
            let ents = c.readdir(1, fh, off, 4096, plus).unwrap();
            let Some(last) = ents.last() else { break };
            off = last.1;
            pages += 1;
            for (name, _, node) in ents {
                if name != b"." && name != b".." {
                    assert_eq!(plus, node != 0, "readdirplus looks entries up");
                    names.push(String::from_utf8(name).unwrap());
                }
            }
        }
        c.release(1, fh, true).unwrap();
        names.sort();
        let want: Vec<_> = (0..300).map(|i| format!("file-{i:04}")).collect();
        assert_eq!(names, want);
        assert!(pages > 1, "several pages");
    }
    // readdirplus took one lookup per entry
    assert_eq!(s.fs().inode_count(), 301);
    assert_eq!(
        c.call(
            op::READDIR,
            1,
            &body(
                Some(abi::ReadIn {
                    fh: 999,
                    size: 4096,
                    ..Default::default()
                }),
                &[]
            )
        ),
        Err(libc::EBADF)
    );
}

#[test]
fn forget_drops_inodes() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"").unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    let f = c.lookup(1, b"f").unwrap();
    c.lookup(1, b"f").unwrap();
    assert_eq!(s.fs().inode_count(), 2);
    c.forget(f.nodeid, 1);
    assert_eq!(s.fs().inode_count(), 2);
    // BATCH_FORGET with the last reference, plus junk entries.
    let mut b = body(Some(abi::BatchForgetIn { count: 3, dummy: 0 }), &[]);
    abi::ForgetOne {
        nodeid: f.nodeid,
        nlookup: 1,
    }
    .encode(&mut b);
    abi::ForgetOne {
        nodeid: 12345,
        nlookup: 1,
    }
    .encode(&mut b);
    assert!(c.send_noreply(op::BATCH_FORGET, 0, &b).is_none());
    assert_eq!(s.fs().inode_count(), 1);
    assert_eq!(c.getattr(f.nodeid), Err(libc::ESTALE));
    // The root is never forgotten.
    c.forget(1, u64::MAX);
    assert!(c.getattr(1).is_ok());
    // A new INIT (guest rebooted without DESTROY) starts from scratch.
    c.lookup(1, b"f").unwrap();
    assert_eq!(s.fs().inode_count(), 2);
    c.init(37, 0).unwrap();
    assert_eq!(s.fs().inode_count(), 1);
}

#[test]
fn statfs_fsync_flush_fallocate_lseek_copy_syncfs_access() {
    let t = tempfile::tempdir().unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    let st = c.call(op::STATFS, 1, &[]).unwrap();
    let st = abi::StatfsOut::decode(&st);
    assert!(st.blocks > 0 && st.bsize > 0 && st.namelen == 255);
    let (f, fh) = c.create(1, b"f", 0o644, libc::O_RDWR as u32).unwrap();
    let fa = abi::FallocateIn {
        fh,
        offset: 0,
        length: 1 << 20,
        mode: 0,
        padding: 0,
    };
    c.call(op::FALLOCATE, f.nodeid, &body(Some(fa), &[]))
        .unwrap();
    assert_eq!(
        std::fs::metadata(t.path().join("f")).unwrap().len(),
        1 << 20
    );
    c.write(f.nodeid, fh, 0, b"data").unwrap();
    c.call(
        op::FSYNC,
        f.nodeid,
        &body(
            Some(abi::FsyncIn {
                fh,
                fsync_flags: 1,
                padding: 0,
            }),
            &[],
        ),
    )
    .unwrap();
    c.call(
        op::FLUSH,
        f.nodeid,
        &body(
            Some(abi::FlushIn {
                fh,
                ..Default::default()
            }),
            &[],
        ),
    )
    .unwrap();
    let ls = c
        .call(
            op::LSEEK,
            f.nodeid,
            &body(
                Some(abi::LseekIn {
                    fh,
                    offset: 10,
                    whence: libc::SEEK_END as u32,
                    padding: 0,
                }),
                &[],
            ),
        )
        .unwrap();
    assert_eq!(abi::LseekOut::decode(&ls).offset, (1 << 20) + 10);
    let (g, gh) = c.create(1, b"g", 0o644, libc::O_RDWR as u32).unwrap();
    let cr = abi::CopyFileRangeIn {
        fh_in: fh,
        off_in: 0,
        nodeid_out: g.nodeid,
        fh_out: gh,
        off_out: 2,
        len: 4,
        flags: 0,
    };
    let w = c
        .call(op::COPY_FILE_RANGE, f.nodeid, &body(Some(cr), &[]))
        .unwrap();
    assert_eq!(abi::WriteOut::decode(&w).size, 4);
    assert_eq!(std::fs::read(t.path().join("g")).unwrap(), b"\0\0data");
    c.call(op::SYNCFS, 1, &[0; 8]).unwrap();
    // ACCESS: root may read; uid 4242 may not read a 0600 file of root.
    std::fs::set_permissions(t.path().join("g"), std::fs::Permissions::from_mode(0o600)).unwrap();
    c.call(
        op::ACCESS,
        g.nodeid,
        &body(
            Some(abi::AccessIn {
                mask: 4,
                padding: 0,
            }),
            &[],
        ),
    )
    .unwrap();
    c.uid = 4242;
    assert_eq!(
        c.call(
            op::ACCESS,
            g.nodeid,
            &body(
                Some(abi::AccessIn {
                    mask: 4,
                    padding: 0
                }),
                &[]
            )
        ),
        Err(libc::EACCES)
    );
    c.uid = 0;
    c.call(
        op::FSYNCDIR,
        1,
        &body(
            Some(abi::FsyncIn {
                fh: 77,
                ..Default::default()
            }),
            &[],
        ),
    )
    .unwrap_err();
}

#[test]
fn xattrs_when_enabled_enosys_otherwise() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"").unwrap();
    let s = server(t.path(), |c| c.xattr = true);
    let mut c = client(&s);
    let f = c.lookup(1, b"f").unwrap();
    let mut b = body(Some(abi::SetxattrIn { size: 3, flags: 0 }), &[b"user.k"]);
    b.extend_from_slice(b"val");
    c.call(op::SETXATTR, f.nodeid, &b).unwrap();
    let get = |size| body(Some(abi::GetxattrIn { size, padding: 0 }), &[b"user.k"]);
    let probe = c.call(op::GETXATTR, f.nodeid, &get(0)).unwrap();
    assert_eq!(abi::GetxattrOut::decode(&probe).size, 3);
    assert_eq!(c.call(op::GETXATTR, f.nodeid, &get(64)).unwrap(), b"val");
    assert_eq!(c.call(op::GETXATTR, f.nodeid, &get(1)), Err(libc::ERANGE));
    let list = c
        .call(
            op::LISTXATTR,
            f.nodeid,
            &body(
                Some(abi::GetxattrIn {
                    size: 256,
                    padding: 0,
                }),
                &[],
            ),
        )
        .unwrap();
    assert!(list.windows(7).any(|w| w == b"user.k\0"));
    c.call(op::REMOVEXATTR, f.nodeid, b"user.k\0").unwrap();
    assert_eq!(c.call(op::GETXATTR, f.nodeid, &get(64)), Err(libc::ENODATA));
    // ACLs need --posix-acl.
    let mut b = body(
        Some(abi::SetxattrIn { size: 1, flags: 0 }),
        &[b"system.posix_acl_access"],
    );
    b.push(0);
    assert_eq!(c.call(op::SETXATTR, f.nodeid, &b), Err(libc::EOPNOTSUPP));

    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    let f = c.lookup(1, b"f").unwrap();
    assert_eq!(c.call(op::GETXATTR, f.nodeid, &get(64)), Err(libc::ENOSYS));
}

#[test]
fn tmpfile_is_unnamed_until_linked() {
    let t = tempfile::tempdir().unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    let ci = abi::CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o600,
        umask: 0,
        open_flags: 0,
    };
    let r = c.call(op::TMPFILE, 1, &body(Some(ci), &[b"x"])).unwrap();
    let e = crate::fuse::client::EntryOut::parse(&r).unwrap();
    let fh = abi::OpenOut::decode(&r[128..]).fh;
    c.write(e.nodeid, fh, 0, b"tmp").unwrap();
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    c.call(
        op::LINK,
        1,
        &body(
            Some(abi::LinkIn {
                oldnodeid: e.nodeid,
            }),
            &[b"named"],
        ),
    )
    .unwrap();
    assert_eq!(std::fs::read(t.path().join("named")).unwrap(), b"tmp");
}

#[test]
fn readonly_refuses_every_change() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"keep").unwrap();
    let s = Server::new(
        PassthroughFs::new(Config::new(t.path())).unwrap(),
        ServerConfig { readonly: true },
    );
    let mut c = client(&s);
    let f = c.lookup(1, b"f").unwrap();
    assert_eq!(c.mkdir(1, b"d", 0o755).unwrap_err(), libc::EROFS);
    assert_eq!(c.create(1, b"n", 0o644, 0).unwrap_err(), libc::EROFS);
    assert_eq!(
        c.open(f.nodeid, libc::O_WRONLY as u32, false).unwrap_err(),
        libc::EROFS
    );
    assert_eq!(
        c.open(f.nodeid, (libc::O_RDONLY | libc::O_TRUNC) as u32, false)
            .unwrap_err(),
        libc::EROFS
    );
    assert_eq!(c.call(op::UNLINK, 1, b"f\0"), Err(libc::EROFS));
    assert_eq!(
        c.setattr(
            f.nodeid,
            abi::SetattrIn {
                valid: abi::fattr::SIZE,
                ..Default::default()
            }
        )
        .unwrap_err(),
        libc::EROFS
    );
    let (fh, _) = c.open(f.nodeid, libc::O_RDONLY as u32, false).unwrap();
    assert_eq!(c.read(f.nodeid, fh, 0, 10).unwrap(), b"keep");
    assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"keep");
}

#[test]
fn creates_belong_to_the_caller() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("needs root to switch fsuid; skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    c.uid = 1000;
    c.gid = 1001;
    let d = c.mkdir(1, b"d", 0o755).unwrap();
    let (_, fh) = c
        .create(d.nodeid, b"f", 0o644, libc::O_RDWR as u32)
        .unwrap();
    c.call(op::SYMLINK, d.nodeid, b"l\0f\0").unwrap();
    for p in ["d", "d/f", "d/l"] {
        let m = std::fs::symlink_metadata(t.path().join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001), "{p}");
    }
    let f = c.lookup(d.nodeid, b"f").unwrap();
    c.release(f.nodeid, fh, false).unwrap();
    // uid 1000 cannot create in a root-owned 0755 directory.
    std::fs::create_dir(t.path().join("rootonly")).unwrap();
    std::fs::set_permissions(
        t.path().join("rootonly"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let r = c.lookup(1, b"rootonly").unwrap();
    assert_eq!(c.mkdir(r.nodeid, b"x", 0o755).unwrap_err(), libc::EACCES);
    // The daemon thread is root again afterwards.
    c.uid = 0;
    c.gid = 0;
    c.mkdir(r.nodeid, b"x", 0o755).unwrap();
    assert_eq!(
        std::fs::metadata(t.path().join("rootonly/x"))
            .unwrap()
            .uid(),
        0
    );
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn file_handles_hold_no_fd_per_inode() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("open_by_handle_at needs CAP_DAC_READ_SEARCH; skipped");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    for i in 0..100 {
        std::fs::write(t.path().join(format!("{i}")), format!("{i}")).unwrap();
    }
    for (mode, grows) in [(FileHandles::Never, true), (FileHandles::Mandatory, false)] {
        let s = server(t.path(), |c| c.file_handles = mode);
        let mut c = client(&s);
        let before = open_fds();
        let mut nodes = Vec::new();
        for i in 0..100 {
            nodes.push(c.lookup(1, format!("{i}").as_bytes()).unwrap().nodeid);
        }
        let grew = open_fds() - before;
        assert_eq!(grew >= 100, grows, "{mode:?}: {grew} fds");
        let (fh, _) = c.open(nodes[42], 0, false).unwrap();
        assert_eq!(c.read(nodes[42], fh, 0, 10).unwrap(), b"42");
        c.release(nodes[42], fh, false).unwrap();
    }
}

#[test]
fn cache_policies_map_to_timeouts_and_open_flags() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"").unwrap();
    for (policy, secs, fopen_flags, dir_flags) in [
        (CachePolicy::Never, 0, abi::fopen::DIRECT_IO, 0),
        (CachePolicy::Metadata, 86400, abi::fopen::DIRECT_IO, 0),
        (CachePolicy::Auto, 1, 0, 0),
        (
            CachePolicy::Always,
            86400,
            abi::fopen::KEEP_CACHE,
            abi::fopen::CACHE_DIR | abi::fopen::KEEP_CACHE,
        ),
    ] {
        let s = server(t.path(), |c| c.cache = policy);
        let mut c = client(&s);
        let r = c.call(op::LOOKUP, 1, b"f\0").unwrap();
        let h = abi::EntryOutHead::decode(&r);
        assert_eq!((h.entry_valid, h.attr_valid), (secs, secs), "{policy:?}");
        let f = crate::fuse::client::EntryOut::parse(&r).unwrap();
        assert_eq!(
            c.open(f.nodeid, 0, false).unwrap().1,
            fopen_flags,
            "{policy:?}"
        );
        assert_eq!(c.open(1, 0, true).unwrap().1, dir_flags, "{policy:?}");
    }
}

#[test]
fn posix_acl_negotiates_dont_mask_and_serves_acls() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"").unwrap();
    let s = server(t.path(), |c| {
        c.xattr = true;
        c.posix_acl = true;
    });
    let mut c = Client::new(|r: &[u8]| s.handle(r));
    let want = (abi::init::POSIX_ACL | abi::init::DONT_MASK) as u32;
    let o = c.init(37, want).unwrap();
    assert_eq!(o.flags & want, want);
    // With DONT_MASK the daemon applies the guest's umask.
    let ci = abi::CreateIn {
        flags: libc::O_RDWR as u32,
        mode: 0o666,
        umask: 0o027,
        open_flags: 0,
    };
    c.call(op::CREATE, 1, &body(Some(ci), &[b"masked"]))
        .unwrap();
    let m = std::fs::metadata(t.path().join("masked")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o640);
    // An access ACL (user::rw- group::r-- other::---) set through SETXATTR
    // lands on the host and shows in the mode bits.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm) in [(0x01u16, 6u16), (0x04, 4), (0x20, 0)] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&perm.to_le_bytes());
        acl.extend_from_slice(&u32::MAX.to_le_bytes());
    }
    let f = c.lookup(1, b"f").unwrap();
    let mut b = body(
        Some(abi::SetxattrIn {
            size: acl.len() as u32,
            flags: 0,
        }),
        &[b"system.posix_acl_access"],
    );
    b.extend_from_slice(&acl);
    c.call(op::SETXATTR, f.nodeid, &b).unwrap();
    assert_eq!(
        std::fs::metadata(t.path().join("f")).unwrap().mode() & 0o777,
        0o640
    );
}

#[test]
fn writeback_is_negotiated_only_when_asked_and_cached() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"abc").unwrap();
    let wb = abi::init::WRITEBACK_CACHE as u32;
    for (writeback, cache, expect) in [
        (false, CachePolicy::Auto, false),
        (true, CachePolicy::Never, false),
        (true, CachePolicy::Auto, true),
    ] {
        let s = server(t.path(), |c| {
            c.writeback = writeback;
            c.cache = cache;
        });
        let mut c = Client::new(|r: &[u8]| s.handle(r));
        let o = c.init(37, wb).unwrap();
        assert_eq!(o.flags & wb != 0, expect, "{writeback} {cache:?}");
        // Under writeback a write-only open can still be read (the guest
        // page cache reads around partial writes).
        let f = c.lookup(1, b"f").unwrap();
        let (fh, _) = c.open(f.nodeid, libc::O_WRONLY as u32, false).unwrap();
        assert_eq!(c.read(f.nodeid, fh, 0, 3).is_ok(), expect);
        c.release(f.nodeid, fh, false).unwrap();
    }
}
