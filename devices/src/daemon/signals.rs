//! SIGTERM/SIGINT handling: a dedicated thread waits for the signal, runs
//! the daemon's drain hook and exits 0.

use std::time::Duration;

use super::DaemonError;

/// How long a drain may take before the daemon exits anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Blocks SIGTERM and SIGINT in the calling thread (and so in every thread
/// spawned after this call) and starts a thread that waits for them. On
/// the first one it runs `drain` (which should finish in-flight I/O within
/// [`DRAIN_TIMEOUT`]) and exits the process with status 0.
///
/// Call it before spawning any other thread.
pub fn on_terminate<F>(drain: F) -> Result<(), DaemonError>
where
    F: FnOnce() + Send + 'static,
{
    let set = term_set();
    // SAFETY: `set` is a valid, initialised sigset; the old mask is not needed.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        return Err(DaemonError::Signals(std::io::Error::from_raw_os_error(r)));
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            loop {
                // SAFETY: both pointers are valid for the duration of the call.
                let r = unsafe { libc::sigwait(&set, &mut sig) };
                if r == 0 {
                    break;
                }
            }
            tracing::info!(signal = sig, "terminating: draining in-flight requests");
            let _ = super::notify::stopping();
            drain();
            tracing::info!("drained, exiting");
            std::process::exit(0);
        })
        .map_err(DaemonError::Signals)?;
    Ok(())
}

fn term_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these libc calls.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
    }
    set
}
