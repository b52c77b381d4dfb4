//! Describes an initramfs as a set of guest paths and writes it as one newc
//! archive, optionally cached on disk under a key derived from its inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;
use crate::ldd::shared_libraries;
use crate::modules::ModuleIndex;
use crate::Error;

/// Bumped whenever the archive layout written for the same inputs changes,
/// so stale cache entries are not reused.
const FORMAT_VERSION: u32 = 1;
/// Cache entries kept per directory; older ones are removed on insert.
const CACHE_KEEP: usize = 24;

/// What one guest path holds.
#[derive(Debug, Clone)]
enum Entry {
    Dir(u32),
    HostFile { source: PathBuf, perm: u32 },
    Bytes { data: Vec<u8>, perm: u32 },
    Symlink(String),
    CharDevice { perm: u32, major: u32, minor: u32 },
}

/// How the archive is stored. Uncompressed boots fastest under TCG, where
/// the guest's own gunzip runs emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain newc.
    None,
    /// gzip (fast level), smaller on disk.
    Gzip,
}

/// An initramfs under construction. Parent directories are created
/// implicitly; a later entry for the same path replaces an earlier one.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

/// Normalises a guest path to `/a/b` form.
fn guest_path(path: &str) -> Result<String, Error> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(Error::BadGuestPath(path.to_string()));
    }
    Ok(format!("/{}", parts.join("/")))
}

impl Initramfs {
    /// An archive with only `/dev/console`, which the kernel opens for
    /// `/init`'s stdio before any filesystem is mounted.
    pub fn new() -> Self {
        let mut fs = Initramfs::default();
        fs.entries.insert("/dev".into(), Entry::Dir(0o755));
        fs.entries.insert(
            "/dev/console".into(),
            Entry::CharDevice {
                perm: 0o600,
                major: 5,
                minor: 1,
            },
        );
        fs
    }

    /// Adds an empty directory.
    pub fn dir(&mut self, path: &str, perm: u32) -> Result<&mut Self, Error> {
        self.entries.insert(guest_path(path)?, Entry::Dir(perm));
        Ok(self)
    }

    /// Adds a file with the given contents.
    pub fn bytes(
        &mut self,
        path: &str,
        perm: u32,
        data: impl Into<Vec<u8>>,
    ) -> Result<&mut Self, Error> {
        let data = data.into();
        self.entries
            .insert(guest_path(path)?, Entry::Bytes { data, perm });
        Ok(self)
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, Error> {
        self.entries
            .insert(guest_path(path)?, Entry::Symlink(target.to_string()));
        Ok(self)
    }

    /// Copies a host file (following symlinks) to `guest`, keeping its
    /// permission bits.
    pub fn host_file(&mut self, host: &Path, guest: &str) -> Result<&mut Self, Error> {
        let meta = fs::metadata(host).map_err(|e| Error::io(host, e))?;
        if !meta.is_file() {
            return Err(Error::NotAFile(host.to_path_buf()));
        }
        let perm = meta.permissions().mode() & 0o7777;
        self.entries.insert(
            guest_path(guest)?,
            Entry::HostFile {
                source: host.to_path_buf(),
                perm,
            },
        );
        Ok(self)
    }

    /// Copies a host executable to the same path in the guest together with
    /// every shared library `ldd` lists for it.
    pub fn binary(&mut self, host: &Path) -> Result<&mut Self, Error> {
        let guest = host
            .to_str()
            .ok_or_else(|| Error::NotAFile(host.to_path_buf()))?;
        self.binary_at(host, guest)
    }

    /// Like [`Initramfs::binary`], installing the executable at `guest`.
    pub fn binary_at(&mut self, host: &Path, guest: &str) -> Result<&mut Self, Error> {
        self.host_file(host, guest)?;
        for lib in shared_libraries(host)? {
            let at = lib
                .to_str()
                .ok_or_else(|| Error::NotAFile(lib.clone()))?
                .to_string();
            self.host_file(&lib, &at)?;
        }
        Ok(self)
    }

    /// Installs a static busybox as `/bin/busybox` with a symlink per applet
    /// at the path busybox itself reports (`/bin/sh`, `/sbin/insmod`, ...).
    pub fn busybox(&mut self, host: &Path) -> Result<&mut Self, Error> {
        self.host_file(host, "/bin/busybox")?;
        let out = Command::new(host)
            .arg("--list-full")
            .output()
            .map_err(|e| Error::io(host, e))?;
        if !out.status.success() {
            return Err(Error::NotAFile(host.to_path_buf()));
        }
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            let path = format!("/{}", applet.trim());
            if path != "/bin/busybox" && !self.entries.contains_key(&path) {
                self.entries
                    .insert(guest_path(&path)?, Entry::Symlink("/bin/busybox".into()));
            }
        }
        Ok(self)
    }

    /// Adds the named kernel modules and their dependencies at
    /// `/lib/modules/NAME.ko`, returning the guest paths in load order.
    pub fn modules<S: AsRef<str>>(
        &mut self,
        index: &ModuleIndex,
        names: &[S],
    ) -> Result<Vec<String>, Error> {
        let mut order = Vec::new();
        for host in index.resolve(names)? {
            let file = host
                .file_name()
                .and_then(|f| f.to_str())
                .ok_or_else(|| Error::NotAFile(host.clone()))?;
            let guest = format!("/lib/modules/{file}");
            self.host_file(&host, &guest)?;
            order.push(guest);
        }
        Ok(order)
    }

    /// Writes the archive to `out`.
    pub fn write_to<W: Write>(&self, out: W) -> Result<W, Error> {
        let mut cpio = CpioWriter::new(out);
        let mut made: BTreeSet<String> = BTreeSet::new();
        let io = |e| Error::io(Path::new("<initramfs>"), e);
        for (path, entry) in &self.entries {
            // Parents first: BTreeMap order puts "/a" before "/a/b", but a
            // parent may only exist implicitly.
            let mut parent = String::new();
            let components: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            for comp in &components[..components.len().saturating_sub(1)] {
                parent.push('/');
                parent.push_str(comp);
                if !made.contains(&parent) && !self.entries.contains_key(&parent) {
                    cpio.dir(&parent, 0o755).map_err(io)?;
                    made.insert(parent.clone());
                }
            }
            match entry {
                Entry::Dir(perm) => cpio.dir(path, *perm).map_err(io)?,
                Entry::Bytes { data, perm } => cpio.file(path, *perm, data).map_err(io)?,
                Entry::HostFile { source, perm } => {
                    let data = fs::read(source).map_err(|e| Error::io(source, e))?;
                    cpio.file(path, *perm, &data).map_err(io)?
                }
                Entry::Symlink(target) => cpio.symlink(path, target).map_err(io)?,
                Entry::CharDevice { perm, major, minor } => {
                    cpio.char_device(path, *perm, *major, *minor).map_err(io)?
                }
            }
            made.insert(path.clone());
        }
        cpio.finish().map_err(io)
    }

    /// A key that changes whenever the archive's contents would: host files
    /// count by path, size, modification time and mode, generated data by
    /// its hash.
    pub fn fingerprint(&self) -> Result<String, Error> {
        let mut h = Sha256::new();
        h.update(FORMAT_VERSION.to_le_bytes());
        for (path, entry) in &self.entries {
            h.update(path.as_bytes());
            h.update([0]);
            match entry {
                Entry::Dir(perm) => h.update(format!("d{perm}")),
                Entry::Bytes { data, perm } => {
                    h.update(format!("b{perm}:{}", data.len()));
                    h.update(data);
                }
                Entry::HostFile { source, perm } => {
                    let meta = fs::metadata(source).map_err(|e| Error::io(source, e))?;
                    h.update(format!(
                        "f{perm}:{}:{}:{}.{}:{}",
                        source.display(),
                        meta.size(),
                        meta.mtime(),
                        meta.mtime_nsec(),
                        meta.ino()
                    ));
                }
                Entry::Symlink(target) => h.update(format!("l{target}")),
                Entry::CharDevice { perm, major, minor } => {
                    h.update(format!("c{perm}:{major}:{minor}"))
                }
            }
            h.update([0]);
        }
        Ok(hex::encode(&h.finalize()[..16]))
    }

    /// Returns the path of this archive in `cache_dir`, building it only if
    /// no entry with the same fingerprint exists. Safe against concurrent
    /// builders: each writes a private temporary file and renames it.
    pub fn build_cached(
        &self,
        cache_dir: &Path,
        compression: Compression,
    ) -> Result<PathBuf, Error> {
        fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
        let ext = match compression {
            Compression::None => "cpio",
            Compression::Gzip => "cpio.gz",
        };
        let path = cache_dir.join(format!("initramfs-{}.{ext}", self.fingerprint()?));
        if let Ok(file) = fs::File::options().append(true).open(&path) {
            // Mark as recently used for pruning; failure only affects pruning.
            let _ = file.set_modified(SystemTime::now());
            return Ok(path);
        }
        let tmp = cache_dir.join(format!(".tmp-{}-{}", std::process::id(), unique()));
        let result = self
            .write_file(&tmp, compression)
            .and_then(|()| fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        prune(cache_dir, CACHE_KEEP);
        Ok(path)
    }

    /// Writes the archive to a file.
    pub fn write_file(&self, path: &Path, compression: Compression) -> Result<(), Error> {
        let file = fs::File::create(path).map_err(|e| Error::io(path, e))?;
        let out = BufWriter::new(file);
        let out = match compression {
            Compression::None => self.write_to(out)?,
            Compression::Gzip => {
                let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
                self.write_to(gz)?
                    .finish()
                    .map_err(|e| Error::io(path, e))?
            }
        };
        out.into_inner()
            .map_err(|e| Error::io(path, e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io(path, e))
    }
}

/// A per-process counter so two builds in one process never share a name.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Removes all but the `keep` most recently used cache entries.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut found: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("initramfs-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    found.sort();
    let excess = found.len().saturating_sub(keep);
    for (_, path) in found.into_iter().take(excess) {
        let _ = fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    fn list(archive: &Path) -> String {
        let out = Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(archive)
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn implicit_parents_and_binaries_with_libraries() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Initramfs::new();
        fs.bytes("/etc/deep/conf", 0o644, "x").unwrap();
        fs.binary(Path::new("/bin/ls")).unwrap();
        let path = dir.path().join("a.cpio");
        fs.write_file(&path, Compression::None).unwrap();
        let names = list(&path);
        for want in ["etc", "etc/deep", "etc/deep/conf", "bin/ls", "dev/console"] {
            assert!(names.lines().any(|l| l == want), "{want} missing:\n{names}");
        }
        assert!(names.lines().any(|l| l.contains("libc.so")), "{names}");
    }

    #[test]
    fn busybox_applets_are_links() {
        let bb = Path::new("/bin/busybox");
        if !bb.exists() {
            return;
        }
        let mut fs = Initramfs::new();
        fs.busybox(bb).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bb.cpio.gz");
        fs.write_file(&path, Compression::Gzip).unwrap();
        let plain = dir.path().join("bb.cpio");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} > {}", path.display(), plain.display()))
            .status()
            .unwrap();
        assert!(status.success());
        let names = list(&plain);
        for want in ["bin/busybox", "bin/sh", "sbin/insmod"] {
            assert!(names.lines().any(|l| l == want), "{want} missing");
        }
    }

    #[test]
    fn cache_hits_on_same_inputs_and_misses_on_change() {
        let cache = tempfile::tempdir().unwrap();
        let src = cache.path().join("src");
        fs::write(&src, "one").unwrap();
        let mut fs1 = Initramfs::new();
        fs1.host_file(&src, "/data").unwrap();
        let a = fs1.build_cached(cache.path(), Compression::None).unwrap();
        let b = fs1.build_cached(cache.path(), Compression::None).unwrap();
        assert_eq!(a, b);
        // Same path, new contents and size: a new key.
        fs::write(&src, "three").unwrap();
        let c = fs1.build_cached(cache.path(), Compression::None).unwrap();
        assert_ne!(a, c);
        assert!(fs::read(&c).unwrap().windows(5).any(|w| w == b"three"));
    }

    #[test]
    fn dot_dot_in_guest_paths_is_refused() {
        let mut fs = Initramfs::new();
        assert!(matches!(
            fs.bytes("/a/../../etc", 0o644, ""),
            Err(Error::BadGuestPath(_))
        ));
    }
}
