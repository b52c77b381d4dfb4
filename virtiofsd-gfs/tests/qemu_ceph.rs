//! GFS over CephFS under the real Linux virtiofs driver: the workload of
//! `qemu_workload.rs` (module `workload`) against the native backend and against our
//! passthrough over a ceph-fuse mount (host view read through ceph-fuse),
//! two guests on two daemons with two Ceph clients seeing each other's
//! writes and renames with `--cache never`, and an MDS restart under a
//! writing guest losing nothing.

mod common;
mod workload;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{start, Which};
use cradle_testbed::ceph::CephCluster;
use cradle_testbed::QemuGuest;
use workload::{check_host_view, check_run, guest, seed, two_guests, WORKLOAD};

/// Our daemon with the native backend on `cluster`, rooted at `root`,
/// default sandbox and seccomp; killed on drop.
struct Native {
    child: Child,
}

impl Drop for Native {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn native(cluster: &CephCluster, root: &str, sock: &Path, cache: &str) -> Native {
    let mut child = Command::new(env!("CARGO_BIN_EXE_virtiofsd-gfs"))
        .arg("--socket")
        .arg(sock)
        .args(["--backend", "cephfs", "--xattr", "--cache", cache])
        .args(["--ceph-root", root, "--ceph-fs", "cephfs"])
        .args(["--ceph-id", cluster.client_id()])
        .arg("--ceph-conf")
        .arg(cluster.conf())
        .arg("--ceph-keyring")
        .arg(cluster.keyring())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        assert!(start.elapsed() < Duration::from_secs(30), "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    Native { child }
}

/// A cluster, a ceph-fuse mount of it for the host view, and `sub`
/// created in it with `host.txt`.
fn cluster_with(
    sub: &str,
) -> (
    CephCluster,
    tempfile::TempDir,
    cradle_testbed::ceph::FuseMount,
    PathBuf,
) {
    let cluster = CephCluster::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mnt = cluster.mount_fuse(&t.path().join("mnt")).unwrap();
    let dir = mnt.path().join(sub);
    fs::create_dir(&dir).unwrap();
    seed(&dir);
    (cluster, t, mnt, dir)
}

#[test]
fn qemu_ceph_workload_on_the_native_backend() {
    let (cluster, t, _mnt, dir) = cluster_with("vm");
    let sock = t.path().join("fs.sock");
    let _d = native(&cluster, "/vm", &sock, "auto");
    let run = guest(&sock).run(WORKLOAD).unwrap();
    check_run(&run.output);
    check_host_view(&dir);
}

#[test]
fn qemu_ceph_workload_on_passthrough_over_ceph_fuse() {
    let (_cluster, t, _mnt, dir) = cluster_with("vm");
    let sock = t.path().join("fs.sock");
    let _d = start(Which::Ours, &dir, &sock, "auto", &["--xattr"]);
    let run = guest(&sock).run(WORKLOAD).unwrap();
    check_run(&run.output);
    check_host_view(&dir);
}

/// One guest's side of the exchange: stage numbers written and waited
/// for (the peer's file also re-read through a descriptor opened before
/// its last write), then a rename the peer must see.
fn peer_script(me: &str, peer: &str) -> String {
    format!(
        r#"set -e
mount -t virtiofs gfs /mnt
wait_until() {{
  i=0
  until eval "$1"; do
    i=$((i+1)); [ $i -lt 600 ] || {{ echo "timeout: $1"; exit 1; }}
    sleep 0.1
  done
}}
echo 1 > /mnt/{me}
wait_until '[ "$(cat /mnt/{peer} 2>/dev/null || echo 0)" -ge 1 ]'
exec 3< /mnt/{peer}
echo 2 > /mnt/{me}
wait_until '[ "$(cat /mnt/{peer})" -ge 2 ]'
test "$(cat <&3)" = 2
echo "seen {peer} 2"
echo {me} > /mnt/{me}.tmp
mv /mnt/{me}.tmp /mnt/{me}.moved
wait_until '[ -e /mnt/{peer}.moved ] && [ ! -e /mnt/{peer}.tmp ]'
test "$(cat /mnt/{peer}.moved)" = {peer}
echo "seen {peer} renamed"
touch /mnt/{me}.done
"#
    )
}

#[test]
fn qemu_ceph_two_guests_two_clients_coherent_with_cache_never() {
    let (cluster, t, _mnt, dir) = cluster_with("shared");
    let (sa, sb) = (t.path().join("a.sock"), t.path().join("b.sock"));
    // Two daemons, each its own Ceph client.
    let _da = native(&cluster, "/shared", &sa, "never");
    let _db = native(&cluster, "/shared", &sb, "never");
    let (ra, rb) = two_guests(&sa, &sb, peer_script);
    for (r, peer) in [(&ra, "b"), (&rb, "a")] {
        assert!(r.output.contains(&format!("seen {peer} 2")), "{}", r.output);
        assert!(
            r.output.contains(&format!("seen {peer} renamed")),
            "{}",
            r.output
        );
    }
    assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "2\n");
    assert_eq!(fs::read_to_string(dir.join("b.moved")).unwrap(), "b\n");
    assert!(dir.join("a.done").exists() && dir.join("b.done").exists());
}

/// The guest writes files with `conv=fsync` (acknowledged = written and
/// synced) and prints their checksums; the MDS is killed and restarted
/// while it does. Every file must be there afterwards with its checksum.
#[test]
fn qemu_ceph_mds_restart_under_a_writing_guest_loses_nothing() {
    const FILES: usize = 30;
    let (mut cluster, t, mnt, dir) = cluster_with("vm");
    let sock = t.path().join("fs.sock");
    let _d = native(&cluster, "/vm", &sock, "auto");
    let script = format!(
        r#"set -e
mount -t virtiofs gfs /mnt
mkdir /mnt/w
i=0
while [ $i -lt {FILES} ]; do
  dd if=/dev/urandom of=/tmp/x bs=64k count=4 2>/dev/null
  dd if=/tmp/x of=/mnt/w/f$i bs=64k conv=fsync 2>/dev/null
  echo "SUM $(sha256sum < /tmp/x | cut -d' ' -f1) f$i"
  i=$((i+1))
  sleep 0.3
done
ls /mnt/w | wc -l
echo WRITES-DONE
"#
    );
    let g = std::thread::spawn(move || {
        QemuGuest::new()
            .vhost_user_fs(&sock, "gfs")
            .timeout(Duration::from_secs(300))
            .run(&script)
    });
    // Restart the MDS once the guest is well into its writes.
    let start = Instant::now();
    while !dir.join("w/f3").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "guest never wrote"
        );
        assert!(!g.is_finished(), "guest ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster.restart_mds().unwrap();
    let run = g.join().unwrap().unwrap();
    assert!(run.output.contains("WRITES-DONE"), "{}", run.output);
    let sums: Vec<(&str, &str)> = run
        .output
        .lines()
        .filter_map(|l| l.strip_prefix("SUM "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert_eq!(sums.len(), FILES, "{}", run.output);
    for (sum, name) in sums {
        let out = Command::new("sha256sum")
            .arg(dir.join("w").join(name))
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert_eq!(got.split(' ').next(), Some(sum), "{name}");
    }
    drop(mnt);
}
