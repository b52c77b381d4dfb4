//! The bali image on disk: a flattened rootfs tar with the image config at
//! [`CONFIG_PATH`], signed (see [`crate::sign`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cradle_image::{apply_layer, ImageConfig, UnpackOptions};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::sign::{SignError, SigningWriter, VerifyingReader};

/// Where the image config lives inside the tar.
pub const CONFIG_PATH: &str = ".bali/config.json";
/// Its directory, which `bali` owns in every image.
const CONFIG_DIR: &str = ".bali";

/// Errors writing or reading a bali image.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading the rootfs or writing the tar.
    #[error("{0}: {1}")]
    Io(String, io::Error),
    /// The signature check failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Unpacking failed.
    #[error(transparent)]
    Image(#[from] cradle_image::ImageError),
}

fn ioe(p: &Path) -> impl Fn(io::Error) -> PackError + '_ {
    move |e| PackError::Io(p.display().to_string(), e)
}

fn dir_header(mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// Writes the rootfs at `root` and `config` as a signed image to `out`.
pub fn write_image<W: Write>(
    root: &Path,
    config: &ImageConfig,
    out: W,
    key: &SigningKey,
) -> Result<W, PackError> {
    let mut b = tar::Builder::new(SigningWriter::new(out));
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let json = config.to_json();
    let mut h = dir_header(0o755);
    b.append_data(&mut h, format!("{CONFIG_DIR}/"), io::empty())
        .map_err(ioe(root))?;
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(json.len() as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, CONFIG_PATH, &json[..])
        .map_err(ioe(root))?;
    let mut links = HashMap::new();
    walk(root, Path::new(""), &mut b, &mut links)?;
    let w = b.into_inner().map_err(ioe(root))?;
    Ok(w.finish(key)?)
}

/// Appends everything below `root/rel`, sorted by name, not following links.
fn walk<W: Write>(
    root: &Path,
    rel: &Path,
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), PackError> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(ioe(&dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(ioe(&dir))?;
    names.sort();
    for name in names {
        let r = rel.join(&name);
        if rel.as_os_str().is_empty() && name == CONFIG_DIR {
            continue;
        }
        let p = root.join(&r);
        let m = fs::symlink_metadata(&p).map_err(ioe(&p))?;
        let ft = m.file_type();
        if ft.is_socket() {
            continue;
        }
        let attrs = xattrs_of(&p);
        if !attrs.is_empty() {
            let pax: Vec<(String, &[u8])> = attrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), &v[..]))
                .collect();
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                .map_err(ioe(&p))?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(&m, tar::HeaderMode::Complete);
        if ft.is_dir() {
            h.set_size(0);
            let mut named = r.clone().into_os_string();
            named.push("/");
            b.append_data(&mut h, named, io::empty()).map_err(ioe(&p))?;
            walk(root, &r, b, links)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&p).map_err(ioe(&p))?;
            h.set_size(0);
            b.append_link(&mut h, &r, target).map_err(ioe(&p))?;
        } else if ft.is_file() {
            if m.nlink() > 1 {
                if let Some(first) = links.get(&(m.dev(), m.ino())) {
                    h.set_entry_type(tar::EntryType::Link);
                    h.set_size(0);
                    b.append_link(&mut h, &r, first).map_err(ioe(&p))?;
                    continue;
                }
                links.insert((m.dev(), m.ino()), r.clone());
            }
            let f = File::open(&p).map_err(ioe(&p))?;
            b.append_data(&mut h, &r, f.take(m.len()))
                .map_err(ioe(&p))?;
        } else {
            // Devices and fifos: header only.
            h.set_size(0);
            b.append_data(&mut h, &r, io::empty()).map_err(ioe(&p))?;
        }
    }
    Ok(())
}

/// Extended attributes worth carrying in an image (file capabilities,
/// `user.*`, `trusted.*`), as Docker does; SELinux labels and ACLs stay
/// with the host.
fn xattrs_of(p: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(names) = xattr::list(p) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = names
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with("security.selinux") && !n.starts_with("system."))
        .filter_map(|n| xattr::get(p, &n).ok().flatten().map(|v| (n, v)))
        .collect();
    out.sort();
    out
}

/// Unpacks a signed image into `root` while verifying it, then reads and
/// removes its config. Until this returns `Ok`, `root` holds untrusted
/// data that the caller must discard.
pub fn read_image<R: Read>(
    raw: R,
    key: &VerifyingKey,
    root: &Path,
    preserve_owner: bool,
) -> Result<ImageConfig, PackError> {
    let mut vr = VerifyingReader::new(raw);
    let opts = UnpackOptions {
        preserve_owner,
        whiteouts: false,
    };
    let applied = apply_layer(root, &mut vr, &opts);
    // A broken signature explains a broken tar better than the tar error.
    let verified = vr.finish(key);
    match (applied, verified) {
        (_, Err(e)) => return Err(e.into()),
        (Err(e), Ok(_)) => return Err(e.into()),
        _ => {}
    }
    let cfg_dir = root.join(CONFIG_DIR);
    let cfg_file = cfg_dir.join("config.json");
    let config = match fs::symlink_metadata(&cfg_file) {
        Ok(m) if m.is_file() => {
            ImageConfig::from_json(&fs::read(&cfg_file).map_err(ioe(&cfg_file))?)?
        }
        _ => ImageConfig::default(),
    };
    match fs::symlink_metadata(&cfg_dir) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(&cfg_dir).map_err(ioe(&cfg_dir))?,
        Ok(_) => fs::remove_file(&cfg_dir).map_err(ioe(&cfg_dir))?,
        Err(_) => {}
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cap_net_raw+ep` as stored in security.capability (VFS_CAP_REVISION_2).
    const CAP_NET_RAW: [u8; 20] = [
        0x01, 0, 0, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn round_trip_keeps_metadata_links_and_capabilities() {
        let src = tempfile::tempdir().unwrap();
        let r = src.path();
        fs::create_dir(r.join("bin")).unwrap();
        fs::write(r.join("bin/ping"), b"elf").unwrap();
        xattr::set(r.join("bin/ping"), "security.capability", &CAP_NET_RAW).unwrap();
        xattr::set(r.join("bin/ping"), "user.note", b"hi").unwrap();
        fs::hard_link(r.join("bin/ping"), r.join("bin/ping2")).unwrap();
        std::os::unix::fs::symlink("ping", r.join("bin/p")).unwrap();
        std::os::unix::fs::lchown(r.join("bin/p"), Some(7), Some(8)).unwrap();
        // A stale config dir in the rootfs is replaced, not packed.
        fs::create_dir(r.join(".bali")).unwrap();
        fs::write(r.join(".bali/config.json"), b"{}").unwrap();
        let cfg = ImageConfig {
            cmd: Some(vec!["/bin/ping".into()]),
            ..Default::default()
        };
        let key = SigningKey::from_bytes(&[9; 32]);
        let img = write_image(r, &cfg, Vec::new(), &key).unwrap();

        let dst = tempfile::tempdir().unwrap();
        let d = dst.path();
        let got = read_image(&img[..], &key.verifying_key(), d, true).unwrap();
        assert_eq!(got, cfg);
        assert!(!d.join(".bali").exists());
        assert_eq!(fs::read(d.join("bin/ping2")).unwrap(), b"elf");
        let (a, b) = (
            fs::metadata(d.join("bin/ping")).unwrap(),
            fs::metadata(d.join("bin/ping2")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "hard link kept");
        let l = fs::symlink_metadata(d.join("bin/p")).unwrap();
        assert_eq!((l.uid(), l.gid()), (7, 8));
        assert_eq!(
            xattr::get(d.join("bin/ping"), "security.capability").unwrap(),
            Some(CAP_NET_RAW.to_vec())
        );
        assert_eq!(
            xattr::get(d.join("bin/ping"), "user.note").unwrap(),
            Some(b"hi".to_vec())
        );
        // Another key: refused, whatever was unpacked is the caller's to drop.
        let other = SigningKey::from_bytes(&[10; 32]).verifying_key();
        let dst2 = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_image(&img[..], &other, dst2.path(), true),
            Err(PackError::Sign(SignError::BadSignature(_)))
        ));
    }
}
