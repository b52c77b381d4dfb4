//! Reading a `docker save` tarball (`docker-archive:PATH[:REF]`).
//!
//! The archive is an uncompressed tar holding `manifest.json`, the image
//! config and one tar per layer. Layers are read in place (by offset), the
//! config's digest is checked when its file name is a digest, and every
//! layer is checked against the config's `rootfs.diff_ids`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

use crate::config::ImageConfig;
use crate::digest::{read_verified, Digest};
use crate::error::{ImageError, Result};
use crate::image::{DigestOf, Image, Layer};

/// Biggest JSON document we read into memory.
const JSON_LIMIT: u64 = 16 << 20;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Opens a docker-archive; `reference` picks one of several images by
/// one of its `RepoTags` (`name:tag`).
pub fn open(path: &Path, reference: Option<&str>) -> Result<Image> {
    let file = File::open(path).map_err(|e| ImageError::io(path, e))?;
    let mut index: HashMap<String, (u64, u64)> = HashMap::new();
    let mut archive = tar::Archive::new(BufReader::new(file));
    for entry in archive.entries().map_err(ImageError::Tar)? {
        let entry = entry.map_err(ImageError::Tar)?;
        let name = String::from_utf8_lossy(&entry.path_bytes())
            .trim_start_matches("./")
            .to_string();
        if entry.header().entry_type().is_file() {
            index.insert(name, (entry.raw_file_position(), entry.size()));
        }
    }
    let read_member = |name: &str, expected: Option<&Digest>| -> Result<Vec<u8>> {
        let &(off, size) = index
            .get(name.trim_start_matches("./"))
            .ok_or_else(|| ImageError::NotFound(format!("{name} in {}", path.display())))?;
        let mut f = File::open(path).map_err(|e| ImageError::io(path, e))?;
        f.seek(SeekFrom::Start(off))
            .map_err(|e| ImageError::io(path, e))?;
        match expected {
            Some(d) => read_verified(f.take(size), d, Some(size), JSON_LIMIT, name),
            None => {
                if size > JSON_LIMIT {
                    return Err(ImageError::Unsupported(format!("{name} is too large")));
                }
                let mut v = Vec::new();
                f.take(size)
                    .read_to_end(&mut v)
                    .map_err(|e| ImageError::io(path, e))?;
                Ok(v)
            }
        }
    };
    let manifest: Vec<ManifestEntry> = serde_json::from_slice(&read_member("manifest.json", None)?)
        .map_err(|e| ImageError::Json {
            what: "manifest.json".into(),
            msg: e.to_string(),
        })?;
    let entry = match reference {
        Some(r) => manifest
            .iter()
            .find(|m| {
                m.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == r || tag_matches(t, r))
            })
            .ok_or_else(|| ImageError::NotFound(format!("{r} in {}", path.display())))?,
        None => match manifest.as_slice() {
            [one] => one,
            [] => return Err(ImageError::NotFound("no image in manifest.json".into())),
            _ => {
                return Err(ImageError::Ambiguous(format!(
                    "{} holds {} images; name one as docker-archive:PATH:NAME:TAG",
                    path.display(),
                    manifest.len()
                )))
            }
        },
    };
    let config_digest = digest_from_name(&entry.config);
    let raw = read_member(&entry.config, config_digest.as_ref())?;
    let oci = oci_spec::image::ImageConfiguration::from_reader(&raw[..]).map_err(|e| {
        ImageError::Json {
            what: entry.config.clone(),
            msg: e.to_string(),
        }
    })?;
    let diff_ids = oci.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::Json {
            what: entry.config.clone(),
            msg: format!(
                "{} diff_ids for {} layers",
                diff_ids.len(),
                entry.layers.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(diff_ids) {
        let &(offset, size) = index
            .get(name.trim_start_matches("./"))
            .ok_or_else(|| ImageError::NotFound(format!("{name} in {}", path.display())))?;
        layers.push(Layer {
            file: path.to_path_buf(),
            offset,
            size,
            digest: Digest::parse(diff_id)?,
            digest_of: DigestOf::Uncompressed,
        });
    }
    Ok(Image {
        config: ImageConfig::from_oci(&oci),
        layers,
    })
}

/// `busybox` matches `busybox:latest` and `docker.io/library/busybox:latest`.
fn tag_matches(tag: &str, r: &str) -> bool {
    let with_latest = if r.rsplit('/').next().is_some_and(|last| last.contains(':')) {
        r.to_string()
    } else {
        format!("{r}:latest")
    };
    tag == with_latest || tag.ends_with(&format!("/{with_latest}"))
}

/// `HEX.json` (classic docker save) or `blobs/sha256/HEX` (docker 25+).
fn digest_from_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next()?;
    let hex = base.strip_suffix(".json").unwrap_or(base);
    let alg = if name.contains("blobs/sha512/") {
        "sha512"
    } else {
        "sha256"
    };
    Digest::parse(&format!("{alg}:{hex}")).ok()
}
