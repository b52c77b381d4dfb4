//! Shared by the integration tests: start our daemon or the reference
//! virtiofsd on a directory, killed when dropped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Starts `which` serving `dir` on `socket` with `cache` and extra flags.
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
        .args(["--cache", cache, "--sandbox", "none", "--seccomp", "none"])
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
