//! The device daemons of a pod, started as children of `kcradle run`:
//! one virtiofsd-gfs for the image rootfs (read-only, `--cache always`),
//! one per GFS volume, one blk-lv per LV volume and one net-tap.
//!
//! Binaries are looked up in `$KCRADLE_BIN_DIR`, then next to `kcradle`
//! itself, then in `$PATH`. Each daemon logs to `DIR/logs/NAME.log`; a
//! daemon counts as started once its socket exists.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::bundle::{Bundle, BundleVolume, Layout};
use super::net::PodNet;
use super::pod;

/// A daemon that did not come up.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The binary is nowhere to be found.
    #[error("{0} not found (set KCRADLE_BIN_DIR or put it next to kcradle or in PATH)")]
    NotFound(String),
    /// Spawning failed.
    #[error("starting {0}: {1}")]
    Spawn(String, std::io::Error),
    /// It exited or never made its socket.
    #[error("{name} did not start (see {log}): {why}")]
    NotReady {
        /// Which daemon.
        name: String,
        /// Its log file.
        log: PathBuf,
        /// Exit status or timeout.
        why: String,
    },
}

/// What the VMM needs to know about a started device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Device {
    /// A vhost-user-fs share.
    Fs {
        /// Tag.
        tag: String,
        /// Socket.
        socket: PathBuf,
    },
    /// A vhost-user-blk disk.
    Disk {
        /// Socket.
        socket: PathBuf,
    },
    /// A vhost-user-net interface.
    Net {
        /// Socket.
        socket: PathBuf,
        /// Guest MAC.
        mac: String,
    },
}

impl Device {
    /// The `kcradle boot` flag for it.
    pub fn boot_args(&self) -> [String; 2] {
        match self {
            Device::Fs { tag, socket } => [
                "--fs".into(),
                format!("tag={tag},socket={}", socket.display()),
            ],
            Device::Disk { socket } => ["--disk".into(), format!("socket={}", socket.display())],
            Device::Net { socket, mac } => [
                "--net".into(),
                format!("socket={},mac={mac}", socket.display()),
            ],
        }
    }
}

/// One daemon to start.
#[derive(Clone, Debug)]
pub struct DaemonSpec {
    /// Short name (log file name).
    pub name: String,
    /// Binary name.
    pub program: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Its socket.
    pub socket: PathBuf,
    /// What the VMM attaches to it.
    pub device: Device,
}

/// Finds a binary: `$KCRADLE_BIN_DIR`, next to kcradle, `$PATH`.
pub fn find_binary(name: &str) -> Result<PathBuf, DaemonError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("KCRADLE_BIN_DIR") {
        dirs.push(d.into());
    }
    if let Some(d) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        dirs.push(d);
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| DaemonError::NotFound(name.to_string()))
}

/// The daemons a bundle needs, in start order.
pub fn plan(bundle: &Bundle, layout: &Layout, net: &PodNet) -> Vec<DaemonSpec> {
    let run = layout.run();
    let s = |p: &Path| p.display().to_string();
    let mut out = Vec::new();
    let rootfs_sock = run.join("fs-rootfs.sock");
    out.push(DaemonSpec {
        name: "fs-rootfs".into(),
        program: "virtiofsd-gfs".into(),
        args: vec![
            "--socket".into(),
            s(&rootfs_sock),
            "--shared-dir".into(),
            s(&layout.rootfs()),
            "--tag".into(),
            pod::ROOTFS_TAG.into(),
            "--readonly".into(),
            "--cache".into(),
            "always".into(),
        ],
        device: Device::Fs {
            tag: pod::ROOTFS_TAG.into(),
            socket: rootfs_sock.clone(),
        },
        socket: rootfs_sock,
    });
    for v in &bundle.volumes {
        match v {
            BundleVolume::Gfs {
                name,
                host_path,
                read_only,
                ..
            } => {
                let sock = run.join(format!("fs-{name}.sock"));
                let tag = pod::gfs_tag(name);
                let mut args = vec![
                    "--socket".into(),
                    s(&sock),
                    "--shared-dir".into(),
                    s(host_path),
                    "--tag".into(),
                    tag.clone(),
                    "--cache".into(),
                    "auto".into(),
                ];
                if *read_only {
                    args.push("--readonly".into());
                }
                out.push(DaemonSpec {
                    name: format!("fs-{name}"),
                    program: "virtiofsd-gfs".into(),
                    args,
                    device: Device::Fs {
                        tag,
                        socket: sock.clone(),
                    },
                    socket: sock,
                });
            }
            BundleVolume::Lv {
                name, host_path, ..
            } => {
                let sock = run.join(format!("blk-{name}.sock"));
                out.push(DaemonSpec {
                    name: format!("blk-{name}"),
                    program: "blk-lv".into(),
                    args: vec![
                        "--socket".into(),
                        s(&sock),
                        "--path".into(),
                        s(host_path),
                        "--serial".into(),
                        pod::lv_serial(name),
                    ],
                    device: Device::Disk {
                        socket: sock.clone(),
                    },
                    socket: sock,
                });
            }
        }
    }
    let sock = run.join("net.sock");
    out.push(DaemonSpec {
        name: "net".into(),
        program: "net-tap".into(),
        args: vec![
            "--socket".into(),
            s(&sock),
            "--tap".into(),
            net.tap.clone(),
            "--mac".into(),
            net.mac.clone(),
        ],
        device: Device::Net {
            socket: sock.clone(),
            mac: net.mac.clone(),
        },
        socket: sock,
    });
    out
}

/// Starts one daemon and waits (bounded) for its socket.
pub fn start(spec: &DaemonSpec, logs: &Path) -> Result<Child, DaemonError> {
    let bin = find_binary(&spec.program)?;
    let log = logs.join(format!("{}.log", spec.name));
    let _ = std::fs::remove_file(&spec.socket);
    let out = File::create(&log).map_err(|e| DaemonError::Spawn(spec.name.clone(), e))?;
    let err = out
        .try_clone()
        .map_err(|e| DaemonError::Spawn(spec.name.clone(), e))?;
    let mut child = Command::new(&bin)
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| DaemonError::Spawn(spec.name.clone(), e))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if spec.socket.exists() {
            return Ok(child);
        }
        let why = match child.try_wait() {
            Ok(Some(status)) => Some(format!("exited with {status}")),
            _ if Instant::now() > deadline => Some("no socket after 10 s".to_string()),
            _ => None,
        };
        if let Some(why) = why {
            let _ = child.kill();
            let _ = child.wait();
            return Err(DaemonError::NotReady {
                name: spec.name.clone(),
                log,
                why,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
