//! `blk-lv`: vhost-user-blk daemon for the LV (local NVMe) tier.
//!
//! One worker thread and one io_uring per virtqueue; requests go to the
//! kernel with iovecs pointing straight into guest memory. The library
//! form exists so that tests can run the daemon in-process and read its
//! counters; the binary is a thin `main.rs` over [`run`].
#![deny(missing_docs)]

pub mod backend;
pub mod config;
pub mod device;
pub mod engine;
pub mod metrics;
pub mod qos;
pub mod request;
mod worker;
pub mod zeroes;

use std::sync::Arc;

use cradle_devices::daemon::{self, DaemonError};
use vhost::vhost_user::Listener;

use crate::backend::BlkBackend;
use crate::device::Device;

/// Serves `device` on `listener`, one frontend after the other, forever.
pub fn serve(device: Arc<Device>, listener: &mut Listener) -> Result<(), DaemonError> {
    daemon::serve("blk-lv", listener, |mem| {
        BlkBackend::new(device.clone(), mem)
    })
}

/// Syscalls blk-lv needs beyond the daemon skeleton's
/// [`cradle_devices::daemon::seccomp::BASE`] (its I/O goes through
/// io_uring, whose opcodes are restricted on the ring itself).
pub const SYSCALLS: &[i64] = &[
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_fdatasync,
    libc::SYS_fsync,
];

/// `--print-capabilities` output.
pub fn print_capabilities() {
    daemon::print_capabilities("block", &[]);
}
