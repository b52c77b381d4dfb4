//! Test plumbing: a network namespace that is deleted even when the test
//! fails, the daemon run inside it, and packet sockets on its tap.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use cradle_devices::driver::{Buffer, Driver, DriverConfig, VirtQueue};

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ntap-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // No IPv6 autoconfiguration chatter on the tap.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// Runs a command inside the namespace; panics if it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?} in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether a link of that name exists in the namespace.
    pub fn has_link(&self, name: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ip", "link", "show", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Runs `f` on a thread that entered the namespace: sockets created
    /// there stay in it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().unwrap()
    }

    /// Like [`NetNs::run`] but in the background.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap();
            // SAFETY: setns on a netns fd only changes this thread's namespace.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A running net-tap inside a namespace; SIGTERM + wait on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    pub fn start(ns: &NetNs, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("net.sock");
        let log = dir.path().join("net-tap.log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(daemon_bin())
            .arg("--socket")
            .arg(&socket)
            // Default sandbox (namespace) and seccomp (kill): every test
            // also checks that the daemon lives within them.
            .args(["--log-level", "debug"])
            .args(args)
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        d.wait_socket();
        d
    }

    fn wait_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // The socket exists before the sandbox and seccomp are set up; the
        // "serving" line comes after.
        while !self.socket.exists() || !self.log_text().contains("serving") {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("net-tap exited with {st}: {}", self.log_text());
            }
            assert!(Instant::now() < deadline, "no socket: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, wait, and return the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // `ip netns exec` execs the daemon, so the pid is the daemon's.
        cradle_testbed::daemon::terminate(&mut child, Duration::from_secs(10))?.code()
    }

    /// Stops the daemon and returns its counters for `pair` (from the log
    /// line it writes at exit).
    pub fn stop_counters(&mut self, pair: usize) -> Counters {
        assert_eq!(self.stop(), Some(0), "log: {}", self.log_text());
        Counters::parse(&self.log_text(), pair)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counters parsed from the daemon's exit log.
#[derive(Debug, Default)]
pub struct Counters(pub std::collections::HashMap<String, u64>);

impl Counters {
    pub fn parse(log: &str, pair: usize) -> Counters {
        let mut c = Counters::default();
        let want = format!("pair={pair}");
        for line in BufReader::new(log.as_bytes()).lines() {
            let line = line.unwrap();
            if !line.contains("counters") || !line.contains(&want) {
                continue;
            }
            c.0.clear();
            for kv in line.split_whitespace() {
                if let Some((k, v)) = kv.split_once('=') {
                    if let Ok(v) = v.parse() {
                        c.0.insert(k.to_string(), v);
                    }
                }
            }
        }
        c
    }

    pub fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or(0)
    }
}

/// A raw AF_PACKET socket bound to one interface (created inside a netns).
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens it on `ifname` inside `ns`.
    pub fn open(ns: &NetNs, ifname: &str) -> PacketSocket {
        let ifname = ifname.to_string();
        ns.run(move || {
            let c = std::ffi::CString::new(ifname.clone()).unwrap();
            // SAFETY: valid C string.
            let ifindex = unsafe { libc::if_nametoindex(c.as_ptr()) } as i32;
            assert!(ifindex > 0, "no interface {ifname}");
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket call.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                )
            };
            assert!(fd >= 0);
            // SAFETY: fresh fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            // SAFETY: sockaddr_ll is plain data.
            let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_protocol = proto;
            sa.sll_ifindex = ifindex;
            // SAFETY: sa is a valid sockaddr_ll of the given size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0);
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            // SAFETY: valid timeval option.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            PacketSocket { fd, ifindex }
        })
    }

    /// Sends one frame out of the interface (into the tap: the daemon reads it).
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: frame is a valid buffer.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for a frame with `ethertype`; other frames are skipped.
    pub fn recv(&self, ethertype: u16, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 70000];
        while Instant::now() < deadline {
            // SAFETY: buf is a valid buffer of its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                continue;
            }
            let f = &buf[..n as usize];
            if f.len() >= 14 && u16::from_be_bytes([f[12], f[13]]) == ethertype {
                return Some(f.to_vec());
            }
        }
        None
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }
}

/// Our test ethertype (IEEE local experimental).
pub const ETH_TEST: u16 = 0x88b5;

/// An Ethernet frame of `len` bytes with the test ethertype and a pattern seeded by `seed`.
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    f[6..12].copy_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, seed]);
    f[12..14].copy_from_slice(&ETH_TEST.to_be_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(14) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
    f
}

/// Connects the test driver to net-tap's `socket` as a guest with two
/// queue pairs and the control queue, accepting every feature offered.
pub fn connect_two_pairs(socket: &std::path::Path) -> Driver {
    Driver::connect(
        socket,
        DriverConfig {
            num_queues: 5,
            queue_size: 64,
            memory_bytes: 4 << 20,
            features: u64::MAX,
        },
    )
    .unwrap()
}

/// Sends `f` on the TX queue `tx` as one descriptor behind a zeroed
/// 12-byte virtio-net header and checks that `tap` receives exactly `f`.
pub fn transmit_and_see(tx: &mut VirtQueue, tap: &PacketSocket, f: &[u8]) {
    let len = 12 + f.len() as u32;
    let a = tx.memory().alloc(u64::from(len), 64).unwrap();
    tx.write(a, &[0u8; 12]).unwrap();
    tx.write(vm_memory::GuestAddress(a.0 + 12), f).unwrap();
    let head = tx.add_chain(&[Buffer::readable(a, len)]).unwrap();
    tx.kick().unwrap();
    tx.wait_head(head, Duration::from_secs(5), &mut Vec::new())
        .unwrap();
    assert_eq!(
        tap.recv(ETH_TEST, Duration::from_secs(5)).as_deref(),
        Some(f)
    );
}

/// Path of the daemon under test: `$NET_TAP_BIN` if set (an installed
/// binary, or one that a shared target directory cannot overwrite), else
/// the one cargo built.
pub fn daemon_bin() -> PathBuf {
    std::env::var_os("NET_TAP_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_net-tap")))
}
