//! Guest boot artifacts for `kcradle run`: the kernel (the installed
//! Debian cloud kernel unless `--kernel`), the guest initramfs (cradle-init
//! as `/init`, the virtio/overlay/ext4 modules, `mkfs.ext4`), built on
//! first use and cached under `STATE/initramfs` keyed by its inputs, and
//! the small per-run archive carrying `/cradle/config.json`, which the VMM
//! appends to the initramfs at load time.

use std::path::{Path, PathBuf};

use cradle_initramfs::{cpio::CpioWriter, Compression, Initramfs, ModuleIndex};

use super::daemons::find_binary;

/// Modules the pod needs, resolved with their dependencies.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtiofs",
    "overlay",
    "ext4",
];

/// Why the boot artifacts could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InitrdError {
    /// No kernel given and none installed.
    #[error("no kernel: install linux-image-cloud-amd64 or give --kernel")]
    NoKernel,
    /// The kernel's modules directory is missing.
    #[error("no modules for kernel {0} under /lib/modules")]
    NoModules(String),
    /// cradle-init is not installed.
    #[error(transparent)]
    Binary(#[from] super::daemons::DaemonError),
    /// Building the archive failed.
    #[error("guest initramfs: {0}")]
    Build(#[from] cradle_initramfs::Error),
    /// Writing the per-run archive failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

/// The newest `/boot/vmlinuz-*-cloud-amd64` (any vmlinuz when no cloud
/// kernel is installed) and its release.
pub fn default_kernel() -> Result<(PathBuf, String), InitrdError> {
    let mut found: Vec<(PathBuf, String)> = std::fs::read_dir("/boot")
        .map_err(|_| InitrdError::NoKernel)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = name.strip_prefix("vmlinuz-")?.to_string();
            Some((e.path(), rel))
        })
        .collect();
    found.sort_by(|a, b| (a.1.contains("cloud"), &a.1).cmp(&(b.1.contains("cloud"), &b.1)));
    found.pop().ok_or(InitrdError::NoKernel)
}

/// The release of a kernel image named `vmlinuz-RELEASE`, if it is one.
pub fn release_of(kernel: &Path) -> Option<String> {
    kernel
        .file_name()?
        .to_str()?
        .strip_prefix("vmlinuz-")
        .map(str::to_string)
}

/// The cached guest initramfs for kernel `release`; returns its path and
/// the module load order for the pod config.
pub fn guest_initramfs(cache: &Path, release: &str) -> Result<(PathBuf, Vec<String>), InitrdError> {
    let moddir = Path::new("/lib/modules").join(release);
    if !moddir.is_dir() {
        return Err(InitrdError::NoModules(release.to_string()));
    }
    let index = ModuleIndex::load(&moddir)?;
    let mut fs = Initramfs::new();
    fs.binary_at(&find_binary("cradle-init")?, "/init")?;
    for mkfs in ["/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4"] {
        if Path::new(mkfs).is_file() {
            // cradle-init runs it by name: put it on the default PATH.
            fs.binary_at(Path::new(mkfs), "/bin/mkfs.ext4")?;
            break;
        }
    }
    fs.dir("/cradle", 0o755)?;
    let order = fs.modules(&index, GUEST_MODULES)?;
    let path = fs.build_cached(cache, Compression::Gzip)?;
    Ok((path, order))
}

/// Writes the archive holding `/cradle/config.json`.
pub fn pod_archive(path: &Path, config_json: &[u8]) -> Result<(), InitrdError> {
    let io = |e| InitrdError::Io(path.to_path_buf(), e);
    let f = std::fs::File::create(path).map_err(io)?;
    let mut w = CpioWriter::new(std::io::BufWriter::new(f));
    w.dir("cradle", 0o755).map_err(io)?;
    w.file("cradle/config.json", 0o644, config_json)
        .map_err(io)?;
    let mut out = w.finish().map_err(io)?;
    std::io::Write::flush(&mut out).map_err(io)
}
