//! Reference peers the test bed can start: daemons nobody here wrote, used
//! both to prove tests fair and as the baseline in comparisons.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestbedError;

/// How long a peer may take to create its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(20);

/// A `qemu-storage-daemon` exporting one file as a vhost-user-blk device.
/// Killed when dropped.
#[derive(Debug)]
pub struct QemuStorageDaemon {
    child: Child,
    socket: PathBuf,
}

/// How qemu-storage-daemon exports a file.
#[derive(Debug, Clone, Copy)]
pub struct QsdOptions {
    /// Request queues of the vhost-user-blk device.
    pub num_queues: u32,
    /// Accept writes.
    pub writable: bool,
    /// Open the file with O_DIRECT (`cache.direct=on`), bypassing the host
    /// page cache as blk-lv does by default.
    pub direct: bool,
}

impl Default for QsdOptions {
    fn default() -> Self {
        QsdOptions {
            num_queues: 1,
            writable: true,
            direct: false,
        }
    }
}

impl QemuStorageDaemon {
    /// Exports `image` (raw file) on `socket` with `num_queues` queues
    /// through the host page cache.
    pub fn vhost_user_blk(
        image: &Path,
        socket: &Path,
        num_queues: u32,
        writable: bool,
    ) -> Result<Self, TestbedError> {
        let opts = QsdOptions {
            num_queues,
            writable,
            direct: false,
        };
        Self::start(image, socket, opts, None)
    }

    /// Exports `image` with `opts`; with `cpus` (a `taskset -c` list such as
    /// `"1"`) the daemon is pinned to those CPUs.
    pub fn start(
        image: &Path,
        socket: &Path,
        opts: QsdOptions,
        cpus: Option<&str>,
    ) -> Result<Self, TestbedError> {
        let QsdOptions {
            num_queues,
            writable,
            direct,
        } = opts;
        let blockdev = format!(
            "driver=file,node-name=f0,filename={},aio=io_uring,cache.direct={}",
            image.display(),
            if direct { "on" } else { "off" }
        );
        let export = format!(
            "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path={},writable={},num-queues={num_queues}",
            socket.display(),
            if writable { "on" } else { "off" }
        );
        let mut cmd = match cpus {
            Some(list) => {
                let mut c = Command::new("taskset");
                c.args(["-c", list, "qemu-storage-daemon"]);
                c
            }
            None => Command::new("qemu-storage-daemon"),
        };
        let child = cmd
            .args(["--blockdev", &blockdev, "--export", &export])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| TestbedError::spawn("qemu-storage-daemon", "qemu-system-x86", e))?;
        let mut qsd = QemuStorageDaemon {
            child,
            socket: socket.to_path_buf(),
        };
        wait_for_socket(&mut qsd.child, socket)?;
        Ok(qsd)
    }

    /// The vhost-user socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for QemuStorageDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `socket` exists, failing early if `child` exits.
pub fn wait_for_socket(child: &mut Child, socket: &Path) -> Result<(), TestbedError> {
    let start = Instant::now();
    while !socket.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(TestbedError::BadConfig(format!(
                "daemon exited with {status} before creating {}",
                socket.display()
            )));
        }
        if start.elapsed() > SOCKET_WAIT {
            return Err(TestbedError::BadConfig(format!(
                "{} did not appear within {SOCKET_WAIT:?}",
                socket.display()
            )));
        }
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
