//! A real single-node Ceph cluster on 127.0.0.1 for GFS tests: one monitor,
//! one OSD on `memstore` (no disk), one MDS and a CephFS, all in a temporary
//! directory, started from Debian's ceph packages in well under a minute and
//! torn down when the [`CephCluster`] is dropped.
//!
//! ```no_run
//! use cradle_testbed::ceph::CephCluster;
//! let cluster = CephCluster::start()?;
//! let mount = cluster.mount_fuse(std::path::Path::new("/mnt/gfs"))?;
//! std::fs::write(mount.path().join("hello"), "from the host")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestbedError;

/// How long the cluster may take to serve a filesystem.
const START_BOUND: Duration = Duration::from_secs(120);
/// Name of the filesystem the cluster serves.
pub const FS_NAME: &str = "cephfs";
/// RAM the memstore OSD may use.
const MEMSTORE_BYTES: u64 = 768 << 20;

/// A running cluster; everything is killed and deleted on drop.
#[derive(Debug)]
pub struct CephCluster {
    dir: tempfile::TempDir,
    mon: Option<Child>,
    osd: Option<Child>,
    mds: Option<Child>,
    mon_addr: String,
    fsid: String,
}

/// A ceph-fuse mount of the cluster's filesystem, unmounted on drop.
#[derive(Debug)]
pub struct FuseMount {
    path: PathBuf,
    child: Child,
}

impl FuseMount {
    /// Where the filesystem is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg(&self.path)
            .status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, TestbedError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| TestbedError::io("free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| TestbedError::io("free port", e))
}

fn ceph_err(what: &str, out: &Output) -> TestbedError {
    TestbedError::BadConfig(format!(
        "ceph: {what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

impl CephCluster {
    /// Creates and starts a cluster and waits until its filesystem has an
    /// active MDS.
    pub fn start() -> Result<CephCluster, TestbedError> {
        for tool in [
            "ceph-mon",
            "ceph-osd",
            "ceph-mds",
            "ceph",
            "ceph-authtool",
            "monmaptool",
        ] {
            if Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
            {
                return Err(TestbedError::MissingTool(format!(
                    "{tool} (packages ceph-mon ceph-osd ceph-mds ceph-common)"
                )));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("cradle-ceph-")
            .tempdir()
            .map_err(|e| TestbedError::io("ceph temporary directory", e))?;
        let mon_addr = format!("127.0.0.1:{}", free_port()?);
        let mut cluster = CephCluster {
            dir,
            mon: None,
            osd: None,
            mds: None,
            mon_addr,
            fsid: fsid(),
        };
        cluster.write_config()?;
        cluster.bootstrap()?;
        Ok(cluster)
    }

    /// The cluster's ceph.conf.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("ceph.conf")
    }

    /// A keyring holding `client.admin`.
    pub fn keyring(&self) -> PathBuf {
        self.dir.path().join("keyring")
    }

    /// The client id the keyring holds (`admin`).
    pub fn client_id(&self) -> &str {
        "admin"
    }

    /// The monitor's `IP:PORT` (msgr v1).
    pub fn mon_addr(&self) -> &str {
        &self.mon_addr
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write_config(&self) -> Result<(), TestbedError> {
        let d = self.dir.path().display();
        for sub in ["run", "log", "mon.a", "osd.0", "mds.a"] {
            fs::create_dir_all(self.path(sub)).map_err(|e| TestbedError::io(self.path(sub), e))?;
        }
        let conf = format!(
            "[global]\n\
             fsid = {fsid}\n\
             mon host = v1:{mon}\n\
             mon initial members = a\n\
             public addr = 127.0.0.1\n\
             ms bind msgr2 = false\n\
             auth cluster required = cephx\n\
             auth service required = cephx\n\
             auth client required = cephx\n\
             osd pool default size = 1\n\
             osd pool default min size = 1\n\
             osd pool default pg num = 8\n\
             mon allow pool size one = true\n\
             mon allow pool delete = true\n\
             mon data avail crit = 1\n\
             mon data avail warn = 2\n\
             osd objectstore = memstore\n\
             memstore device bytes = {MEMSTORE_BYTES}\n\
             osd crush chooseleaf type = 0\n\
             run dir = {d}/run\n\
             log file = {d}/log/$name.log\n\
             admin socket = {d}/run/$name.asok\n\
             keyring = {d}/keyring\n\
             mon data = {d}/mon.a\n\
             osd data = {d}/osd.0\n\
             mds data = {d}/mds.a\n\
             [osd.0]\n\
             keyring = {d}/osd.0/keyring\n\
             [mds.a]\n\
             keyring = {d}/mds.a/keyring\n",
            fsid = self.fsid,
            mon = self.mon_addr,
        );
        fs::write(self.conf(), conf).map_err(|e| TestbedError::io(self.conf(), e))
    }

    /// Runs a ceph tool with this cluster's config; fails on nonzero exit.
    fn tool(&self, program: &str, args: &[&str]) -> Result<String, TestbedError> {
        let out = Command::new(program)
            .arg("-c")
            .arg(self.conf())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TestbedError::io(program, e))?;
        if !out.status.success() {
            return Err(ceph_err(&format!("{program} {}", args.join(" ")), &out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the `ceph` CLI as client.admin (bounded to 30 s per call).
    pub fn ceph(&self, args: &[&str]) -> Result<String, TestbedError> {
        let mut all = vec!["--connect-timeout", "30"];
        all.extend_from_slice(args);
        self.tool("ceph", &all)
    }

    fn daemon(&self, program: &str, id: &str) -> Result<Child, TestbedError> {
        Command::new(program)
            .args(["-f", "-i", id, "-c"])
            .arg(self.conf())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestbedError::io(program, e))
    }

    fn bootstrap(&mut self) -> Result<(), TestbedError> {
        let keyring = self.keyring();
        let kr = keyring.to_string_lossy().into_owned();
        // One keyring holds mon. and client.admin; daemons get their own.
        let authtool = |args: &[&str]| -> Result<(), TestbedError> {
            let out = Command::new("ceph-authtool")
                .args(args)
                .output()
                .map_err(|e| TestbedError::io("ceph-authtool", e))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(ceph_err("ceph-authtool", &out))
            }
        };
        authtool(&[
            "--create-keyring",
            &kr,
            "--gen-key",
            "-n",
            "mon.",
            "--cap",
            "mon",
            "allow *",
        ])?;
        authtool(&[
            &kr,
            "--gen-key",
            "-n",
            "client.admin",
            "--cap",
            "mon",
            "allow *",
            "--cap",
            "osd",
            "allow *",
            "--cap",
            "mds",
            "allow *",
            "--cap",
            "mgr",
            "allow *",
        ])?;
        let monmap = self.path("monmap").to_string_lossy().into_owned();
        let out = Command::new("monmaptool")
            .args([
                "--create",
                "--fsid",
                &self.fsid,
                "--addv",
                "a",
                &format!("[v1:{}]", self.mon_addr),
                &monmap,
            ])
            .output()
            .map_err(|e| TestbedError::io("monmaptool", e))?;
        if !out.status.success() {
            return Err(ceph_err("monmaptool", &out));
        }
        self.tool(
            "ceph-mon",
            &["--mkfs", "-i", "a", "--monmap", &monmap, "--keyring", &kr],
        )?;
        self.mon = Some(self.daemon("ceph-mon", "a")?);
        self.wait_mon()?;

        let osd_kr = self.path("osd.0/keyring").to_string_lossy().into_owned();
        authtool(&["--create-keyring", &osd_kr, "--gen-key", "-n", "osd.0"])?;
        let id = self.ceph(&["osd", "create"])?;
        if id.trim() != "0" {
            return Err(TestbedError::BadConfig(format!(
                "ceph osd create gave id {id:?}, expected 0"
            )));
        }
        self.ceph(&[
            "auth",
            "add",
            "osd.0",
            "osd",
            "allow *",
            "mon",
            "allow profile osd",
            "-i",
            &osd_kr,
        ])?;
        self.tool("ceph-osd", &["-i", "0", "--mkfs", "--keyring", &osd_kr])?;
        self.osd = Some(self.daemon("ceph-osd", "0")?);

        let mds_kr = self.path("mds.a/keyring").to_string_lossy().into_owned();
        authtool(&["--create-keyring", &mds_kr, "--gen-key", "-n", "mds.a"])?;
        self.ceph(&[
            "auth",
            "add",
            "mds.a",
            "mon",
            "allow profile mds",
            "osd",
            "allow rwx",
            "mds",
            "allow",
            "-i",
            &mds_kr,
        ])?;
        self.mds = Some(self.daemon("ceph-mds", "a")?);

        self.ceph(&["osd", "pool", "create", "cephfs_metadata", "8"])?;
        self.ceph(&["osd", "pool", "create", "cephfs_data", "8"])?;
        self.ceph(&["fs", "new", FS_NAME, "cephfs_metadata", "cephfs_data"])?;
        self.wait_active()
    }

    /// Waits until the monitor answers: on a loaded machine it can take
    /// longer to come up than one client call waits.
    fn wait_mon(&self) -> Result<(), TestbedError> {
        let start = Instant::now();
        loop {
            let answered = self.tool("ceph", &["--connect-timeout", "10", "mon", "stat"]);
            match answered {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > START_BOUND => {
                    return Err(TestbedError::BadConfig(format!(
                        "ceph: monitor not answering within {START_BOUND:?} ({e}); logs in {}",
                        self.path("log").display()
                    )))
                }
                Err(_) => thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    /// Waits until the filesystem has an active MDS and the OSD is up.
    pub fn wait_active(&self) -> Result<(), TestbedError> {
        let start = Instant::now();
        loop {
            let mds = self.ceph(&["mds", "stat"]).unwrap_or_default();
            let osd = self.ceph(&["osd", "stat"]).unwrap_or_default();
            if mds.contains("up:active") && osd.contains("1 up") {
                return Ok(());
            }
            if start.elapsed() > START_BOUND {
                return Err(TestbedError::BadConfig(format!(
                    "ceph: filesystem not active within {START_BOUND:?} (mds: {}; osd: {}); logs in {}",
                    mds.trim(),
                    osd.trim(),
                    self.path("log").display()
                )));
            }
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Mounts the filesystem with ceph-fuse at `mountpoint` (created if
    /// missing) and waits until it answers.
    pub fn mount_fuse(&self, mountpoint: &Path) -> Result<FuseMount, TestbedError> {
        fs::create_dir_all(mountpoint).map_err(|e| TestbedError::io(mountpoint, e))?;
        let child = Command::new("ceph-fuse")
            .arg("-f")
            .arg("-c")
            .arg(self.conf())
            .arg("-k")
            .arg(self.keyring())
            .args(["--id", "admin"])
            .arg(mountpoint)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestbedError::spawn("ceph-fuse", "ceph-fuse", e))?;
        let mut mount = FuseMount {
            path: mountpoint.to_path_buf(),
            child,
        };
        let start = Instant::now();
        while !is_fuse_mount(mountpoint) {
            if let Ok(Some(status)) = mount.child.try_wait() {
                return Err(TestbedError::BadConfig(format!(
                    "ceph-fuse exited with {status}"
                )));
            }
            if start.elapsed() > Duration::from_secs(60) {
                return Err(TestbedError::BadConfig(
                    "ceph-fuse did not mount within 60 s".into(),
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(mount)
    }

    /// Kills and restarts the MDS (a fault test: clients must recover).
    pub fn restart_mds(&mut self) -> Result<(), TestbedError> {
        stop(&mut self.mds);
        self.mds = Some(self.daemon("ceph-mds", "a")?);
        self.wait_active()
    }

    /// Stops the OSD: I/O to data stalls until [`CephCluster::start_osd`].
    pub fn stop_osd(&mut self) {
        stop(&mut self.osd);
    }

    /// Starts the OSD again after [`CephCluster::stop_osd`].
    pub fn start_osd(&mut self) -> Result<(), TestbedError> {
        if self.osd.is_none() {
            self.osd = Some(self.daemon("ceph-osd", "0")?);
        }
        self.wait_active()
    }
}

/// Whether `path` is the root of a FUSE mount right now.
fn is_fuse_mount(path: &Path) -> bool {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = path.to_string_lossy();
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, mnt, fstype) = (f.next(), f.next(), f.next());
        mnt == Some(&*want) && fstype.is_some_and(|t| t.starts_with("fuse"))
    })
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for CephCluster {
    fn drop(&mut self) {
        stop(&mut self.mds);
        stop(&mut self.osd);
        stop(&mut self.mon);
    }
}

/// A random UUID for the cluster's fsid, from the kernel's generator.
fn fsid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "8f7a4c52-1f1e-4e0b-9d2b-3c6a5e0d9a11".into())
}
