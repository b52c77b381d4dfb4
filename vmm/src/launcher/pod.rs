//! The pod config cradle-init reads (schema version 1, `docs/guest.md`),
//! built from the image config and summon's options.
//!
//! kcradle writes it as JSON without linking the guest crate; the tests
//! parse every config written here with cradle-init's own parser, so the
//! two cannot drift apart unnoticed.

use serde_json::{json, Value};

use cradle_image::ImageConfig;

use super::bundle::BundleVolume;

/// The virtiofs tag of the image rootfs.
pub const ROOTFS_TAG: &str = "rootfs";
/// The container's name inside the pod.
pub const CONTAINER_NAME: &str = "main";

/// The virtiofs tag of GFS volume `name`.
pub fn gfs_tag(name: &str) -> String {
    format!("gfs-{name}")
}

/// The virtio-blk serial of LV volume `name` (at most 20 bytes, the
/// virtio-blk ID length; longer names are cut, summon checks uniqueness).
pub fn lv_serial(name: &str) -> String {
    let s = format!("lv-{name}");
    s.chars().take(20).collect()
}

/// What summon's options change in the image's process.
#[derive(Clone, Debug, Default)]
pub struct ProcessOverrides {
    /// `--entrypoint`: replaces the image's entrypoint and drops its cmd
    /// (as docker does) unless `cmd` is also given.
    pub entrypoint: Option<Vec<String>>,
    /// `--cmd`: replaces the image's cmd.
    pub cmd: Option<Vec<String>>,
    /// `--env`: added after the image's, replacing the same keys.
    pub env: Vec<String>,
}

/// The container process: image config merged with the overrides.
pub fn process(image: &ImageConfig, o: &ProcessOverrides) -> Value {
    let mut cfg = image.clone();
    if let Some(e) = &o.entrypoint {
        cfg.entrypoint = Some(e.clone());
        cfg.cmd = None;
    }
    if let Some(c) = &o.cmd {
        cfg.cmd = Some(c.clone());
    }
    for kv in &o.env {
        match kv.split_once('=') {
            Some((k, v)) => cfg.env_set(k, v),
            None => cfg.env.push(kv.clone()),
        }
    }
    if cfg.env_get("PATH").is_none() {
        cfg.env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let mut p = json!({
        "entrypoint": cfg.entrypoint.unwrap_or_default(),
        "cmd": cfg.cmd.unwrap_or_default(),
        "env": cfg.env,
    });
    if !cfg.working_dir.is_empty() {
        p["workdir"] = json!(cfg.working_dir);
    }
    if !cfg.user.is_empty() {
        p["user"] = json!(cfg.user);
    }
    p
}

/// The pod config of a bundle, without `network` and `modules` (added by
/// `run`).
pub fn pod_config(id: &str, reference: &str, process: Value, volumes: &[BundleVolume]) -> Value {
    let vols: Vec<Value> = volumes
        .iter()
        .map(|v| match v {
            BundleVolume::Gfs {
                name,
                mount_point,
                read_only,
                ..
            } => json!({
                "name": name,
                "source": {"virtiofs": {"tag": gfs_tag(name)}},
                "mount_point": mount_point,
                "read_only": read_only,
            }),
            BundleVolume::Lv {
                name, mount_point, ..
            } => json!({
                "name": name,
                "source": {"block": {"serial": lv_serial(name), "fs_type": "ext4", "mkfs": true}},
                "mount_point": mount_point,
            }),
        })
        .collect();
    json!({
        "version": 1,
        "id": id,
        "hostname": id,
        "volumes": vols,
        "control_port": true,
        "containers": [{
            "name": CONTAINER_NAME,
            "image": {"reference": reference, "rootfs": {"virtiofs": ROOTFS_TAG}},
            "process": process,
            "critical": true,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_follow_docker() {
        let img = ImageConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            env: vec!["A=1".into()],
            ..Default::default()
        };
        let p = process(&img, &ProcessOverrides::default());
        assert_eq!(p["entrypoint"], json!(["/entry"]));
        assert_eq!(p["cmd"], json!(["serve"]));
        assert!(p["env"][0].as_str().unwrap().starts_with("PATH="));
        let p = process(
            &img,
            &ProcessOverrides {
                entrypoint: Some(vec!["/bin/sh".into()]),
                env: vec!["A=2".into()],
                ..Default::default()
            },
        );
        assert_eq!(p["cmd"], json!([]));
        assert!(p["env"].as_array().unwrap().contains(&json!("A=2")));
        assert!(!p["env"].as_array().unwrap().contains(&json!("A=1")));
        let p = process(
            &img,
            &ProcessOverrides {
                cmd: Some(vec!["x".into()]),
                ..Default::default()
            },
        );
        assert_eq!(p["entrypoint"], json!(["/entry"]));
        assert_eq!(p["cmd"], json!(["x"]));
        assert_eq!(lv_serial("a-very-long-volume-name-here").len(), 20);
    }
}
