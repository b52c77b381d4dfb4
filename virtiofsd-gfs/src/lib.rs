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

/// `--print-capabilities` output.
pub fn print_capabilities() {
    daemon::print_capabilities("fs", &[]);
}
