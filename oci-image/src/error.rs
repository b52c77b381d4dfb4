//! The crate's error type. Each variant's doc comment is its message.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong reading or unpacking an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// I/O on a named file.
    #[error("{path}: {err}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error (part of the message, not a separate source).
        err: io::Error,
    },
    /// A JSON document of the image did not parse.
    #[error("{what}: {msg}")]
    Json {
        /// Which document.
        what: String,
        /// The parser's message.
        msg: String,
    },
    /// A blob's content does not match its digest.
    #[error("{what}: digest mismatch (expected {expected}, got {actual})")]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// The digest the image promised.
        expected: String,
        /// The digest of what we read.
        actual: String,
    },
    /// A blob's length does not match its descriptor.
    #[error("{what}: size mismatch (expected {expected} bytes, got {actual})")]
    SizeMismatch {
        /// Which blob.
        what: String,
        /// The size the descriptor promised.
        expected: u64,
        /// The size we read.
        actual: u64,
    },
    /// A digest string is malformed or uses an unknown algorithm.
    #[error("bad digest {0:?}")]
    BadDigest(String),
    /// An archive entry would land outside the root.
    #[error("archive entry {0:?} escapes the root")]
    PathEscape(String),
    /// Too many symlinks while resolving a path inside the root.
    #[error("too many levels of symbolic links resolving {0:?}")]
    SymlinkLoop(String),
    /// A path inside the root crosses a non-directory.
    #[error("{0:?}: a parent is not a directory")]
    NotADirectory(String),
    /// Something the image uses that this crate does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The image reference is malformed.
    #[error("bad image reference {0:?}: {1}")]
    BadReference(String, String),
    /// The image, tag or a file inside the image is missing.
    #[error("not found: {0}")]
    NotFound(String),
    /// The image holds several images and none was named.
    #[error("{0}")]
    Ambiguous(String),
    /// Reading or applying a layer failed.
    #[error("layer {index} ({digest}): {err}")]
    Layer {
        /// Position of the layer, from 0 at the bottom.
        index: usize,
        /// The layer's digest.
        digest: String,
        /// What went wrong.
        err: Box<ImageError>,
    },
    /// A registry refused or failed a request.
    #[error("registry: {0}")]
    Registry(String),
    /// A tar stream is corrupt.
    #[error("tar: {0}")]
    Tar(io::Error),
}

impl ImageError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, err: io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            err,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T> = std::result::Result<T, ImageError>;
