//! Finds the guest kernel: the installed Debian cloud kernel by default.

use std::fs;
use std::path::{Path, PathBuf};

use crate::TestbedError;

/// Environment variable naming a `vmlinuz` to use instead of the newest
/// installed one.
pub const KERNEL_ENV: &str = "CRADLE_KERNEL";

/// A bootable kernel image and the modules built for it.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The bzImage (`/boot/vmlinuz-VERSION`).
    pub image: PathBuf,
    /// `uname -r` of that kernel.
    pub version: String,
    /// `/lib/modules/VERSION`.
    pub modules: PathBuf,
}

impl Kernel {
    /// `$CRADLE_KERNEL` if set, else the newest `/boot/vmlinuz-*-cloud-amd64`
    /// (package `linux-image-cloud-amd64`), else the newest `/boot/vmlinuz-*`.
    pub fn debian() -> Result<Kernel, TestbedError> {
        if let Some(path) = std::env::var_os(KERNEL_ENV) {
            return Kernel::at(Path::new(&path));
        }
        let mut found: Vec<PathBuf> = fs::read_dir("/boot")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.retain(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        });
        found.sort_by_key(|p| version_key(&p.to_string_lossy()));
        let cloud = found
            .iter()
            .rev()
            .find(|p| p.to_string_lossy().ends_with("-cloud-amd64"));
        match cloud.or(found.last()) {
            Some(path) => Kernel::at(path),
            None => Err(TestbedError::MissingKernel(
                "no /boot/vmlinuz-* found: install linux-image-cloud-amd64 or set CRADLE_KERNEL"
                    .into(),
            )),
        }
    }

    /// The kernel at `image`; its version comes from the `vmlinuz-VERSION`
    /// file name, its modules from `/lib/modules/VERSION`.
    pub fn at(image: &Path) -> Result<Kernel, TestbedError> {
        let meta = fs::metadata(image)
            .map_err(|e| TestbedError::MissingKernel(format!("{}: {e}", image.display())))?;
        if !meta.is_file() {
            return Err(TestbedError::MissingKernel(format!(
                "{}: not a file",
                image.display()
            )));
        }
        let name = image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let version = name
            .strip_prefix("vmlinuz-")
            .ok_or_else(|| {
                TestbedError::MissingKernel(format!(
                    "{}: expected a vmlinuz-VERSION name",
                    image.display()
                ))
            })?
            .to_string();
        Ok(Kernel {
            image: image.to_path_buf(),
            modules: PathBuf::from("/lib/modules").join(&version),
            version,
        })
    }

    /// The ELF `vmlinux` inside this bzImage (for ELF/PVH boot tests),
    /// extracted on first use and cached.
    pub fn vmlinux(&self) -> Result<PathBuf, TestbedError> {
        crate::vmlinux::cached_vmlinux(&self.image)
    }
}

/// Orders `6.1.0-9` before `6.1.0-56` by comparing digit runs numerically.
fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                key.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                key.push((digits.parse().unwrap_or(u64::MAX), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        key.push((digits.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !text.is_empty() {
        key.push((0, text));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec![
            "vmlinuz-6.1.0-56-cloud-amd64",
            "vmlinuz-6.1.0-9-cloud-amd64",
            "vmlinuz-6.10.0-1",
        ];
        v.sort_by_key(|s| version_key(s));
        assert_eq!(
            v,
            [
                "vmlinuz-6.1.0-9-cloud-amd64",
                "vmlinuz-6.1.0-56-cloud-amd64",
                "vmlinuz-6.10.0-1"
            ]
        );
    }

    #[test]
    fn missing_kernel_is_a_clear_error() {
        let err = Kernel::at(Path::new("/nonexistent/vmlinuz-1.2.3")).unwrap_err();
        assert!(matches!(err, TestbedError::MissingKernel(_)));
        assert!(
            err.to_string().contains("/nonexistent/vmlinuz-1.2.3"),
            "{err}"
        );
    }

    #[test]
    fn installed_kernel_has_modules() {
        let Ok(k) = Kernel::debian() else { return };
        assert!(k.image.exists());
        assert!(
            k.modules.join("modules.dep").exists(),
            "{}",
            k.modules.display()
        );
    }
}
