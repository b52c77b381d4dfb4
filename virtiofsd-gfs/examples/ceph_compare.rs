//! Side-by-side measurement on CephFS, one QEMU guest and one run: the
//! native backend (`--backend cephfs`) against our passthrough over a
//! ceph-fuse mount and the reference virtiofsd over the same mount. Not a
//! test: run it by hand (as root, Ceph packages installed),
//!
//! ```text
//! cargo build --release -p virtiofsd-gfs --examples --bins
//! target/release/examples/ceph_compare [SECONDS]
//! ```
//!
//! The guest mounts the three devices side by side and runs the same fio
//! jobs on each: file create, stat and delete (fio's filecreate/filestat/
//! filedelete engines), 4k random read and write, 1M sequential read and
//! write. `--cache never` everywhere so every operation reaches a daemon.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cradle_testbed::ceph::CephCluster;
use cradle_testbed::QemuGuest;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole process group: virtiofsd's sandbox forks a child.
        // SAFETY: kill(2) on the group we created for this daemon.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn ours() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("virtiofsd-gfs")
}

fn spawn(mut c: Command, sock: &Path) -> Daemon {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = c.spawn().expect("spawn daemon");
    cradle_testbed::peers::wait_for_socket(&mut child, sock).expect("socket");
    Daemon(child)
}

fn script(secs: u32) -> String {
    let terse = "--output-format=terse --terse-version=3";
    let io = format!("--size=32M --ioengine=psync --runtime={secs} --time_based {terse}");
    let meta = format!("--nrfiles=1000 --filesize=4k --openfiles=1 {terse}");
    let mut s = String::from("set -e\n");
    for tag in ["native", "pt", "ref"] {
        s += &format!(
            r#"mkdir -p /m/{tag}
mount -t virtiofs {tag} /m/{tag}
d=/m/{tag}
fio --name=prep --directory=$d --size=32M --bs=1M --rw=write --output=/dev/null
fio --name=prep --directory=$d --bs=4k --rw=randread {io} | awk -F';' '{{print "{tag} randread-4k " $8 " IOPS"}}'
fio --name=prep --directory=$d --bs=4k --rw=randwrite {io} | awk -F';' '{{print "{tag} randwrite-4k " $49 " IOPS"}}'
fio --name=prep --directory=$d --bs=1M --rw=read {io} | awk -F';' '{{print "{tag} read-1M " $7/1024 " MiB/s"}}'
fio --name=prep --directory=$d --bs=1M --rw=write {io} | awk -F';' '{{print "{tag} write-1M " $48/1024 " MiB/s"}}'
mkdir $d/files
fio --name=meta --directory=$d/files --ioengine=filecreate {meta} | awk -F';' '{{print "{tag} create " $8+$49 " ops/s"}}'
fio --name=meta --directory=$d/files --ioengine=filestat {meta} | awk -F';' '{{print "{tag} stat " $8+$49 " ops/s"}}'
fio --name=meta --directory=$d/files --ioengine=filedelete {meta} | awk -F';' '{{print "{tag} delete " $8+$49 " ops/s"}}'
"#
        );
    }
    s
}

fn main() {
    let secs: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let reference = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cargo/bin/virtiofsd");
    assert!(reference.exists(), "run scripts/install-peers first");
    let cluster = CephCluster::start().expect("ceph cluster");
    let t = tempfile::tempdir().expect("tempdir");
    let mnt = cluster
        .mount_fuse(&t.path().join("mnt"))
        .expect("ceph-fuse");
    for d in ["native", "pt", "ref"] {
        std::fs::create_dir(mnt.path().join(d)).expect("mkdir");
    }
    let sock = |n: &str| t.path().join(format!("{n}.sock"));
    let mut native = Command::new(ours());
    native
        .arg("--socket")
        .arg(sock("native"))
        .args(["--backend", "cephfs", "--cache", "never"])
        .args(["--ceph-root", "/native", "--ceph-fs", "cephfs"])
        .arg("--ceph-conf")
        .arg(cluster.conf())
        .arg("--ceph-keyring")
        .arg(cluster.keyring());
    let _n = spawn(native, &sock("native"));
    let mut pt = Command::new(ours());
    pt.arg("--socket")
        .arg(sock("pt"))
        .arg("--shared-dir")
        .arg(mnt.path().join("pt"))
        .args(["--cache", "never"]);
    let _p = spawn(pt, &sock("pt"));
    let mut r = Command::new(&reference);
    r.arg("--socket-path")
        .arg(sock("ref"))
        .arg("--shared-dir")
        .arg(mnt.path().join("ref"))
        .args(["--cache", "never"]);
    let _r = spawn(r, &sock("ref"));
    let run = QemuGuest::new()
        .cpus(2)
        .memory_mib(1024)
        .binary("/usr/bin/fio")
        .vhost_user_fs(sock("native"), "native")
        .vhost_user_fs(sock("pt"), "pt")
        .vhost_user_fs(sock("ref"), "ref")
        .timeout(Duration::from_secs(u64::from(secs) * 20 + 900))
        .run(&script(secs))
        .unwrap_or_else(|e| panic!("{e}"));
    print!("{}", run.output);
}
