//! Getting a vCPU thread out of `KVM_RUN`.
//!
//! A real-time signal with an empty handler makes a blocked `KVM_RUN` return
//! `EINTR`. The VMM uses it to stop vCPUs; the payload VM uses it as a
//! watchdog so a guest that halts with interrupts it never gets cannot hang
//! the caller.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// How often a fired watchdog repeats the signal: a signal that lands while
/// the thread is between two `KVM_RUN`s is lost, the next one is not.
const RESEND_INTERVAL: Duration = Duration::from_millis(20);

/// The signal used to kick vCPU threads.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process, so the signal
/// interrupts system calls instead of killing the process.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| result = register_signal_handler(kick_signal(), on_kick));
    result
}

/// Sends the kick signal to the thread that armed it, from `timeout` on,
/// until dropped.
#[derive(Debug)]
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog for the calling thread.
    pub fn arm(timeout: Duration) -> Result<Self, vmm_sys_util::errno::Error> {
        install_kick_handler()?;
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let stop = Arc::new(AtomicBool::new(false));
        let fired = Arc::new(AtomicBool::new(false));
        let (stop2, fired2) = (stop.clone(), fired.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + timeout;
            while !stop2.load(Ordering::Acquire) {
                let now = Instant::now();
                if now < deadline {
                    std::thread::park_timeout((deadline - now).min(RESEND_INTERVAL));
                    continue;
                }
                fired2.store(true, Ordering::Release);
                // SAFETY: `target` is alive: the Watchdog lives on that
                // thread and joins this one before it is dropped.
                unsafe { libc::pthread_kill(target, kick_signal()) };
                std::thread::park_timeout(RESEND_INTERVAL);
            }
        });
        Ok(Watchdog {
            stop,
            fired,
            thread: Some(thread),
        })
    }

    /// Whether the timeout has passed.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// A read on a socket nobody writes to: only a signal (EINTR) or the
    /// socket's 10 s receive timeout (EAGAIN) ends it, so a broken watchdog
    /// fails the test instead of hanging it.
    fn blocking_read() -> std::io::Error {
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut byte = 0u8;
        // SAFETY: reading one byte into a valid buffer from our own socket.
        let n = unsafe { libc::read(a.as_raw_fd(), (&mut byte as *mut u8).cast(), 1) };
        let err = std::io::Error::last_os_error();
        assert_eq!(n, -1);
        err
    }

    #[test]
    fn watchdog_interrupts_a_blocking_syscall() {
        // Taken before arming: the deadline is computed after it, however
        // late this thread runs again.
        let start = Instant::now();
        let dog = Watchdog::arm(Duration::from_millis(50)).unwrap();
        let err = blocking_read();
        assert_eq!(err.raw_os_error(), Some(libc::EINTR));
        assert!(dog.fired());
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    /// The race of a loaded machine, forced: the first signal lands before
    /// the blocking call starts (its handler runs and it is gone); a
    /// repeat still interrupts the call.
    #[test]
    fn a_signal_sent_before_the_syscall_is_repeated() {
        let dog = Watchdog::arm(Duration::ZERO).unwrap();
        while !dog.fired() {
            std::thread::yield_now();
        }
        // Past the first signal, well into the wait for the next.
        std::thread::sleep(RESEND_INTERVAL / 2);
        let start = Instant::now();
        let err = blocking_read();
        assert_eq!(err.raw_os_error(), Some(libc::EINTR));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_dropped_watchdog_never_fires() {
        let dog = Watchdog::arm(Duration::from_secs(60)).unwrap();
        assert!(!dog.fired());
        drop(dog);
    }
}
