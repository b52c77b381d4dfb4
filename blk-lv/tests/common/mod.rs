//! Shared helpers for blk-lv's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blk_lv::config::Cli;
use blk_lv::device::Device;
use clap::Parser;
use cradle_devices::daemon::{self, DaemonCli};
use cradle_devices::driver::blk::BlkQueue;
use cradle_devices::driver::{Driver, DriverConfig};
use cradle_testbed::daemon::Daemon;

/// A daemon running in this process (so tests can read its counters).
pub struct InProc {
    pub device: Arc<Device>,
    pub sock: PathBuf,
    pub disk: PathBuf,
    pub dir: tempfile::TempDir,
}

/// Creates a `size`-byte backing file and serves it in-process with the
/// extra flags `args`.
pub fn start(size: u64, args: &[&str]) -> InProc {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let f = std::fs::File::create(&disk).unwrap();
    f.set_len(size).unwrap();
    start_on(dir, disk, args)
}

/// Serves an existing file in-process.
pub fn start_on(dir: tempfile::TempDir, disk: PathBuf, args: &[&str]) -> InProc {
    let sock = dir.path().join("blk.sock");
    let mut argv = vec![
        "blk-lv".to_string(),
        "--socket".into(),
        sock.display().to_string(),
        "--path".into(),
        disk.display().to_string(),
        "--sandbox".into(),
        "none".into(),
        "--seccomp".into(),
        "none".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let cfg = Cli::try_parse_from(argv).unwrap().into_config().unwrap();
    let device = Arc::new(Device::open(&cfg).unwrap());
    let (mut listener, _) = daemon::listen(&cfg.common).unwrap();
    let d = device.clone();
    std::thread::spawn(move || blk_lv::serve(d, &mut listener));
    InProc {
        device,
        sock,
        disk,
        dir,
    }
}

/// Connects a driver with `queues` queues of `size` entries.
pub fn connect(sock: &std::path::Path, queues: u16, size: u16) -> (Driver, Vec<BlkQueue>) {
    let mut drv = Driver::connect(
        sock,
        DriverConfig {
            num_queues: queues,
            queue_size: size,
            memory_bytes: 64 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let qs = drv
        .take_queues()
        .into_iter()
        .map(|q| BlkQueue::new(q, 256 * 1024).unwrap())
        .collect();
    (drv, qs)
}

/// Waits until `f` holds (counters are updated just after the used ring).
/// Generous: CI machines are small and shared; a pass returns at once.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A deterministic pattern for `len` bytes seeded by `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The blk-lv binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_blk-lv");

/// A child process killed when dropped (so a failing test leaks nothing).
pub struct ChildGuard(pub std::process::Child);

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs blk-lv as a child process with `args` and waits until its socket
/// accepts connections.
pub fn spawn_daemon(sock: &std::path::Path, args: &[&str]) -> ChildGuard {
    let child = ChildGuard(
        std::process::Command::new(BIN)
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(|| std::os::unix::net::UnixStream::connect(sock).is_ok()),
        "daemon did not listen"
    );
    child
}

/// Runs blk-lv with `args` the way systemd starts it and waits (up to
/// 30 s) for its READY=1, which comes after the sandbox and seccomp are in
/// place. Its stderr is piped.
pub fn spawn_ready(args: &[&str]) -> Daemon {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args).stderr(std::process::Stdio::piped());
    Daemon::spawn_ready(&mut cmd, Duration::from_secs(30)).unwrap()
}
