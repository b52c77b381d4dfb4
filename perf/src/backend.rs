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
}

impl Backend {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Raw => "raw",
            Backend::BlkLv => "blk-lv",
            Backend::QemuStorageDaemon => "qemu-storage-daemon",
        }
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
            Backend::Raw => Err(PerfError::Setup("the raw backend has no daemon".into())),
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

    /// The vhost-user socket.
    pub fn socket(&self) -> &Path {
        match self {
            Daemon::BlkLv { socket, .. } => socket,
            Daemon::Qsd(q) => q.socket(),
        }
    }

    /// The daemon's pid. Under `taskset` the pid is the daemon's own, since
    /// taskset execs it.
    pub fn pid(&self) -> u32 {
        match self {
            Daemon::BlkLv { child, .. } => child.id(),
            Daemon::Qsd(q) => q.pid(),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Daemon::BlkLv { child, socket } = self {
            // SIGTERM first: blk-lv drains and exits 0.
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
