//! The state directory: what outlives one bundle.
//!
//! ```text
//! STATE/
//!   blobs/sha256/HEX   verified registry layers, shared by every bundle
//!   gfs/NAME/          GFS volumes (default --gfs-root)
//!   initramfs/         cached guest initramfs archives
//!   pods/ID.json       one record per running pod (what `kcradle ps` lists)
//! ```
//!
//! Chosen by `--state-dir`, else `$KCRADLE_STATE_DIR`, else
//! `/var/lib/kcradle` for root and `$XDG_STATE_HOME/kcradle` (or
//! `~/.local/state/kcradle`) for other users.

use std::path::{Path, PathBuf};

/// The state directory and the paths under it.
#[derive(Clone, Debug)]
pub struct StateDir {
    /// The directory.
    pub root: PathBuf,
}

impl StateDir {
    /// `explicit`, or the default described in the module docs.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        if let Some(p) = explicit {
            return StateDir { root: p.into() };
        }
        if let Some(p) = std::env::var_os("KCRADLE_STATE_DIR").filter(|p| !p.is_empty()) {
            return StateDir { root: p.into() };
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return StateDir {
                root: "/var/lib/kcradle".into(),
            };
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        StateDir {
            root: base.join("kcradle"),
        }
    }

    /// Layer cache (`blobs/`).
    pub fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    /// Default GFS root.
    pub fn gfs(&self) -> PathBuf {
        self.root.join("gfs")
    }
    /// Initramfs cache.
    pub fn initramfs(&self) -> PathBuf {
        self.root.join("initramfs")
    }
    /// Running pod records.
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }
}
