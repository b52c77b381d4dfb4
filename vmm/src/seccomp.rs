//! seccomp filters per thread kind: vCPU threads (KVM_RUN, device
//! emulation, vhost-user messages at activation) and VMM threads (waiting,
//! kicking vCPUs, signals, stdin, daemon watchers). Built once before the
//! guest starts; each thread installs its own as its first act.

use std::collections::BTreeMap;
use std::sync::Arc;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// What happens on a syscall outside a thread's allowlist (`--seccomp`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// The process is killed.
    #[default]
    Kill,
    /// The kernel logs the syscall and allows it (to find what is missing).
    Log,
    /// No filter.
    None,
}

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
#[error("seccomp: {0}")]
pub struct SeccompError(String);

/// Syscalls every kcradle thread makes: memory, locks, time, signals,
/// exit, logging.
const COMMON: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_futex,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_gettid,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_nanosleep,
    libc::SYS_read,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sched_yield,
    libc::SYS_sigaltstack,
    libc::SYS_write,
    libc::SYS_writev,
];

/// vCPU threads: KVM ioctls (KVM_RUN, and the routes, irqfds and
/// ioeventfds a device adds when the guest programs it) and the
/// vhost-user messages a device sends at activation or reset.
const VCPU: &[i64] = &[
    libc::SYS_dup,
    libc::SYS_eventfd2,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
];

/// VMM threads: waiting for the exit, kicking vCPUs, joining threads,
/// stop signals, stdin and daemon hang-ups.
const VMM: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_set_robust_list,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_lseek,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_sched_getaffinity,
    libc::SYS_prctl,
];

/// A thread kind's compiled filter (`None` in mode `none`).
pub type ThreadFilter = Option<Arc<BpfProgram>>;

fn build(mode: SeccompMode, extra: &[i64]) -> Result<ThreadFilter, SeccompError> {
    let mismatch = match mode {
        SeccompMode::None => return Ok(None),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = COMMON
        .iter()
        .chain(extra)
        .map(|s| (*s, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| SeccompError(e.to_string()))?;
    let prog: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError(e.to_string()))?;
    Ok(Some(Arc::new(prog)))
}

/// The filters for both thread kinds.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// For vCPU threads.
    pub vcpu: ThreadFilter,
    /// For every other kcradle thread.
    pub vmm: ThreadFilter,
}

impl Filters {
    /// Builds both filters for `mode`.
    pub fn new(mode: SeccompMode) -> Result<Self, SeccompError> {
        Ok(Filters {
            vcpu: build(mode, VCPU)?,
            vmm: build(mode, VMM)?,
        })
    }
}

/// Installs `filter` on the calling thread only.
pub fn install(filter: &ThreadFilter) -> Result<(), SeccompError> {
    match filter {
        Some(prog) => seccompiler::apply_filter(prog).map_err(|e| SeccompError(e.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_for_every_mode() {
        assert!(Filters::new(SeccompMode::None).unwrap().vcpu.is_none());
        let f = Filters::new(SeccompMode::Kill).unwrap();
        assert!(f.vcpu.is_some() && f.vmm.is_some());
        assert!(Filters::new(SeccompMode::Log).unwrap().vmm.is_some());
    }

    #[test]
    fn a_filtered_thread_is_killed_by_a_forbidden_syscall() {
        // In a child process, so the kill takes only the child.
        // SAFETY: fork in a test; the child only calls async-signal-safe
        // functions and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let f = Filters::new(SeccompMode::Kill).unwrap();
            if install(&f.vcpu).is_err() {
                // SAFETY: leaving the child.
                unsafe { libc::_exit(3) };
            }
            // SAFETY: getppid is not on the vCPU allowlist: this kills us.
            unsafe { libc::syscall(libc::SYS_getppid) };
            // SAFETY: leaving the child (not reached).
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }
}
