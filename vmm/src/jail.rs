//! `--jail DIR`: once everything the VM needs from the host is open, kcradle
//! moves into a private mount namespace whose root is DIR, sets
//! `no_new_privs` and drops every capability, then starts the vCPUs.
//!
//! Nothing is bound into DIR, because nothing is needed by path after the
//! jail: the kernel and initramfs are already in guest memory, `/dev/kvm`
//! is already the VM's and its vCPUs' descriptors, the vhost-user sockets
//! are connected, the console file and `/proc/self/status` are open. A
//! guest that takes over kcradle finds DIR (the bundle, say) and nothing
//! else of the host's tree, cannot gain privileges through exec (it cannot
//! exec anyway under seccomp), and holds no capability.
//!
//! When the root is the initramfs (rootfs cannot be pivoted away), DIR is
//! moved over `/` and chrooted into instead, as `switch_root` does.
//!
//! The jail must be entered while kcradle is single-threaded: a mount
//! namespace and a root belong to the thread that unshares them, and only
//! threads started afterwards inherit them.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why the jail could not be entered.
#[derive(Debug, thiserror::Error)]
#[error("jail {dir}: {step}: {err}")]
pub struct JailError {
    dir: PathBuf,
    step: &'static str,
    err: io::Error,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount(src: &Path, target: &Path, flags: libc::c_ulong) -> io::Result<()> {
    let (src, target) = (cstr(src)?, cstr(target)?);
    // SAFETY: both are valid NUL-terminated strings that outlive the call;
    // the type and data pointers may be null for bind and propagation
    // changes.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    check(rc.into())
}

/// Enters the jail at `dir` (an existing directory). The calling process
/// must be single-threaded.
pub fn enter(dir: &Path) -> Result<(), JailError> {
    let fail = |step: &'static str| {
        let dir = dir.to_path_buf();
        move |err: io::Error| JailError { dir, step, err }
    };
    let dir = dir.canonicalize().map_err(fail("resolve"))?;
    if !dir.is_dir() {
        return Err(fail("check")(io::Error::from(io::ErrorKind::NotADirectory)));
    }
    // SAFETY: unshare takes no pointers.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into())
        .map_err(fail("unshare(CLONE_NEWNS)"))?;
    // Nothing done here may propagate back to the host's mounts.
    mount(
        Path::new("none"),
        Path::new("/"),
        libc::MS_REC | libc::MS_PRIVATE,
    )
    .map_err(fail("make / private"))?;
    // pivot_root wants the new root to be a mount point.
    mount(&dir, &dir, libc::MS_BIND | libc::MS_REC).map_err(fail("bind DIR onto itself"))?;
    std::env::set_current_dir(&dir).map_err(fail("chdir DIR"))?;
    let dot = cstr(Path::new(".")).map_err(fail("path"))?;
    // SAFETY: pivot_root(".", ".") stacks the old root on top of the new
    // one at "."; both arguments are valid C strings.
    let pivoted = check(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) });
    match pivoted {
        Ok(()) => {
            // SAFETY: detaches the old root stacked at "."; a valid C string.
            check(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) }.into())
                .map_err(fail("detach the old root"))?;
        }
        // The root is the initramfs (rootfs), which cannot be pivoted
        // away: move DIR over it and chroot there, as switch_root does.
        // rootfs stays underneath, out of reach without CAP_SYS_CHROOT,
        // which is dropped below.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            mount(Path::new("."), Path::new("/"), libc::MS_MOVE).map_err(fail("move DIR to /"))?;
            // SAFETY: a valid C string.
            check(unsafe { libc::chroot(dot.as_ptr()) }.into()).map_err(fail("chroot"))?;
        }
        Err(e) => return Err(fail("pivot_root")(e)),
    }
    std::env::set_current_dir("/").map_err(fail("chdir /"))?;
    cradle_devices::daemon::sandbox::drop_capabilities()
        .map_err(|e| fail("no_new_privs and capabilities")(io::Error::other(e.to_string())))?;
    tracing::info!(dir = %dir.display(), "jailed: private mount namespace, root pivoted, no capabilities");
    Ok(())
}
