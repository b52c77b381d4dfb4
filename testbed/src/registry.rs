//! A real OCI registry on loopback for image tests: Debian's
//! `docker-registry` on a free 127.0.0.1 port with a temporary config and
//! storage, filled with `skopeo copy`, killed and deleted on drop.
//!
//! ```no_run
//! use cradle_testbed::registry::DockerRegistry;
//! let reg = DockerRegistry::start()?;
//! reg.push("docker-archive:busybox.tar", "base/busybox:1")?;
//! let image = reg.reference("base/busybox:1"); // docker://127.0.0.1:PORT/...
//! # Ok::<(), cradle_testbed::TestbedError>(())
//! ```

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestbedError;

/// How long the registry may take to listen.
const START_BOUND: Duration = Duration::from_secs(20);

/// A running `docker-registry` (plain HTTP, no auth).
#[derive(Debug)]
pub struct DockerRegistry {
    child: Child,
    port: u16,
    storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    /// Starts one and returns once it accepts connections.
    pub fn start() -> Result<DockerRegistry, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("registry")
            .tempdir()
            .map_err(|e| TestbedError::io("registry directory", e))?;
        let port = free_port()?;
        let storage = dir.path().join("data");
        let conf = dir.path().join("config.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )
        .map_err(|e| TestbedError::io(&conf, e))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestbedError::spawn("docker-registry", "docker-registry", e))?;
        let mut reg = DockerRegistry {
            child,
            port,
            storage,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(reg.addr()).is_err() {
            if let Ok(Some(status)) = reg.child.try_wait() {
                return Err(TestbedError::Daemon(format!(
                    "docker-registry exited with {status} before listening"
                )));
            }
            if start.elapsed() > START_BOUND {
                return Err(TestbedError::Daemon(format!(
                    "docker-registry not listening on {} within {START_BOUND:?}",
                    reg.addr()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(reg)
    }

    /// `127.0.0.1:PORT`, as image references start.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it stores blobs and manifests.
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// `docker://127.0.0.1:PORT/REPO` (REPO with its tag or digest).
    pub fn reference(&self, repo: &str) -> String {
        format!("docker://{}/{repo}", self.addr())
    }

    /// Pushes `source` (any skopeo transport, e.g. `docker-archive:x.tar`,
    /// relative paths from the current directory) as `repo`.
    pub fn push(&self, source: &str, repo: &str) -> Result<(), TestbedError> {
        self.push_from(Path::new("."), source, repo)
    }

    /// [`DockerRegistry::push`] with skopeo running in `dir`.
    pub fn push_from(&self, dir: &Path, source: &str, repo: &str) -> Result<(), TestbedError> {
        let out = Command::new("skopeo")
            .current_dir(dir)
            .args(["copy", "--quiet", "--dest-tls-verify=false", source])
            .arg(self.reference(repo))
            .output()
            .map_err(|e| TestbedError::spawn("skopeo", "skopeo", e))?;
        if !out.status.success() {
            return Err(TestbedError::Daemon(format!(
                "skopeo copy {source} {}: {}",
                self.reference(repo),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, TestbedError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| TestbedError::io("127.0.0.1:0", e))
}
