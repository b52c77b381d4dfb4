//! The guest initramfs: `cradle-init` as `/init`, the kernel modules it
//! loads before anything else (listed in [`MODULES_ORDER`]), and the small
//! archive holding the pod config that the VMM appends at boot (the kernel
//! unpacks concatenated archives in order, so the config lands in
//! `/cradle/config.json` of the same root).

use crate::config::PodConfig;
use cradle_initramfs::{Error, Initramfs, ModuleIndex};
use std::path::Path;

/// Guest path of the module load order written by [`base`]; PID 1 loads
/// these before the config's own `modules`.
pub const MODULES_ORDER: &str = "/cradle/modules.order";

/// Modules a cradle guest on the Debian cloud kernel needs: virtio-pci,
/// network, disks, virtiofs and overlayfs.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtiofs",
    "overlay",
];

/// The base archive: `/init` = `cradle_init` (with the shared libraries
/// `ldd` lists, none for a static build), the usual mount points, and the
/// `modules` (with their dependencies) from `index` in load order.
pub fn base<S: AsRef<str>>(
    cradle_init: &Path,
    modules: Option<(&ModuleIndex, &[S])>,
) -> Result<Initramfs, Error> {
    let mut fs = Initramfs::new();
    for d in ["/proc", "/sys", "/dev", "/run", "/tmp", "/cradle"] {
        fs.dir(d, 0o755)?;
    }
    fs.binary_at(cradle_init, "/init")?;
    if let Some((index, names)) = modules {
        let order = fs.modules(index, names)?;
        fs.bytes(MODULES_ORDER, 0o644, order.join("\n") + "\n")?;
    }
    Ok(fs)
}

/// Adds the host directory `host` (files, directories, symlinks, with their
/// modes) at `guest`: e.g. an image rootfs for a test without virtiofs.
/// Other file types (devices, sockets) are skipped.
pub fn add_tree(fs: &mut Initramfs, host: &Path, guest: &str) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let meta = std::fs::symlink_metadata(host).map_err(io(host))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(host).map_err(io(host))?;
        fs.symlink(guest, &target.to_string_lossy())?;
    } else if ft.is_dir() {
        fs.dir(guest, meta.permissions().mode() & 0o7777)?;
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .map_err(io(host))?
            .collect::<Result<_, _>>()
            .map_err(io(host))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let child = format!("{}/{}", guest.trim_end_matches('/'), name.to_string_lossy());
            add_tree(fs, &e.path(), &child)?;
        }
    } else if ft.is_file() {
        fs.host_file(host, guest)?;
    }
    Ok(())
}

/// The archive to append to [`base`]: the pod config at
/// `/cradle/config.json`.
pub fn config_archive(config: &PodConfig) -> Result<Vec<u8>, Error> {
    let json = serde_json::to_vec_pretty(config).map_err(|e| Error::Io {
        path: crate::init::DEFAULT_CONFIG.into(),
        source: e.into(),
    })?;
    let mut fs = Initramfs::default();
    fs.bytes(crate::init::DEFAULT_CONFIG, 0o644, json)?;
    fs.write_to(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn list(archive: &[u8]) -> String {
        use std::io::Write;
        let mut child = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(archive).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    }

    #[test]
    fn base_and_config_archives() {
        let fs = base::<&str>(Path::new("/bin/busybox"), None).unwrap();
        let names = list(&fs.write_to(Vec::new()).unwrap());
        for want in ["init", "proc", "cradle", "run"] {
            assert!(names.lines().any(|l| l == want), "{want} missing: {names}");
        }
        let cfg = PodConfig::parse(
            br#"{"version":1,"id":"p","containers":[{"name":"a",
                "image":{"rootfs":{"dir":"/r"}},"process":{"cmd":["true"]}}]}"#,
        )
        .unwrap();
        let names = list(&config_archive(&cfg).unwrap());
        assert!(names.lines().any(|l| l == "cradle/config.json"), "{names}");
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("bin/tool"), "x").unwrap();
        std::os::unix::fs::symlink("tool", d.path().join("bin/alias")).unwrap();
        let mut fs = Initramfs::new();
        add_tree(&mut fs, d.path(), "/img").unwrap();
        let names = list(&fs.write_to(Vec::new()).unwrap());
        for want in ["img", "img/bin", "img/bin/tool", "img/bin/alias"] {
            assert!(names.lines().any(|l| l == want), "{want}: {names}");
        }
    }
}
