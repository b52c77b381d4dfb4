//! `docker cp`: stat, tar out and tar in, inside a container's root.
//!
//! The work happens in `cradle-init __archive OP ROOT PATH`, a helper that
//! chroots into the container's prepared root first, so symlinks in the
//! image resolve inside the container, never on the machine running
//! cradle-init. Exit statuses: 0 ok, 3 path not found, 4 not a directory,
//! 1 anything else (message on stderr).

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Helper exit status: the path does not exist.
pub const EXIT_NOT_FOUND: i32 = 3;
/// Helper exit status: the path is not a directory.
pub const EXIT_NOT_DIR: i32 = 4;

/// Docker's `ContainerPathStat`, sent base64-encoded in the
/// `X-Docker-Container-Path-Stat` header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathStat {
    /// Base name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Go `os.FileMode` bits (type bits high, permissions low).
    pub mode: u32,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// Resolved target when the path is a symlink, else empty.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// Go's `os.FileMode` for a Unix `st_mode`.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    m |= match st_mode & libc::S_IFMT {
        libc::S_IFDIR => 1 << 31,
        libc::S_IFLNK => 1 << 27,
        libc::S_IFIFO => 1 << 25,
        libc::S_IFSOCK => 1 << 24,
        libc::S_IFBLK => 1 << 26,
        libc::S_IFCHR => (1 << 26) | (1 << 21),
        _ => 0,
    };
    if st_mode & libc::S_ISUID != 0 {
        m |= 1 << 23;
    }
    if st_mode & libc::S_ISGID != 0 {
        m |= 1 << 22;
    }
    if st_mode & libc::S_ISVTX != 0 {
        m |= 1 << 20;
    }
    m
}

fn base_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".to_string())
}

/// Stats `path` (not following a final symlink).
pub fn stat(path: &Path) -> std::io::Result<PathStat> {
    let m = std::fs::symlink_metadata(path)?;
    let link_target = if m.file_type().is_symlink() {
        std::fs::canonicalize(path)
            .or_else(|_| std::fs::read_link(path))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mtime = chrono::DateTime::from_timestamp(m.mtime(), m.mtime_nsec() as u32)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    Ok(PathStat {
        name: base_name(path),
        size: m.len(),
        mode: go_file_mode(m.mode()),
        mtime,
        link_target,
    })
}

/// Writes a tar of `path` (a tree, not following symlinks) to `out`; the
/// entries are named from the path's base name, as Docker does.
pub fn tar_out(path: &Path, out: impl Write) -> std::io::Result<()> {
    let m = std::fs::symlink_metadata(path)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let name = base_name(path);
    let name = if name == "/" { ".".to_string() } else { name };
    if m.is_dir() {
        b.append_dir_all(&name, path)?;
    } else {
        b.append_path_with_name(path, &name)?;
    }
    b.into_inner()?.flush()
}

/// Unpacks a tar from `input` into the directory `dir`, keeping modes,
/// mtimes and symlinks; files end up owned by the extracting user (root),
/// like `docker cp` without `-a`.
pub fn tar_in(dir: &Path, input: impl std::io::Read) -> std::io::Result<()> {
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    a.set_unpack_xattrs(false);
    a.unpack(dir)
}

/// Entry point of `cradle-init __archive OP ROOT PATH`.
pub fn helper_main(args: &[String]) -> ! {
    let code = match helper(args) {
        Ok(()) => 0,
        Err((code, msg)) => {
            eprintln!("{msg}");
            code
        }
    };
    std::process::exit(code)
}

fn helper(args: &[String]) -> Result<(), (i32, String)> {
    let [op, root, path] = args else {
        return Err((1, "usage: __archive stat|get|put ROOT PATH".into()));
    };
    let other = |e: std::io::Error| (1, e.to_string());
    nix::unistd::chroot(root.as_str()).map_err(|e| (1, format!("chroot {root}: {e}")))?;
    std::env::set_current_dir("/").map_err(other)?;
    let path = Path::new(path);
    let missing = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::NotFound {
            (
                EXIT_NOT_FOUND,
                format!("{}: no such file or directory", path.display()),
            )
        } else {
            (1, format!("{}: {e}", path.display()))
        }
    };
    match op.as_str() {
        "stat" => {
            let s = stat(path).map_err(missing)?;
            let json = serde_json::to_vec(&s).map_err(|e| (1, e.to_string()))?;
            std::io::stdout().write_all(&json).map_err(other)
        }
        "get" => {
            std::fs::symlink_metadata(path).map_err(missing)?;
            tar_out(path, std::io::stdout().lock()).map_err(other)
        }
        "put" => {
            let m = std::fs::metadata(path).map_err(missing)?;
            if !m.is_dir() {
                return Err((EXIT_NOT_DIR, format!("{}: not a directory", path.display())));
            }
            tar_in(path, std::io::stdin().lock()).map_err(other)
        }
        _ => Err((1, format!("unknown archive op {op:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn go_modes() {
        assert_eq!(go_file_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(libc::S_IFREG | 0o4755), (1 << 23) | 0o755);
    }

    #[test]
    fn tree_round_trips_with_modes_and_symlinks() {
        let src = tempfile::tempdir().unwrap();
        let tree = src.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).unwrap();
        std::fs::write(tree.join("sub/run.sh"), "echo hi\n").unwrap();
        std::fs::set_permissions(
            tree.join("sub/run.sh"),
            std::fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/run.sh", tree.join("link")).unwrap();
        let mut buf = Vec::new();
        tar_out(&tree, &mut buf).unwrap();
        let dst = tempfile::tempdir().unwrap();
        tar_in(dst.path(), &buf[..]).unwrap();
        let m = std::fs::metadata(dst.path().join("tree/sub/run.sh")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o750);
        assert_eq!(
            std::fs::read_link(dst.path().join("tree/link")).unwrap(),
            Path::new("sub/run.sh")
        );
        let s = stat(&dst.path().join("tree/link")).unwrap();
        assert_eq!(s.name, "link");
        assert!(s.link_target.ends_with("tree/sub/run.sh"), "{s:?}");
        assert_eq!(s.mode & (1 << 27), 1 << 27);
    }
}
