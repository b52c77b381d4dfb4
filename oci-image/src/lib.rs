//! Container image handling shared by `bali` and `kcradle summon`.
//!
//! - [`ImageRef`] parses `docker-archive:PATH[:REF]`, `oci:PATH[:TAG]` and
//!   registry references; [`ImageRef::open`] gives an [`Image`].
//! - [`Image::unpack`] applies the layers in order onto a directory,
//!   verifying every blob's digest, honouring whiteouts and opaque
//!   directories, and never writing outside the directory
//!   ([`unpack::apply_layer`] does one layer).
//! - [`ImageConfig`] is the runtime part of the image config (entrypoint,
//!   cmd, env, workdir, user, labels, exposed ports).
//! - [`write`](mod@write) makes docker-archive tarballs and OCI layouts, for tests and
//!   demos that cannot use docker.
//!
//! - [`registry::pull`] (through [`ImageRef::open_with`]) pulls from a
//!   registry over HTTPS, or plain HTTP on loopback, with token or basic
//!   auth, caching layers by digest.
#![deny(missing_docs)]

pub mod config;
pub mod digest;
pub mod docker_archive;
pub mod error;
pub mod image;
pub mod oci_layout;
pub mod reference;
pub mod registry;
pub mod unpack;
pub mod write;

pub use config::ImageConfig;
pub use digest::Digest;
pub use error::{ImageError, Result};
pub use image::{DigestOf, Image, Layer};
pub use reference::ImageRef;
pub use registry::{Progress, PullOptions, Reference};
pub use unpack::{apply_layer, LayerStats, UnpackOptions};
