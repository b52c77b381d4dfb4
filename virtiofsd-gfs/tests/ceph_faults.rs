//! Faults of the Ceph cluster under the native backend, in process: an
//! OSD unresponsive past the client's timeout makes I/O fail with EIO
//! instead of hanging, and the same daemon serves again once the OSD is
//! back. The OSD is frozen (SIGSTOP) rather than killed: the fixture's
//! memstore OSD would come back empty after a kill.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cradle_testbed::ceph::CephCluster;
use virtiofsd_gfs::fs::ceph::{self, CephFs};
use virtiofsd_gfs::fuse::abi::{self, opcode as op};
use virtiofsd_gfs::fuse::client::{body, Client};
use virtiofsd_gfs::fuse::{Server, ServerConfig};

/// The pid of this cluster's OSD (the process started with its conf).
fn osd_pid(cluster: &CephCluster) -> i32 {
    let conf = cluster.conf();
    let conf = conf.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        if args.first().is_some_and(|a| a.ends_with(b"ceph-osd")) && args.contains(&conf) {
            return pid;
        }
    }
    panic!("no ceph-osd for this cluster");
}

/// Whether every thread of `pid` is in the stopped state.
fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|st| {
                st.rsplit_once(')')
                    .map(|(_, rest)| rest.trim_start().starts_with('T'))
            })
            .unwrap_or(false)
    })
}

/// Frozen while alive; thawed on drop (also when the test fails).
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        // SAFETY: a signal to a process this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        // kill() returns before the stop takes effect: on a loaded machine
        // the OSD could still answer the next request. Wait until every
        // thread is stopped ('T' in /proc/PID/task/TID/stat).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_threads_stopped(pid) {
            assert!(Instant::now() < deadline, "ceph-osd {pid} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Runs `f` on another thread; fails the test if it takes over `limit`.
fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("still blocked after {limit:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the worker panicked"),
    }
}

#[test]
fn ceph_osd_down_gives_eio_and_the_daemon_recovers() {
    let cluster = CephCluster::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mnt = cluster.mount_fuse(&t.path().join("mnt")).unwrap();
    // Written by another client: not in our client's cache.
    // Synced, so that the data is on the OSD and the size on the MDS (a
    // size still buffered in ceph-fuse would make our read an empty EOF).
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mnt.path().join("cold")).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
    }
    let mut cfg = ceph::Config::new();
    cfg.conf = Some(cluster.conf());
    cfg.keyring = Some(cluster.keyring());
    cfg.fs_name = Some("cephfs".into());
    cfg.osd_timeout = Duration::from_secs(5);
    let s = Arc::new(Server::new(
        CephFs::new(cfg).unwrap(),
        ServerConfig::default(),
    ));
    let mut c = Client::new(|r: &[u8]| s.handle(r));
    c.init(37, 0).unwrap();
    let cold = c.lookup(1, b"cold").unwrap();
    assert_eq!(cold.attr.size, 1 << 20);
    let (cfh, _) = c.open(cold.nodeid, libc::O_RDONLY as u32, false).unwrap();
    let (w, wfh) = c.create(1, b"w", 0o644, libc::O_RDWR as u32).unwrap();
    let fsync = body(
        Some(abi::FsyncIn {
            fh: wfh,
            ..Default::default()
        }),
        &[],
    );
    c.write(w.nodeid, wfh, 0, b"before").unwrap();
    c.call(op::FSYNC, w.nodeid, &fsync).unwrap();

    let frozen = Frozen::new(osd_pid(&cluster));
    let started = Instant::now();
    let s2 = s.clone();
    let fsync2 = fsync.clone();
    let (read, write, sync) = bounded(Duration::from_secs(90), move || {
        let mut c = Client::new(|r: &[u8]| s2.handle(r));
        let read = c.read(cold.nodeid, cfh, 0, 4096).map(|_| ());
        let write = c.write(w.nodeid, wfh, 0, b"during").map(|_| ());
        let sync = c.call(op::FSYNC, w.nodeid, &fsync2).map(|_| ());
        (read, write, sync)
    });
    let took = started.elapsed();
    let seen = format!("read {read:?}, write {write:?}, fsync {sync:?} after {took:?}");
    // The write itself may be buffered (Ok) or fail; what reaches the
    // OSD fails with EIO once the timeout passed, never sooner.
    assert_eq!(read, Err(libc::EIO), "read of uncached data: {seen}");
    assert_eq!(sync, Err(libc::EIO), "fsync of a write: {seen}");
    assert!(took >= Duration::from_secs(4), "{seen}");
    // Metadata the client holds still answers; the daemon is alive.
    c.getattr(1).unwrap();

    drop(frozen);
    let s3 = s.clone();
    let data = bounded(Duration::from_secs(90), move || {
        let mut c = Client::new(|r: &[u8]| s3.handle(r));
        let start = Instant::now();
        loop {
            match c.read(cold.nodeid, cfh, 0, 4096) {
                Ok(d) => break d,
                Err(e) => {
                    assert!(start.elapsed() < Duration::from_secs(60), "{e}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    });
    assert_eq!(data, vec![7u8; 4096]);
    // A writeback of the outage that failed after our fsync returned is
    // reported once by the next write or fsync (POSIX: errors since the
    // last fsync); then writes go through again.
    let mut reported = Vec::new();
    loop {
        let wr = c.write(w.nodeid, wfh, 0, b"after!").map(|_| ());
        let sy = c.call(op::FSYNC, w.nodeid, &fsync).map(|_| ());
        if wr.is_ok() && sy.is_ok() {
            break;
        }
        reported.push((wr, sy));
        assert!(
            reported.len() < 3
                && reported
                    .iter()
                    .all(|(a, b)| a.err().unwrap_or(libc::EIO) == libc::EIO
                        && b.err().unwrap_or(libc::EIO) == libc::EIO),
            "{reported:?}"
        );
    }
    c.release(w.nodeid, wfh, false).unwrap();
    c.release(cold.nodeid, cfh, false).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read(mnt.path().join("w")).unwrap(), b"after!");
}
