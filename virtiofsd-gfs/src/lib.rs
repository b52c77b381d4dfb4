//! `virtiofsd-gfs`: the vhost-user-fs daemon for GFS, the shared filesystem
//! many VMs mount coherently.
//!
//! * [`fuse`]: the FUSE protocol over virtio (wire ABI, bounds-checked
//!   reader, opcode dispatch) and a small client used by tests.
//! * [`fs`]: the [`fs::FileSystem`] trait and the passthrough backend.
//! * [`queue`]: descriptor chain → request → reply, bounds-checked.
//! * [`backend`]: the vhost-user-fs device (hiprio + request queues).
#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod fs;
pub mod fuse;
pub mod queue;

use std::sync::Arc;

use cradle_devices::daemon::{self, DaemonError};
use vhost::vhost_user::Listener;

use crate::backend::{DeviceConfig, FsBackend};
use crate::fs::FileSystem;
use crate::fuse::Server;

/// Serves `server` on `listener`, one frontend after the other, forever.
pub fn serve<F: FileSystem + 'static>(
    server: Arc<Server<F>>,
    dev: DeviceConfig,
    listener: &mut Listener,
) -> Result<(), DaemonError> {
    daemon::serve("virtiofsd-gfs", listener, |mem| {
        FsBackend::new(server.clone(), dev.clone(), mem)
    })
}

/// Syscalls the passthrough backend makes once serving, on top of
/// [`cradle_devices::daemon::seccomp::BASE`].
pub const SYSCALLS: &[i64] = &[
    libc::SYS_openat,
    libc::SYS_name_to_handle_at,
    libc::SYS_open_by_handle_at,
    libc::SYS_readlinkat,
    libc::SYS_symlinkat,
    libc::SYS_mknodat,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_fchmodat,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_ftruncate,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fstatfs,
    libc::SYS_fsetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_fremovexattr,
    libc::SYS_getdents64,
    libc::SYS_fallocate,
    libc::SYS_copy_file_range,
    libc::SYS_syncfs,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    libc::SYS_geteuid,
];

/// Syscalls the native CephFS backend's Ceph client makes once serving,
/// on top of [`cradle_devices::daemon::seccomp::BASE`] (which already has
/// threads, futexes, epoll, timers, sockets' send/recv): its messenger
/// connects to and talks with monitors, MDSs and OSDs over TCP, and names
/// its threads. No file syscall is needed besides `openat`, which can
/// only fail in the sandbox's empty root (glibc and Ceph probe a few
/// /proc and /sys files and cope with their absence).
pub const CEPH_SYSCALLS: &[i64] = &[
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_pipe2,
    libc::SYS_openat,
    libc::SYS_ioctl,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrusage,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setscheduler,
    libc::SYS_setpriority,
    libc::SYS_getpriority,
    libc::SYS_pread64,
    libc::SYS_set_tid_address,
    libc::SYS_membarrier,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_delete,
];

/// Capabilities the passthrough backend keeps after the sandbox: it acts
/// on files for guest users (ownership, permission bits, device nodes, the
/// caller's fsuid/fsgid for creates). `CAP_DAC_READ_SEARCH` is added when
/// inodes are file handles (`open_by_handle_at`).
pub const CAPABILITIES: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    27, // CAP_MKNOD
    31, // CAP_SETFCAP
];

/// `CAP_DAC_READ_SEARCH`.
pub const CAP_DAC_READ_SEARCH: u32 = 2;

/// `--print-capabilities` output.
pub fn print_capabilities() {
    daemon::print_capabilities("fs", &[]);
}
