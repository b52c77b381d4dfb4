//! Filesystem sandbox and privilege drop, done after everything the daemon
//! serves is open and before the first request.
//!
//! `namespace`: a private mount namespace whose root is a fresh read-only
//! tmpfs holding only bind mounts of the given files (the backing file,
//! the socket), reached with `pivot_root`; the host's tree is detached.
//! `chroot`: chroot into an empty, already deleted directory (no
//! namespace; the files stay reachable only through open descriptors).

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{DaemonError, SandboxMode};

fn err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |cause| DaemonError::Sandbox { what, cause }
}

fn check(r: libc::c_int, what: &str) -> Result<(), DaemonError> {
    if r == 0 {
        Ok(())
    } else {
        Err(err(what)(std::io::Error::last_os_error()))
    }
}

fn cstr(p: &Path) -> Result<CString, DaemonError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| err(format!("path {}", p.display()))(std::io::ErrorKind::InvalidInput.into()))
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    what: &str,
) -> Result<(), DaemonError> {
    let src = src.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(|f| CString::new(f).unwrap_or_default());
    // SAFETY: every pointer is a valid NUL-terminated string or null, and
    // outlives the call.
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    check(r, what)
}

/// Where the new root is built inside the private namespace (a tmpfs is
/// mounted over it there; the host's directory is untouched).
const NEW_ROOT: &str = "/tmp";

/// Enters the sandbox. `files` are shown in the new root under their file
/// names (a second file with the same name gets a numeric suffix).
/// Returns the paths at which they appear inside the sandbox.
pub fn enter(mode: SandboxMode, files: &[&Path]) -> Result<Vec<PathBuf>, DaemonError> {
    match mode {
        SandboxMode::None => Ok(files.iter().map(|p| p.to_path_buf()).collect()),
        SandboxMode::Chroot => chroot_empty().map(|()| Vec::new()),
        SandboxMode::Namespace => namespace(files),
    }
}

fn namespace(files: &[&Path]) -> Result<Vec<PathBuf>, DaemonError> {
    // SAFETY: unshare takes no pointers.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(r, "unshare(CLONE_NEWNS)")?;
    // Nothing we mount may propagate back to the host.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        "make / private",
    )?;
    // Hold the sources by O_PATH descriptors (opened inside the new
    // namespace: a bind source must be one of its mounts), since the tmpfs
    // may cover them.
    let sources = files
        .iter()
        .map(|p| {
            let c = cstr(p)?;
            // SAFETY: `c` is a valid C string; open returns a new fd or -1.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(err(format!("open {}", p.display()))(
                    std::io::Error::last_os_error(),
                ));
            }
            // SAFETY: fd was just returned by open and is owned by nobody else.
            Ok(unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        })
        .collect::<Result<Vec<File>, _>>()?;

    let root = Path::new(NEW_ROOT);
    mount(
        Some(Path::new("tmpfs")),
        root,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "mount tmpfs root",
    )?;

    let mut shown = Vec::new();
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for (path, src) in files.iter().zip(&sources) {
        let base = path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "file".into());
        let mut name = base.clone();
        let mut k = 1;
        while names.contains(&name) {
            let mut n = base.clone();
            n.push(format!(".{k}"));
            name = n;
            k += 1;
        }
        names.push(name.clone());
        let target = root.join(&name);
        File::create(&target).map_err(err(format!("create {}", target.display())))?;
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", src.as_raw_fd()));
        mount(
            Some(&proc_path),
            &target,
            None,
            libc::MS_BIND,
            &format!("bind {}", path.display()),
        )?;
        shown.push(Path::new("/").join(&name));
    }
    drop(sources);

    std::env::set_current_dir(root).map_err(err("chdir new root"))?;
    let dot = cstr(Path::new("."))?;
    // SAFETY: pivot_root(".", ".") stacks the old root under the new one;
    // both arguments are valid C strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    check(if r == 0 { 0 } else { -1 }, "pivot_root")?;
    // SAFETY: detaches the old root stacked at "."; valid C string.
    let r = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
    check(r, "detach old root")?;
    std::env::set_current_dir("/").map_err(err("chdir /"))?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT
            | libc::MS_BIND
            | libc::MS_RDONLY
            | libc::MS_NOSUID
            | libc::MS_NODEV
            | libc::MS_NOEXEC,
        "remount root read-only",
    )?;
    Ok(shown)
}

fn chroot_empty() -> Result<(), DaemonError> {
    let mut tmpl = *b"/tmp/cradle-empty-XXXXXX\0";
    // SAFETY: tmpl is a writable NUL-terminated template as mkdtemp wants.
    let p = unsafe { libc::mkdtemp(tmpl.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(err("mkdtemp")(std::io::Error::last_os_error()));
    }
    let dir_path = PathBuf::from(std::ffi::OsStr::from_bytes(&tmpl[..tmpl.len() - 1]));
    let dir = File::open(&dir_path).map_err(err("open empty dir"))?;
    // Delete it first: the chroot then points at an empty, unlinked
    // directory where nothing can be created.
    std::fs::remove_dir(&dir_path).map_err(err("rmdir empty dir"))?;
    // SAFETY: fchdir on a directory fd we own.
    check(unsafe { libc::fchdir(dir.as_raw_fd()) }, "fchdir")?;
    let dot = cstr(Path::new("."))?;
    // SAFETY: valid C string.
    check(unsafe { libc::chroot(dot.as_ptr()) }, "chroot")?;
    std::env::set_current_dir("/").map_err(err("chdir /"))?;
    Ok(())
}

/// Sets `no_new_privs` and drops every capability (bounding, effective,
/// permitted, inheritable, ambient). Call after [`enter`].
pub fn drop_capabilities() -> Result<(), DaemonError> {
    drop_capabilities_except(&[])
}

/// Like [`drop_capabilities`], but keeps the capabilities numbered in
/// `keep` (`CAP_*` values, below 64) in the bounding, permitted and
/// effective sets: for daemons that act on files on behalf of their guests
/// (a filesystem daemon needs `CAP_CHOWN`, `CAP_DAC_OVERRIDE`, ...).
pub fn drop_capabilities_except(keep: &[u32]) -> Result<(), DaemonError> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(r, "no_new_privs")?;
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut mask = 0u64;
    for &cap in keep {
        mask |= 1u64.checked_shl(cap).unwrap_or(0);
    }
    for cap in 0..64u32 {
        if mask & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: as above; EINVAL past the last capability is expected.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let part = |word: u32| Data {
        effective: word,
        permitted: word,
        inheritable: 0,
    };
    let d = [part(mask as u32), part((mask >> 32) as u32)];
    // SAFETY: capset reads one header and two data structs, laid out as
    // the kernel's _LINUX_CAPABILITY_VERSION_3 ABI.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) };
    check(if r == 0 { 0 } else { -1 }, "capset")
}
