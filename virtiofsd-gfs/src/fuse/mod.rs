//! The FUSE protocol as virtio-fs carries it: one request per descriptor
//! chain (readable part: header + arguments; writable part: the reply).
//! The wire ABI and the client live in `cradle-devices`, shared with
//! whoever plays the guest (tests, the perf load generator).

pub use cradle_devices::fuse::{abi, client};

pub mod reader;
pub mod server;

pub use server::{Server, ServerConfig};
