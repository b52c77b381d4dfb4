//! Builds initramfs archives for cradle guests: a newc cpio writer, kernel
//! module dependency resolution from `modules.dep`, binaries with the shared
//! libraries they need, and an on-disk cache keyed by the inputs.
//!
//! The VMM also uses the cpio writer to append a small archive (the pod
//! config) to an initramfs at load time: the kernel unpacks concatenated
//! archives in order.
//!
//! ```no_run
//! use cradle_initramfs::{Compression, Initramfs, ModuleIndex};
//! use std::path::Path;
//! # fn main() -> Result<(), cradle_initramfs::Error> {
//! let index = ModuleIndex::load(Path::new("/lib/modules/6.1.0-56-cloud-amd64"))?;
//! let mut fs = Initramfs::new();
//! fs.busybox(Path::new("/bin/busybox"))?;
//! let load_order = fs.modules(&index, &["virtio_pci", "virtio_blk"])?;
//! fs.bytes("/init", 0o755, format!("#!/bin/sh\nfor m in {}; do insmod $m; done\nexec sh\n", load_order.join(" ")))?;
//! let archive = fs.build_cached(Path::new("/tmp/cache"), Compression::None)?;
//! # let _ = archive; Ok(()) }
//! ```
#![deny(missing_docs)]

mod builder;
pub mod cpio;
mod ldd;
mod modules;

use std::path::{Path, PathBuf};

pub use builder::{Compression, Initramfs};
pub use ldd::shared_libraries;
pub use modules::ModuleIndex;

/// Why an initramfs could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The source is missing or not a regular file.
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    /// A guest path tried to climb out of the root.
    #[error("guest path {0:?} contains '..'")]
    BadGuestPath(String),
    /// `modules.dep` has no such module and it is not built in.
    #[error("kernel module {name} not found under {root}")]
    UnknownModule {
        /// The requested name.
        name: String,
        /// The modules directory searched.
        root: PathBuf,
    },
    /// `modules.dep` lists a dependency cycle.
    #[error("kernel module dependency cycle through {0}")]
    ModuleCycle(String),
    /// The module is compressed; busybox insmod cannot load it.
    #[error("{0}: compressed kernel modules are not supported")]
    CompressedModule(PathBuf),
    /// `ldd` failed or a library is missing on the host.
    #[error("ldd {binary}: {reason}")]
    Ldd {
        /// The binary examined.
        binary: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
