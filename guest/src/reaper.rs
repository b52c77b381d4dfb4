//! The one place that calls `waitpid`: every child is spawned through
//! [`spawn`] and its exit status arrives on a oneshot channel.
//!
//! As PID 1 (or a child subreaper in host mode) cradle-init inherits
//! orphans, so it must reap with `waitpid(-1)`; a second waiter (tokio's
//! process driver, `Command::output`) would then lose statuses. Spawning
//! holds the registry lock, and so does reaping, so a child can never be
//! reaped before its waiter is registered.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;

type Waiters = HashMap<i32, oneshot::Sender<i32>>;

fn waiters() -> &'static Arc<Mutex<Waiters>> {
    static W: OnceLock<Arc<Mutex<Waiters>>> = OnceLock::new();
    W.get_or_init(Default::default)
}

/// A spawned child: its pid, its piped stdio and a receiver for its
/// Docker-style exit code.
pub struct Spawned {
    /// Host pid.
    pub pid: i32,
    /// Resolves to the exit code (128+signal when killed).
    pub exit: oneshot::Receiver<i32>,
    /// stdin, when it was `Stdio::piped()`.
    pub stdin: Option<std::process::ChildStdin>,
    /// stdout, when piped.
    pub stdout: Option<std::process::ChildStdout>,
    /// stderr, when piped.
    pub stderr: Option<std::process::ChildStderr>,
}

/// Spawns `cmd` and registers its waiter atomically with respect to the
/// reaper.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Spawned> {
    let mut w = waiters().lock().unwrap_or_else(|p| p.into_inner());
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = oneshot::channel();
    w.insert(pid, tx);
    // Dropping a std Child neither waits nor kills: the reaper owns it now.
    Ok(Spawned {
        pid,
        exit: rx,
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    })
}

/// Reaps every exited child, delivering statuses to their waiters and
/// dropping orphans'. Returns how many were reaped.
pub fn reap() -> usize {
    let mut w = waiters().lock().unwrap_or_else(|p| p.into_inner());
    let mut n = 0;
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid with an out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return n;
        }
        n += 1;
        if let Some(tx) = w.remove(&pid) {
            let _ = tx.send(crate::shim::exit_code(status));
        }
    }
}

/// Runs the reaper on SIGCHLD forever (spawn it as a task).
pub async fn run() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = signal(SignalKind::child())?;
    loop {
        reap();
        sigchld.recv().await;
    }
}

/// Spawns a helper command, feeds it `input`, and collects its stdout,
/// stderr and exit code (a reaper-safe `Command::output`).
pub async fn output(cmd: &mut Command, input: Option<Vec<u8>>) -> std::io::Result<Output> {
    use std::io::{Read, Write};
    use std::process::Stdio;
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (mut child, rx) = {
        let mut w = waiters().lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        w.insert(child.id() as i32, tx);
        (child, rx)
    };
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    drop(child);
    let io = tokio::task::spawn_blocking(move || {
        let writer = std::thread::spawn(move || {
            if let (Some(mut s), Some(data)) = (stdin, input) {
                let _ = s.write_all(&data);
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut e = Vec::new();
            if let Some(s) = stderr.as_mut() {
                let _ = s.read_to_end(&mut e);
            }
            e
        });
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut out);
        }
        let _ = writer.join();
        let err = err_reader.join().unwrap_or_default();
        (out, err)
    })
    .await
    .map_err(std::io::Error::other)?;
    let code = rx
        .await
        .map_err(|_| std::io::Error::other("child status lost"))?;
    Ok(Output {
        code,
        stdout: io.0,
        stderr: io.1,
    })
}

/// What [`output`] collected.
#[derive(Debug)]
pub struct Output {
    /// Docker-style exit code.
    pub code: i32,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}
