//! Shared by the integration tests: start our daemon or the reference
//! virtiofsd on a directory, killed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cradle_devices::driver::{Buffer, Driver, DriverConfig, VirtQueue};
use virtiofsd_gfs::fuse::client::Client;
use vm_memory::GuestAddress;

use cradle_testbed::peers::wait_for_socket;

/// Which daemon serves the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// virtiofsd-gfs (this crate).
    Ours,
    /// The Rust reference virtiofsd (crates.io), installed by
    /// `scripts/install-peers` if missing.
    Reference,
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// Its vhost-user socket.
    pub socket: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The reference virtiofsd binary, installing it on first use.
pub fn reference_virtiofsd() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let installed = home.join(".cargo/bin/virtiofsd");
    if !installed.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-peers");
        let st = Command::new(script)
            .status()
            .expect("running scripts/install-peers");
        assert!(st.success(), "scripts/install-peers failed");
    }
    assert!(
        installed.exists(),
        "virtiofsd not installed at {}",
        installed.display()
    );
    installed
}

/// Starts `which` serving `dir` on `socket` with `cache` and extra flags;
/// both daemons run with their default sandbox and seccomp filter.
pub fn start(which: Which, dir: &Path, socket: &Path, cache: &str, extra: &[&str]) -> Daemon {
    let mut cmd = match which {
        Which::Ours => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_virtiofsd-gfs"));
            c.arg("--socket").arg(socket);
            c
        }
        Which::Reference => {
            let mut c = Command::new(reference_virtiofsd());
            c.arg("--socket-path").arg(socket);
            c
        }
    };
    cmd.arg("--shared-dir")
        .arg(dir)
        .args(["--cache", cache])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawning the daemon");
    wait_for_socket(&mut child, socket).expect("daemon socket");
    Daemon {
        child,
        socket: socket.to_path_buf(),
    }
}

/// Reply buffer size (the largest READ).
pub const REPLY: u32 = 1 << 20;
/// How long a request may take over a virtqueue.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn connect(sock: &Path, queues: u16) -> (Driver, Vec<VirtQueue>) {
    let mut drv = Driver::connect(
        sock,
        DriverConfig {
            num_queues: queues,
            queue_size: 64,
            memory_bytes: 32 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let qs = drv.take_queues();
    (drv, qs)
}

/// One queue as a FUSE transport: request buffer + reply buffer.
pub struct Chan {
    /// The queue.
    pub q: VirtQueue,
    /// Request buffer.
    pub req: GuestAddress,
    /// Reply buffer.
    pub rep: GuestAddress,
}

impl Chan {
    pub fn new(q: VirtQueue) -> Self {
        let req = q.memory().alloc(REPLY as u64 + 8192, 4096).unwrap();
        let rep = q.memory().alloc(REPLY as u64, 4096).unwrap();
        Chan { q, req, rep }
    }

    /// Submits `bufs` as one chain; returns the used length.
    pub fn chain(&mut self, bufs: &[Buffer]) -> u32 {
        let head = self.q.add_chain(bufs).unwrap();
        self.q.kick().unwrap();
        self.q
            .wait_head(head, TIMEOUT, &mut Vec::new())
            .unwrap()
            .len
    }

    /// Sends a request; the reply if the device wrote one.
    pub fn send(&mut self, req: &[u8]) -> Option<Vec<u8>> {
        self.q.write(self.req, req).unwrap();
        let n = self.chain(&[
            Buffer::readable(self.req, req.len() as u32),
            Buffer::writable(self.rep, REPLY),
        ]);
        (n > 0).then(|| self.q.read(self.rep, n as usize).unwrap())
    }
}

pub fn client(chan: &mut Chan) -> Client<impl FnMut(&[u8]) -> Option<Vec<u8>> + '_> {
    let mut c = Client::new(move |r: &[u8]| chan.send(r));
    c.init(37, 0xffff_ffff).unwrap();
    c
}
