//! seccomp filters per thread kind: vCPU threads (KVM_RUN, device
//! emulation, vhost-user messages at activation) and VMM threads (waiting,
//! kicking vCPUs, signals, stdin, daemon watchers). Built once before the
//! guest starts; each thread installs its own as its first act.
//!
//! `ioctl` is allowed by request number, not wholesale: a vCPU thread may
//! run its vCPU and change the MSI-X routes and irqfds a guest's MSI-X
//! table write implies, nothing else (no memory slots, no new vCPUs, no
//! register access); the other threads may make no ioctl at all.

use std::collections::BTreeMap;
use std::sync::Arc;

use kvm_bindings::{kvm_irq_routing, kvm_irqfd};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use vmm_sys_util::{ioctl_io_nr, ioctl_iow_nr};

/// KVM ioctl request numbers, built as `linux/kvm.h` builds them
/// (kvm-ioctls keeps its own private).
mod kvm_nr {
    use super::{ioctl_io_nr, ioctl_iow_nr, kvm_irq_routing, kvm_irqfd};
    const KVMIO: u32 = 0xae;
    ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
    ioctl_iow_nr!(KVM_IRQFD, KVMIO, 0x76, kvm_irqfd);
    ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
}
use kvm_nr::{KVM_IRQFD, KVM_RUN, KVM_SET_GSI_ROUTING};

/// The ioctl requests a vCPU thread makes: `KVM_RUN`, and from MSI-X
/// table writes `KVM_SET_GSI_ROUTING` (a new message) and `KVM_IRQFD`
/// (attach on unmask, detach on mask).
pub fn vcpu_ioctls() -> [u64; 3] {
    [KVM_RUN(), KVM_IRQFD(), KVM_SET_GSI_ROUTING()].map(u64::from)
}

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

/// vCPU threads: the vhost-user messages a device sends at activation or
/// reset (their ioctls are in [`vcpu_ioctls`]).
const VCPU: &[i64] = &[
    libc::SYS_dup,
    libc::SYS_eventfd2,
    libc::SYS_fcntl,
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

fn build(mode: SeccompMode, extra: &[i64], ioctls: &[u64]) -> Result<ThreadFilter, SeccompError> {
    let mismatch = match mode {
        SeccompMode::None => return Ok(None),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = COMMON
        .iter()
        .chain(extra)
        .map(|s| (*s, Vec::new()))
        .collect();
    if !ioctls.is_empty() {
        // One rule per request: the request (argument 1, an unsigned int
        // to the kernel) must equal it.
        let per_request = ioctls
            .iter()
            .map(|&request| {
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request)
                    .and_then(|c| SeccompRule::new(vec![c]))
                    .map_err(|e| SeccompError(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_ioctl, per_request);
    }
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
            vcpu: build(mode, VCPU, &vcpu_ioctls())?,
            vmm: build(mode, VMM, &[])?,
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

    /// Runs `body` in a forked child under `filter` (kill mode) and returns
    /// its wait status: the kill takes only the child.
    fn in_filtered_child(filter: fn(&Filters) -> &ThreadFilter, body: fn() -> i32) -> i32 {
        // SAFETY: fork in a test; the child only makes raw syscalls and
        // leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let f = Filters::new(SeccompMode::Kill).unwrap();
            if install(filter(&f)).is_err() {
                // SAFETY: leaving the child.
                unsafe { libc::_exit(3) };
            }
            let code = body();
            // SAFETY: leaving the child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        status
    }

    #[test]
    fn vcpu_threads_may_make_only_their_kvm_ioctls() {
        // KVM_RUN on a closed fd passes the filter and fails with EBADF.
        let status = in_filtered_child(
            |f| &f.vcpu,
            || {
                // SAFETY: an ioctl on fd -1 touches no memory.
                let rc = unsafe { libc::ioctl(-1, KVM_RUN() as _, 0) };
                let errno = std::io::Error::last_os_error().raw_os_error();
                i32::from(rc == -1 && errno == Some(libc::EBADF)) * 7
            },
        );
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 7);

        // FIONBIO (or any request not on the list) kills the process.
        let status = in_filtered_child(
            |f| &f.vcpu,
            || {
                // SAFETY: as above; the filter stops it before the kernel.
                unsafe { libc::ioctl(-1, libc::FIONBIO as _, 0) };
                0
            },
        );
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }

    #[test]
    fn vmm_threads_may_make_no_ioctl() {
        let status = in_filtered_child(
            |f| &f.vmm,
            || {
                // SAFETY: an ioctl on fd -1 touches no memory.
                unsafe { libc::ioctl(-1, KVM_RUN() as _, 0) };
                0
            },
        );
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSYS);
    }

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // From linux/kvm.h: _IO(KVMIO, 0x80), _IOW(KVMIO, 0x76, 32 bytes),
        // _IOW(KVMIO, 0x6a, 8 bytes).
        assert_eq!(vcpu_ioctls(), [0xae80, 0x4020_ae76, 0x4008_ae6a]);
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
