//! A container's root filesystem, prepared in the runtime's own mount
//! namespace so that it outlives the container's processes: restarts reuse
//! it and `docker cp` works on a stopped container.
//!
//! Layout under the container's run directory:
//! `layer/` (tmpfs holding `upper/` and `work/` unless a volume holds them),
//! `rootfs/` (the overlay, or a bind of the image directory) and the
//! generated `hostname`, `hosts`, `resolv.conf`, bind-mounted over the
//! image's `/etc` files.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Component, Path, PathBuf};

/// Why a rootfs could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A filesystem operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A mount failed.
    #[error("mount {target}: {source}")]
    Mount {
        /// Mount point.
        target: PathBuf,
        /// The errno.
        source: nix::Error,
    },
    /// A path inside the image goes through a symlink (it could point out
    /// of the rootfs, so it is refused as a mount point).
    #[error("mount point {0} goes through a symlink in the image")]
    Symlink(PathBuf),
}

/// What to build a rootfs from.
pub struct RootfsSpec<'a> {
    /// The image's files (read-only lower).
    pub image: &'a Path,
    /// Overlay with a writable upper; `false` binds the image dir itself.
    pub overlay: bool,
    /// Directory holding `upper/` and `work/`; a fresh tmpfs when `None`.
    pub upper: Option<&'a Path>,
    /// Contents of `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
    pub etc: [(&'a str, String); 3],
    /// Volumes: host directory, absolute path in the container, read-only.
    pub volumes: Vec<(PathBuf, PathBuf, bool)>,
}

/// A prepared rootfs; [`PreparedRoot::release`] unmounts it.
#[derive(Debug)]
pub struct PreparedRoot {
    /// The root to pivot into.
    pub rootfs: PathBuf,
    dir: PathBuf,
    mounts: Vec<PathBuf>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Io { what, path, source }
}

fn do_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    mount(src, target, fstype, flags, data).map_err(|source| RootfsError::Mount {
        target: target.to_path_buf(),
        source,
    })
}

/// `root` joined with the absolute `inner`, refusing `..` and any existing
/// symlink on the way; missing components are created as directories.
fn inside(root: &Path, inner: &Path) -> Result<PathBuf, RootfsError> {
    let mut p = root.to_path_buf();
    for c in inner.components() {
        match c {
            Component::Normal(n) => {
                p.push(n);
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    if m.file_type().is_symlink() {
                        return Err(RootfsError::Symlink(inner.to_path_buf()));
                    }
                }
            }
            Component::RootDir | Component::CurDir => {}
            _ => return Err(RootfsError::Symlink(inner.to_path_buf())),
        }
    }
    Ok(p)
}

impl PreparedRoot {
    /// Builds the rootfs under `dir` (created; must not be in use).
    pub fn prepare(dir: &Path, spec: &RootfsSpec<'_>) -> Result<Self, RootfsError> {
        let mut root = PreparedRoot {
            rootfs: dir.join("rootfs"),
            dir: dir.to_path_buf(),
            mounts: Vec::new(),
        };
        match root.build(spec) {
            Ok(()) => Ok(root),
            Err(e) => {
                root.release();
                Err(e)
            }
        }
    }

    fn build(&mut self, spec: &RootfsSpec<'_>) -> Result<(), RootfsError> {
        let dir = self.dir.clone();
        std::fs::create_dir_all(&self.rootfs).map_err(io("create", &self.rootfs))?;
        if spec.overlay {
            let layer = match spec.upper {
                Some(p) => p.to_path_buf(),
                None => {
                    let l = dir.join("layer");
                    std::fs::create_dir_all(&l).map_err(io("create", &l))?;
                    do_mount(
                        Some(Path::new("tmpfs")),
                        &l,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        Some("mode=755"),
                    )?;
                    self.mounts.push(l.clone());
                    l
                }
            };
            let (upper, work) = (layer.join("upper"), layer.join("work"));
            for d in [&upper, &work] {
                std::fs::create_dir_all(d).map_err(io("create", d))?;
            }
            let opts = format!(
                "lowerdir={},upperdir={},workdir={}",
                spec.image.display(),
                upper.display(),
                work.display()
            );
            do_mount(
                Some(Path::new("overlay")),
                &self.rootfs,
                Some("overlay"),
                MsFlags::empty(),
                Some(&opts),
            )?;
        } else {
            do_mount(
                Some(spec.image),
                &self.rootfs,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
        }
        self.mounts.push(self.rootfs.clone());
        let etc = inside(&self.rootfs, Path::new("/etc"))?;
        std::fs::create_dir_all(&etc).map_err(io("create", &etc))?;
        for (name, content) in &spec.etc {
            let src = dir.join(name);
            std::fs::write(&src, content).map_err(io("write", &src))?;
            let target = etc.join(name);
            if let Ok(m) = std::fs::symlink_metadata(&target) {
                if !m.is_file() {
                    // A symlink could lead out of the rootfs: replace it.
                    let _ = std::fs::remove_file(&target);
                }
            }
            if !target.exists() {
                std::fs::write(&target, "").map_err(io("create", &target))?;
            }
            do_mount(Some(&src), &target, None, MsFlags::MS_BIND, None)?;
            self.mounts.push(target);
        }
        for (host, at, ro) in &spec.volumes {
            let target = inside(&self.rootfs, at)?;
            std::fs::create_dir_all(&target).map_err(io("create", &target))?;
            do_mount(
                Some(host),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            self.mounts.push(target.clone());
            if *ro {
                do_mount(
                    None,
                    &target,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None,
                )?;
            }
        }
        Ok(())
    }

    /// Unmounts everything (lazily, so a straggler process cannot block
    /// pod shutdown) and removes the run directory.
    pub fn release(&mut self) {
        while let Some(m) = self.mounts.pop() {
            let _ = umount2(&m, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `/etc/hosts` for a pod with the given addresses.
pub fn hosts_file(hostname: &str, addrs: &[std::net::IpAddr]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if addrs.is_empty() {
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for a in addrs {
        s.push_str(&format!("{a}\t{hostname}\n"));
    }
    s
}

/// `/etc/resolv.conf` from nameservers and search domains.
pub fn resolv_conf(servers: &[std::net::IpAddr], search: &[String]) -> String {
    let mut s = String::new();
    for n in servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inside_refuses_symlinks_and_dotdot() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/", d.path().join("link")).unwrap();
        assert!(inside(d.path(), Path::new("/link/x")).is_err());
        assert!(inside(d.path(), Path::new("/a/../b")).is_err());
        assert_eq!(
            inside(d.path(), Path::new("/a/b")).unwrap(),
            d.path().join("a/b")
        );
    }

    #[test]
    fn etc_files() {
        let a: std::net::IpAddr = "169.254.1.2".parse().unwrap();
        assert!(hosts_file("h", &[a]).contains("169.254.1.2\th\n"));
        assert!(hosts_file("h", &[]).contains("127.0.1.1\th\n"));
        assert_eq!(
            resolv_conf(&[a], &["x.test".into()]),
            "nameserver 169.254.1.2\nsearch x.test\n"
        );
    }
}
