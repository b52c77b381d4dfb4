//! `COPY` and `ADD`: context files into the rootfs, Docker's way.
//!
//! Sources are context-relative (wildcards allowed) and may not leave the
//! context; `.dockerignore`d files are invisible. A directory source copies
//! its contents. The destination is a directory when it ends in `/`, when
//! there are several sources, or when it already is one. Files keep their
//! mode and mtime; ownership is `--chown` or 0:0. `ADD` of a local tar
//! (plain or gzip) extracts it into the destination directory.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cradle_image::unpack::{clean_path, resolve_in_root};
use cradle_image::{apply_layer, UnpackOptions};

use crate::ignore::Ignore;

/// What one COPY/ADD step works with.
pub struct CopyOptions<'a> {
    /// The build context.
    pub context: &'a Path,
    /// Its ignore rules.
    pub ignore: &'a Ignore,
    /// The rootfs.
    pub root: &'a Path,
    /// `--chown` result, else 0:0.
    pub owner: Option<(u32, u32)>,
    /// `--chmod` result.
    pub mode: Option<u32>,
    /// ADD semantics (extract local archives).
    pub add: bool,
}

fn ctx_err(what: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", what.display())
}

/// Real parent directory (created) and final name of guest path `guest`.
fn guest_parent(root: &Path, guest: &str) -> Result<(PathBuf, Option<std::ffi::OsString>), String> {
    let parts = clean_path(guest.as_bytes()).map_err(|e| e.to_string())?;
    match parts.split_last() {
        None => Ok((root.to_path_buf(), None)),
        Some((name, parents)) => {
            let rel = resolve_in_root(root, parents, true).map_err(|e| e.to_string())?;
            Ok((root.join(rel), Some(name.clone())))
        }
    }
}

/// The real directory for guest path `guest`, created if missing.
fn guest_dir(o: &CopyOptions, guest: &str) -> Result<PathBuf, String> {
    let parts = clean_path(guest.as_bytes()).map_err(|e| e.to_string())?;
    let existed = resolve_in_root(o.root, &parts, false).is_ok();
    let rel = resolve_in_root(o.root, &parts, true).map_err(|e| e.to_string())?;
    let p = o.root.join(rel);
    if !p.is_dir() {
        return Err(format!("{guest}: not a directory in the image"));
    }
    if !existed {
        if let Some((u, g)) = o.owner {
            lchown(&p, u, g)?;
        }
    }
    Ok(p)
}

fn lchown(p: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| ctx_err(p, e))
}

fn set_times(p: &Path, m: &fs::Metadata) -> Result<(), String> {
    let t = filetime_of(m);
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| ctx_err(p, e))?;
    let ts = [t, t];
    // SAFETY: `c` is a valid path and `ts` two timespecs, read only.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(ctx_err(p, io::Error::last_os_error()));
    }
    Ok(())
}

fn filetime_of(m: &fs::Metadata) -> libc::timespec {
    libc::timespec {
        tv_sec: m.mtime() as libc::time_t,
        tv_nsec: m.mtime_nsec() as _,
    }
}

fn remove_existing(p: &Path) -> Result<(), String> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(|e| ctx_err(p, e)),
        Ok(_) => fs::remove_file(p).map_err(|e| ctx_err(p, e)),
        Err(_) => Ok(()),
    }
}

/// Copies one context entry (not a directory) to real path `to`.
fn copy_leaf(o: &CopyOptions, from: &Path, m: &fs::Metadata, to: &Path) -> Result<(), String> {
    let (uid, gid) = o.owner.unwrap_or((0, 0));
    if m.file_type().is_symlink() {
        remove_existing(to)?;
        let target = fs::read_link(from).map_err(|e| ctx_err(from, e))?;
        std::os::unix::fs::symlink(target, to).map_err(|e| ctx_err(to, e))?;
        lchown(to, uid, gid)?;
        return set_times(to, m);
    }
    if !m.is_file() {
        return Ok(()); // sockets, fifos, devices in a context are skipped
    }
    remove_existing(to)?;
    let mut src = File::open(from).map_err(|e| ctx_err(from, e))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(|e| ctx_err(to, e))?;
    io::copy(&mut src, &mut dst).map_err(|e| ctx_err(to, e))?;
    lchown(to, uid, gid)?;
    let mode = o.mode.unwrap_or(m.permissions().mode() & 0o7777);
    fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(|e| ctx_err(to, e))?;
    set_times(to, m)
}

/// Copies the contents of context dir `from` (context-relative `rel`)
/// into real directory `to`.
fn copy_dir(o: &CopyOptions, from: &Path, rel: &Path, to: &Path) -> Result<(), String> {
    let mut names: Vec<_> = fs::read_dir(from)
        .map_err(|e| ctx_err(from, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let src = from.join(&name);
        let r = rel.join(&name);
        let m = fs::symlink_metadata(&src).map_err(|e| ctx_err(&src, e))?;
        let dst = to.join(&name);
        if m.is_dir() {
            // An excluded directory is still walked: `!` rules may bring
            // back files inside it.
            let excluded = o.ignore.excluded(&r.to_string_lossy());
            if !excluded || has_included(o, &src, &r)? {
                match fs::symlink_metadata(&dst) {
                    Ok(d) if d.is_dir() => {}
                    _ => {
                        remove_existing(&dst)?;
                        fs::create_dir(&dst).map_err(|e| ctx_err(&dst, e))?;
                    }
                }
                copy_dir(o, &src, &r, &dst)?;
                let (uid, gid) = o.owner.unwrap_or((0, 0));
                lchown(&dst, uid, gid)?;
                let mode = m.permissions().mode() & 0o7777;
                fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                    .map_err(|e| ctx_err(&dst, e))?;
                set_times(&dst, &m)?;
            }
        } else if !o.ignore.excluded(&r.to_string_lossy()) {
            copy_leaf(o, &src, &m, &dst)?;
        }
    }
    Ok(())
}

/// Whether anything below the excluded dir `from` is re-included.
fn has_included(o: &CopyOptions, from: &Path, rel: &Path) -> Result<bool, String> {
    for e in fs::read_dir(from).map_err(|e| ctx_err(from, e))? {
        let e = e.map_err(|e| ctx_err(from, e))?;
        let r = rel.join(e.file_name());
        if !o.ignore.excluded(&r.to_string_lossy()) {
            return Ok(true);
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) && has_included(o, &e.path(), &r)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A plain or gzip tar archive, judged by its first bytes.
fn is_tar_archive(p: &Path) -> bool {
    let mut head = vec![0u8; 512];
    let Ok(mut f) = File::open(p) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        // Look at the first tar header inside the gzip stream.
        let Ok(f) = File::open(p) else { return false };
        let mut gz = flate2::read::GzDecoder::new(f);
        let mut inner = vec![0u8; 512];
        return gz.read_exact(&mut inner).is_ok() && &inner[257..262] == b"ustar";
    }
    n >= 262 && &head[257..262] == b"ustar"
}

/// Expands wildcards in a context-relative source.
fn expand_source(o: &CopyOptions, src: &str) -> Result<Vec<PathBuf>, String> {
    let parts =
        clean_path(src.as_bytes()).map_err(|_| format!("{src}: outside the build context"))?;
    let rel: PathBuf = parts.iter().collect();
    if !src.contains(['*', '?', '[']) {
        let full = o.context.join(&rel);
        if fs::symlink_metadata(&full).is_err() {
            return Err(format!("{src}: not found in the build context"));
        }
        if !rel.as_os_str().is_empty()
            && o.ignore.excluded(&rel.to_string_lossy())
            && !(full.is_dir() && has_included(o, &full, &rel)?)
        {
            return Err(format!("{src}: excluded by .dockerignore"));
        }
        return Ok(vec![rel]);
    }
    let pattern = o.context.join(&rel);
    let pattern = pattern.to_str().ok_or(format!("{src}: not UTF-8"))?;
    let mut out = Vec::new();
    for hit in glob::glob(pattern).map_err(|e| format!("{src}: {e}"))? {
        let hit = hit.map_err(|e| format!("{src}: {e}"))?;
        if let Ok(r) = hit.strip_prefix(o.context) {
            if !o.ignore.excluded(&r.to_string_lossy()) {
                out.push(r.to_path_buf());
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{src}: no matching files in the build context"));
    }
    Ok(out)
}

/// Runs one COPY/ADD of `sources` to guest path `dest` (absolute).
pub fn copy_sources(o: &CopyOptions, sources: &[String], dest: &str) -> Result<(), String> {
    let mut rels = Vec::new();
    for s in sources {
        if o.add && (s.starts_with("http://") || s.starts_with("https://")) {
            return Err(format!(
                "ADD of a URL ({s}) is not supported; RUN wget instead"
            ));
        }
        rels.extend(expand_source(o, s)?);
    }
    let dest_is_dir = dest.ends_with('/') || rels.len() > 1 || {
        let parts = clean_path(dest.as_bytes()).map_err(|e| e.to_string())?;
        resolve_in_root(o.root, &parts, false)
            .map(|r| o.root.join(r).is_dir())
            .unwrap_or(false)
    };
    for rel in rels {
        let from = o.context.join(&rel);
        let m = fs::symlink_metadata(&from).map_err(|e| ctx_err(&from, e))?;
        if m.is_dir() {
            let to = guest_dir(o, dest)?;
            copy_dir(o, &from, &rel, &to)?;
        } else if o.add && m.is_file() && is_tar_archive(&from) {
            let to = guest_dir(o, dest)?;
            let f = File::open(&from).map_err(|e| ctx_err(&from, e))?;
            let tar = cradle_image::unpack::decompress(f).map_err(|e| ctx_err(&from, e))?;
            let opts = UnpackOptions {
                whiteouts: false,
                ..UnpackOptions::default()
            };
            apply_layer(&to, tar, &opts).map_err(|e| ctx_err(&from, e))?;
        } else if dest_is_dir {
            let to = guest_dir(o, dest)?;
            let name = rel.file_name().unwrap_or(OsStr::new("file"));
            copy_leaf(o, &from, &m, &to.join(name))?;
        } else {
            let (parent, name) = guest_parent(o.root, dest)?;
            let name = name.ok_or("COPY destination is the root; end it with /")?;
            copy_leaf(o, &from, &m, &parent.join(name))?;
        }
    }
    Ok(())
}
