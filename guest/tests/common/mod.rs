//! Shared by the host-mode tests: a busybox rootfs, a running
//! `cradle-init host` and the real docker CLI pointed at it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Builds a busybox rootfs (applet symlinks, passwd, group) under `dir`.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "root", "home/app"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is needed");
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    root
}

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create namespaces and mounts: run them as root"
    );
}

/// A `cradle-init host` process.
pub struct HostPod {
    child: Child,
    pub port: u16,
    pub console: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl HostPod {
    /// Writes `config` (with `ROOTFS` replaced by a fresh busybox rootfs and
    /// `SHARED` by an empty directory) and starts cradle-init on it.
    pub fn start(config: &str) -> HostPod {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let root = busybox_rootfs(dir.path());
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let config = config
            .replace("ROOTFS", root.to_str().unwrap())
            .replace("SHARED", shared.to_str().unwrap());
        let cfg = dir.path().join("pod.json");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cradle-init"))
            .arg("host")
            .arg("--config")
            .arg(&cfg)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let console = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let c = console.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("vdocker listening on ") {
                    let _ = tx.send(addr.rsplit(':').next().unwrap().parse::<u16>().unwrap());
                }
                let mut c = c.lock().unwrap();
                c.push_str(&line);
                c.push('\n');
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("cradle-init did not listen: {}", console.lock().unwrap()));
        HostPod {
            child,
            port,
            console,
            dir,
        }
    }

    /// Runs `docker -H tcp://127.0.0.1:PORT ARGS` (60 s at most).
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_with_stdin(args, None)
    }

    /// Same, feeding `input` on stdin.
    pub fn docker_with_stdin(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let host = format!("tcp://127.0.0.1:{}", self.port);
        let mut cmd = Command::new("timeout");
        cmd.arg("60").arg("docker").arg("-H").arg(&host).args(args);
        run(cmd, input)
    }

    /// The command line to run docker against this pod (for `script -c`).
    pub fn docker_cmdline(&self, args: &str) -> String {
        format!("docker -H tcp://127.0.0.1:{} {args}", self.port)
    }

    /// Waits for cradle-init to exit and returns its status.
    pub fn wait(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "pod did not end: {}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls `docker inspect` until the container runs.
    /// The pod process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pod's run directory (container roots are mounted below it).
    pub fn run_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("run")
    }

    pub fn wait_running(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while text(&self.docker(&["inspect", "-f", "{{.State.Running}}", name])).trim() != "true" {
            assert!(
                Instant::now() < deadline,
                "{name} never ran: {}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Polls until the console holds `needle`.
    pub fn wait_console(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.console().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "console never showed {needle:?}: {}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HostPod {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn run(mut cmd: Command, input: Option<&[u8]>) -> Output {
    use std::io::Write;
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = input {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(data).unwrap();
    }
    child.wait_with_output().unwrap()
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o),
        err_text(&o)
    );
    text(&o)
}
