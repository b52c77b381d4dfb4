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
pub mod fs;
pub mod fuse;
pub mod queue;
