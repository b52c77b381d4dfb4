//! The binary as an operator meets it: flags, exit statuses, readiness,
//! SIGTERM, an inherited socket.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cradle_devices::driver::{Driver, DriverConfig};
use cradle_testbed::daemon::{pass_fd_as_3, refused_usage, run_to_end, Daemon, Finished};

const BIN: &str = env!("CARGO_BIN_EXE_virtiofsd-gfs");

fn run(args: &[&str]) -> Finished {
    run_to_end(BIN, args).unwrap()
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let sock = d.path().join("s").display().to_string();
    let cases: &[&[&str]] = &[
        &["--no-such-flag"],
        &["--socket", &sock],
        &["--shared-dir", dir],
        &["--socket", &sock, "--shared-dir", "/nonexistent/dir"],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--cache",
            "sometimes",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--tag",
            &"t".repeat(37),
        ],
        &["--socket", &sock, "--shared-dir", dir, "--num-queues", "0"],
        &["--socket", &sock, "--shared-dir", dir, "--poll-us", "1001"],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--queue-size",
            "100",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--inode-file-handles",
            "maybe",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--thread-pool-size",
            "x",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--rlimit-nofile",
            "0",
        ],
        &["--socket", &sock, "--shared-dir", dir, "--sandbox", "jail"],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--log-level",
            "loud[[",
        ],
        &["--socket", &sock, "--fd", "3", "--shared-dir", dir],
    ];
    for args in cases {
        refused_usage(BIN, args).unwrap();
    }
}

#[test]
fn print_capabilities_is_json() {
    let r = run(&["--print-capabilities"]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout.trim(), r#"{"type": "fs", "features": []}"#);
    let Finished {
        code, stdout: out, ..
    } = run(&["--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--shared-dir",
        "--tag",
        "--cache",
        "--readonly",
        "--writeback",
        "--xattr",
        "--posix-acl",
        "--num-queues",
        "--queue-size",
        "--thread-pool-size",
        "--inode-file-handles",
        "--rlimit-nofile",
        "--sandbox",
        "--seccomp",
        "--log-level",
        "--fd",
        "--socket",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn notifies_ready_after_listening_and_exits_0_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let sock = d.path().join("fs.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("--socket")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(&tree)
        .args([
            "--sandbox",
            "none",
            "--seccomp",
            "none",
            "--thread-pool-size",
            "4",
        ])
        .stderr(Stdio::piped());
    let mut child = Daemon::spawn_ready(&mut cmd, Duration::from_secs(10)).unwrap();
    // Listening by the time READY=1 arrived.
    let drv = Driver::connect(
        &sock,
        DriverConfig {
            num_queues: 2,
            queue_size: 64,
            ..Default::default()
        },
    )
    .unwrap();
    child.signal(libc::SIGTERM).unwrap();
    let stopping = child.notification(Duration::from_secs(10)).unwrap();
    assert_eq!(stopping, "STOPPING=1");
    let st = child.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    drop(drv);
    let err = child.stderr_text().unwrap();
    assert!(err.contains("serving"), "{err}");
}

#[test]
fn serves_an_inherited_socket_fd() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("inherited.sock");
    let l = UnixListener::bind(&sock).unwrap();
    // Let the child inherit the listener as fd 3.
    let mut cmd = Command::new(BIN);
    pass_fd_as_3(&mut cmd, l.as_raw_fd());
    cmd.args(["--fd", "3", "--sandbox", "none", "--seccomp", "none"])
        .arg("--shared-dir")
        .arg(d.path())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    drop(l);
    let drv = Driver::connect(
        &sock,
        DriverConfig {
            num_queues: 2,
            queue_size: 64,
            ..Default::default()
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(drv.is_ok(), "{:?}", drv.err());
}

/// The default configuration (namespace sandbox, seccomp kill, reduced
/// capabilities) serves every opcode: a syscall missing from the
/// allowlist would kill the daemon and fail the next request.
#[test]
fn default_sandbox_and_seccomp_serve_every_opcode() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the namespace sandbox needs root; skipped");
        return;
    }
    use common::{client, Chan};
    use virtiofsd_gfs::fuse::abi::{self, opcode as op, Wire};
    use virtiofsd_gfs::fuse::client::{body, EntryOut};

    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("host"), b"0123456789").unwrap();
    let sock = d.path().join("fs.sock");
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(&tree)
        .args(["--xattr", "--inode-file-handles", "prefer"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "daemon did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_drv, qs) = common::connect(&sock, 2);
    let mut ch = Chan::new(qs.into_iter().nth(1).unwrap());
    {
        let mut c = client(&mut ch);
        let h = c.lookup(1, b"host").unwrap();
        let (fh, _) = c.open(h.nodeid, libc::O_RDWR as u32, false).unwrap();
        assert_eq!(c.read(h.nodeid, fh, 2, 3).unwrap(), b"234");
        c.write(h.nodeid, fh, 10, b"ab").unwrap();
        let fa = abi::FallocateIn {
            fh,
            offset: 0,
            length: 4096,
            mode: 0,
            padding: 0,
        };
        c.call(op::FALLOCATE, h.nodeid, &body(Some(fa), &[]))
            .unwrap();
        let ls = abi::LseekIn {
            fh,
            offset: 0,
            whence: libc::SEEK_END as u32,
            padding: 0,
        };
        c.call(op::LSEEK, h.nodeid, &body(Some(ls), &[])).unwrap();
        c.call(
            op::FLUSH,
            h.nodeid,
            &body(
                Some(abi::FlushIn {
                    fh,
                    ..Default::default()
                }),
                &[],
            ),
        )
        .unwrap();
        c.call(
            op::FSYNC,
            h.nodeid,
            &body(
                Some(abi::FsyncIn {
                    fh,
                    ..Default::default()
                }),
                &[],
            ),
        )
        .unwrap();
        let (n, nfh) = c.create(1, b"new", 0o644, libc::O_RDWR as u32).unwrap();
        let cr = abi::CopyFileRangeIn {
            fh_in: fh,
            off_in: 0,
            nodeid_out: n.nodeid,
            fh_out: nfh,
            off_out: 0,
            len: 5,
            flags: 0,
        };
        c.call(op::COPY_FILE_RANGE, h.nodeid, &body(Some(cr), &[]))
            .unwrap();
        c.release(n.nodeid, nfh, false).unwrap();
        c.release(h.nodeid, fh, false).unwrap();
        let set = abi::SetattrIn {
            valid: abi::fattr::MODE
                | abi::fattr::UID
                | abi::fattr::GID
                | abi::fattr::SIZE
                | abi::fattr::ATIME_NOW
                | abi::fattr::MTIME,
            mode: 0o600,
            uid: 1000,
            gid: 1000,
            size: 3,
            mtime: 1_000_000,
            ..Default::default()
        };
        c.setattr(n.nodeid, set).unwrap();
        let dir = c.mkdir(1, b"d", 0o755).unwrap();
        c.call(op::SYMLINK, dir.nodeid, b"s\0../new\0").unwrap();
        let s = EntryOut::parse(&c.call(op::LOOKUP, dir.nodeid, b"s\0").unwrap()).unwrap();
        assert_eq!(c.call(op::READLINK, s.nodeid, &[]).unwrap(), b"../new");
        let mk = abi::MknodIn {
            mode: libc::S_IFIFO | 0o600,
            ..Default::default()
        };
        c.call(op::MKNOD, dir.nodeid, &body(Some(mk), &[b"fifo"]))
            .unwrap();
        c.call(
            op::LINK,
            dir.nodeid,
            &body(
                Some(abi::LinkIn {
                    oldnodeid: n.nodeid,
                }),
                &[b"hard"],
            ),
        )
        .unwrap();
        c.call(
            op::RENAME,
            dir.nodeid,
            &body(Some(abi::RenameIn { newdir: 1 }), &[b"hard", b"hard2"]),
        )
        .unwrap();
        let r2 = abi::Rename2In {
            newdir: 1,
            flags: libc::RENAME_EXCHANGE,
            padding: 0,
        };
        c.call(op::RENAME2, 1, &body(Some(r2), &[b"hard2", b"host"]))
            .unwrap();
        let mut x = body(Some(abi::SetxattrIn { size: 1, flags: 0 }), &[b"user.a"]);
        x.push(b'1');
        c.call(op::SETXATTR, n.nodeid, &x).unwrap();
        c.call(
            op::GETXATTR,
            n.nodeid,
            &body(
                Some(abi::GetxattrIn {
                    size: 8,
                    padding: 0,
                }),
                &[b"user.a"],
            ),
        )
        .unwrap();
        c.call(
            op::LISTXATTR,
            n.nodeid,
            &body(
                Some(abi::GetxattrIn {
                    size: 0,
                    padding: 0,
                }),
                &[],
            ),
        )
        .unwrap();
        c.call(op::REMOVEXATTR, n.nodeid, b"user.a\0").unwrap();
        let t = abi::CreateIn {
            flags: libc::O_RDWR as u32,
            mode: 0o600,
            umask: 0,
            open_flags: 0,
        };
        let r = c
            .call(op::TMPFILE, dir.nodeid, &body(Some(t), &[b"t"]))
            .unwrap();
        let tfh = abi::OpenOut::decode(&r[128..]).fh;
        c.release(EntryOut::parse(&r).unwrap().nodeid, tfh, false)
            .unwrap();
        let (dh, _) = c.open(1, 0, true).unwrap();
        assert!(c.readdir(1, dh, 0, 8192, true).unwrap().len() >= 5);
        c.call(
            op::FSYNCDIR,
            1,
            &body(
                Some(abi::FsyncIn {
                    fh: dh,
                    ..Default::default()
                }),
                &[],
            ),
        )
        .unwrap();
        c.release(1, dh, true).unwrap();
        c.call(op::STATFS, 1, &[]).unwrap();
        c.call(op::SYNCFS, 1, &[0; 8]).unwrap();
        c.call(
            op::ACCESS,
            1,
            &body(
                Some(abi::AccessIn {
                    mask: 7,
                    padding: 0,
                }),
                &[],
            ),
        )
        .unwrap();
        c.call(op::UNLINK, dir.nodeid, b"fifo\0").unwrap();
        c.call(op::UNLINK, dir.nodeid, b"s\0").unwrap();
        c.call(op::RMDIR, 1, b"d\0").unwrap();
        c.forget(n.nodeid, 1);
        c.call(op::DESTROY, 0, &[]).unwrap();
    }
    assert!(child.try_wait().unwrap().is_none(), "daemon died");
    let m = std::fs::metadata(tree.join("new")).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!((m.len(), m.uid(), m.mode() & 0o777), (3, 1000, 0o600));
    }
    // Only the capabilities the backend needs are left, and its root is
    // an empty directory.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    let mut want = 0u64;
    for c in virtiofsd_gfs::CAPABILITIES
        .iter()
        .chain([&virtiofsd_gfs::CAP_DAC_READ_SEARCH])
    {
        want |= 1 << c;
    }
    assert_eq!(
        u64::from_str_radix(eff.split_whitespace().nth(1).unwrap(), 16).unwrap(),
        want
    );
    let seccomp = status.lines().find(|l| l.starts_with("Seccomp:")).unwrap();
    assert!(seccomp.ends_with('2'), "{seccomp}");
    let root = std::fs::read_dir(format!("/proc/{}/root", child.id()))
        .unwrap()
        .count();
    assert_eq!(root, 0, "sandbox root is empty");
    let _ = child.kill();
    let _ = child.wait();
}

/// libcephfs is opened only for `--backend cephfs`: a passthrough daemon
/// serving requests maps no Ceph library at all (they were ~14 MiB of its
/// resident set when they were linked).
#[test]
fn passthrough_maps_no_ceph_library() {
    use common::{client, Chan};

    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"0123456789").unwrap();
    let sock = d.path().join("fs.sock");
    let mut cmd = Command::new(BIN);
    cmd.arg("--socket")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(&tree)
        .stdin(Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        cmd.args(["--sandbox", "none"]);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(start.elapsed() < Duration::from_secs(10), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_drv, qs) = common::connect(&sock, 2);
    let mut ch = Chan::new(qs.into_iter().nth(1).unwrap());
    {
        let mut c = client(&mut ch);
        let e = c.lookup(1, b"f").unwrap();
        let (fh, _) = c.open(e.nodeid, libc::O_RDONLY as u32, false).unwrap();
        assert_eq!(c.read(e.nodeid, fh, 0, 4).unwrap(), b"0123");
        c.release(e.nodeid, fh, false).unwrap();
    }
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // The file was read while the daemon was serving: libc is mapped.
    assert!(maps.contains("libc.so"), "{maps}");
    let ceph: Vec<&str> = maps.lines().filter(|l| l.contains("libceph")).collect();
    assert!(ceph.is_empty(), "Ceph libraries mapped: {ceph:#?}");
}
