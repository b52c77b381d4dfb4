//! The binary with `--backend cephfs` as an operator meets it: flag
//! checks, an unreachable cluster, and the shared opcode body served
//! through a real vhost-user socket under the default sandbox (empty
//! mount namespace for every thread, no capabilities, seccomp kill).

mod common;
mod opcodes;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cradle_testbed::ceph::CephCluster;

const BIN: &str = env!("CARGO_BIN_EXE_virtiofsd-gfs");

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cephfs_flags_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("s").display().to_string();
    let dir = t.path().display().to_string();
    let missing = t.path().join("none.conf").display().to_string();
    for (args, want) in [
        (
            vec!["--backend", "cephfs", "--shared-dir", &dir],
            "not used with --backend cephfs",
        ),
        (
            vec!["--shared-dir", &dir, "--ceph-fs", "x"],
            "need --backend cephfs",
        ),
        (
            vec!["--backend", "cephfs", "--ceph-root", "rel"],
            "absolute path",
        ),
        (
            vec!["--backend", "cephfs", "--ceph-timeout", "0"],
            "ceph-timeout",
        ),
        (
            vec!["--backend", "cephfs", "--ceph-conf", &missing],
            "reading",
        ),
    ] {
        let mut a = vec!["--socket", &sock];
        a.extend(args.iter());
        let (code, err) = run(&a);
        assert_eq!(code, 2, "{a:?}: {err}");
        assert!(err.contains(want), "{a:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

/// libcephfs is opened at run time: without it (here, a name that
/// exists nowhere, through the test hook `VIRTIOFSD_GFS_LIBCEPHFS`) the
/// daemon says what to install, in one line, and exits 2; a library that
/// lacks a function the backend calls is refused the same way.
#[test]
fn missing_libcephfs_exits_2_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("s");
    for (lib, want) in [
        (
            "libcephfs-not-installed.so.2",
            "libcephfs-not-installed.so.2 not found: install libcephfs2",
        ),
        ("libm.so.6", "libm.so.6 has no ceph_create"),
    ] {
        let out = Command::new(BIN)
            .arg("--socket")
            .arg(&sock)
            .args(["--backend", "cephfs", "--sandbox", "none"])
            .env(virtiofsd_gfs::fs::ceph::LIBRARY_ENV, lib)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{lib}: {err}");
        assert!(err.contains(want), "{lib}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!sock.exists(), "nothing served before the library loads");
    }
}

/// A monitor address nobody listens on: the daemon gives up after
/// `--ceph-timeout` with one clear line and exit status 2.
#[test]
fn unreachable_cluster_exits_2_after_the_timeout() {
    let t = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let conf = t.path().join("ceph.conf");
    std::fs::write(
        &conf,
        format!("[global]\nmon host = v1:127.0.0.1:{port}\nauth client required = cephx\n"),
    )
    .unwrap();
    let kr = t.path().join("keyring");
    std::fs::write(
        &kr,
        "[client.admin]\n\tkey = AQBzb2RlAAAAABAAGqyw7b3xSVc6mWCh6g+ALg==\n",
    )
    .unwrap();
    let sock = t.path().join("s");
    let start = Instant::now();
    let out = Command::new(BIN)
        .arg("--socket")
        .arg(&sock)
        .args(["--backend", "cephfs", "--ceph-timeout", "3"])
        .args(["--sandbox", "none", "--seccomp", "none"])
        .arg("--ceph-conf")
        .arg(&conf)
        .arg("--ceph-keyring")
        .arg(&kr)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cannot mount") && err.contains("within 3 s"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(30),
        "{took:?}"
    );
}

#[test]
fn ceph_default_sandbox_and_seccomp_serve_every_opcode() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the namespace sandbox needs root; skipped");
        return;
    }
    let cluster = CephCluster::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mnt = cluster.mount_fuse(&t.path().join("mnt")).unwrap();
    std::fs::create_dir(mnt.path().join("vm")).unwrap();
    let sock = t.path().join("fs.sock");
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&sock)
        .args(["--backend", "cephfs", "--xattr", "--ceph-root", "/vm"])
        .arg("--ceph-conf")
        .arg(cluster.conf())
        .arg("--ceph-keyring")
        .arg(cluster.keyring())
        .args(["--ceph-fs", "cephfs", "--ceph-id", cluster.client_id()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(start.elapsed() < Duration::from_secs(30), "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_drv, qs) = common::connect(&sock, 2);
    let mut ch = common::Chan::new(qs.into_iter().nth(1).unwrap());
    // The socket exists before the client mounts: the first request
    // waits for it (the vhost-user setup is served only after mounting).
    opcodes::opcodes(&mut common::client(&mut ch), &mnt.path().join("vm"));
    assert!(child.try_wait().unwrap().is_none(), "daemon still running");
    // No capability, seccomp filtering, and every thread (the Ceph
    // client's included) in the empty root.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let eff = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(eff.ends_with("0000000000000000"), "{eff}");
    let seccomp = status.lines().find(|l| l.starts_with("Seccomp:")).unwrap();
    assert!(seccomp.ends_with('2'), "{seccomp}");
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap() {
        let root = task.unwrap().path().join("root");
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "{root:?}");
        threads += 1;
    }
    assert!(threads > 5, "the Ceph client runs threads: {threads}");
    // libcephfs is not linked: it was opened at start, before the sandbox.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", child.id())).unwrap();
    assert!(maps.contains("libcephfs.so.2"), "libcephfs not mapped");
    assert!(
        maps.contains("libceph-common.so.2"),
        "libceph-common not mapped"
    );
    let _ = child.kill();
    let _ = child.wait();
}
