//! Our daemons as processes, started and stopped the way a service manager
//! does it: readiness through `NOTIFY_SOCKET` (`READY=1`), stop through
//! SIGTERM with a bounded wait, a listening socket handed over as an
//! inherited fd. Every daemon's process and systemd tests need the same
//! plumbing; it lives here once.
//!
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//! use cradle_testbed::daemon::Daemon;
//! let mut cmd = Command::new("blk-lv");
//! cmd.args(["--socket", "/tmp/blk.sock", "--path", "/tmp/disk.img"]);
//! let mut d = Daemon::spawn_ready(&mut cmd, Duration::from_secs(10))?;
//! // ... drive /tmp/blk.sock ...
//! assert_eq!(d.terminate(Duration::from_secs(10))?.code(), Some(0));
//! # Ok::<(), cradle_testbed::TestbedError>(())
//! ```

use std::os::fd::RawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use crate::TestbedError;

/// A daemon started with `NOTIFY_SOCKET` that reported `READY=1`; killed
/// (SIGKILL) and reaped when dropped, so a failing test leaks no process.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    notify: UnixDatagram,
    // Holds the notify socket's path until the daemon is gone.
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Spawns `cmd` with `NOTIFY_SOCKET` set to a fresh datagram socket and
    /// waits up to `timeout` for its first message, which must be
    /// `READY=1`. Our daemons send it once their socket listens and their
    /// sandbox is in place, so a test can connect at once.
    pub fn spawn_ready(cmd: &mut Command, timeout: Duration) -> Result<Daemon, TestbedError> {
        let dir = tempfile::Builder::new()
            .prefix("notify")
            .tempdir()
            .map_err(|e| TestbedError::io("notify directory", e))?;
        let path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&path).map_err(|e| TestbedError::io(&path, e))?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = cmd
            .env("NOTIFY_SOCKET", &path)
            .spawn()
            .map_err(|e| TestbedError::io(&program, e))?;
        let daemon = Daemon {
            child,
            notify,
            _dir: dir,
        };
        let first = daemon.notification(timeout)?;
        if first != "READY=1" {
            return Err(TestbedError::Daemon(format!(
                "{program}: first notification {first:?}, not READY=1"
            )));
        }
        Ok(daemon)
    }

    /// The next `sd_notify` message (such as `STOPPING=1`), waiting up to
    /// `timeout` for it.
    pub fn notification(&self, timeout: Duration) -> Result<String, TestbedError> {
        self.notify
            .set_read_timeout(Some(timeout))
            .map_err(|e| TestbedError::io("notify socket", e))?;
        let mut buf = [0u8; 256];
        let n = self.notify.recv(&mut buf).map_err(|e| {
            TestbedError::Daemon(format!(
                "no notification from pid {} within {timeout:?}: {e}",
                self.child.id()
            ))
        })?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// The process, for its pid and piped stdio.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// What the daemon wrote to its stderr, read to the end: call it after
    /// the daemon exited, with stderr piped (empty otherwise).
    pub fn stderr_text(&mut self) -> Result<String, TestbedError> {
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut err, &mut text)
                .map_err(|e| TestbedError::io("daemon stderr", e))?;
        }
        Ok(text)
    }

    /// Sends `sig` to the daemon.
    pub fn signal(&self, sig: i32) -> Result<(), TestbedError> {
        signal(&self.child, sig)
    }

    /// Waits up to `timeout` for the daemon to exit (killing it if it does
    /// not).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, TestbedError> {
        let pid = self.child.id();
        wait_exit(&mut self.child, timeout).ok_or_else(|| {
            TestbedError::Daemon(format!("pid {pid} did not exit within {timeout:?}"))
        })
    }

    /// SIGTERM, then [`Daemon::wait_exit`]: how systemd stops our units.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, TestbedError> {
        self.signal(libc::SIGTERM)?;
        self.wait_exit(timeout)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a command that ran to its end finished.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Its exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    /// Its stdout, as text.
    pub stdout: String,
    /// Its stderr, as text.
    pub stderr: String,
}

/// Runs `program` with `args` to its end: how an operator meets a
/// binary's flags.
pub fn run_to_end(program: &str, args: &[&str]) -> Result<Finished, TestbedError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| TestbedError::io(program, e))?;
    Ok(Finished {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs `program` with `args` that must be refused as every cradle binary
/// refuses bad flags and values: exit status 2 and a one-line reason on
/// stderr, which is returned.
pub fn refused_usage(program: &str, args: &[&str]) -> Result<String, TestbedError> {
    let run = run_to_end(program, args)?;
    let reason = run.stderr.trim();
    if run.code != Some(2) || reason.lines().count() != 1 {
        return Err(TestbedError::Daemon(format!(
            "{program} {args:?}: exit {:?}, want 2 with one line; stderr: {}",
            run.code, run.stderr
        )));
    }
    Ok(reason.to_string())
}

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: i32) -> Result<(), TestbedError> {
    let pid = libc::pid_t::try_from(child.id())
        .map_err(|_| TestbedError::Daemon(format!("pid {} out of range", child.id())))?;
    // SAFETY: kill(2) takes no pointers; the pid is our own child's, which
    // stays ours (not reaped) while we hold `child`.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(TestbedError::io(
            format!("kill {pid}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Waits up to `timeout` for `child` to exit; on timeout kills and reaps
/// it and returns `None`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM, then [`wait_exit`]: `None` if the child ignored it (it is then
/// killed) or could not be signalled.
pub fn terminate(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    if signal(child, libc::SIGTERM).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    wait_exit(child, timeout)
}

/// Makes `fd` (open in this process, e.g. a listening socket) the
/// spawned child's fd 3, as systemd socket activation and `--fd 3` expect.
/// The caller keeps `fd` open until the child is spawned.
pub fn pass_fd_as_3(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls dup2 and fcntl, which are async-signal-safe, on fd numbers; it
    // allocates nothing and touches no shared state.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usage_error_is_exit_2_with_one_line() {
        let sh = |script: &str| refused_usage("/bin/sh", &["-c", script]);
        assert_eq!(sh("echo 'bad flag' >&2; exit 2").unwrap(), "bad flag");
        assert!(sh("echo 'bad flag' >&2; exit 1").is_err(), "exit 1");
        assert!(sh("printf 'a\\nb\\n' >&2; exit 2").is_err(), "two lines");
        assert!(sh("exit 2").is_err(), "no reason");
    }

    #[test]
    fn terminate_stops_a_child_with_sigterm() {
        let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let st = terminate(&mut child, Duration::from_secs(10)).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGTERM)
        );
    }
}
