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

/// `--print-capabilities` output.
pub fn print_capabilities() {
    daemon::print_capabilities("block", &[]);
}
