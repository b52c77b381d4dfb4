//! Runs a QEMU process while collecting its serial console, bounded by a
//! timeout; the process is killed on timeout and whenever the caller drops
//! out early (a panicking test leaves no QEMU behind).

use std::io::Read;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::init_script::Markers;
use crate::TestbedError;

/// How long a guest may take to power off after its script reported.
const POWEROFF_GRACE: Duration = Duration::from_secs(15);
/// Poll interval for process exit.
const POLL: Duration = Duration::from_millis(20);

/// What a finished (or killed) QEMU run left behind.
#[derive(Debug)]
pub(crate) struct Captured {
    /// Everything the guest wrote to its serial port (QEMU's stdout).
    pub console: String,
    /// QEMU's own diagnostics.
    pub stderr: String,
    /// Start to exit.
    pub wall: Duration,
    /// Start to the begin marker, if it appeared.
    pub to_begin: Option<Duration>,
    /// Killed because the timeout passed.
    pub timed_out: bool,
}

/// Kills the child when dropped unless it was reaped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Spawns `cmd` (stdout and stderr piped) and waits until it exits or
/// `timeout` passes; with `markers`, also notes when the script started and
/// stops waiting shortly after it reported.
pub(crate) fn run_with_console(
    cmd: &mut Command,
    timeout: Duration,
    markers: Option<&Markers>,
) -> Result<Captured, TestbedError> {
    let start = Instant::now();
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = KillOnDrop(
        cmd.spawn()
            .map_err(|e| TestbedError::spawn(&program, "qemu-system-x86", e))?,
    );
    let console = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        child.0.stdout.take().map(|s| pump(s, console.clone())),
        child.0.stderr.take().map(|s| pump(s, stderr.clone())),
    ];
    let mut to_begin = None;
    let mut reported_at = None;
    let mut timed_out = false;
    loop {
        if child
            .0
            .try_wait()
            .map_err(|e| TestbedError::io(&program, e))?
            .is_some()
        {
            break;
        }
        {
            let text = lock(&console);
            if let Some(m) = markers {
                if to_begin.is_none() && contains(&text, m.begin.as_bytes()) {
                    to_begin = Some(start.elapsed());
                }
                if reported_at.is_none() && contains(&text, m.exit.as_bytes()) {
                    reported_at = Some(Instant::now());
                }
            }
        }
        if reported_at.is_some_and(|t| t.elapsed() > POWEROFF_GRACE) {
            // The script reported; a guest that will not power off does not
            // change the result.
            break;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            break;
        }
        thread::sleep(POLL);
    }
    drop(child);
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let console = String::from_utf8_lossy(&lock(&console)).into_owned();
    let stderr = String::from_utf8_lossy(&lock(&stderr)).into_owned();
    Ok(Captured {
        to_begin: to_begin.or_else(|| {
            markers
                .filter(|m| console.contains(&m.begin))
                .map(|_| start.elapsed())
        }),
        console,
        stderr,
        wall: start.elapsed(),
        timed_out,
    })
}

/// Copies a pipe into a shared buffer until EOF.
fn pump(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&into).extend_from_slice(&buf[..n]);
        }
    })
}

/// A poisoned buffer still holds valid bytes: keep using it.
fn lock(m: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    #[test]
    fn collects_output_and_marker_time() {
        let m = Markers::new("t");
        let out = run_with_console(
            &mut sh("echo boot; echo CRADLE-TESTBED-BEGIN-t; echo hi >&2"),
            Duration::from_secs(10),
            Some(&m),
        )
        .unwrap();
        assert_eq!(out.console, "boot\nCRADLE-TESTBED-BEGIN-t\n");
        assert_eq!(out.stderr, "hi\n");
        assert!(out.to_begin.is_some());
        assert!(!out.timed_out);
    }

    #[test]
    fn kills_on_timeout() {
        let t = Instant::now();
        let out = run_with_console(
            &mut sh("echo started; exec sleep 30"),
            Duration::from_millis(500),
            None,
        )
        .unwrap();
        assert!(out.timed_out);
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(out.console, "started\n");
    }

    #[test]
    fn missing_program_is_named() {
        let mut c = Command::new("/nonexistent/qemu");
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        let err = run_with_console(&mut c, Duration::from_secs(1), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/qemu"), "{err}");
    }
}
