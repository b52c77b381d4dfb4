//! Side-by-side measurement, same QEMU guest and workload: virtiofsd-gfs
//! against the reference virtiofsd. Not a test: run it by hand,
//!
//! ```text
//! cargo build --release -p virtiofsd-gfs --examples --bins
//! target/release/examples/guest_compare [SECONDS]
//! ```
//!
//! Each configuration gets a fresh tree and one guest (2 vCPUs) that runs
//! fio: 4k random read and random write (one job, then four jobs), then
//! file create, stat and delete (fio's filecreate/filestat/filedelete
//! engines, 2000 files). `--cache never` everywhere so every operation
//! reaches the daemon. Prints one line per run and the ratios.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cradle_testbed::QemuGuest;

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ours() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("virtiofsd-gfs")
}

fn reference() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cargo/bin/virtiofsd")
}

fn start(bin: &Path, is_ref: bool, dir: &Path, sock: &Path, pool: u32) -> Daemon {
    let mut c = Command::new(bin);
    c.arg(if is_ref { "--socket-path" } else { "--socket" })
        .arg(sock)
        .arg("--shared-dir")
        .arg(dir)
        .args(["--cache", "never", "--thread-pool-size", &pool.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("spawn daemon");
    cradle_testbed::peers::wait_for_socket(&mut child, sock).expect("socket");
    Daemon(child)
}

fn script(secs: u32) -> String {
    let common = format!("--directory=/mnt --size=32M --bs=4k --ioengine=psync --runtime={secs} --time_based --group_reporting --output-format=terse --terse-version=3");
    format!(
        r#"set -e
mount -t virtiofs gfs /mnt
fio --name=prep --directory=/mnt --size=32M --bs=1M --rw=write --output=/dev/null
for j in 1 4; do
  fio --name=prep {common} --rw=randread --numjobs=$j | awk -F';' -v j=$j '{{print "randread-" j "job " $8}}'
  fio --name=prep {common} --rw=randwrite --numjobs=$j | awk -F';' -v j=$j '{{print "randwrite-" j "job " $49}}'
done
mkdir /mnt/files
fio --name=meta --directory=/mnt/files --ioengine=filecreate --nrfiles=2000 --filesize=4k --openfiles=1 --output-format=terse --terse-version=3 | awk -F';' '{{print "create " $8+$49}}'
fio --name=meta --directory=/mnt/files --ioengine=filestat --nrfiles=2000 --filesize=4k --openfiles=1 --output-format=terse --terse-version=3 | awk -F';' '{{print "stat " $8+$49}}'
fio --name=meta --directory=/mnt/files --ioengine=filedelete --nrfiles=2000 --filesize=4k --openfiles=1 --output-format=terse --terse-version=3 | awk -F';' '{{print "delete " $8+$49}}'
"#
    )
}

fn measure(name: &str, bin: &Path, is_ref: bool, pool: u32, secs: u32) -> Vec<(String, f64)> {
    let tree = tempfile::tempdir().expect("tree");
    let sd = tempfile::tempdir().expect("sockdir");
    let sock = sd.path().join("fs.sock");
    let _d = start(bin, is_ref, tree.path(), &sock, pool);
    let run = QemuGuest::new()
        .cpus(2)
        .memory_mib(1024)
        .binary("/usr/bin/fio")
        .vhost_user_fs(&sock, "gfs")
        .timeout(Duration::from_secs(u64::from(secs) * 4 + 600))
        .run(&script(secs))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut out = Vec::new();
    for line in run.output.lines() {
        let mut w = line.split_whitespace();
        if let (Some(k), Some(v)) = (w.next(), w.next().and_then(|v| v.parse::<f64>().ok())) {
            println!("{name:<28} {k:<16} {v:>10.0} IOPS");
            out.push((k.to_string(), v));
        }
    }
    out
}

fn main() {
    let secs: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let (o, r) = (ours(), reference());
    assert!(o.exists(), "build the daemon first: {}", o.display());
    assert!(r.exists(), "run scripts/install-peers first");
    for pool in [0, 4] {
        let a = measure(&format!("virtiofsd-gfs pool={pool}"), &o, false, pool, secs);
        let b = measure(&format!("virtiofsd pool={pool}"), &r, true, pool, secs);
        for ((k, x), (_, y)) in a.iter().zip(&b) {
            println!("ratio pool={pool} {k:<16} {:.2}x", x / y);
        }
    }
}
