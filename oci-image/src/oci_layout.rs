//! Reading an OCI image layout directory (`oci:PATH[:TAG]`).
//!
//! `index.json` names manifests; a tag is matched against the
//! `org.opencontainers.image.ref.name` annotation, as skopeo and umoci
//! write it. Nested indexes are followed to the linux/amd64 manifest.
//! Every blob read is checked against its descriptor's digest and size.

use std::fs::File;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::config::ImageConfig;
use crate::digest::{read_verified, Digest};
use crate::error::{ImageError, Result};
use crate::image::{DigestOf, Image, Layer};

/// Biggest JSON document we read into memory.
const JSON_LIMIT: u64 = 16 << 20;
/// The annotation holding a manifest's tag.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Nested indexes followed at most this deep.
const MAX_DEPTH: usize = 4;

/// The path of a blob inside a layout (the digest is validated hex).
pub fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm_name()).join(d.hex())
}

fn read_blob(dir: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let d = Digest::parse(desc.digest().as_ref())?;
    let p = blob_path(dir, &d);
    let f = File::open(&p).map_err(|e| ImageError::io(&p, e))?;
    read_verified(f, &d, Some(desc.size()), JSON_LIMIT, what)
}

fn media(desc: &Descriptor) -> String {
    desc.media_type().to_string()
}

fn is_index(m: &str) -> bool {
    m.ends_with("image.index.v1+json") || m.ends_with("manifest.list.v2+json")
}

pub(crate) fn pick_platform<'a>(descs: &'a [Descriptor], what: &str) -> Result<&'a Descriptor> {
    if let [one] = descs {
        return Ok(one);
    }
    descs
        .iter()
        .find(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
            })
        })
        .ok_or_else(|| ImageError::NotFound(format!("a linux/amd64 manifest in {what}")))
}

/// Opens the image tagged `tag` (or the only one) in layout `dir`.
pub fn open(dir: &Path, tag: Option<&str>) -> Result<Image> {
    let layout = dir.join("oci-layout");
    if !layout.is_file() {
        return Err(ImageError::NotFound(format!(
            "{} (not an OCI layout)",
            layout.display()
        )));
    }
    let index_path = dir.join("index.json");
    let index = ImageIndex::from_file(&index_path).map_err(|e| ImageError::Json {
        what: index_path.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut desc = match tag {
        Some(t) => index
            .manifests()
            .iter()
            .find(|d| {
                d.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME))
                    .is_some_and(|n| n == t)
            })
            .ok_or_else(|| ImageError::NotFound(format!("tag {t} in {}", dir.display())))?
            .clone(),
        None => match index.manifests().as_slice() {
            [one] => one.clone(),
            [] => return Err(ImageError::NotFound("no image in index.json".into())),
            _ => {
                return Err(ImageError::Ambiguous(format!(
                    "{} holds {} images; name one as oci:PATH:TAG",
                    dir.display(),
                    index.manifests().len()
                )))
            }
        },
    };
    let mut depth = 0;
    while is_index(&media(&desc)) {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(ImageError::Unsupported("indexes nested too deep".into()));
        }
        let raw = read_blob(dir, &desc, "image index")?;
        let nested = ImageIndex::from_reader(&raw[..]).map_err(|e| ImageError::Json {
            what: "image index".into(),
            msg: e.to_string(),
        })?;
        desc = pick_platform(nested.manifests(), "image index")?.clone();
    }
    let raw = read_blob(dir, &desc, "image manifest")?;
    let manifest = ImageManifest::from_reader(&raw[..]).map_err(|e| ImageError::Json {
        what: "image manifest".into(),
        msg: e.to_string(),
    })?;
    let raw = read_blob(dir, manifest.config(), "image config")?;
    let oci = oci_spec::image::ImageConfiguration::from_reader(&raw[..]).map_err(|e| {
        ImageError::Json {
            what: "image config".into(),
            msg: e.to_string(),
        }
    })?;
    let mut layers = Vec::new();
    for l in manifest.layers() {
        let m = media(l);
        if m.contains("zstd") || m.contains("nondistributable") && !m.contains("tar") {
            return Err(ImageError::Unsupported(format!("layer media type {m}")));
        }
        let digest = Digest::parse(l.digest().as_ref())?;
        layers.push(Layer {
            file: blob_path(dir, &digest),
            offset: 0,
            size: l.size(),
            digest,
            digest_of: DigestOf::Stored,
        });
    }
    Ok(Image {
        config: ImageConfig::from_oci(&oci),
        layers,
    })
}
