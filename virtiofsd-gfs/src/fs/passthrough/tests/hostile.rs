//! Hostile requests and path-escape attempts: each must get an error
//! reply and leave everything outside the shared directory untouched.

use std::os::unix::fs::MetadataExt;

use super::{client, server};
use crate::fuse::abi::{self, opcode as op};
use crate::fuse::client::{body, request, Reply};

#[test]
fn hostile_requests_get_error_replies() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("f"), b"secret?").unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    // Short header: EINVAL with unique 0.
    for n in [0usize, 1, 39] {
        let r = Reply::parse(&s.handle(&vec![0xff; n]).unwrap()).unwrap();
        assert_eq!((r.error, r.unique), (-libc::EINVAL, 0));
    }
    // Length field disagreeing with the buffer (both ways).
    let mut req = request(op::LOOKUP, 1, 5, 0, 0, b"f\0");
    req[0] = 200;
    assert_eq!(
        Reply::parse(&s.handle(&req).unwrap()).unwrap().error,
        -libc::EINVAL
    );
    let mut req = request(op::LOOKUP, 1, 5, 0, 0, b"f\0");
    req.extend_from_slice(&[0; 100]);
    assert_eq!(
        Reply::parse(&s.handle(&req).unwrap()).unwrap().error,
        -libc::EINVAL
    );
    // Extension length past the end.
    let mut req = request(op::LOOKUP, 1, 5, 0, 0, b"f\0");
    req[36] = 0xff;
    assert_eq!(
        Reply::parse(&s.handle(&req).unwrap()).unwrap().error,
        -libc::EINVAL
    );
    // Unknown and unsupported opcodes.
    for opc in [
        0,
        7,
        19,
        op::GETLK,
        op::SETLK,
        op::IOCTL,
        op::BMAP,
        op::POLL,
        1000,
        u32::MAX,
    ] {
        assert_eq!(c.call(opc, 1, &[0; 64]), Err(libc::ENOSYS), "opcode {opc}");
    }
    // Names: with '/', '.', '..', empty, too long, unterminated.
    for n in [&b"../f\0"[..], b"a/b\0", b".\0", b"..\0", b"\0", b"f"] {
        assert_eq!(c.call(op::LOOKUP, 1, n).unwrap_err(), libc::EINVAL, "{n:?}");
    }
    // A NUL inside a name (bytes after the terminator) is refused too.
    for (opc, b) in [
        (op::LOOKUP, &b"f\0x\0"[..]),
        (op::UNLINK, b"f\0../x\0"),
        (op::SYMLINK, b"l\0t\0junk"),
        (op::REMOVEXATTR, b"user.a\0b\0"),
    ] {
        assert_eq!(c.call(opc, 1, b), Err(libc::EINVAL), "opcode {opc}");
    }
    assert!(std::fs::read(t.path().join("f")).is_ok());
    let mut b = body(Some(abi::SetxattrIn { size: 1, flags: 0 }), &[b"user.a"]);
    b.extend_from_slice(b"value longer than size");
    assert_eq!(c.call(op::SETXATTR, 1, &b), Err(libc::EINVAL));
    let long = [vec![b'a'; 256], vec![0]].concat();
    assert_eq!(c.call(op::LOOKUP, 1, &long), Err(libc::ENAMETOOLONG));
    assert_eq!(
        c.call(
            op::MKDIR,
            1,
            &body(
                Some(abi::MkdirIn {
                    mode: 0o755,
                    umask: 0
                }),
                &[b"../../escape"]
            )
        ),
        Err(libc::EINVAL)
    );
    assert_eq!(
        c.call(
            op::RENAME,
            1,
            &body(
                Some(abi::RenameIn { newdir: 1 }),
                &[b"f", b"../../../tmp/x"]
            )
        ),
        Err(libc::EINVAL)
    );
    assert!(std::fs::read(t.path().join("f")).is_ok());
    // Every fixed-size body truncated by one byte.
    for opc in [
        op::GETATTR,
        op::SETATTR,
        op::MKNOD,
        op::MKDIR,
        op::RENAME,
        op::RENAME2,
        op::LINK,
        op::OPEN,
        op::READ,
        op::WRITE,
        op::RELEASE,
        op::FSYNC,
        op::SETXATTR,
        op::GETXATTR,
        op::LISTXATTR,
        op::FLUSH,
        op::OPENDIR,
        op::READDIR,
        op::READDIRPLUS,
        op::RELEASEDIR,
        op::FSYNCDIR,
        op::ACCESS,
        op::CREATE,
        op::FALLOCATE,
        op::LSEEK,
        op::COPY_FILE_RANGE,
        op::TMPFILE,
        op::SYMLINK,
        op::UNLINK,
        op::RMDIR,
        op::READLINK,
        op::REMOVEXATTR,
        op::LOOKUP,
    ] {
        for len in [0usize, 3, 7] {
            let r = c.call(opc, 1, &vec![1u8; len]);
            assert!(
                r.is_err() || opc == op::GETATTR || opc == op::READLINK,
                "opcode {opc} len {len}: {r:?}"
            );
        }
    }
    // WRITE whose size disagrees with the payload.
    let f = c.lookup(1, b"f").unwrap();
    let (fh, _) = c.open(f.nodeid, libc::O_RDWR as u32, false).unwrap();
    let mut b = body(
        Some(abi::WriteIn {
            fh,
            size: 1000,
            ..Default::default()
        }),
        &[],
    );
    b.extend_from_slice(b"short");
    assert_eq!(c.call(op::WRITE, f.nodeid, &b), Err(libc::EINVAL));
    // READ of 4 GiB is clamped, not allocated.
    assert_eq!(c.read(f.nodeid, fh, 0, u32::MAX).unwrap(), b"secret?");
    // Handles of another inode, unknown handles, unknown inodes.
    assert_eq!(c.read(1, fh, 0, 10), Err(libc::EBADF));
    assert_eq!(c.read(f.nodeid, fh + 100, 0, 10), Err(libc::EBADF));
    assert_eq!(c.getattr(987654), Err(libc::ESTALE));
    assert_eq!(c.lookup(f.nodeid, b"x").unwrap_err(), libc::ENOTDIR);
    // BATCH_FORGET claiming a huge count with no items.
    assert!(c
        .send_noreply(
            op::BATCH_FORGET,
            0,
            &body(
                Some(abi::BatchForgetIn {
                    count: u32::MAX,
                    dummy: 0
                }),
                &[]
            )
        )
        .is_none());
    assert!(
        s.counters
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed)
            > 10
    );
}

#[test]
fn no_escape_through_symlinks_or_renames() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("passwd"), b"outside").unwrap();
    let t = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/", t.path().join("root")).unwrap();
    std::os::unix::fs::symlink(outside.path(), t.path().join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("passwd"), t.path().join("pw")).unwrap();
    std::fs::create_dir_all(t.path().join("a/b")).unwrap();
    let s = server(t.path(), |_| {});
    let mut c = client(&s);
    // A symlink is an inode of its own, never a directory to walk through.
    let r = c.lookup(1, b"root").unwrap();
    assert_eq!(r.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(c.lookup(r.nodeid, b"etc").unwrap_err(), libc::ENOTDIR);
    let o = c.lookup(1, b"out").unwrap();
    assert_eq!(c.lookup(o.nodeid, b"passwd").unwrap_err(), libc::ENOTDIR);
    assert_eq!(c.open(o.nodeid, 0, true).unwrap_err(), libc::ENOTDIR);
    assert_eq!(c.mkdir(o.nodeid, b"x", 0o755).unwrap_err(), libc::ENOTDIR);
    let pw = c.lookup(1, b"pw").unwrap();
    assert_eq!(c.open(pw.nodeid, 0, false).unwrap_err(), libc::ELOOP);
    assert_eq!(
        c.setattr(
            pw.nodeid,
            abi::SetattrIn {
                valid: abi::fattr::SIZE,
                ..Default::default()
            }
        )
        .unwrap_err(),
        libc::EINVAL
    );
    assert_eq!(
        c.setattr(
            pw.nodeid,
            abi::SetattrIn {
                valid: abi::fattr::MODE,
                mode: 0o777,
                ..Default::default()
            }
        )
        .unwrap_err(),
        libc::EOPNOTSUPP
    );
    // A hard link to the symlink is a symlink, not the target.
    let h = c
        .call(
            op::LINK,
            1,
            &body(
                Some(abi::LinkIn {
                    oldnodeid: pw.nodeid,
                }),
                &[b"pw2"],
            ),
        )
        .unwrap();
    let h = crate::fuse::client::EntryOut::parse(&h).unwrap();
    assert_eq!(h.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(
        std::fs::read(outside.path().join("passwd")).unwrap(),
        b"outside"
    );
    let m = std::fs::metadata(outside.path().join("passwd")).unwrap();
    assert_eq!(m.nlink(), 1);
    // Rename a directory out from under a held inode: it keeps working on
    // the moved object, which is still inside the tree.
    let a = c.lookup(1, b"a").unwrap();
    let b = c.lookup(a.nodeid, b"b").unwrap();
    std::fs::rename(t.path().join("a/b"), t.path().join("moved")).unwrap();
    let (_, fh) = c
        .create(b.nodeid, b"new", 0o644, libc::O_RDWR as u32)
        .unwrap();
    assert!(t.path().join("moved/new").exists());
    let n = c.lookup(b.nodeid, b"new").unwrap();
    c.release(n.nodeid, fh, false).unwrap();
    // A guest-made symlink pointing out is stored, never followed.
    c.call(op::SYMLINK, 1, b"evil\0../../../../etc\0").unwrap();
    let e = c.lookup(1, b"evil").unwrap();
    assert_eq!(c.lookup(e.nodeid, b"passwd").unwrap_err(), libc::ENOTDIR);
    assert_eq!(
        c.call(op::READLINK, e.nodeid, &[]).unwrap(),
        b"../../../../etc"
    );
}
