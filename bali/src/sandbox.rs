//! Running a build step inside the rootfs being built: a child process in
//! a new mount namespace with `/proc`, `/dev` (the host's, bound), `/sys`
//! (read-only) and the host's `/etc/resolv.conf` mounted, then `chroot`.
//! The network and everything else stay the host's. The mounts vanish
//! with the child's namespace.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use cradle_image::unpack::{clean_path, resolve_in_root};

use crate::users::Ident;

/// Why a step could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A path inside the rootfs could not be prepared.
    #[error("preparing {0}: {1}")]
    Prepare(String, String),
    /// The command was not found inside the rootfs.
    #[error("{0}: not found in the image (PATH={1})")]
    NotFound(String, String),
    /// Spawning failed (the namespace or mount setup included).
    #[error("starting {0}: {1}")]
    Spawn(String, io::Error),
}

fn cpath(p: &Path) -> Result<CString, SandboxError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| SandboxError::Prepare(p.display().to_string(), "NUL in path".into()))
}

/// The real host path of `guest` (absolute inside the image) below `root`,
/// with missing directories created when `create`.
pub fn host_path(root: &Path, guest: &str, create: bool) -> Result<PathBuf, SandboxError> {
    let prep =
        |e: cradle_image::ImageError| SandboxError::Prepare(guest.to_string(), e.to_string());
    let parts = clean_path(guest.as_bytes()).map_err(prep)?;
    Ok(root.join(resolve_in_root(root, &parts, create).map_err(prep)?))
}

/// Like [`host_path`] but the result must be a directory.
pub fn host_dir(root: &Path, guest: &str) -> Result<PathBuf, SandboxError> {
    let p = host_path(root, guest, true)?;
    if !p.is_dir() {
        return Err(SandboxError::Prepare(
            guest.to_string(),
            "not a directory in the image".into(),
        ));
    }
    Ok(p)
}

/// Finds `prog` in `path` (a `PATH` value) inside the image; returns the
/// absolute in-image path to exec after `chroot`.
pub fn which(root: &Path, prog: &str, path: &str) -> Result<String, SandboxError> {
    if prog.contains('/') {
        return Ok(prog.to_string());
    }
    for dir in path.split(':').filter(|d| d.starts_with('/')) {
        let cand = format!("{}/{prog}", dir.trim_end_matches('/'));
        let parts = clean_path(cand.as_bytes()).unwrap_or_default();
        if let Ok(rel) = resolve_in_root(root, &parts, false) {
            if root.join(rel).is_file() {
                return Ok(cand);
            }
        }
    }
    Err(SandboxError::NotFound(prog.to_string(), path.to_string()))
}

/// A mount to do in the child: source (or fs type), target, flags.
struct Mount {
    source: CString,
    target: CString,
    fstype: Option<CString>,
    flags: libc::c_ulong,
}

fn do_mount(m: &Mount) -> io::Result<()> {
    let fstype = m.fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings owned by `m` (or
    // null for the fs type of a bind); mount copies what it needs.
    let rc = unsafe {
        libc::mount(
            m.source.as_ptr(),
            m.target.as_ptr(),
            fstype,
            m.flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if m.flags & libc::MS_BIND != 0 && m.flags & libc::MS_RDONLY != 0 {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        // SAFETY: as above; a read-only remount of the bind just made.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                m.target.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs `argv` inside `root` as `ident` in `workdir` with exactly `env`,
/// waiting for it. stdin is /dev/null; stdout and stderr are inherited.
pub fn run_in_root(
    root: &Path,
    argv: &[String],
    env: &[String],
    workdir: &str,
    ident: &Ident,
) -> Result<ExitStatus, SandboxError> {
    let Some(prog) = argv.first() else {
        return Err(SandboxError::NotFound(String::new(), String::new()));
    };
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let exe = which(root, prog, path_var)?;

    let mut mounts = Vec::new();
    let mut add = |src: &str, target: PathBuf, fstype: Option<&str>, flags: libc::c_ulong| {
        mounts.push(Mount {
            source: CString::new(src)
                .map_err(|_| SandboxError::Prepare(src.into(), "NUL".into()))?,
            target: cpath(&target)?,
            fstype: fstype.map(|f| CString::new(f).unwrap_or_default()),
            flags,
        });
        Ok::<_, SandboxError>(())
    };
    let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    add("proc", host_dir(root, "/proc")?, Some("proc"), nosuid)?;
    let dev = host_dir(root, "/dev")?;
    add("/dev", dev, None, libc::MS_BIND | libc::MS_REC)?;
    let sys = host_dir(root, "/sys")?;
    add("sysfs", sys, Some("sysfs"), nosuid | libc::MS_RDONLY)?;
    // The host's resolver config, over a regular file (made if missing;
    // an image symlink there is left alone rather than followed).
    let resolv = host_dir(root, "/etc")?.join("resolv.conf");
    let mut made_resolv = false;
    if Path::new("/etc/resolv.conf").exists() {
        match std::fs::symlink_metadata(&resolv) {
            Err(_) => {
                std::fs::write(&resolv, b"").map_err(|e| {
                    SandboxError::Prepare(resolv.display().to_string(), e.to_string())
                })?;
                made_resolv = true;
                add(
                    "/etc/resolv.conf",
                    resolv.clone(),
                    None,
                    libc::MS_BIND | libc::MS_RDONLY,
                )?;
            }
            Ok(m) if m.is_file() => {
                add(
                    "/etc/resolv.conf",
                    resolv.clone(),
                    None,
                    libc::MS_BIND | libc::MS_RDONLY,
                )?;
            }
            Ok(_) => {}
        }
    }
    let croot = cpath(root)?;
    host_dir(root, workdir)?;
    let cwd = CString::new(if workdir.is_empty() { "/" } else { workdir })
        .map_err(|_| SandboxError::Prepare(workdir.into(), "NUL".into()))?;
    let slash = CString::new("/").unwrap_or_default();
    let private = Mount {
        source: slash.clone(),
        target: slash.clone(),
        fstype: None,
        flags: libc::MS_REC | libc::MS_PRIVATE,
    };
    let groups: Vec<libc::gid_t> = ident.groups.clone();
    let (uid, gid) = (ident.uid, ident.gid);

    let mut cmd = Command::new(&exe);
    cmd.arg0(prog)
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::null());
    let child_setup = move || -> io::Result<()> {
        // SAFETY: unshare takes flags only.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Make every mount private so nothing propagates to the host.
        do_mount(&private)?;
        for m in &mounts {
            do_mount(m)?;
        }
        // SAFETY: croot and cwd are valid NUL-terminated strings.
        unsafe {
            if libc::chroot(croot.as_ptr()) != 0 || libc::chdir(slash.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs between fork and exec and only makes raw
    // system calls on data prepared before the fork (no allocation, no
    // locks): unshare, mount, chroot, chdir, setgroups, setgid, setuid.
    unsafe {
        cmd.pre_exec(child_setup);
    }
    let status = cmd
        .status()
        .map_err(|e| SandboxError::Spawn(prog.clone(), e));
    if made_resolv {
        let _ = std::fs::remove_file(&resolv);
    }
    status
}
