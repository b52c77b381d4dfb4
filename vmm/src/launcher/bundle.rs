//! The bundle: one directory holding everything a pod needs, written by
//! `kcradle summon` and read by `kcradle run`.
//!
//! ```text
//! DIR/
//!   bundle.json   launcher config (this module's `Bundle`, versioned)
//!   pod.json      pod config for cradle-init, without the network part,
//!                 which `run` adds once it has allocated the pod's addresses
//!   image.json    the image's runtime config as pulled (entrypoint, cmd, ...)
//!   rootfs/       the unpacked image, served read-only by virtiofsd-gfs
//!   volumes/      LV volume files (NAME.img) when --lv-root is not given
//!   run/          sockets and pid files while the pod runs (docker.sock is
//!                 DIR/docker.sock itself)
//!   logs/         console.log and one log per device daemon
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::{Proto, PublishSpec};

/// Version of `bundle.json` this kcradle writes and reads.
pub const BUNDLE_VERSION: u32 = 1;

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The directory holds no readable `bundle.json`.
    #[error("{0}: not a kcradle bundle (no readable bundle.json): {1}")]
    NotABundle(PathBuf, std::io::Error),
    /// `bundle.json` does not parse or has another version.
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
}

/// A volume as summon resolved it: the host side is fixed in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BundleVolume {
    /// A shared directory.
    Gfs {
        /// Volume name.
        name: String,
        /// Host directory served.
        host_path: PathBuf,
        /// Mount point in the container.
        mount_point: PathBuf,
        /// Read-only.
        read_only: bool,
    },
    /// A block volume file.
    Lv {
        /// Volume name.
        name: String,
        /// Host file served.
        host_path: PathBuf,
        /// Size in bytes.
        size: u64,
        /// Mount point in the container.
        mount_point: PathBuf,
    },
}

/// Where the image came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleImage {
    /// The reference as given to summon.
    pub reference: String,
    /// Number of layers applied.
    pub layers: usize,
}

/// `bundle.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Schema version, [`BUNDLE_VERSION`].
    pub version: u32,
    /// Pod id (from the directory name).
    pub id: String,
    /// The image.
    pub image: BundleImage,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Volumes, in command-line order.
    #[serde(default)]
    pub volumes: Vec<BundleVolume>,
    /// Published ports.
    #[serde(default)]
    pub publish: Vec<PublishSpec>,
    /// Seconds since the epoch when summoned.
    pub created: u64,
}

impl Bundle {
    /// Reads `DIR/bundle.json`.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let path = dir.join("bundle.json");
        let raw = fs::read(&path).map_err(|e| BundleError::NotABundle(dir.to_path_buf(), e))?;
        let b: Bundle = serde_json::from_slice(&raw)
            .map_err(|e| BundleError::Invalid(path.clone(), e.to_string()))?;
        if b.version != BUNDLE_VERSION {
            return Err(BundleError::Invalid(
                path,
                format!(
                    "bundle version {} (this kcradle reads {BUNDLE_VERSION})",
                    b.version
                ),
            ));
        }
        Ok(b)
    }

    /// Published ports of one transport.
    pub fn published(&self, proto: Proto) -> impl Iterator<Item = &PublishSpec> {
        self.publish.iter().filter(move |p| p.proto == proto)
    }
}

/// Paths inside a bundle.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The bundle directory.
    pub dir: PathBuf,
}

impl Layout {
    /// The layout of bundle `dir`.
    pub fn new(dir: &Path) -> Self {
        Layout {
            dir: dir.to_path_buf(),
        }
    }
    /// `bundle.json`.
    pub fn bundle_json(&self) -> PathBuf {
        self.dir.join("bundle.json")
    }
    /// `pod.json`.
    pub fn pod_json(&self) -> PathBuf {
        self.dir.join("pod.json")
    }
    /// `image.json`.
    pub fn image_json(&self) -> PathBuf {
        self.dir.join("image.json")
    }
    /// `rootfs/`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
    /// `volumes/`.
    pub fn volumes(&self) -> PathBuf {
        self.dir.join("volumes")
    }
    /// `run/`.
    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// `run/jail/`: the VMM's empty root while the pod runs.
    pub fn vmm_jail(&self) -> PathBuf {
        self.run().join("jail")
    }
    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// `docker.sock`.
    pub fn docker_sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }
}
