//! Side-by-side measurement without a guest: the same FUSE requests sent
//! through the userspace vhost-user driver to virtiofsd-gfs and to the
//! reference virtiofsd, so only the daemons differ (a TCG guest's own CPU
//! cost would drown the difference). Not a test: run it by hand,
//!
//! ```text
//! cargo build --release -p virtiofsd-gfs --examples --bins
//! target/release/examples/driver_compare [SECONDS] [ROUNDS]
//! ```
//!
//! Per daemon (`--cache never`, default sandbox): 4k random reads and
//! writes on a 64 MiB file with one request in flight, the same with four
//! in flight (ours: four request queues, one each; virtiofsd: its single
//! request queue with a pool of four), and CREATE+GETATTR+RELEASE+UNLINK
//! cycles, on a tree in /dev/shm (or `$GFS_BENCH_DIR`). Rounds alternate
//! between the daemons; medians are printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cradle_devices::driver::{Buffer, Driver, DriverConfig, VirtQueue};
use virtiofsd_gfs::fuse::abi::{self, opcode as op, Wire};
use virtiofsd_gfs::fuse::client::{body, request, Reply};
use vm_memory::GuestAddress;

const FILE: u64 = 64 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole process group: virtiofsd's sandbox forks a child.
        // SAFETY: kill(2) on the group we created for this daemon.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn start(bin: &Path, is_ref: bool, dir: &Path, sock: &Path, pool: u32, queues: u16) -> Daemon {
    // A stale socket file would look like a listening daemon.
    let _ = std::fs::remove_file(sock);
    let mut c = Command::new(bin);
    c.arg(if is_ref { "--socket-path" } else { "--socket" })
        .arg(sock)
        .arg("--shared-dir")
        .arg(dir)
        .args(["--cache", "never", "--thread-pool-size", &pool.to_string()]);
    if !is_ref {
        c.args(["--num-queues", &queues.to_string()]);
    }
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn daemon");
    cradle_testbed::peers::wait_for_socket(&mut child, sock).expect("socket");
    Daemon(child)
}

/// One queue with `depth` request/reply buffer pairs.
struct Chan {
    q: VirtQueue,
    bufs: Vec<(GuestAddress, GuestAddress)>,
    unique: u64,
}

impl Chan {
    fn new(q: VirtQueue, depth: usize) -> Self {
        let bufs = (0..depth)
            .map(|_| {
                let m = q.memory();
                (m.alloc(8192, 4096).unwrap(), m.alloc(8192, 4096).unwrap())
            })
            .collect();
        Chan { q, bufs, unique: 0 }
    }

    /// Sends one request per buffer pair at once; waits for all replies.
    fn batch(&mut self, reqs: &[Vec<u8>]) -> Vec<Reply> {
        let mut heads = Vec::new();
        for (r, (req, rep)) in reqs.iter().zip(&self.bufs) {
            self.q.write(*req, r).unwrap();
            // Exactly header + data for READ, as the Linux driver does
            // (virtiofsd 1.14 fails a READ whose buffer is larger).
            let opcode = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
            let rep_len = if opcode == op::READ { 16 + 4096 } else { 8192 };
            heads.push((
                self.q
                    .add_chain(&[
                        Buffer::readable(*req, r.len() as u32),
                        Buffer::writable(*rep, rep_len),
                    ])
                    .unwrap(),
                *rep,
            ));
        }
        self.q.kick().unwrap();
        let mut others = Vec::new();
        heads
            .into_iter()
            .map(|(h, rep)| {
                let u = self.q.wait_head(h, TIMEOUT, &mut others).unwrap();
                Reply::parse(&self.q.read(rep, u.len as usize).unwrap()).unwrap()
            })
            .collect()
    }

    fn call(&mut self, opcode: u32, nodeid: u64, b: &[u8]) -> Reply {
        self.unique += 2;
        let r = request(opcode, nodeid, self.unique, 0, 0, b);
        self.batch(&[r]).remove(0)
    }
}

fn rand(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Opens the test file on a fresh queue; returns (nodeid, fh).
fn open_file(ch: &mut Chan) -> (u64, u64) {
    let r = ch.call(op::LOOKUP, 1, b"data\0");
    assert_eq!(r.error, 0);
    let node = abi::EntryOutHead::decode(&r.body).nodeid;
    let r = ch.call(
        op::OPEN,
        node,
        &body(
            Some(abi::OpenIn {
                flags: libc::O_RDWR as u32,
                open_flags: 0,
            }),
            &[],
        ),
    );
    assert_eq!(r.error, 0);
    (node, abi::OpenOut::decode(&r.body).fh)
}

fn io_request(write: bool, node: u64, fh: u64, off: u64, unique: u64) -> Vec<u8> {
    if write {
        let mut b = body(
            Some(abi::WriteIn {
                fh,
                offset: off,
                size: 4096,
                ..Default::default()
            }),
            &[],
        );
        b.extend_from_slice(&[0x5a; 4096]);
        request(op::WRITE, node, unique, 0, 0, &b)
    } else {
        request(
            op::READ,
            node,
            unique,
            0,
            0,
            &body(
                Some(abi::ReadIn {
                    fh,
                    offset: off,
                    size: 4096,
                    ..Default::default()
                }),
                &[],
            ),
        )
    }
}

/// 4k random I/O for `secs` on each channel in its own thread, `depth`
/// requests in flight per channel. Returns IOPS.
fn random_io(chans: Vec<(Chan, u64, u64)>, depth: usize, write: bool, secs: u64) -> f64 {
    let start = Instant::now();
    let threads: Vec<_> = chans
        .into_iter()
        .enumerate()
        .map(|(i, (mut ch, node, fh))| {
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
                let mut n = 0u64;
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end {
                    let reqs: Vec<_> = (0..depth)
                        .map(|_| {
                            ch.unique += 2;
                            io_request(
                                write,
                                node,
                                fh,
                                (rand(&mut x) % (FILE / 4096)) * 4096,
                                ch.unique,
                            )
                        })
                        .collect();
                    for r in ch.batch(&reqs) {
                        assert_eq!(r.error, 0, "write={write} depth={depth}");
                    }
                    n += depth as u64;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

/// CREATE + GETATTR + RELEASE + UNLINK cycles (and the FORGET a guest
/// sends on the hiprio queue); returns cycles per second.
fn metadata_cycles(ch: &mut Chan, hi: &mut Chan, secs: u64) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        let name = format!("f{n}");
        let ci = abi::CreateIn {
            flags: libc::O_RDWR as u32,
            mode: 0o644,
            umask: 0,
            open_flags: 0,
        };
        let r = ch.call(op::CREATE, 1, &body(Some(ci), &[name.as_bytes()]));
        assert_eq!(r.error, 0);
        let node = abi::EntryOutHead::decode(&r.body).nodeid;
        let fh = abi::OpenOut::decode(&r.body[128..]).fh;
        assert_eq!(
            ch.call(
                op::GETATTR,
                node,
                &body(Some(abi::GetattrIn::default()), &[])
            )
            .error,
            0
        );
        let rel = abi::ReleaseIn {
            fh,
            ..Default::default()
        };
        assert_eq!(ch.call(op::RELEASE, node, &body(Some(rel), &[])).error, 0);
        assert_eq!(
            ch.call(
                op::UNLINK,
                1,
                &body::<abi::ForgetIn>(None, &[name.as_bytes()])
            )
            .error,
            0
        );
        hi.unique += 2;
        let f = request(
            op::FORGET,
            node,
            hi.unique,
            0,
            0,
            &body(Some(abi::ForgetIn { nlookup: 1 }), &[]),
        );
        let at = hi.bufs[0].0;
        hi.q.write(at, &f).unwrap();
        let h =
            hi.q.add_chain(&[Buffer::readable(at, f.len() as u32)])
                .unwrap();
        hi.q.kick().unwrap();
        hi.q.wait_head(h, TIMEOUT, &mut Vec::new()).unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Connects with `queues` request queues; returns the driver, the hiprio
/// channel and initialised request channels with the test file open.
fn session(sock: &Path, queues: u16) -> (Driver, Chan, Vec<(Chan, u64, u64)>) {
    let cfg = DriverConfig {
        num_queues: queues + 1,
        queue_size: 64,
        memory_bytes: 16 << 20,
        ..Default::default()
    };
    let mut drv = Driver::connect(sock, cfg).unwrap();
    let mut it = drv.take_queues().into_iter();
    let hi = Chan::new(it.next().unwrap(), 1);
    let mut chans = Vec::new();
    for (k, q) in it.enumerate() {
        let mut ch = Chan::new(q, 4);
        if k == 0 {
            init(&mut ch);
        }
        let (node, fh) = open_file(&mut ch);
        chans.push((ch, node, fh));
    }
    (drv, hi, chans)
}

fn measure(bin: &Path, is_ref: bool, secs: u64) -> Vec<(&'static str, f64)> {
    // On tmpfs: the host disk (shared, journaling) would add more noise
    // than the daemons differ by. GFS_BENCH_DIR picks another place.
    let base = std::env::var_os("GFS_BENCH_DIR").unwrap_or_else(|| "/dev/shm".into());
    let tree = tempfile::tempdir_in(base).unwrap();
    std::fs::write(tree.path().join("data"), vec![1u8; FILE as usize]).unwrap();
    let sd = tempfile::tempdir().unwrap();
    // A fresh socket (and virtiofsd pid file) per daemon: a killed
    // virtiofsd's sandbox child may still hold the previous one's lock.
    let mut k = 0;
    let mut next_sock = || {
        k += 1;
        sd.path().join(format!("fs{k}.sock"))
    };
    let mut out = Vec::new();
    for (name, write, inflight) in [
        ("randread-qd1", false, 1),
        ("randwrite-qd1", true, 1),
        ("randread-4inflight", false, 4),
        ("randwrite-4inflight", true, 4),
    ] {
        // Four in flight: ours on four queues (one each), virtiofsd on its
        // single request queue with a pool of four.
        let (queues, pool, depth) = match (inflight, is_ref) {
            (1, _) => (1, 0, 1),
            (_, false) => (4, 0, 1),
            (_, true) => (1, 4, 4),
        };
        let sock = next_sock();
        let _d = start(bin, is_ref, tree.path(), &sock, pool, queues);
        let (drv, _hi, chans) = session(&sock, queues);
        out.push((name, random_io(chans, depth, write, secs)));
        drop(drv);
    }
    let sock = next_sock();
    let _d = start(bin, is_ref, tree.path(), &sock, 0, 1);
    let (drv, mut hi, mut chans) = session(&sock, 1);
    let (mut ch, _, _) = chans.remove(0);
    out.push((
        "create+stat+unlink",
        metadata_cycles(&mut ch, &mut hi, secs),
    ));
    drop(drv);
    out
}

fn init(ch: &mut Chan) {
    let mut b = Vec::new();
    abi::InitInHead {
        major: 7,
        minor: 37,
        max_readahead: 0,
        flags: 0xffff_ffff,
    }
    .encode(&mut b);
    b.resize(64, 0);
    assert_eq!(ch.call(op::INIT, 0, &b).error, 0);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let exe = std::env::current_exe().unwrap();
    let ours = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("virtiofsd-gfs");
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let reference = std::env::var_os("REF")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo/bin/virtiofsd"));
    assert!(
        ours.exists() && reference.exists(),
        "build ours, run scripts/install-peers"
    );
    let mut a: Vec<Vec<(&str, f64)>> = Vec::new();
    let mut b: Vec<Vec<(&str, f64)>> = Vec::new();
    for round in 0..rounds {
        a.push(measure(&ours, false, secs));
        b.push(measure(&reference, true, secs));
        eprintln!(
            "round {round}: ours {:?}\n         virtiofsd {:?}",
            a[round], b[round]
        );
    }
    for k in 0..a[0].len() {
        let name = a[0][k].0;
        let x = median(a.iter().map(|r| r[k].1).collect());
        let y = median(b.iter().map(|r| r[k].1).collect());
        println!(
            "{name:<22} virtiofsd-gfs {x:>9.0}/s   virtiofsd {y:>9.0}/s   ratio {:.2}x",
            x / y
        );
    }
}
