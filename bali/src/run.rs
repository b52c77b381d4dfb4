//! `bali run`: verify and unpack an image into a tmpfs root in a new mount
//! namespace, then `execve` the service in place of bali (same PID, same
//! cgroup, signals go straight to it).
//!
//! Order matters: the image source and, once in the new namespace, every
//! volume source are opened first (volumes as `O_PATH` fds, bound later
//! through `/proc/self/fd`), because the staging tmpfs is mounted over `/tmp` of the new namespace
//! and then becomes `/` with `pivot_root`. Nothing is written to the host's
//! filesystems; everything lives in the namespace and is gone when the
//! service exits.

use std::convert::Infallible;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cradle_image::ImageConfig;
use ed25519_dalek::VerifyingKey;

use crate::cgroup;
use crate::sandbox::{host_dir, which};
use crate::users;

/// The staging mount point in the new namespace (shadowed there only).
const STAGE: &str = "/tmp";
/// Used when the image sets no PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Host device nodes bound into the service's `/dev`.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// A `-v HOST:GUEST[:ro]` volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Host path (must exist).
    pub host: PathBuf,
    /// Absolute path in the image.
    pub guest: String,
    /// Mounted read-only.
    pub readonly: bool,
}

impl Volume {
    /// Parses `HOST:GUEST[:ro|:rw]`.
    pub fn parse(s: &str) -> Result<Self, RunError> {
        let bad = |why: &str| RunError::Usage(format!("-v {s:?}: {why}"));
        let parts: Vec<&str> = s.split(':').collect();
        let (host, guest, readonly) = match parts.as_slice() {
            [h, g] => (*h, *g, false),
            [h, g, "ro"] => (*h, *g, true),
            [h, g, "rw"] => (*h, *g, false),
            _ => return Err(bad("expected HOST:GUEST[:ro]")),
        };
        if host.is_empty() || !guest.starts_with('/') {
            return Err(bad("HOST must be given and GUEST must be absolute"));
        }
        Ok(Volume {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            readonly,
        })
    }
}

/// Everything `bali run` needs.
#[derive(Debug)]
pub struct RunOptions {
    /// Path, `file://`, `http://` or `https://` URL.
    pub pkg: String,
    /// The key the image must be signed with.
    pub key: VerifyingKey,
    /// `-e K=V` or `-e K` (taken from bali's environment).
    pub env: Vec<String>,
    /// `-v` volumes.
    pub volumes: Vec<Volume>,
    /// `-m` limit in bytes.
    pub memory: Option<u64>,
    /// `--workdir`
    pub workdir: Option<String>,
    /// `--user`
    pub user: Option<String>,
    /// Arguments after `--`: replace the image's CMD (the ENTRYPOINT stays).
    pub command: Vec<String>,
}

/// Why `bali run` stopped before the service started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad flags or values.
    #[error("{0}")]
    Usage(String),
    /// Fetching the image failed.
    #[error("{0}: {1}")]
    Fetch(String, String),
    /// The image failed verification or did not unpack.
    #[error("{0}: {1}")]
    Image(String, crate::pack::PackError),
    /// Setting up the namespace failed.
    #[error("{0}: {1}")]
    Setup(String, io::Error),
    /// The service could not be executed.
    #[error("executing {0}: {1}")]
    Exec(String, io::Error),
    /// A path in the image could not be prepared, or the command is missing.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// The user does not exist in the image.
    #[error(transparent)]
    User(#[from] users::UserError),
    /// The memory limit cannot be applied.
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
}

fn setup(what: &str) -> impl Fn(io::Error) -> RunError + '_ {
    move |e| RunError::Setup(what.to_string(), e)
}

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, RunError> {
    CString::new(s.as_ref()).map_err(|_| RunError::Usage("NUL byte in a path or value".into()))
}

fn mount(
    src: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), RunError> {
    let what = format!("mounting {}", target.display());
    let (s, t) = (cstr(src)?, cstr(target.as_os_str().as_bytes())?);
    let f = fstype.map(cstr).transpose()?;
    let d = data.map(cstr).transpose()?;
    // SAFETY: every pointer is a NUL-terminated string that outlives the
    // call (or null where mount(2) allows it).
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            d.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>()),
        )
    };
    if rc != 0 {
        return Err(RunError::Setup(what, io::Error::last_os_error()));
    }
    Ok(())
}

fn bind(src: &str, target: &Path, readonly: bool) -> Result<(), RunError> {
    mount(src, target, None, libc::MS_BIND | libc::MS_REC, None)?;
    if readonly {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        mount("none", target, None, flags, None)?;
    }
    Ok(())
}

/// Opens the image bytes: a file or a streamed HTTP(S) response.
pub fn open_source(pkg: &str) -> Result<Box<dyn Read>, RunError> {
    if pkg.starts_with("http://") || pkg.starts_with("https://") {
        // Bounded waits, not a bounded total: big images take their time.
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(std::time::Duration::from_secs(15))
            .timeout_read(std::time::Duration::from_secs(60))
            .build();
        let resp = agent
            .get(pkg)
            .call()
            .map_err(|e| RunError::Fetch(pkg.into(), one_line(&e.to_string())))?;
        return Ok(Box::new(resp.into_reader()));
    }
    let path = pkg.strip_prefix("file://").unwrap_or(pkg);
    let f = File::open(path).map_err(|e| RunError::Fetch(pkg.into(), e.to_string()))?;
    Ok(Box::new(BufReader::with_capacity(256 * 1024, f)))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Opens every volume source before `/tmp` is shadowed.
fn open_volumes(vols: &[Volume]) -> Result<Vec<(OwnedFd, bool)>, RunError> {
    vols.iter()
        .map(|v| {
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
                .open(&v.host)
                .map_err(|e| RunError::Usage(format!("-v {}: {e}", v.host.display())))?;
            let is_dir = f
                .metadata()
                .map_err(|e| RunError::Usage(format!("-v {}: {e}", v.host.display())))?
                .is_dir();
            Ok((OwnedFd::from(f), is_dir))
        })
        .collect()
}

/// Verifies, unpacks, sets up the namespace and becomes the service.
/// Returns only on error.
pub fn run(opts: RunOptions) -> Result<Infallible, RunError> {
    let limit = match opts.memory {
        Some(bytes) => Some(cgroup::prepare(bytes)?),
        None => None,
    };
    let source = open_source(&opts.pkg)?;

    // SAFETY: unshare takes flags only; bali is single-threaded here.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        let e = io::Error::last_os_error();
        return Err(RunError::Setup(
            "new mount namespace (bali run needs root)".into(),
            e,
        ));
    }
    let root = Path::new(STAGE);
    mount(
        "none",
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    // Opened inside the new namespace (a bind source must belong to it)
    // and before /tmp is shadowed.
    let volumes = open_volumes(&opts.volumes)?;
    mount(
        "bali",
        root,
        Some("tmpfs"),
        // nodev: device nodes in an image are not honoured (the service
        // gets bali's own /dev). setuid programs work, as under docker.
        libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    let config = crate::pack::read_image(source, &opts.key, root, true)
        .map_err(|e| RunError::Image(opts.pkg.clone(), e))?;
    // From here on the image is trusted.
    let plan = Plan::new(&opts, &config, root)?;
    mount_system(root)?;
    for (v, (fd, is_dir)) in opts.volumes.iter().zip(&volumes) {
        let target = volume_target(root, &v.guest, *is_dir)?;
        bind(
            &format!("/proc/self/fd/{}", fd.as_raw_fd()),
            &target,
            v.readonly,
        )?;
    }
    drop(volumes);
    if let Some(l) = limit {
        l.apply()?;
    }
    enter_root(root)?;
    plan.exec()
}

/// A volume's mount point in the image: a directory or an empty file.
fn volume_target(root: &Path, guest: &str, is_dir: bool) -> Result<PathBuf, RunError> {
    if is_dir {
        return Ok(host_dir(root, guest)?);
    }
    let (parent, name) = guest
        .rsplit_once('/')
        .ok_or_else(|| RunError::Usage(format!("-v: bad guest path {guest}")))?;
    let dir = host_dir(root, if parent.is_empty() { "/" } else { parent })?;
    let target = dir.join(name);
    if fs::symlink_metadata(&target).is_err() {
        fs::write(&target, b"").map_err(setup("volume mount point"))?;
    }
    Ok(target)
}

/// `/proc`, `/sys`, a minimal `/dev`, `/run`, `/tmp` and the host's
/// resolver files inside the new root.
fn mount_system(root: &Path) -> Result<(), RunError> {
    let dir = |g: &str| host_dir(root, g).map_err(RunError::from);
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", &dir("/proc")?, Some("proc"), nosuid, None)?;
    mount(
        "sysfs",
        &dir("/sys")?,
        Some("sysfs"),
        nosuid | libc::MS_RDONLY,
        None,
    )?;
    let dev = dir("/dev")?;
    mount(
        "tmpfs",
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755"),
    )?;
    for d in DEVICES {
        let host = format!("/dev/{d}");
        if Path::new(&host).exists() {
            let t = dev.join(d);
            fs::write(&t, b"").map_err(setup("/dev"))?;
            bind(&host, &t, false)?;
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name)).map_err(setup("/dev"))?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(setup("/dev/pts"))?;
    mount(
        "devpts",
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(setup("/dev/shm"))?;
    mount("shm", &shm, Some("tmpfs"), nosuid, Some("mode=1777"))?;
    mount(
        "tmpfs",
        &dir("/run")?,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )?;
    mount(
        "tmpfs",
        &dir("/tmp")?,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    // Host network, so the host's resolver and hosts files.
    let etc = dir("/etc")?;
    for f in ["resolv.conf", "hosts"] {
        let host = format!("/etc/{f}");
        let t = etc.join(f);
        if !Path::new(&host).exists() {
            continue;
        }
        match fs::symlink_metadata(&t) {
            Ok(m) if m.is_file() => {}
            Ok(_) => continue, // an image symlink there is left alone
            Err(_) => fs::write(&t, b"").map_err(setup("/etc"))?,
        }
        bind(&host, &t, true)?;
    }
    Ok(())
}

/// Makes `root` the process's `/` and drops the old root.
fn enter_root(root: &Path) -> Result<(), RunError> {
    std::env::set_current_dir(root).map_err(setup("chdir to new root"))?;
    let dot = cstr(".")?;
    // SAFETY: pivot_root(".", ".") stacks the old root on the new one; both
    // arguments are valid NUL-terminated strings.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if rc == 0 {
        // SAFETY: detaches the old root stacked on "."; `dot` is valid.
        if unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(RunError::Setup(
                "detaching old root".into(),
                io::Error::last_os_error(),
            ));
        }
    } else {
        // An initramfs root cannot be pivoted: move the mount and chroot.
        mount(".", Path::new("/"), None, libc::MS_MOVE, None)?;
        // SAFETY: `dot` is a valid NUL-terminated string.
        if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
            return Err(RunError::Setup("chroot".into(), io::Error::last_os_error()));
        }
    }
    std::env::set_current_dir("/").map_err(setup("chdir /"))
}

/// The service's argv, env, identity and working directory.
struct Plan {
    argv: Vec<String>,
    env: Vec<String>,
    ident: users::Ident,
    workdir: String,
    exe: String,
}

impl Plan {
    fn new(opts: &RunOptions, config: &ImageConfig, root: &Path) -> Result<Self, RunError> {
        let mut cfg = config.clone();
        if !opts.command.is_empty() {
            cfg.cmd = Some(opts.command.clone());
        }
        let argv = cfg.argv();
        if argv.is_empty() {
            return Err(RunError::Usage(
                "the image has no ENTRYPOINT or CMD; give a command after --".into(),
            ));
        }
        for e in &opts.env {
            match e.split_once('=') {
                Some((k, v)) if !k.is_empty() => cfg.env_set(k, v),
                Some(_) => return Err(RunError::Usage(format!("-e {e:?}: empty name"))),
                None => {
                    if let Ok(v) = std::env::var(e) {
                        cfg.env_set(e, &v);
                    }
                }
            }
        }
        let user = opts.user.clone().unwrap_or(cfg.user.clone());
        let user = if user.is_empty() {
            "0".to_string()
        } else {
            user
        };
        let ident = users::resolve(root, &user)?;
        if cfg.env_get("PATH").is_none() {
            cfg.env_set("PATH", DEFAULT_PATH);
        }
        if cfg.env_get("HOME").is_none() {
            let home = ident.home.clone().unwrap_or_else(|| "/".into());
            cfg.env_set("HOME", &home);
        }
        let workdir = opts
            .workdir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or(cfg.working_dir.clone());
        let workdir = if workdir.is_empty() {
            "/".into()
        } else {
            workdir
        };
        if !workdir.starts_with('/') {
            return Err(RunError::Usage(format!(
                "--workdir {workdir:?} must be absolute"
            )));
        }
        host_dir(root, &workdir)?;
        let path = cfg.env_get("PATH").unwrap_or(DEFAULT_PATH).to_string();
        let exe = which(root, &argv[0], &path)?;
        Ok(Plan {
            argv,
            env: cfg.env,
            ident,
            workdir,
            exe,
        })
    }

    /// Drops to the service's identity and execs it.
    fn exec(self) -> Result<Infallible, RunError> {
        let groups: Vec<libc::gid_t> = self.ident.groups.clone();
        // SAFETY: setgroups reads `groups.len()` gids from a live Vec;
        // setgid/setuid take plain ids.
        unsafe {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(self.ident.gid) != 0
                || libc::setuid(self.ident.uid) != 0
            {
                return Err(RunError::Setup(
                    format!("switching to user {}:{}", self.ident.uid, self.ident.gid),
                    io::Error::last_os_error(),
                ));
            }
        }
        std::env::set_current_dir(&self.workdir)
            .map_err(|e| RunError::Setup(format!("--workdir {}", self.workdir), e))?;
        let exe = cstr(&self.exe)?;
        let argv: Vec<CString> = self.argv.iter().map(cstr).collect::<Result<_, _>>()?;
        let envp: Vec<CString> = self.env.iter().map(cstr).collect::<Result<_, _>>()?;
        let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
        envp_p.push(std::ptr::null());
        // SAFETY: exe, argv and envp are NUL-terminated strings kept alive
        // by the Vecs above, and both pointer arrays end with null.
        unsafe { libc::execve(exe.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        Err(RunError::Exec(self.exe, io::Error::last_os_error()))
    }
}
