//! The processes between the runtime and a container's command.
//!
//! The runtime is multi-threaded (tokio), so it never forks to do namespace
//! work itself: it spawns `cradle-init` again (`/proc/self/exe`) in one of
//! two hidden modes whose whole job is here, in a fresh single-threaded
//! process where `unshare`, `setns` and `fork` are safe.
//!
//! * `__shim` (container start): unshare mount/UTS/IPC/PID namespaces, set
//!   the hostname, build `/dev`, `/sys` on the prepared rootfs, pivot_root,
//!   then fork the namespace's PID 1, a tiny init that mounts `/proc`, forks
//!   the container command, reaps every orphan in the namespace, forwards
//!   signals to the command and exits with its status.
//! * `__exec` (docker exec): setns into a running container's namespaces,
//!   fork the command inside them, forward signals, exit with its status.
//!
//! Both read their spec as JSON from the environment variable
//! [`SPEC_ENV`] and report to the runtime on fd [`REPORT_FD`] one JSON line
//! per event ([`Report`]): the pid of the process signals should go to,
//! then, only on failure, the error that stopped the command from starting.
//! The fd is close-on-exec, so its EOF tells the runtime the command was
//! exec'd (or failed).

use crate::users;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::unistd::{chdir, chroot, fork, pivot_root, ForkResult, Pid};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Environment variable carrying the JSON spec to a shim.
pub const SPEC_ENV: &str = "CRADLE_SHIM_SPEC";
/// File descriptor on which a shim reports to the runtime.
pub const REPORT_FD: i32 = 3;
/// File descriptor of the unix socket on which the container shim sends
/// the master of the pty it opened in the container's devpts.
pub const PTY_FD: i32 = 4;
/// Docker's default `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run and how: shared by container start and exec.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// Command and arguments; `argv[0]` is looked up in the env's `PATH`.
    pub argv: Vec<String>,
    /// `KEY=VALUE` environment (HOME is added from passwd when absent).
    pub env: Vec<String>,
    /// Working directory, created if missing (like Docker's WORKDIR).
    pub workdir: String,
    /// User string resolved inside the container's root.
    pub user: Option<String>,
    /// stdin/stdout/stderr are a pty slave that becomes the controlling tty.
    pub tty: bool,
}

/// Spec of `__shim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The prepared rootfs (a mount point in the runtime's namespace).
    pub rootfs: PathBuf,
    /// Hostname set in the new UTS namespace.
    pub hostname: String,
    /// The command.
    pub process: ProcessSpec,
}

/// Spec of `__exec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecSpec {
    /// Host pid of the container's namespace init, whose namespaces to join.
    pub target_pid: i32,
    /// The command.
    pub process: ProcessSpec,
}

/// One line on the report fd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Host pid of the process that receives the container's signals.
    Pid(i32),
    /// The command could not be started; `code` is the exit status the shim
    /// exits with (126 not executable, 127 not found, 1 otherwise).
    Error {
        /// Docker-style message.
        message: String,
        /// Exit status.
        code: i32,
    },
}

fn report(r: &Report) {
    if let Ok(mut line) = serde_json::to_vec(r) {
        line.push(b'\n');
        // SAFETY: writing a valid buffer to an fd number; a closed fd only
        // makes write fail, which we ignore since nobody is listening then.
        let _ = unsafe { libc::write(REPORT_FD, line.as_ptr().cast(), line.len()) };
    }
}

fn fail(message: String, code: i32) -> ! {
    report(&Report::Error {
        message: message.clone(),
        code,
    });
    eprintln!("cradle-init: {message}");
    std::process::exit(code)
}

fn read_spec<T: for<'de> Deserialize<'de>>() -> T {
    let Ok(json) = std::env::var(SPEC_ENV) else {
        fail(format!("{SPEC_ENV} is not set"), 1)
    };
    std::env::remove_var(SPEC_ENV);
    // SAFETY: fcntl on an fd number; failure (fd not open) is harmless.
    unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    match serde_json::from_str(&json) {
        Ok(s) => s,
        Err(e) => fail(format!("bad shim spec: {e}"), 1),
    }
}

/// Entry point of `cradle-init __shim`.
pub fn container_main() -> ! {
    let spec: ContainerSpec = read_spec();
    set_name();
    if let Err(e) = enter_container(&spec) {
        fail(format!("container setup: {e}"), 1)
    }
    if spec.process.tty {
        if let Err(e) = container_tty() {
            fail(format!("container tty: {e}"), 1)
        }
    }
    block_signals();
    // SAFETY: this process is single-threaded (a fresh exec of cradle-init
    // that started no threads), so the child may do anything after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => namespace_init(&spec.process),
        Ok(ForkResult::Parent { child }) => {
            report(&Report::Pid(child.as_raw()));
            // SAFETY: closing our copy of the report fd; the init keeps its own.
            unsafe { libc::close(REPORT_FD) };
            forward_until_exit(child, false)
        }
        Err(e) => fail(format!("fork: {e}"), 1),
    }
}

/// Entry point of `cradle-init __exec`.
pub fn exec_main() -> ! {
    let spec: ExecSpec = read_spec();
    set_name();
    let kinds = [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ];
    // Open every namespace first: after joining the mount namespace the
    // host's /proc is out of sight.
    let mut fds = Vec::new();
    for (name, flag) in kinds {
        let path = format!("/proc/{}/ns/{name}", spec.target_pid);
        match std::fs::File::open(&path) {
            Ok(f) => fds.push((f, flag)),
            Err(e) => fail(format!("container is not running ({path}: {e})"), 1),
        }
    }
    for (f, flag) in &fds {
        if let Err(e) = setns(f, *flag) {
            fail(format!("setns {flag:?}: {e}"), 1)
        }
    }
    drop(fds);
    block_signals();
    // SAFETY: single-threaded process, see container_main.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => exec_command(&spec.process),
        Ok(ForkResult::Parent { child }) => {
            report(&Report::Pid(child.as_raw()));
            // SAFETY: closing our copy; the command's is close-on-exec.
            unsafe { libc::close(REPORT_FD) };
            forward_until_exit(child, false)
        }
        Err(e) => fail(format!("fork: {e}"), 1),
    }
}

/// Opens a pty in the container's devpts, sends the master to the runtime
/// and makes the slave our stdio (inherited by the command).
fn container_tty() -> std::io::Result<()> {
    let (master, slave) = crate::pty::open(Path::new("/dev/pts/ptmx"))?;
    crate::pty::send_fd(PTY_FD, master.as_raw_fd()).map_err(std::io::Error::from)?;
    drop(master);
    for fd in 0..3 {
        // SAFETY: dup2 of an fd we own onto the standard descriptors.
        if unsafe { libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // SAFETY: closing the socket; nothing else uses fd 4.
    unsafe { libc::close(PTY_FD) };
    Ok(())
}

fn enter_container(spec: &ContainerSpec) -> nix::Result<()> {
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWPID,
    )?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    nix::unistd::sethostname(&spec.hostname)?;
    let root = &spec.rootfs;
    mount_dev(root)?;
    let sys = root.join("sys");
    let _ = std::fs::create_dir_all(&sys);
    // Best effort: a container works without /sys.
    let _ = mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    chdir(root)?;
    match pivot_root(".", ".") {
        Ok(()) => {
            // The old root is stacked under the new one: detach it.
            umount2(".", MntFlags::MNT_DETACH)?;
        }
        // pivot_root refuses when the current root is the initramfs
        // (PID-1 mode): move the rootfs over / and chroot, like runc's
        // no-pivot mode.
        Err(nix::errno::Errno::EINVAL) => {
            mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)?;
            chroot(".")?;
        }
        Err(e) => return Err(e),
    }
    chdir("/")
}

fn mount_dev(root: &Path) -> nix::Result<()> {
    let dev = root.join("dev");
    let _ = std::fs::create_dir_all(&dev);
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let target = dev.join(node);
        if std::fs::File::create(&target).is_ok() {
            let host = format!("/dev/{node}");
            mount(
                Some(host.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
        }
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        let _ = std::os::unix::fs::symlink(to, dev.join(link));
    }
    let pts = dev.join("pts");
    let _ = std::fs::create_dir(&pts);
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    for (dir, fs) in [("shm", "tmpfs"), ("mqueue", "mqueue")] {
        let p = dev.join(dir);
        let _ = std::fs::create_dir(&p);
        // Best effort: mqueue needs the kernel option.
        let _ = mount(
            Some(fs),
            &p,
            Some(fs),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
    }
    Ok(())
}

/// Names this process `cradle-init` (it was exec'd as /proc/self/exe, so
/// `ps` and `/proc/1/comm` in the container would say `exe`).
fn set_name() {
    let _ = nix::sys::prctl::set_name(c"cradle-init");
}

fn block_signals() {
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None);
}

/// PID 1 of the container's PID namespace.
fn namespace_init(process: &ProcessSpec) -> ! {
    let _ = std::fs::create_dir_all("/proc");
    if let Err(e) = mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        fail(format!("mount /proc: {e}"), 1)
    }
    // SAFETY: single-threaded process, see container_main.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => exec_command(process),
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: the command holds its own copy until exec.
            unsafe { libc::close(REPORT_FD) };
            forward_until_exit(child, true)
        }
        Err(e) => fail(format!("fork: {e}"), 1),
    }
}

/// Forwards every signal to `child` and exits with its status once it ends
/// (128+signal when killed). With `reap_all`, also reaps orphans.
fn forward_until_exit(child: Pid, reap_all: bool) -> ! {
    let all = SigSet::all();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: valid sigset and out pointer.
        let rc = unsafe { libc::sigwait(all.as_ref(), &mut sig) };
        if rc != 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            loop {
                let target = if reap_all { -1 } else { child.as_raw() };
                let mut status = 0;
                // SAFETY: plain waitpid with an out pointer.
                let pid = unsafe { libc::waitpid(target, &mut status, libc::WNOHANG) };
                if pid <= 0 {
                    break;
                }
                if pid == child.as_raw() {
                    std::process::exit(exit_code(status));
                }
            }
        } else {
            // SAFETY: sending a signal to our own child.
            unsafe { libc::kill(child.as_raw(), sig) };
        }
    }
}

/// Docker's exit code for a wait status.
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Becomes the command: session, tty, user, workdir, exec. Never returns.
fn exec_command(p: &ProcessSpec) -> ! {
    let _ = nix::unistd::setsid();
    if p.tty {
        // SAFETY: TIOCSCTTY on stdin, which the runtime made a pty slave.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = match users::resolve(p.user.as_deref(), &passwd, &group) {
        Ok(u) => u,
        Err(e) => fail(e.to_string(), 1),
    };
    let mut env = p.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let workdir = if p.workdir.is_empty() {
        "/"
    } else {
        &p.workdir
    };
    let _ = std::fs::create_dir_all(workdir);
    let groups: Vec<nix::unistd::Gid> = user
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    let ids = nix::unistd::setgroups(&groups)
        .and_then(|()| nix::unistd::setgid(nix::unistd::Gid::from_raw(user.gid)))
        .and_then(|()| nix::unistd::setuid(nix::unistd::Uid::from_raw(user.uid)));
    if let Err(e) = ids {
        fail(format!("setting user {}:{}: {e}", user.uid, user.gid), 1)
    }
    if let Err(e) = chdir(workdir) {
        fail(format!("chdir to cwd ({workdir:?}): {e}"), 1)
    }
    let Some(arg0) = p.argv.first() else {
        fail("no command given".into(), 127)
    };
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let program = match lookup(arg0, path) {
        Some(p) => p,
        None => fail(
            format!("exec: \"{arg0}\": executable file not found in $PATH"),
            127,
        ),
    };
    let cstrs = |v: &[String]| -> Vec<CString> {
        v.iter()
            .filter_map(|s| CString::new(s.as_bytes()).ok())
            .collect()
    };
    let argv = cstrs(&p.argv);
    let envp = cstrs(&env);
    let Ok(prog) = CString::new(program.as_os_str().as_encoded_bytes()) else {
        fail(format!("bad program path {program:?}"), 127)
    };
    unblock_and_reset_signals();
    let err = nix::unistd::execve(&prog, &argv, &envp).unwrap_err();
    let code = if err == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    fail(format!("exec {}: {err}", program.display()), code)
}

fn lookup(arg0: &str, path: &str) -> Option<PathBuf> {
    if arg0.contains('/') {
        return Some(PathBuf::from(arg0));
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(arg0))
        .find(|p| {
            CString::new(p.as_os_str().as_encoded_bytes())
                // SAFETY: access() on a valid NUL-terminated path.
                .map(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && !p.is_dir())
                .unwrap_or(false)
        })
}

fn unblock_and_reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: restoring the default disposition of a signal.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Puts the report pipe's write end at [`REPORT_FD`] in a child before exec;
/// to be called from `pre_exec` (only async-signal-safe calls).
pub fn install_report_fd(fd: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: dup2 of an fd we own onto fd 3 in the forked child.
    if unsafe { libc::dup2(fd.as_raw_fd(), REPORT_FD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_uses_path_and_skips_dirs() {
        assert_eq!(lookup("/x/y", ""), Some(PathBuf::from("/x/y")));
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sh")).unwrap();
        let f = d.path().join("tool");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("/nonexistent:{}", d.path().display());
        assert_eq!(lookup("tool", &path), Some(f));
        assert_eq!(lookup("sh", d.path().to_str().unwrap()), None);
    }

    #[test]
    fn exit_codes_follow_docker() {
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(libc::SIGKILL), 137);
    }
}
