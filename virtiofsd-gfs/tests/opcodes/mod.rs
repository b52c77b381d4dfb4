//! The opcode test body shared by the backend tests: every opcode both
//! backends serve, with effects checked in the tree as seen from outside
//! the daemon.
#![allow(dead_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use virtiofsd_gfs::fuse::abi::{self, opcode as op, Wire};
use virtiofsd_gfs::fuse::client::{body, Client, EntryOut};

/// Waits for the host view to agree (ceph-fuse is another Ceph client:
/// it sees our changes once the MDS has recalled our capabilities).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn host_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

/// Every opcode the two backends share, through `c` (after INIT), with
/// effects checked in `host` (the same tree seen from outside the daemon).
pub fn opcodes<T: FnMut(&[u8]) -> Option<Vec<u8>>>(c: &mut Client<T>, host: &Path) {
    // A file the host made, read through the backend.
    // Synced: another Ceph client (ceph-fuse) may otherwise still hold
    // the data and the new size in its buffers.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(host.join("host")).unwrap();
        f.write_all(b"from the host").unwrap();
        f.sync_all().unwrap();
    }
    let h = c.lookup(1, b"host").unwrap();
    assert_eq!(h.attr.size, 13);
    let (fh, _) = c.open(h.nodeid, libc::O_RDONLY as u32, false).unwrap();
    assert_eq!(c.read(h.nodeid, fh, 5, 100).unwrap(), b"the host");
    c.release(h.nodeid, fh, false).unwrap();
    assert_eq!(c.release(h.nodeid, fh, false), Err(libc::EBADF));
    assert_eq!(c.lookup(1, b"missing").unwrap_err(), libc::ENOENT);

    // mkdir, create, a large write, read back, host view.
    let d = c.mkdir(1, b"dir", 0o750).unwrap();
    assert_eq!(c.mkdir(1, b"dir", 0o750).unwrap_err(), libc::EEXIST);
    let (f, fh) = c
        .create(d.nodeid, b"file", 0o640, libc::O_RDWR as u32)
        .unwrap();
    assert_eq!(f.attr.mode & 0o7777, 0o640);
    let data: Vec<u8> = (0..512 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(c.write(f.nodeid, fh, 0, &data).unwrap(), data.len() as u32);
    assert_eq!(
        c.read(f.nodeid, fh, 4096, 8192).unwrap(),
        &data[4096..4096 + 8192]
    );
    c.call(
        op::FSYNC,
        f.nodeid,
        &body(
            Some(abi::FsyncIn {
                fh,
                ..Default::default()
            }),
            &[],
        ),
    )
    .unwrap();
    c.release(f.nodeid, fh, false).unwrap();
    assert_eq!(std::fs::read(host.join("dir/file")).unwrap(), data);
    assert_eq!(
        std::fs::metadata(host.join("dir")).unwrap().mode() & 0o777,
        0o750
    );
    assert_eq!(c.getattr(f.nodeid).unwrap().size, data.len() as u64);

    // Append.
    let (fh, _) = c
        .open(f.nodeid, (libc::O_WRONLY | libc::O_APPEND) as u32, false)
        .unwrap();
    c.write(f.nodeid, fh, 0, b"+tail").unwrap();
    c.release(f.nodeid, fh, false).unwrap();
    eventually("append visible on the host", || {
        std::fs::metadata(host.join("dir/file")).unwrap().len() == data.len() as u64 + 5
    });

    // setattr: mode, size, times, owner.
    let a = c
        .setattr(
            f.nodeid,
            abi::SetattrIn {
                valid: abi::fattr::MODE | abi::fattr::SIZE | abi::fattr::MTIME,
                mode: 0o600,
                size: 1000,
                mtime: 1_000_000,
                mtimensec: 5,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (a.size, a.mode & 0o777, a.mtime, a.mtimensec),
        (1000, 0o600, 1_000_000, 5)
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
    eventually("setattr visible on the host", || {
        let m = std::fs::metadata(host.join("dir/file")).unwrap();
        (m.len(), m.mode() & 0o777, m.mtime(), m.uid(), m.gid())
            == (1000, 0o600, 1_000_000, 1234, 4321)
    });

    // symlink, readlink, hard link (same node, nlink 2).
    let l = EntryOut::parse(&c.call(op::SYMLINK, d.nodeid, b"link\0file\0").unwrap()).unwrap();
    assert_eq!(l.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(c.call(op::READLINK, l.nodeid, &[]).unwrap(), b"file");
    assert_eq!(
        std::fs::read_link(host.join("dir/link")).unwrap(),
        Path::new("file")
    );
    assert_eq!(c.open(l.nodeid, 0, false), Err(libc::ELOOP));
    assert_eq!(c.open(d.nodeid, 0, false), Err(libc::EISDIR));
    let hl = c
        .call(
            op::LINK,
            1,
            &body(
                Some(abi::LinkIn {
                    oldnodeid: f.nodeid,
                }),
                &[b"hard"],
            ),
        )
        .unwrap();
    let hl = EntryOut::parse(&hl).unwrap();
    assert_eq!((hl.nodeid, hl.attr.nlink), (f.nodeid, 2));
    assert_eq!(std::fs::read(host.join("hard")).unwrap().len(), 1000);

    // rename across directories.
    c.call(
        op::RENAME,
        1,
        &body(
            Some(abi::RenameIn { newdir: d.nodeid }),
            &[b"hard", b"moved"],
        ),
    )
    .unwrap();
    eventually("rename visible on the host", || {
        host.join("dir/moved").exists() && !host.join("hard").exists()
    });

    // xattrs.
    let mut b = body(Some(abi::SetxattrIn { size: 2, flags: 0 }), &[b"user.x"]);
    b.extend_from_slice(b"42");
    c.call(op::SETXATTR, f.nodeid, &b).unwrap();
    let g = c
        .call(
            op::GETXATTR,
            f.nodeid,
            &body(
                Some(abi::GetxattrIn {
                    size: 64,
                    padding: 0,
                }),
                &[b"user.x"],
            ),
        )
        .unwrap();
    assert_eq!(g, b"42");
    let sz = c
        .call(
            op::GETXATTR,
            f.nodeid,
            &body(
                Some(abi::GetxattrIn {
                    size: 0,
                    padding: 0,
                }),
                &[b"user.x"],
            ),
        )
        .unwrap();
    assert_eq!(abi::GetxattrOut::decode(&sz).size, 2);
    let list = c
        .call(
            op::LISTXATTR,
            f.nodeid,
            &body(
                Some(abi::GetxattrIn {
                    size: 4096,
                    padding: 0,
                }),
                &[],
            ),
        )
        .unwrap();
    assert!(list.split(|&b| b == 0).any(|n| n == b"user.x"), "{list:?}");
    eventually("xattr visible on the host", || {
        host_xattr(&host.join("dir/file"), "user.x").as_deref() == Some(&b"42"[..])
    });
    c.call(op::REMOVEXATTR, f.nodeid, b"user.x\0").unwrap();
    assert_eq!(
        c.call(
            op::GETXATTR,
            f.nodeid,
            &body(
                Some(abi::GetxattrIn {
                    size: 64,
                    padding: 0
                }),
                &[b"user.x"]
            ),
        ),
        Err(libc::ENODATA)
    );

    // statfs.
    let st = abi::StatfsOut::decode(&c.call(op::STATFS, 1, &[]).unwrap());
    // (a memstore OSD reports no capacity: blocks may be 0 on Ceph)
    assert!(st.bsize > 0 && st.namelen == 255 && st.files > 0, "{st:?}");

    // A directory of 300 entries paged through READDIR and READDIRPLUS.
    let big = c.mkdir(1, b"big", 0o755).unwrap();
    for i in 0..300 {
        std::fs::write(host.join(format!("big/f-{i:04}")), b"x").unwrap();
    }
    for plus in [false, true] {
        let (dh, _) = c.open(big.nodeid, 0, true).unwrap();
        let mut names = Vec::new();
        let (mut off, mut pages) = (0, 0);
        loop {
            let ents = c.readdir(big.nodeid, dh, off, 4096, plus).unwrap();
            let Some(last) = ents.last() else { break };
            off = last.1;
            pages += 1;
            for (name, _, node) in ents {
                if name != b"." && name != b".." {
                    assert_eq!(plus, node != 0);
                    names.push(String::from_utf8(name).unwrap());
                }
            }
        }
        c.release(big.nodeid, dh, true).unwrap();
        names.sort();
        let want: Vec<_> = (0..300).map(|i| format!("f-{i:04}")).collect();
        assert_eq!(names, want, "plus={plus}");
        assert!(pages > 1);
    }

    // Lookup counts: two lookups need two forgets, then the id is stale.
    let x = c.lookup(big.nodeid, b"f-0000").unwrap();
    let n = c.lookup(big.nodeid, b"f-0000").unwrap();
    assert_eq!(x.nodeid, n.nodeid);
    // Two lookups here and one by READDIRPLUS.
    c.forget(x.nodeid, 2);
    c.getattr(x.nodeid).unwrap();
    c.forget(x.nodeid, 1);
    assert_eq!(c.getattr(x.nodeid), Err(libc::ESTALE));

    // unlink, rmdir, host view.
    assert_eq!(c.call(op::RMDIR, 1, b"dir\0"), Err(libc::ENOTEMPTY));
    for n in [&b"file\0"[..], b"link\0", b"moved\0"] {
        c.call(op::UNLINK, d.nodeid, n).unwrap();
    }
    c.call(op::RMDIR, 1, b"dir\0").unwrap();
    eventually("rmdir visible on the host", || !host.join("dir").exists());
    assert_eq!(c.lookup(1, b"dir").unwrap_err(), libc::ENOENT);
}
