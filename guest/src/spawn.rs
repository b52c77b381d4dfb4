//! Starting a shim (`__shim` or `__exec`, see [`crate::shim`]) with its
//! stdio wired as pipes or a pseudo-terminal, and reading its report.

use crate::logs::Stream;
use crate::reaper;
use crate::shim::{self, Report};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::sync::oneshot;

/// Which hidden mode of cradle-init to run.
#[derive(Debug, Clone, Copy)]
pub enum ShimKind {
    /// Container start.
    Container,
    /// docker exec.
    Exec,
}

/// Where a process's terminal comes from.
#[derive(Debug, Clone)]
pub enum Tty {
    /// No terminal: pipes.
    None,
    /// A pty opened here through this `ptmx` (for exec: the container's
    /// `/proc/PID/root/dev/pts/ptmx`).
    From(std::path::PathBuf),
    /// The container shim opens it in the container's new devpts and sends
    /// the master back on fd [`shim::PTY_FD`].
    InShim,
}

/// A process's side of the stdio, held by the runtime.
pub struct ProcIo {
    /// Writes to the process's stdin (a pipe, or the pty master).
    pub stdin: Option<File>,
    /// The pty master, for resizing.
    pub pty: Option<Arc<OwnedFd>>,
    /// Output readers and the stream each feeds (one pty master for tty).
    pub outputs: Vec<(Stream, File)>,
}

/// A started shim.
pub struct Started {
    /// The shim's pid.
    pub shim_pid: i32,
    /// Pid that signals go to (the namespace init or the exec'd command).
    pub target_pid: Option<i32>,
    /// The error that kept the command from starting, if any.
    pub error: Option<(String, i32)>,
    /// Its exit code, delivered by the reaper.
    pub exit: oneshot::Receiver<i32>,
    /// Its stdio.
    pub io: ProcIo,
}

/// Why a shim could not be started at all.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// An OS call failed.
    #[error("{0}: {1}")]
    Os(&'static str, std::io::Error),
}

/// Sets the window size of a pty.
pub fn resize(pty: &OwnedFd, height: u16, width: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    if unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Spawns a shim with `spec` (JSON) and waits until its command was exec'd
/// or failed to start.
pub async fn spawn_shim(
    kind: ShimKind,
    spec_json: String,
    tty: Tty,
    open_stdin: bool,
) -> Result<Started, SpawnError> {
    let (report_r, report_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| SpawnError::Os("pipe", e.into()))?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("cradle-init")
        .arg(match kind {
            ShimKind::Container => "__shim",
            ShimKind::Exec => "__exec",
        })
        .env(shim::SPEC_ENV, spec_json);
    let mut pty_master = None;
    let mut pty_socket = None;
    match &tty {
        Tty::From(ptmx) => {
            let (master, slave) =
                crate::pty::open(ptmx).map_err(|e| SpawnError::Os("open pty", e))?;
            let slave = |_| slave.try_clone().map_err(|e| SpawnError::Os("dup pty", e));
            cmd.stdin(Stdio::from(slave(0)?))
                .stdout(Stdio::from(slave(1)?))
                .stderr(Stdio::from(slave(2)?));
            pty_master = Some(master);
        }
        Tty::InShim => {
            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
            let (ours, theirs) = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| SpawnError::Os("socketpair", e.into()))?;
            let fd = theirs.as_raw_fd();
            // SAFETY: the closure only calls dup2, which is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::dup2(fd, shim::PTY_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            pty_socket = Some((ours, theirs));
        }
        Tty::None => {
            cmd.stdin(if open_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        }
    }
    let fd = report_w.as_raw_fd();
    // SAFETY: the closure only calls dup2, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, shim::REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawned = reaper::spawn(&mut cmd).map_err(|e| SpawnError::Os("spawn shim", e))?;
    drop(cmd);
    drop(report_w);
    let pty_socket = pty_socket.map(|(ours, theirs)| {
        drop(theirs);
        ours
    });
    let mut io = ProcIo {
        stdin: None,
        pty: None,
        outputs: Vec::new(),
    };
    if let Some(sock) = pty_socket {
        // The shim sends the master before it reports, or dies trying.
        pty_master = tokio::task::spawn_blocking(move || crate::pty::recv_fd(sock.as_raw_fd()))
            .await
            .ok()
            .flatten();
    }
    if let Some(master) = pty_master.map(Arc::new) {
        let dup = |what| {
            master
                .try_clone()
                .map(File::from)
                .map_err(|e| SpawnError::Os(what, e))
        };
        io.outputs.push((Stream::Stdout, dup("dup pty")?));
        if open_stdin {
            io.stdin = Some(dup("dup pty")?);
        }
        io.pty = Some(master);
    } else {
        io.stdin = spawned.stdin.map(|s| File::from(OwnedFd::from(s)));
        if let Some(s) = spawned.stdout {
            io.outputs
                .push((Stream::Stdout, File::from(OwnedFd::from(s))));
        }
        if let Some(s) = spawned.stderr {
            io.outputs
                .push((Stream::Stderr, File::from(OwnedFd::from(s))));
        }
    }
    let reports = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = File::from(report_r).read_to_string(&mut text);
        text
    })
    .await
    .unwrap_or_default();
    let mut started = Started {
        shim_pid: spawned.pid,
        target_pid: None,
        error: None,
        exit: spawned.exit,
        io,
    };
    for line in reports.lines() {
        match serde_json::from_str::<Report>(line) {
            Ok(Report::Pid(p)) => started.target_pid = Some(p),
            Ok(Report::Error { message, code }) => started.error = Some((message, code)),
            Err(_) => {}
        }
    }
    if started.target_pid.is_none() && started.error.is_none() {
        started.error = Some(("container init failed to start".into(), 1));
    }
    Ok(started)
}

/// Reads `file` on a thread until EOF (or EIO, a pty whose slave closed),
/// sending each chunk; the channel closes at the end.
pub fn pump(stream: Stream, mut file: File) -> tokio::sync::mpsc::Receiver<(Stream, Vec<u8>)> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16384];
        loop {
            match file.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send((stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}
