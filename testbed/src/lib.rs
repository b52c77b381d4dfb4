//! The cradle test bed: boots real Linux guests so every component can be
//! tested against the real kernel drivers.
//!
//! - [`QemuGuest`] boots the installed Debian cloud kernel under QEMU TCG
//!   (q35, shared memfd RAM) with a generated busybox initramfs, attaches
//!   vhost-user devices by socket path, runs one shell script and returns its
//!   exit status, its output and the whole serial console.
//! - [`NestedHost`] boots an L1 guest with an emulated SVM CPU in which KVM
//!   works, to test the VMM end to end (L2 boots on L1's `/dev/kvm`).
//! - [`daemon::Daemon`] starts one of our daemons the way systemd does
//!   (`NOTIFY_SOCKET`, `READY=1`, SIGTERM) and [`unit::TemplateUnit`]
//!   checks its systemd template unit.
//! - [`registry::DockerRegistry`] is a real OCI registry on loopback.
//! - [`kvm::detect`] tells whether the host's own `/dev/kvm` can run guest
//!   kernels at speed, in which case the VMM can be tested directly.
//!
//! Initramfs images are cached under `target/testbed-cache` (or
//! `$CRADLE_TESTBED_CACHE`), keyed by their inputs, so repeated runs only
//! append a small per-run archive holding the script.
//!
//! ```no_run
//! use cradle_testbed::QemuGuest;
//! let run = QemuGuest::new().run("uname -r")?;
//! assert_eq!(run.status, 0);
//! println!("guest kernel {}", run.output.trim());
//! # Ok::<(), cradle_testbed::TestbedError>(())
//! ```
#![deny(missing_docs)]

pub mod ceph;
mod console;
pub mod daemon;
mod init_script;
mod kernel;
pub mod kvm;
mod nested;
pub mod peers;
mod qemu;
pub mod registry;
pub mod unit;
mod vmlinux;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use kernel::{Kernel, KERNEL_ENV};
pub use nested::{NestedHost, L2_INITRAMFS, L2_KERNEL, L2_VMLINUX};
pub use qemu::QemuGuest;

/// Environment variable overriding the initramfs cache directory.
pub const CACHE_ENV: &str = "CRADLE_TESTBED_CACHE";

/// The outcome of a script run in a guest.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The script's exit status.
    pub status: i32,
    /// What the script wrote to stdout and stderr.
    pub output: String,
    /// The whole serial console, boot messages included.
    pub console: String,
    /// QEMU start to QEMU exit.
    pub wall: Duration,
    /// QEMU start to the moment the script started (boot time).
    pub to_script: Option<Duration>,
}

/// Keeps error messages readable: the last part of a long console log.
fn tail(s: &str) -> &str {
    const KEEP: usize = 6000;
    if s.len() <= KEEP {
        return s;
    }
    let mut start = s.len() - KEEP;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Why a guest run did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// No kernel to boot.
    #[error("no guest kernel: {0}")]
    MissingKernel(String),
    /// A host tool the test bed needs is not installed.
    #[error("missing host tool: {0}")]
    MissingTool(String),
    /// The guest configuration is invalid.
    #[error("bad test bed configuration: {0}")]
    BadConfig(String),
    /// Building the initramfs failed.
    #[error("initramfs: {0}")]
    Initramfs(#[from] cradle_initramfs::Error),
    /// A host-side file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The script exited with a nonzero status.
    #[error("guest command exited with status {status}\n--- output ---\n{output}\n--- console (tail) ---\n{}", tail(console))]
    CommandFailed {
        /// Its exit status.
        status: i32,
        /// Its output.
        output: String,
        /// The serial console.
        console: String,
    },
    /// The guest did not finish in time and was killed.
    #[error(
        "guest did not finish within {after:?}\n--- console (tail) ---\n{}",
        tail(console)
    )]
    Timeout {
        /// The timeout that passed.
        after: Duration,
        /// The serial console up to the kill.
        console: String,
    },
    /// A daemon or tool under test misbehaved (no READY=1, no exit after
    /// SIGTERM, a failed push).
    #[error("daemon: {0}")]
    Daemon(String),
    /// A systemd unit failed a check.
    #[error("unit {unit}: {why}")]
    Unit {
        /// The unit's file name.
        unit: String,
        /// What is wrong with it.
        why: String,
    },
    /// QEMU exited before the script reported a status (kernel panic,
    /// QEMU error, missing vhost-user socket, ...).
    #[error("guest ended without reporting a status\n--- qemu ---\n{qemu_stderr}\n--- console (tail) ---\n{}", tail(console))]
    GuestDied {
        /// QEMU's stderr.
        qemu_stderr: String,
        /// The serial console.
        console: String,
    },
}

impl TestbedError {
    fn io(what: impl AsRef<Path>, source: std::io::Error) -> Self {
        TestbedError::Io {
            what: what.as_ref().display().to_string(),
            source,
        }
    }

    /// Running the host tool `program` failed: when it is not installed,
    /// says which Debian `package` brings it.
    fn spawn(program: &str, package: &str, source: std::io::Error) -> Self {
        match source.kind() {
            std::io::ErrorKind::NotFound => {
                TestbedError::MissingTool(format!("{program} (package {package})"))
            }
            _ => TestbedError::io(program, source),
        }
    }
}

/// Where cached initramfs images live: `$CRADLE_TESTBED_CACHE`, else
/// `testbed-cache` in the cargo target directory of the running test (found
/// through its `CACHEDIR.TAG`), else the system temporary directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if dir.join("CACHEDIR.TAG").exists() {
                return dir.join("testbed-cache");
            }
        }
    }
    std::env::temp_dir().join("cradle-testbed-cache")
}
