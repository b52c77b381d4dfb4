//! Applying a layer tar onto a root directory, safely.
//!
//! Archive paths are untrusted: `..` components are refused, and every
//! parent directory is resolved *inside* the root, following symlinks the
//! way a chroot would (absolute targets restart at the root, `..` stops at
//! it), so no entry can write outside the root however the links in earlier
//! entries or layers point. The final component is never followed.
//!
//! Whiteouts follow the OCI layer spec: `DIR/.wh.NAME` deletes `NAME` from
//! the layers below; `DIR/.wh..wh..opq` hides everything the layers below
//! put in `DIR`, whatever its position in the tar.

use std::collections::{HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};

/// How many symlinks one path may traverse, as in Linux's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;
/// Prefix of whiteout entries.
const WHITEOUT: &[u8] = b".wh.";
/// The opaque-directory marker.
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What to do with ownership and device nodes.
#[derive(Clone, Copy, Debug)]
pub struct UnpackOptions {
    /// Set each entry's uid/gid from the archive (needs root).
    pub preserve_owner: bool,
    /// Interpret `.wh.` entries as whiteouts (image layers) rather than as
    /// plain files (flat archives such as `ADD` sources).
    pub whiteouts: bool,
}

impl Default for UnpackOptions {
    /// Preserve ownership when running as root.
    fn default() -> Self {
        UnpackOptions {
            // SAFETY: geteuid has no preconditions and cannot fail.
            preserve_owner: unsafe { libc::geteuid() } == 0,
            whiteouts: true,
        }
    }
}

/// Counts of what a layer did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries created or updated.
    pub entries: u64,
    /// Whiteouts and opaque markers applied.
    pub whiteouts: u64,
    /// Device nodes skipped because we may not create them.
    pub skipped_devices: u64,
    /// Extended attributes (`SCHILY.xattr.*`) the filesystem or our
    /// privileges refused.
    pub skipped_xattrs: u64,
}

/// The `SCHILY.xattr.NAME` records of an entry's PAX header.
fn entry_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Vec<(String, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    exts.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_string();
            Some((name, e.value_bytes().to_vec()))
        })
        .collect()
}

/// Wraps a layer stream in the decompressor its first bytes call for:
/// gzip or none. zstd and others are refused.
pub fn decompress<'a, R: Read + 'a>(r: R) -> Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::new(r);
    let head = br.fill_buf().map_err(ImageError::Tar)?;
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::bufread::MultiGzDecoder::new(br)));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ImageError::Unsupported("zstd-compressed layer".into()));
    }
    if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z']) {
        return Err(ImageError::Unsupported("bzip2/xz-compressed layer".into()));
    }
    Ok(Box::new(br))
}

/// Splits an archive path into safe components: `.` and empty parts are
/// dropped, a leading `/` is ignored, `..` is refused.
pub fn clean_path(raw: &[u8]) -> Result<Vec<OsString>> {
    let mut out = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                return Err(ImageError::PathEscape(
                    String::from_utf8_lossy(raw).into_owned(),
                ))
            }
            p if p.contains(&0) => {
                return Err(ImageError::PathEscape(
                    String::from_utf8_lossy(raw).into_owned(),
                ))
            }
            p => out.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Ok(out)
}

/// Resolves `parts` inside `root` as if `root` were `/`, following
/// symlinks (never out of `root`). Returns the path relative to `root`.
/// With `create`, missing directories are made (mode 0755).
pub fn resolve_in_root(root: &Path, parts: &[OsString], create: bool) -> Result<PathBuf> {
    let shown = || {
        parts
            .iter()
            .map(|p| p.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut queue: VecDeque<OsString> = parts.iter().cloned().collect();
    let mut cur: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        match part.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let mut here = root.to_path_buf();
        here.extend(&cur);
        here.push(&part);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(ImageError::SymlinkLoop(shown()));
                }
                let target = fs::read_link(&here).map_err(|e| ImageError::io(&here, e))?;
                let tb = target.as_os_str().as_bytes();
                if tb.starts_with(b"/") {
                    cur.clear();
                }
                for p in tb.split(|&b| b == b'/').rev() {
                    queue.push_front(OsStr::from_bytes(p).to_os_string());
                }
            }
            Ok(m) if m.is_dir() => cur.push(part),
            // A file may only be the last component.
            Ok(_) if queue.is_empty() => cur.push(part),
            Ok(_) => return Err(ImageError::NotADirectory(shown())),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&here)
                    .map_err(|e| ImageError::io(&here, e))?;
                cur.push(part);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound(shown()))
            }
            Err(e) => return Err(ImageError::io(&here, e)),
        }
    }
    Ok(cur.iter().collect())
}

/// Removes whatever is at `path` (not following a final symlink).
fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(|e| ImageError::io(path, e)),
        Ok(_) => fs::remove_file(path).map_err(|e| ImageError::io(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io(path, e)),
    }
}

fn cstr(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ImageError::PathEscape(path.display().to_string()))
}

/// lchown, utimensat(AT_SYMLINK_NOFOLLOW) and chmod (not for symlinks).
fn set_metadata(
    path: &Path,
    header: &tar::Header,
    is_symlink: bool,
    opts: &UnpackOptions,
) -> Result<()> {
    let c = cstr(path)?;
    if opts.preserve_owner {
        // Some writers leave these fields blank: that means 0.
        let uid = header.uid().unwrap_or(0) as libc::uid_t;
        let gid = header.gid().unwrap_or(0) as libc::gid_t;
        // SAFETY: `c` is a valid NUL-terminated path; lchown reads it only.
        if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
            return Err(ImageError::io(path, io::Error::last_os_error()));
        }
    }
    if !is_symlink {
        let mode = header.mode().map_err(ImageError::Tar)? & 0o7777;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| ImageError::io(path, e))?;
    }
    let mtime = header.mtime().unwrap_or(0) as libc::time_t;
    let ts = [
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: `c` is a valid path and `ts` points to two timespecs, as
    // utimensat requires; neither is kept after the call.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(ImageError::io(path, io::Error::last_os_error()));
    }
    Ok(())
}

fn mknod(path: &Path, header: &tar::Header, kind: libc::mode_t) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path; mknod reads it only.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, dev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Applies one (uncompressed) layer tar stream onto `root`.
pub fn apply_layer<R: Read>(root: &Path, layer: R, opts: &UnpackOptions) -> Result<LayerStats> {
    let mut stats = LayerStats::default();
    // Real paths (relative to root) this layer created: an opaque marker
    // must not hide them, whatever the entry order.
    let mut mine: HashSet<PathBuf> = HashSet::new();
    // Directory mtimes are set at the end, after their children landed.
    let mut dirs: Vec<(PathBuf, tar::Header)> = Vec::new();
    let mut archive = tar::Archive::new(layer);
    for entry in archive.entries().map_err(ImageError::Tar)? {
        let mut entry = entry.map_err(ImageError::Tar)?;
        let raw = entry.path_bytes().into_owned();
        let parts = clean_path(&raw)?;
        let Some((name, parents)) = parts.split_last() else {
            continue; // the root itself ("./")
        };
        let name_b = name.as_bytes();
        let is_whiteout = opts.whiteouts && name_b.starts_with(WHITEOUT);
        if is_whiteout {
            stats.whiteouts += 1;
            // A whiteout under a directory the lower layers lack hides
            // nothing, and must not create that directory.
            let parent_rel = match resolve_in_root(root, parents, false) {
                Ok(p) => p,
                Err(ImageError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let parent = root.join(&parent_rel);
            if !parent.is_dir() {
                continue;
            }
            if name_b == OPAQUE {
                let rd = fs::read_dir(&parent).map_err(|e| ImageError::io(&parent, e))?;
                for child in rd {
                    let child = child.map_err(|e| ImageError::io(&parent, e))?;
                    if !mine.contains(&parent_rel.join(child.file_name())) {
                        remove_any(&child.path())?;
                    }
                }
            } else if let Some(hidden) = name_b.strip_prefix(WHITEOUT) {
                // `.wh..wh.*` names other than the opaque marker are
                // AUFS bookkeeping: nothing to do.
                if !hidden.starts_with(WHITEOUT) && !hidden.is_empty() {
                    remove_any(&parent.join(OsStr::from_bytes(hidden)))?;
                }
            }
            continue;
        }
        let parent_rel = resolve_in_root(root, parents, true)?;
        let rel = parent_rel.join(name);
        let path = root.join(&rel);
        let kind = entry.header().entry_type();
        let existing = fs::symlink_metadata(&path).ok();
        if let Some(m) = &existing {
            if !(kind.is_dir() && m.is_dir()) {
                remove_any(&path)?;
            }
        }
        let header = entry.header().clone();
        let xattrs = entry_xattrs(&mut entry);
        let mut is_symlink = false;
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| ImageError::io(&path, e))?;
                io::copy(&mut entry, &mut f).map_err(ImageError::Tar)?;
            }
            tar::EntryType::Directory => {
                if existing.as_ref().is_none_or(|m| !m.is_dir()) {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(|e| ImageError::io(&path, e))?;
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ImageError::Unsupported("symlink without target".into()))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(|e| ImageError::io(&path, e))?;
                is_symlink = true;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ImageError::Unsupported("hard link without target".into()))?;
                let tparts = clean_path(&target)?;
                let Some((tname, tparents)) = tparts.split_last() else {
                    return Err(ImageError::PathEscape(
                        String::from_utf8_lossy(&target).into_owned(),
                    ));
                };
                let src = root
                    .join(resolve_in_root(root, tparents, false)?)
                    .join(tname);
                fs::hard_link(&src, &path).map_err(|e| ImageError::io(&src, e))?;
                stats.entries += 1;
                mine.insert(rel);
                // A hard link shares the target's metadata: leave it.
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let k = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                match mknod(&path, &header, k) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                        stats.skipped_devices += 1;
                        continue;
                    }
                    Err(e) => return Err(ImageError::io(&path, e)),
                }
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                return Err(ImageError::Unsupported(format!(
                    "tar entry type {other:?} at {}",
                    String::from_utf8_lossy(&raw)
                )))
            }
        }
        if kind.is_dir() {
            dirs.push((path.clone(), header.clone()));
        }
        set_metadata(&path, &header, is_symlink, opts)?;
        // After chown, which clears security.capability.
        for (name, value) in &xattrs {
            if xattr::set(&path, name, value).is_err() {
                stats.skipped_xattrs += 1;
            }
        }
        stats.entries += 1;
        mine.insert(rel);
    }
    for (path, header) in dirs.iter().rev() {
        set_metadata(path, header, false, opts)?;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_mtime(1_000_000);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// tar::Builder refuses `..`, so hostile names are written raw.
    fn raw_entry(name: &str, data: &str) -> Vec<u8> {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(data.as_bytes());
        v.resize(v.len().div_ceil(512) * 512, 0);
        v.extend_from_slice(&[0; 1024]);
        v
    }

    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as L};

    fn opts() -> UnpackOptions {
        UnpackOptions {
            preserve_owner: false,
            whiteouts: true,
        }
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let l1 = layer(&[
            ("a/", D, ""),
            ("a/keep", F, "1"),
            ("a/gone", F, "1"),
            ("o/", D, ""),
            ("o/old", F, "1"),
            ("o/sub/", D, ""),
            ("o/sub/x", F, "1"),
        ]);
        apply_layer(root, &l1[..], &opts()).unwrap();
        // The opaque marker comes after a new entry of the same layer.
        let l2 = layer(&[
            ("a/.wh.gone", F, ""),
            ("o/new", F, "2"),
            ("o/.wh..wh..opq", F, ""),
        ]);
        let s = apply_layer(root, &l2[..], &opts()).unwrap();
        assert_eq!(s.whiteouts, 2);
        assert!(root.join("a/keep").exists());
        assert!(!root.join("a/gone").exists());
        assert!(!root.join("a/.wh.gone").exists());
        assert_eq!(fs::read_to_string(root.join("o/new")).unwrap(), "2");
        assert!(!root.join("o/old").exists());
        assert!(!root.join("o/sub").exists());
        assert!(!root.join("o/.wh..wh..opq").exists());
        // Whiteouts under directories nobody made create nothing.
        let l3 = layer(&[("nope/deeper/.wh.x", F, ""), ("nope2/.wh..wh..opq", F, "")]);
        apply_layer(root, &l3[..], &opts()).unwrap();
        assert!(!root.join("nope").exists());
        assert!(!root.join("nope2").exists());
    }

    #[test]
    fn replaces_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        apply_layer(
            root,
            &layer(&[("x", F, "file"), ("d/", D, ""), ("d/f", F, "1")])[..],
            &opts(),
        )
        .unwrap();
        apply_layer(
            root,
            &layer(&[("x/", D, ""), ("d", F, "now a file"), ("h", H, "d")])[..],
            &opts(),
        )
        .unwrap();
        assert!(root.join("x").is_dir());
        assert_eq!(fs::read_to_string(root.join("h")).unwrap(), "now a file");
        assert_eq!(
            fs::metadata(root.join("h")).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }

    #[test]
    fn symlinks_cannot_lead_outside() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let out = outside.path().to_str().unwrap();
        // Absolute and relative links pointing out of the root, then
        // entries written through them: both must land inside.
        let l = layer(&[
            ("abs", L, out),
            ("rel", L, "../../../../../../../../.."),
            ("usr/", D, ""),
            ("lib", L, "usr"),
            ("abs/pwned", F, "x"),
            ("rel/pwned2", F, "x"),
            ("lib/inlib", F, "x"),
        ]);
        apply_layer(root, &l[..], &opts()).unwrap();
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(root
            .join(out.trim_start_matches('/'))
            .join("pwned")
            .exists());
        assert!(root.join("pwned2").exists());
        assert!(root.join("usr/inlib").exists());
        // Resolution follows links to the final file, inside the root.
        let l = layer(&[
            ("bin/", D, ""),
            ("bin/bb", F, "x"),
            ("bin/sh", L, "/bin/bb"),
            ("bin/ls", L, "bb"),
        ]);
        apply_layer(root, &l[..], &opts()).unwrap();
        for p in ["bin/sh", "bin/ls", "bin/bb"] {
            let parts = clean_path(p.as_bytes()).unwrap();
            assert_eq!(
                resolve_in_root(root, &parts, false).unwrap(),
                Path::new("bin/bb")
            );
        }
        let parts = clean_path(b"bin/bb/x").unwrap();
        assert!(matches!(
            resolve_in_root(root, &parts, false),
            Err(ImageError::NotADirectory(_))
        ));
        // A symlink loop is an error, not a hang.
        let l = layer(&[("loop", L, "loop"), ("loop/x", F, "x")]);
        assert!(matches!(
            apply_layer(root, &l[..], &opts()),
            Err(ImageError::SymlinkLoop(_))
        ));
        // A hard link to a path outside is resolved inside (and missing).
        let l = layer(&[("hl", H, "../../etc/passwd")]);
        assert!(apply_layer(root, &l[..], &opts()).is_err());
        // A raw `..` entry is refused.
        let raw = raw_entry("../escape", "x");
        assert!(matches!(
            apply_layer(root, &raw[..], &opts()),
            Err(ImageError::PathEscape(_))
        ));
        assert!(!dir.path().parent().unwrap().join("escape").exists());
        // A file over a symlink replaces the link, never writes through it.
        let target = outside.path().join("t");
        fs::write(&target, "orig").unwrap();
        let l = layer(&[("f", L, target.to_str().unwrap())]);
        apply_layer(root, &l[..], &opts()).unwrap();
        apply_layer(root, &layer(&[("f", F, "new")])[..], &opts()).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "orig");
        assert_eq!(fs::read_to_string(root.join("f")).unwrap(), "new");
    }

    #[test]
    fn decompress_sniffs_gzip_and_refuses_zstd() {
        let l = layer(&[("a", F, "hi")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &l).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        apply_layer(dir.path(), decompress(&gz[..]).unwrap(), &opts()).unwrap();
        assert_eq!(fs::read_to_string(dir.path().join("a")).unwrap(), "hi");
        assert!(decompress(&[0x28, 0xb5, 0x2f, 0xfd, 0][..]).is_err());
    }
}
