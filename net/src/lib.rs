//! `net-tap`: a vhost-user-net daemon that moves frames between a guest's
//! virtio-net queues and a Linux tap device.
//!
//! One worker thread per queue pair owns that pair's RX and TX virtqueues
//! and one queue of a multi-queue tap (`IFF_VNET_HDR`), so frames go from
//! guest memory to the tap with one `writev` and back with one `readv`.
//! The control queue (when the frontend hands it over) lives on the first
//! worker.
#![deny(missing_docs)]

pub mod backend;
pub mod compat;
pub mod config;
pub mod counters;
pub mod ctrl;
pub mod device;
pub mod hdr;
pub mod iov;
pub mod recheck;
pub mod rx;
pub mod tap;
pub mod tx;

use std::sync::Arc;

use cradle_devices::daemon::{self, DaemonError};
use vhost::vhost_user::Listener;

use crate::backend::NetBackend;
use crate::device::Device;

/// Serves `device` on `listener`, one frontend after the other, forever.
pub fn serve(device: Arc<Device>, listener: &mut Listener) -> Result<(), DaemonError> {
    daemon::serve("net-tap", listener, |mem| {
        NetBackend::new(device.clone(), mem)
    })
}

/// Syscalls net-tap needs beyond the skeleton's base set: the relay's
/// private socket (bind, listen, connect).
pub const SYSCALLS: &[i64] = &[libc::SYS_bind, libc::SYS_listen, libc::SYS_connect];

/// The only ioctls allowed at run time: tap offloads, header size and
/// queue attach/detach (feature negotiation and VQ_PAIRS_SET).
pub fn ioctls() -> [u32; 3] {
    [
        libc::TUNSETOFFLOAD as u32,
        libc::TUNSETVNETHDRSZ as u32,
        libc::TUNSETQUEUE as u32,
    ]
}

/// `--print-capabilities` output.
pub fn print_capabilities() {
    daemon::print_capabilities("net", &[]);
}
