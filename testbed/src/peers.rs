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

impl QemuStorageDaemon {
    /// Exports `image` (raw file) on `socket` with `num_queues` queues.
    pub fn vhost_user_blk(
        image: &Path,
        socket: &Path,
        num_queues: u32,
        writable: bool,
    ) -> Result<Self, TestbedError> {
        let blockdev = format!(
            "driver=file,node-name=f0,filename={},aio=io_uring,cache.direct=off",
            image.display()
        );
        let export = format!(
            "type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path={},writable={},num-queues={num_queues}",
            socket.display(),
            if writable { "on" } else { "off" }
        );
        let child = Command::new("qemu-storage-daemon")
            .args(["--blockdev", &blockdev, "--export", &export])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => TestbedError::MissingTool(
                    "qemu-storage-daemon (package qemu-system-x86)".into(),
                ),
                _ => TestbedError::io("qemu-storage-daemon", e),
            })?;
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
