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
    /// (dev, inode) of a directory never to copy: the build's own working
    /// directory when it sits inside the context (`bali build out.tar.gz .`).
    pub skip_dir: Option<(u64, u64)>,
}

impl CopyOptions<'_> {
    fn skipped(&self, m: &fs::Metadata) -> bool {
        m.is_dir() && self.skip_dir == Some((m.dev(), m.ino()))
    }
}

/// A COPY/ADD failure. The doc comment is the message.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// the source does not exist in the context
    #[error("{0}: not found in the build context")]
    NotFound(String),
    /// the source is excluded by .dockerignore
    #[error("{0}: excluded by .dockerignore")]
    Excluded(String),
    /// the source leaves the context
    #[error("{0}: outside the build context")]
    OutsideContext(String),
    /// a wildcard matched nothing
    #[error("{0}: no matching files in the build context")]
    NoMatch(String),
    /// a wildcard that does not parse or a path that is not UTF-8
    #[error("{0}: {1}")]
    Pattern(String, String),
    /// ADD of a URL
    #[error("ADD of a URL ({0}) is not supported; RUN wget instead")]
    Url(String),
    /// the destination should be a directory but is not
    #[error("{0}: not a directory in the image")]
    NotADirectory(String),
    /// a single file copied to `/`
    #[error("COPY destination is the root; end it with /")]
    RootDestination,
    /// a path inside the image is unusable
    #[error(transparent)]
    Image(#[from] cradle_image::ImageError),
    /// I/O on a context or image path
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

fn ctx_err(what: &Path, e: io::Error) -> CopyError {
    CopyError::Io(what.to_path_buf(), e)
}

/// Real parent directory (created) and final name of guest path `guest`.
fn guest_parent(
    root: &Path,
    guest: &str,
) -> Result<(PathBuf, Option<std::ffi::OsString>), CopyError> {
    let parts = clean_path(guest.as_bytes())?;
    match parts.split_last() {
        None => Ok((root.to_path_buf(), None)),
        Some((name, parents)) => {
            let rel = resolve_in_root(root, parents, true)?;
            Ok((root.join(rel), Some(name.clone())))
        }
    }
}

/// The real directory for guest path `guest`, created if missing.
fn guest_dir(o: &CopyOptions, guest: &str) -> Result<PathBuf, CopyError> {
    let parts = clean_path(guest.as_bytes())?;
    let existed = resolve_in_root(o.root, &parts, false).is_ok();
    let rel = resolve_in_root(o.root, &parts, true)?;
    let p = o.root.join(rel);
    if !p.is_dir() {
        return Err(CopyError::NotADirectory(guest.to_string()));
    }
    if !existed {
        if let Some((u, g)) = o.owner {
            lchown(&p, u, g)?;
        }
    }
    Ok(p)
}

fn lchown(p: &Path, uid: u32, gid: u32) -> Result<(), CopyError> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| ctx_err(p, e))
}

fn set_times(p: &Path, m: &fs::Metadata) -> Result<(), CopyError> {
    let t = filetime_of(m);
    let c = std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|e| ctx_err(p, io::Error::other(e)))?;
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

fn remove_existing(p: &Path) -> Result<(), CopyError> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).map_err(|e| ctx_err(p, e)),
        Ok(_) => fs::remove_file(p).map_err(|e| ctx_err(p, e)),
        Err(_) => Ok(()),
    }
}

/// Copies one context entry (not a directory) to real path `to`.
fn copy_leaf(o: &CopyOptions, from: &Path, m: &fs::Metadata, to: &Path) -> Result<(), CopyError> {
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
fn copy_dir(o: &CopyOptions, from: &Path, rel: &Path, to: &Path) -> Result<(), CopyError> {
    let mut names: Vec<_> = fs::read_dir(from)
        .map_err(|e| ctx_err(from, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    names.sort();
    for name in names {
        let src = from.join(&name);
        let r = rel.join(&name);
        let m = fs::symlink_metadata(&src).map_err(|e| ctx_err(&src, e))?;
        if o.skipped(&m) {
            continue;
        }
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
fn has_included(o: &CopyOptions, from: &Path, rel: &Path) -> Result<bool, CopyError> {
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
fn expand_source(o: &CopyOptions, src: &str) -> Result<Vec<PathBuf>, CopyError> {
    let parts =
        clean_path(src.as_bytes()).map_err(|_| CopyError::OutsideContext(src.to_string()))?;
    let rel: PathBuf = parts.iter().collect();
    if !src.contains(['*', '?', '[']) {
        let full = o.context.join(&rel);
        if fs::symlink_metadata(&full).is_err() {
            return Err(CopyError::NotFound(src.to_string()));
        }
        if !rel.as_os_str().is_empty()
            && o.ignore.excluded(&rel.to_string_lossy())
            && !(full.is_dir() && has_included(o, &full, &rel)?)
        {
            return Err(CopyError::Excluded(src.to_string()));
        }
        return Ok(vec![rel]);
    }
    let pattern = o.context.join(&rel);
    let pattern = pattern
        .to_str()
        .ok_or_else(|| CopyError::Pattern(src.to_string(), "not UTF-8".into()))?;
    let mut out = Vec::new();
    let bad = |e: &dyn std::fmt::Display| CopyError::Pattern(src.to_string(), e.to_string());
    for hit in glob::glob(pattern).map_err(|e| bad(&e))? {
        let hit = hit.map_err(|e| bad(&e))?;
        if let Ok(r) = hit.strip_prefix(o.context) {
            if !o.ignore.excluded(&r.to_string_lossy()) {
                out.push(r.to_path_buf());
            }
        }
    }
    if out.is_empty() {
        return Err(CopyError::NoMatch(src.to_string()));
    }
    Ok(out)
}

/// Runs one COPY/ADD of `sources` to guest path `dest` (absolute).
pub fn copy_sources(o: &CopyOptions, sources: &[String], dest: &str) -> Result<(), CopyError> {
    let mut rels = Vec::new();
    for s in sources {
        if o.add && (s.starts_with("http://") || s.starts_with("https://")) {
            return Err(CopyError::Url(s.clone()));
        }
        rels.extend(expand_source(o, s)?);
    }
    let dest_is_dir = dest.ends_with('/') || rels.len() > 1 || {
        let parts = clean_path(dest.as_bytes())?;
        resolve_in_root(o.root, &parts, false)
            .map(|r| o.root.join(r).is_dir())
            .unwrap_or(false)
    };
    for rel in rels {
        let from = o.context.join(&rel);
        let m = fs::symlink_metadata(&from).map_err(|e| ctx_err(&from, e))?;
        if o.skipped(&m) {
            continue;
        }
        if m.is_dir() {
            let to = guest_dir(o, dest)?;
            copy_dir(o, &from, &rel, &to)?;
        } else if o.add && m.is_file() && is_tar_archive(&from) {
            let to = guest_dir(o, dest)?;
            let f = File::open(&from).map_err(|e| ctx_err(&from, e))?;
            let tar = cradle_image::unpack::decompress(f)?;
            let opts = UnpackOptions {
                whiteouts: false,
                ..UnpackOptions::default()
            };
            apply_layer(&to, tar, &opts)?;
        } else if dest_is_dir {
            let to = guest_dir(o, dest)?;
            let name = rel.file_name().unwrap_or(OsStr::new("file"));
            copy_leaf(o, &from, &m, &to.join(name))?;
        } else {
            let (parent, name) = guest_parent(o.root, dest)?;
            let name = name.ok_or(CopyError::RootDestination)?;
            copy_leaf(o, &from, &m, &parent.join(name))?;
        }
    }
    Ok(())
}
