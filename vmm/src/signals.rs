//! SIGTERM, SIGINT and SIGHUP end `kcradle boot` cleanly in both of its
//! phases.
//!
//! While kcradle sets the VM up (loading the kernel, connecting to the
//! daemons with a bounded retry) it must stay single-threaded, because the
//! jail is entered afterwards. There a handler records the signal; its
//! installation leaves out `SA_RESTART`, so a blocking call (a daemon that
//! accepted but does not answer the handshake) returns `EINTR`; and since
//! a signal that lands just before such a call would be missed, the
//! handler also shuts down the socket registered by [`ShutOnStop`], so the
//! call returns at once whenever the signal came. The setup code polls
//! [`stop_requested`] and gives up with no guest started.
//!
//! Once the VM is built, [`forward_stop_signals`] blocks the signals and a
//! dedicated thread turns them, and one the handler caught before, into
//! [`ExitReason::Signal`]: the VM stops through the same path as a guest
//! exit.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;

use crate::exit::{ExitReason, ExitSignal};
use crate::seccomp::{self, ThreadFilter};

/// Signals that stop kcradle cleanly instead of killing it.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// The first stop signal the handler caught; 0 while none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// The socket a stop signal shuts down ([`ShutOnStop`]); -1 while none.
static SHUT_ON_STOP: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    // Atomics and shutdown(2) only: async-signal-safe. The first signal
    // wins.
    let _ = CAUGHT.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
    shut_down(SHUT_ON_STOP.load(Ordering::SeqCst));
}

fn shut_down(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: shutdown takes no pointers; `fd` is a socket kept open
        // while it is registered (see ShutOnStop).
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// While alive, a stop signal (caught before or during its life) shuts
/// down the socket `fd` for reading and writing, so a blocking call on it
/// returns. One at a time; the socket must stay open until it is dropped.
#[derive(Debug)]
pub struct ShutOnStop(());

impl ShutOnStop {
    /// Registers `fd`.
    pub fn new(fd: RawFd) -> Self {
        SHUT_ON_STOP.store(fd, Ordering::SeqCst);
        // A signal caught before the store found nothing to shut down.
        if stop_requested().is_some() {
            shut_down(fd);
        }
        ShutOnStop(())
    }
}

impl Drop for ShutOnStop {
    fn drop(&mut self) {
        SHUT_ON_STOP.store(-1, Ordering::SeqCst);
    }
}

/// Installs the recording handler for the stop signals (without
/// `SA_RESTART`). Call it first thing, while single-threaded.
pub fn catch_stop_signals() -> io::Result<()> {
    for sig in STOP_SIGNALS {
        // SAFETY: sigaction is plain data; all-zero is a valid empty value.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
        act.sa_flags = 0;
        // SAFETY: `act.sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut act.sa_mask) };
        // SAFETY: `act` is initialised and outlives the call; the handler
        // only stores to an atomic; the old action is not needed.
        if unsafe { libc::sigaction(sig, &act, std::ptr::null_mut()) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The stop signal caught so far by the handler, if any.
pub fn stop_requested() -> Option<libc::c_int> {
    match CAUGHT.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Blocks the stop signals in this thread (and so in every thread it
/// starts afterwards, the vCPUs included) and turns them into
/// [`ExitReason::Signal`] on a dedicated thread, so the VM stops through
/// the same path as a guest exit: vCPUs kicked and joined, status
/// returned. A signal caught before is raised at once.
pub fn forward_stop_signals(exit: Arc<ExitSignal>, filter: ThreadFilter) -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for all the calls.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in STOP_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
    }
    // SAFETY: `set` is initialised; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Err(e) = seccomp::install(&filter) {
                exit.raise(ExitReason::VcpuError(format!("signal thread: {e}")));
                return;
            }
            // Read after the mask is in place: a signal is either caught
            // already or pending for sigwait, never lost in between.
            if let Some(sig) = stop_requested() {
                tracing::info!(signal = sig, "stop signal received");
                exit.raise(ExitReason::Signal(sig));
            }
            loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` and `sig` are valid for the call.
                if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                    tracing::info!(signal = sig, "stop signal received");
                    exit.raise(ExitReason::Signal(sig));
                }
            }
        })?;
    Ok(())
}
