//! The FUSE protocol as virtio-fs carries it, shared by the fs daemon (its
//! server side) and by everything that plays the guest (tests, the perf
//! load generator): the wire ABI and a transport-agnostic client.

pub mod abi;
pub mod client;
