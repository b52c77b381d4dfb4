//! An opened image: its config and the layers to apply, wherever they live.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::config::ImageConfig;
use crate::digest::{Digest, DigestReader};
use crate::error::{ImageError, Result};
use crate::unpack::{apply_layer, decompress, LayerStats, UnpackOptions};

/// Which bytes a layer's digest covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestOf {
    /// The blob as stored (OCI layouts, registries).
    Stored,
    /// The uncompressed tar (a docker-archive's `diff_ids`).
    Uncompressed,
}

/// One layer: a byte range of a local file and the digest it must have.
#[derive(Clone, Debug)]
pub struct Layer {
    /// File holding the blob.
    pub file: PathBuf,
    /// Offset of the blob in `file`.
    pub offset: u64,
    /// Length of the blob.
    pub size: u64,
    /// Expected digest.
    pub digest: Digest,
    /// What `digest` is computed over.
    pub digest_of: DigestOf,
}

/// An image ready to unpack.
#[derive(Clone, Debug)]
pub struct Image {
    /// Runtime configuration.
    pub config: ImageConfig,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
}

impl Image {
    /// Applies every layer in order onto `root` (an existing directory),
    /// verifying each layer's digest. On error `root` holds a partial tree
    /// that the caller must discard.
    pub fn unpack(&self, root: &Path, opts: &UnpackOptions) -> Result<LayerStats> {
        let mut total = LayerStats::default();
        for (index, layer) in self.layers.iter().enumerate() {
            let s = unpack_layer(root, layer, opts).map_err(|e| ImageError::Layer {
                index,
                digest: layer.digest.to_string(),
                err: Box::new(e),
            })?;
            total.entries += s.entries;
            total.whiteouts += s.whiteouts;
            total.skipped_devices += s.skipped_devices;
            total.skipped_xattrs += s.skipped_xattrs;
        }
        Ok(total)
    }
}

fn unpack_layer(root: &Path, layer: &Layer, opts: &UnpackOptions) -> Result<LayerStats> {
    let mut f = File::open(&layer.file).map_err(|e| ImageError::io(&layer.file, e))?;
    f.seek(SeekFrom::Start(layer.offset))
        .map_err(|e| ImageError::io(&layer.file, e))?;
    let blob = f.take(layer.size);
    let what = format!("layer {}", layer.digest);
    // When unpacking fails, a digest mismatch is the better explanation
    // (a corrupt blob usually breaks the tar first), so it wins.
    match layer.digest_of {
        DigestOf::Stored => {
            let mut dr = DigestReader::new(blob, layer.digest.clone(), Some(layer.size), &what);
            let res = decompress(&mut dr).and_then(|mut tar| {
                let s = apply_layer(root, &mut tar, opts)?;
                // Read the tar's tail (padding after the end blocks).
                std::io::copy(&mut tar, &mut std::io::sink()).map_err(ImageError::Tar)?;
                Ok(s)
            });
            let check = dr.finish();
            match (res, check) {
                (_, Err(e)) => Err(e),
                (r, Ok(())) => r,
            }
        }
        DigestOf::Uncompressed => {
            let tar = decompress(blob)?;
            let mut dr = DigestReader::new(tar, layer.digest.clone(), None, &what);
            let res = apply_layer(root, &mut dr, opts);
            let check = dr.finish();
            match (res, check) {
                (_, Err(e)) => Err(e),
                (r, Ok(())) => r,
            }
        }
    }
}
