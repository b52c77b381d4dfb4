//! The block backends a suite compares, started on the same file with the
//! same queue count, cache mode and CPU pinning.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cradle_testbed::peers::{wait_for_socket, QemuStorageDaemon, QsdOptions};
use serde::{Deserialize, Serialize};

use crate::PerfError;

/// Who serves the I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The host file itself, driven by fio's io_uring engine: the limit.
    Raw,
    /// Ours.
    BlkLv,
    /// The peer: qemu-storage-daemon's vhost-user-blk export.
    QemuStorageDaemon,
    /// Ours: the GFS vhost-user-fs daemon.
    VirtiofsdGfs,
    /// The peer: the reference Rust virtiofsd.
    Virtiofsd,
}

impl Backend {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Raw => "raw",
            Backend::BlkLv => "blk-lv",
            Backend::QemuStorageDaemon => "qemu-storage-daemon",
            Backend::VirtiofsdGfs => "virtiofsd-gfs",
            Backend::Virtiofsd => "virtiofsd",
        }
    }

    /// Whether this is one of ours.
    pub fn is_ours(self) -> bool {
        matches!(self, Backend::BlkLv | Backend::VirtiofsdGfs)
    }

    /// Whether this is the peer a user would pick instead of ours.
    pub fn is_peer(self) -> bool {
        matches!(self, Backend::QemuStorageDaemon | Backend::Virtiofsd)
    }
}

/// A running vhost-user-blk daemon; stopped on drop.
pub enum Daemon {
    /// blk-lv as a child process.
    BlkLv {
        /// The process.
        child: Child,
        /// Its socket.
        socket: PathBuf,
    },
    /// qemu-storage-daemon.
    Qsd(QemuStorageDaemon),
    /// A vhost-user-fs daemon (ours or the reference) as a child process.
    Fs {
        /// The process.
        child: Child,
        /// Its socket.
        socket: PathBuf,
    },
}

impl Daemon {
    /// Starts `backend` exporting `file` on `socket` with `queues` queues,
    /// O_DIRECT, pinned to `cpus` (a `taskset -c` list).
    pub fn start(
        backend: Backend,
        blk_lv: &Path,
        file: &Path,
        socket: &Path,
        queues: u32,
        cpus: &str,
    ) -> Result<Daemon, PerfError> {
        match backend {
            Backend::Raw | Backend::VirtiofsdGfs | Backend::Virtiofsd => Err(PerfError::Setup(
                format!("{} is not a block backend", backend.name()),
            )),
            Backend::BlkLv => {
                let mut child = Command::new("taskset")
                    .args(["-c", cpus])
                    .arg(blk_lv)
                    .arg("--socket")
                    .arg(socket)
                    .arg("--path")
                    .arg(file)
                    .args([
                        "--num-queues",
                        &queues.to_string(),
                        "--direct",
                        "--log-level",
                        "warn",
                    ])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .map_err(|e| PerfError::Setup(format!("{}: {e}", blk_lv.display())))?;
                if let Err(e) = wait_for_socket(&mut child, socket) {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(PerfError::Setup(format!("blk-lv: {e}")));
                }
                Ok(Daemon::BlkLv {
                    child,
                    socket: socket.to_path_buf(),
                })
            }
            Backend::QemuStorageDaemon => {
                let opts = QsdOptions {
                    num_queues: queues,
                    writable: true,
                    direct: true,
                };
                QemuStorageDaemon::start(file, socket, opts, Some(cpus))
                    .map(Daemon::Qsd)
                    .map_err(|e| PerfError::Setup(format!("qemu-storage-daemon: {e}")))
            }
        }
    }

    /// Starts a vhost-user-fs `backend` (`binary`) sharing `dir` on
    /// `socket` with `--cache never`, pinned to `cpus`, with `extra` flags
    /// (queue count, thread pool). Both daemons run with the same flags
    /// otherwise: no sandbox, no seccomp filter, so the figures compare
    /// request handling alone.
    pub fn start_fs(
        backend: Backend,
        binary: &Path,
        dir: &Path,
        socket: &Path,
        cpus: &str,
        extra: &[String],
    ) -> Result<Daemon, PerfError> {
        let socket_flag = match backend {
            Backend::VirtiofsdGfs => "--socket",
            Backend::Virtiofsd => "--socket-path",
            _ => {
                return Err(PerfError::Setup(format!(
                    "{} is not a filesystem backend",
                    backend.name()
                )))
            }
        };
        let mut child = Command::new("taskset")
            .args(["-c", cpus])
            .arg(binary)
            .arg(socket_flag)
            .arg(socket)
            .arg("--shared-dir")
            .arg(dir)
            .args(["--cache", "never", "--sandbox", "none", "--seccomp", "none"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| PerfError::Setup(format!("{}: {e}", binary.display())))?;
        if let Err(e) = wait_for_socket(&mut child, socket) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PerfError::Setup(format!("{}: {e}", backend.name())));
        }
        Ok(Daemon::Fs {
            child,
            socket: socket.to_path_buf(),
        })
    }

    /// The vhost-user socket.
    pub fn socket(&self) -> &Path {
        match self {
            Daemon::BlkLv { socket, .. } | Daemon::Fs { socket, .. } => socket,
            Daemon::Qsd(q) => q.socket(),
        }
    }

    /// The daemon's pid. Under `taskset` the pid is the daemon's own, since
    /// taskset execs it.
    pub fn pid(&self) -> u32 {
        match self {
            Daemon::BlkLv { child, .. } | Daemon::Fs { child, .. } => child.id(),
            Daemon::Qsd(q) => q.pid(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Daemon::BlkLv { child, socket } | Daemon::Fs { child, socket } = self {
            // SIGTERM first: our daemons drain and exit 0.
            // SAFETY: kill(2) on our own child's pid has no memory effects.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(socket);
        }
    }
}
