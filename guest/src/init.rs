//! PID-1 mode: what `cradle-init` does as `/init` of a cradle VM.
//!
//! Mounts proc, sys, devtmpfs, devpts, shm, mqueue and cgroup2; loads the
//! config's kernel modules; reads the pod config (`/cradle/config.json`, or
//! the path in `cradle.config=` on the kernel command line); configures the
//! network over netlink; mounts virtiofs images and volumes; runs the pod
//! with vdocker bound to the pod's addresses; then shuts down in order:
//! SIGTERM to everything, grace period, SIGKILL, sync, unmount, power off.

use crate::config::{PodConfig, RootfsSource, VolumeConfig, VolumeSource};
use crate::control::{ControlPort, Milestone};
use crate::pod::{self, Pod, PodError, Sources};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the launcher puts the pod config.
pub const DEFAULT_CONFIG: &str = "/cradle/config.json";

/// Installs the stderr logger (`CRADLE_LOG` filter, default info).
pub fn logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRADLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// SIGTERM/SIGINT to cradle-init stop the pod with status 128+signal.
pub fn stop_on_signals(pod: Arc<Pod>) {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, n) in [
        (SignalKind::terminate(), libc::SIGTERM),
        (SignalKind::interrupt(), libc::SIGINT),
    ] {
        let pod = pod.clone();
        if let Ok(mut s) = signal(kind) {
            tokio::spawn(async move {
                if s.recv().await.is_some() {
                    tracing::info!("signal {n}: stopping the pod");
                    pod.request_stop(128 + n);
                }
            });
        }
    }
}

fn mount_fs(src: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) {
    // Already there (cradle-init started by another init, or a kernel that
    // mounts devtmpfs itself): leave it.
    let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounted.lines().any(|l| l.split(' ').nth(1) == Some(target)) {
        return;
    }
    let _ = std::fs::create_dir_all(target);
    if let Err(e) = mount(Some(src), target, Some(fstype), flags, data) {
        if e != nix::errno::Errno::EBUSY {
            eprintln!("cradle-init: mount {fstype} on {target}: {e}");
        }
    }
}

fn mount_basics() {
    let common = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", common, None);
    mount_fs("sysfs", "/sys", "sysfs", common, None);
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=0620,ptmxmode=0666"),
    );
    mount_fs(
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    mount_fs("mqueue", "/dev/mqueue", "mqueue", common, None);
    mount_fs("cgroup2", "/sys/fs/cgroup", "cgroup2", common, None);
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
}

fn console() {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 of an open fd onto the standard descriptors.
            unsafe { libc::dup2(f.as_raw_fd(), fd) };
        }
    }
}

fn config_path(given: Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return p;
    }
    std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix("cradle.config=").map(PathBuf::from))
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
}

fn load_modules(modules: &[PathBuf]) {
    for m in modules {
        let res = std::fs::File::open(m)
            .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
            .and_then(|f| nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()));
        match res {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => eprintln!("cradle-init: loading module {}: {e}", m.display()),
        }
    }
}

/// Runs PID-1 mode; never returns (powers the machine off). Started by
/// another init (not PID 1) it does the same but leaves the other
/// processes, the mounts and the power to that init, and exits with the
/// pod's status.
pub fn run(config: Option<PathBuf>) -> ! {
    mount_basics();
    if std::process::id() == 1 {
        console();
    } else {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    logging();
    let path = config_path(config);
    match PodConfig::load(&path) {
        Err(e) => {
            eprintln!("cradle-init: {e}");
            shutdown(ControlPort::new(false), 2)
        }
        Ok(cfg) => {
            let control = ControlPort::new(cfg.control_port);
            control.report(Milestone::InitStarted);
            load_modules(&cfg.modules);
            if let Err(e) = nix::unistd::sethostname(cfg.hostname()) {
                eprintln!("cradle-init: sethostname: {e}");
            }
            let status = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(run_pod(cfg, control)),
                Err(e) => {
                    eprintln!("cradle-init: tokio runtime: {e}");
                    1
                }
            };
            shutdown(control, status)
        }
    }
}

async fn run_pod(cfg: PodConfig, control: ControlPort) -> i32 {
    tokio::spawn(crate::reaper::run());
    if let Err(e) = crate::net::configure(&cfg.network).await {
        eprintln!("cradle-init: network: {e}");
        return 1;
    }
    control.report(Milestone::NetworkUp);
    let sources = match VmSources::prepare(&cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cradle-init: {e}");
            return 1;
        }
    };
    let port = cfg.vdocker.port;
    let serve = cfg.vdocker.enabled;
    let m = control;
    let pod = match Pod::create(
        cfg,
        Path::new("/run/cradle/pod"),
        &sources,
        true,
        Arc::new(move |ms| match ms {
            pod::Milestone::ContainerStarted => m.report(Milestone::ContainerStarted),
        }),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cradle-init: {e}");
            return 1;
        }
    };
    if serve {
        let mut bound = 0;
        for addr in pod.addresses.clone() {
            match tokio::net::TcpListener::bind((addr, port)).await {
                Ok(l) => {
                    eprintln!("vdocker listening on {addr}:{port}");
                    bound += 1;
                    tokio::spawn(crate::vdocker::serve(l, pod.clone()));
                }
                Err(e) => eprintln!("cradle-init: vdocker on {addr}:{port}: {e}"),
            }
        }
        if bound > 0 {
            control.report(Milestone::VdockerListening);
        }
    }
    stop_on_signals(pod.clone());
    pod.run().await
}

/// Image and volume directories mounted from virtiofs and block devices.
struct VmSources {
    images: HashMap<String, PathBuf>,
    volumes: HashMap<String, PathBuf>,
}

fn mount_virtiofs(tag: &str, at: &Path, read_only: bool) -> Result<(), PodError> {
    std::fs::create_dir_all(at).map_err(|e| PodError::RunDir(at.to_path_buf(), e))?;
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    mount(Some(tag), at, Some("virtiofs"), flags, None::<&str>)
        .map_err(|e| PodError::Source(format!("mount virtiofs {tag:?} on {}: {e}", at.display())))
}

fn find_block(serial: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir("/sys/block").ok()?;
    for e in dir.flatten() {
        let s = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
        if s.trim() == serial {
            return Some(Path::new("/dev").join(e.file_name()));
        }
    }
    None
}

fn is_blank(dev: &Path) -> bool {
    use std::io::Read;
    let mut buf = vec![0u8; 65536];
    std::fs::File::open(dev)
        .and_then(|mut f| f.read_exact(&mut buf))
        .map(|()| buf.iter().all(|b| *b == 0))
        .unwrap_or(false)
}

impl VmSources {
    async fn prepare(cfg: &PodConfig) -> Result<Self, PodError> {
        let mut s = VmSources {
            images: HashMap::new(),
            volumes: HashMap::new(),
        };
        for c in &cfg.containers {
            if let RootfsSource::Virtiofs(tag) = &c.image.rootfs {
                if !s.images.contains_key(tag) {
                    let at = Path::new("/cradle/images").join(tag);
                    mount_virtiofs(tag, &at, true)?;
                    s.images.insert(tag.clone(), at);
                }
            }
        }
        for v in &cfg.volumes {
            let at = Path::new("/cradle/volumes").join(&v.name);
            match &v.source {
                VolumeSource::Virtiofs { tag } => mount_virtiofs(tag, &at, v.read_only)?,
                VolumeSource::Block {
                    serial,
                    fs_type,
                    mkfs,
                } => {
                    let dev = wait_block(serial).await.ok_or_else(|| {
                        PodError::Source(format!(
                            "volume {:?}: no disk with serial {serial:?}",
                            v.name
                        ))
                    })?;
                    if *mkfs && is_blank(&dev) {
                        make_fs(fs_type, &dev).await?;
                    }
                    std::fs::create_dir_all(&at).map_err(|e| PodError::RunDir(at.clone(), e))?;
                    let flags = if v.read_only {
                        MsFlags::MS_RDONLY
                    } else {
                        MsFlags::empty()
                    };
                    mount(Some(&dev), &at, Some(fs_type.as_str()), flags, None::<&str>).map_err(
                        |e| {
                            PodError::Source(format!(
                                "mount {} on {}: {e}",
                                dev.display(),
                                at.display()
                            ))
                        },
                    )?;
                }
                _ => continue,
            }
            s.volumes.insert(v.name.clone(), at);
        }
        Ok(s)
    }
}

async fn wait_block(serial: &str) -> Option<PathBuf> {
    for _ in 0..50 {
        if let Some(d) = find_block(serial) {
            return Some(d);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn make_fs(fs_type: &str, dev: &Path) -> Result<(), PodError> {
    let tool = format!("mkfs.{fs_type}");
    let out = crate::reaper::output(std::process::Command::new(&tool).arg(dev), None)
        .await
        .map_err(|e| PodError::Source(format!("{tool}: {e}")))?;
    if out.code != 0 {
        return Err(PodError::Source(format!(
            "{tool} {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Sources for VmSources {
    fn image(&self, src: &RootfsSource) -> Result<PathBuf, PodError> {
        match src {
            RootfsSource::Dir(p) => Ok(p.clone()),
            RootfsSource::Virtiofs(tag) => self
                .images
                .get(tag)
                .cloned()
                .ok_or_else(|| PodError::Source(format!("virtiofs image {tag:?} not mounted"))),
        }
    }
    fn volume(&self, v: &VolumeConfig) -> Result<PathBuf, PodError> {
        match &v.source {
            VolumeSource::Dir { path } => Ok(path.clone()),
            _ => self
                .volumes
                .get(&v.name)
                .cloned()
                .ok_or_else(|| PodError::Source(format!("volume {:?} not mounted", v.name))),
        }
    }
}

/// Orderly end of the machine: report, TERM, grace, KILL, sync, unmount,
/// power off.
fn shutdown(control: ControlPort, status: i32) -> ! {
    eprintln!("cradle-init: pod exited with status {status}");
    control.report(Milestone::Exit(status.clamp(0, 255) as u8));
    if std::process::id() != 1 {
        nix::unistd::sync();
        std::process::exit(status)
    }
    // SAFETY: signalling every process but ourselves (kill(-1) skips PID 1).
    unsafe { libc::kill(-1, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: as above.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    nix::unistd::sync();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let targets: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(1)).collect();
    for t in targets.iter().rev() {
        if !["/", "/proc", "/sys", "/dev"].contains(t) {
            let _ = umount2(*t, MntFlags::MNT_DETACH);
        }
    }
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // Only reached if the kernel refused: PID 1 must not exit (panic).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
