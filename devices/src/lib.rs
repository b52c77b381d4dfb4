//! Shared plumbing for the cradle device daemons and the VMM.
//!
//! * [`daemon`]: everything a vhost-user daemon needs that is not specific
//!   to its device type: common flags, logging, readiness, signal handling,
//!   sandbox, seccomp and the accept loop that survives frontend restarts.
//! * [`driver`]: a userspace vhost-user *frontend* (the part a VMM plays):
//!   memfd-backed "guest memory", split virtqueues, kick/call eventfds and
//!   virtio-blk and virtio-fs request helpers. Tests use it to drive daemons
//!   without a VM; the perf harness uses it as a load generator.
//! * [`fuse`]: the FUSE wire ABI and a client, for the fs daemon and for
//!   whoever plays the guest towards it.
#![deny(missing_docs)]

pub mod daemon;
pub mod driver;
pub mod fuse;
