//! `virtiofsd-gfs`: the vhost-user-fs daemon for GFS, the shared filesystem
//! many VMs mount coherently.
//!
//! * [`fuse`]: the FUSE protocol over virtio (wire ABI, bounds-checked
//!   reader, opcode dispatch) and a small client used by tests.
//! * [`fs`]: the [`fs::FileSystem`] trait and the passthrough backend.
#![deny(missing_docs)]

pub mod fs;
pub mod fuse;
