//! seccomp allowlists: the syscalls every daemon built on this skeleton
//! needs once it serves, plus the ones a daemon adds for its own engine.

use std::collections::BTreeMap;

pub use seccompiler::BpfProgram;
use seccompiler::{SeccompAction, SeccompFilter, TargetArch};

use super::{DaemonError, SeccompMode};

/// What the skeleton, vhost-user-backend, the Rust runtime and tracing
/// need at run time (after setup: no open, no exec).
pub const BASE: &[i64] = &[
    libc::SYS_accept4,
    libc::SYS_brk,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_close,
    libc::SYS_dup,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd2,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_fcntl,
    libc::SYS_fstat,
    libc::SYS_futex,
    libc::SYS_getpid,
    libc::SYS_getrandom,
    libc::SYS_gettid,
    libc::SYS_lseek,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_munmap,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_prlimit64,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_restart_syscall,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_set_robust_list,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_socket,
    libc::SYS_statx,
    libc::SYS_tgkill,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_write,
    libc::SYS_writev,
];

/// Builds the filter for `BASE` plus `extra`.
pub fn filter(mode: SeccompMode, extra: &[i64]) -> Result<Option<BpfProgram>, DaemonError> {
    let mismatch = match mode {
        SeccompMode::None => return Ok(None),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        BASE.iter().chain(extra).map(|s| (*s, Vec::new())).collect();
    let f = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(|e| DaemonError::Seccomp(e.to_string()))?;
    let prog: BpfProgram = f
        .try_into()
        .map_err(|e: seccompiler::BackendError| DaemonError::Seccomp(e.to_string()))?;
    Ok(Some(prog))
}

/// Installs the filter on every thread of the process (call before
/// spawning threads anyway, so nothing runs unfiltered).
pub fn apply(mode: SeccompMode, extra: &[i64]) -> Result<(), DaemonError> {
    match filter(mode, extra)? {
        Some(prog) => install(&prog),
        None => Ok(()),
    }
}

/// Installs a built filter on every thread (no allocation: safe to call
/// in a forked child).
pub fn install(prog: &BpfProgram) -> Result<(), DaemonError> {
    seccompiler::apply_filter_all_threads(prog).map_err(|e| DaemonError::Seccomp(e.to_string()))
}
