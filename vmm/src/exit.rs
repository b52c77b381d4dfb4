//! How a VM ends: the first reason reported wins, and whoever waits for the
//! VM (the main thread) wakes up.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest reported an exit status on the control port.
    Status(u8),
    /// The guest reset the machine (i8042 reset, `reboot`).
    Reset,
    /// The guest powered off (KVM system event).
    PowerOff,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN) or crashed.
    Shutdown(String),
    /// A vCPU failed in a way the VMM cannot continue from.
    VcpuError(String),
    /// kcradle was asked to stop (SIGTERM, SIGINT, SIGHUP).
    Signal(i32),
}

impl ExitReason {
    /// The process exit status `kcradle` returns for this reason: the
    /// guest's own status, 0 for a reset or power-off without one, 1 for
    /// a crash or a vCPU error, 128 + N when stopped by signal N.
    pub fn exit_status(&self) -> u8 {
        match self {
            ExitReason::Status(status) => *status,
            ExitReason::Reset | ExitReason::PowerOff => 0,
            ExitReason::Shutdown(_) | ExitReason::VcpuError(_) => 1,
            // The shell convention for death by a signal.
            ExitReason::Signal(sig) => 128u8.saturating_add(u8::try_from(*sig).unwrap_or(127)),
        }
    }
}

/// Shared by the vCPU threads, the devices and the waiter.
#[derive(Debug, Default)]
pub struct ExitSignal {
    reason: Mutex<Option<ExitReason>>,
    changed: Condvar,
}

impl ExitSignal {
    /// A signal nobody has raised.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Option<ExitReason>> {
        // The guarded value is a plain Option: still valid after a panic.
        self.reason.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `reason` unless one is already recorded, and wakes waiters.
    pub fn raise(&self, reason: ExitReason) {
        let mut slot = self.lock();
        if slot.is_none() {
            *slot = Some(reason);
            self.changed.notify_all();
        }
    }

    /// The recorded reason, if any.
    pub fn get(&self) -> Option<ExitReason> {
        self.lock().clone()
    }

    /// Whether the VM should stop.
    pub fn is_raised(&self) -> bool {
        self.lock().is_some()
    }

    /// Blocks until a reason is raised, or `timeout` passes (`None`).
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitReason> {
        let guard = self.lock();
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |r| r.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        guard.clone()
    }

    /// Blocks until a reason is raised.
    pub fn wait(&self) -> ExitReason {
        let mut guard = self.lock();
        loop {
            if let Some(reason) = guard.clone() {
                return reason;
            }
            guard = self
                .changed
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn first_reason_wins_and_wakes_the_waiter() {
        let signal = Arc::new(ExitSignal::new());
        assert_eq!(signal.wait_timeout(Duration::from_millis(10)), None);
        let raiser = signal.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            raiser.raise(ExitReason::Status(7));
            raiser.raise(ExitReason::Reset);
        });
        assert_eq!(signal.wait(), ExitReason::Status(7));
        t.join().unwrap();
        assert_eq!(signal.get(), Some(ExitReason::Status(7)));
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(ExitReason::Status(42).exit_status(), 42);
        assert_eq!(ExitReason::Reset.exit_status(), 0);
        assert_eq!(ExitReason::PowerOff.exit_status(), 0);
        assert_eq!(ExitReason::Shutdown("triple fault".into()).exit_status(), 1);
        assert_eq!(ExitReason::VcpuError("x".into()).exit_status(), 1);
        assert_eq!(ExitReason::Signal(libc::SIGTERM).exit_status(), 143);
    }
}
