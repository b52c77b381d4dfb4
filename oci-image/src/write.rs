//! Writing images: a docker-archive tarball or an OCI layout from layer
//! tars and a config. Used to make test and demo images without docker.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::config::ImageConfig;
use crate::error::{ImageError, Result};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The OCI/Docker image configuration JSON for `config` over `layers`
/// (uncompressed tars, bottom first).
pub fn image_config_json(config: &ImageConfig, layers: &[Vec<u8>]) -> Vec<u8> {
    let mut c = Map::new();
    if let Some(e) = &config.entrypoint {
        c.insert("Entrypoint".into(), json!(e));
    }
    if let Some(e) = &config.cmd {
        c.insert("Cmd".into(), json!(e));
    }
    if !config.env.is_empty() {
        c.insert("Env".into(), json!(config.env));
    }
    if !config.working_dir.is_empty() {
        c.insert("WorkingDir".into(), json!(config.working_dir));
    }
    if !config.user.is_empty() {
        c.insert("User".into(), json!(config.user));
    }
    if !config.labels.is_empty() {
        c.insert("Labels".into(), json!(config.labels));
    }
    if !config.exposed_ports.is_empty() {
        let ports: Map<String, Value> = config
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        c.insert("ExposedPorts".into(), Value::Object(ports));
    }
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha256_hex(l)))
        .collect();
    let v = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": c,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    v.to_string().into_bytes()
}

fn add_file(b: &mut tar::Builder<fs::File>, name: &str, data: &[u8]) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, name, data)
}

/// Writes a `docker save`-style tarball tagged `repo_tag` (`name:tag`).
pub fn write_docker_archive(
    path: &Path,
    config: &ImageConfig,
    layers: &[Vec<u8>],
    repo_tag: &str,
) -> Result<()> {
    let io = |e| ImageError::io(path, e);
    let cfg = image_config_json(config, layers);
    let cfg_name = format!("{}.json", sha256_hex(&cfg));
    let mut b = tar::Builder::new(fs::File::create(path).map_err(io)?);
    let mut names = Vec::new();
    for l in layers {
        let name = format!("{}/layer.tar", sha256_hex(l));
        add_file(&mut b, &name, l).map_err(io)?;
        names.push(name);
    }
    add_file(&mut b, &cfg_name, &cfg).map_err(io)?;
    let manifest = json!([{"Config": cfg_name, "RepoTags": [repo_tag], "Layers": names}]);
    add_file(&mut b, "manifest.json", manifest.to_string().as_bytes()).map_err(io)?;
    b.into_inner().map_err(io)?.sync_all().map_err(io)
}

/// Writes an OCI image layout at `dir` with one image tagged `tag`;
/// layers are gzip-compressed when `gzip`.
pub fn write_oci_layout(
    dir: &Path,
    config: &ImageConfig,
    layers: &[Vec<u8>],
    tag: &str,
    gzip: bool,
) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(|e| ImageError::io(&blobs, e))?;
    let put = |data: &[u8]| -> Result<Value> {
        let hex = sha256_hex(data);
        let p = blobs.join(&hex);
        fs::write(&p, data).map_err(|e| ImageError::io(&p, e))?;
        Ok(json!({"digest": format!("sha256:{hex}"), "size": data.len()}))
    };
    let with_type = |mut v: Value, t: &str| {
        v["mediaType"] = json!(t);
        v
    };
    let mut descs = Vec::new();
    for l in layers {
        let (blob, t) = if gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(l).map_err(|e| ImageError::io(dir, e))?;
            (
                gz.finish().map_err(|e| ImageError::io(dir, e))?,
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        descs.push(with_type(put(&blob)?, t));
    }
    let cfg = with_type(
        put(&image_config_json(config, layers))?,
        "application/vnd.oci.image.config.v1+json",
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": cfg,
        "layers": descs,
    });
    let mut m = with_type(
        put(manifest.to_string().as_bytes())?,
        "application/vnd.oci.image.manifest.v1+json",
    );
    m["annotations"] = json!({ crate::oci_layout::REF_NAME: tag });
    let index = json!({"schemaVersion": 2, "manifests": [m]});
    let w = |name: &str, v: &Value| {
        let p = dir.join(name);
        fs::write(&p, v.to_string()).map_err(|e| ImageError::io(&p, e))
    };
    w("index.json", &index)?;
    w("oci-layout", &json!({"imageLayoutVersion": "1.0.0"}))
}
