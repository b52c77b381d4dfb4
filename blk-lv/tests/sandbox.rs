//! The default sandbox (mount namespace + pivot_root, no capabilities,
//! seccomp kill) with a real workload: anything outside the allowlist
//! would kill the daemon with SIGSYS.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use cradle_devices::driver::blk::{BlkRequest, S_OK};

fn root_entries(pid: u32) -> BTreeSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn status_field(pid: u32, name: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn workload(sock: &std::path::Path) {
    let (_drv, mut qs) = connect(sock, 2, 64);
    for (i, q) in qs.iter_mut().enumerate() {
        let data = pattern(i as u64, 8192);
        q.write(i as u64 * 64, &data).unwrap();
        assert_eq!(q.read(i as u64 * 64, 8192).unwrap(), data);
        assert_eq!(q.status(BlkRequest::Flush).unwrap(), S_OK);
        assert_eq!(q.status(BlkRequest::GetId).unwrap(), S_OK);
        assert_eq!(
            q.status(BlkRequest::Discard {
                sector: 1024,
                sectors: 8
            })
            .unwrap(),
            S_OK
        );
        assert_eq!(
            q.status(BlkRequest::WriteZeroes {
                sector: 2048,
                sectors: 8,
                unmap: true
            })
            .unwrap(),
            S_OK
        );
    }
}

#[test]
fn namespace_sandbox_shows_only_what_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let sock = dir.path().join("blk.sock");
    // Defaults: --sandbox namespace --seccomp kill.
    let mut child = spawn_ready(&[
        "--socket",
        sock.to_str().unwrap(),
        "--path",
        img.to_str().unwrap(),
        "--num-queues",
        "2",
    ]);
    let pid = child.child().id();
    assert!(eventually(|| root_entries(pid)
        == BTreeSet::from([
            "disk.img".to_string(),
            "blk.sock".to_string()
        ])));
    // The filter comes right after the pivot: wait for it.
    assert!(
        eventually(|| status_field(pid, "Seccomp") == "2"),
        "filter mode"
    );
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");
    assert_eq!(status_field(pid, "CapBnd"), "0000000000000000");
    // Two connections in a row (new io_urings under the filter), then SIGTERM.
    workload(&sock);
    workload(&sock);
    // Reconnections under the sandbox and seccomp leak no descriptors.
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    std::thread::sleep(Duration::from_millis(200));
    let before = fds();
    for _ in 0..5 {
        workload(&sock);
    }
    assert!(eventually(|| fds() <= before), "fds {before} -> {}", fds());
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "daemon still alive"
    );
    // The host file got the writes.
    assert_eq!(std::fs::read(&img).unwrap()[..8192], pattern(0, 8192)[..]);
    assert_eq!(
        child.terminate(Duration::from_secs(10)).unwrap().code(),
        Some(0),
        "clean exit, not SIGSYS"
    );
}

#[test]
fn chroot_sandbox_shows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let sock = dir.path().join("blk.sock");
    let mut child = spawn_ready(&[
        "--socket",
        sock.to_str().unwrap(),
        "--path",
        img.to_str().unwrap(),
        "--sandbox",
        "chroot",
    ]);
    let pid = child.child().id();
    assert!(eventually(|| root_entries(pid).is_empty()));
    let (_drv, mut qs) = connect(&sock, 1, 64);
    qs[0].write(0, &[5; 4096]).unwrap();
    assert_eq!(qs[0].read(0, 4096).unwrap(), vec![5; 4096]);
    assert_eq!(
        child.terminate(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}

#[test]
fn seccomp_kill_filter_kills_on_a_forbidden_syscall() {
    use cradle_devices::daemon::{seccomp, SeccompMode};
    // The filter is real: a forked child that installs it and calls a
    // syscall outside the list (getppid) dies of SIGSYS.
    let prog = seccomp::filter(SeccompMode::Kill, &[]).unwrap().unwrap();
    // SAFETY: the child only makes raw syscalls (no allocation) before _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = seccomp::install(&prog).is_ok();
        // SAFETY: raw syscalls in the child.
        unsafe {
            if ok {
                libc::syscall(libc::SYS_getppid);
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFSIGNALED(status), "status {status:#x}");
    assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
}
