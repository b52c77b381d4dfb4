//! The FUSE protocol as virtio-fs carries it: one request per descriptor
//! chain (readable part: header + arguments; writable part: the reply).

pub mod abi;
pub mod client;
pub mod reader;
pub mod server;

pub use server::{Server, ServerConfig};
