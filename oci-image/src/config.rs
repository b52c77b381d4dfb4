//! The image config that matters to run a container, in one small struct.
//!
//! It is filled from an OCI/Docker image configuration and is also the
//! schema of the JSON file bali stores inside its images.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};

/// Entrypoint, command, environment and the rest of what a runtime needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// Executable and leading arguments; `None` when the image has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Default arguments (or the command when there is no entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries, in order.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; empty means `/`.
    #[serde(default)]
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    #[serde(default)]
    pub user: String,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `PORT/PROTO` entries, e.g. `80/tcp`.
    #[serde(default)]
    pub exposed_ports: Vec<String>,
}

impl ImageConfig {
    /// Takes the runtime part of an OCI (or Docker) image configuration.
    pub fn from_oci(c: &oci_spec::image::ImageConfiguration) -> Self {
        let Some(c) = c.config() else {
            return ImageConfig::default();
        };
        let mut ports = c.exposed_ports().clone().unwrap_or_default();
        ports.sort();
        ImageConfig {
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().unwrap_or_default(),
            user: c.user().clone().unwrap_or_default(),
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            exposed_ports: ports,
        }
    }

    /// Parses the JSON form.
    pub fn from_json(data: &[u8]) -> Result<Self> {
        serde_json::from_slice(data).map_err(|e| ImageError::Json {
            what: "image config".into(),
            msg: e.to_string(),
        })
    }

    /// The JSON form, pretty-printed.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings and maps cannot fail.
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The value of `key` in `env`, if set.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|e| match e.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            _ => None,
        })
    }

    /// Sets `key=value`, replacing an earlier entry for the same key.
    pub fn env_set(&mut self, key: &str, value: &str) {
        self.env
            .retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key) && e != key);
        self.env.push(format!("{key}={value}"));
    }

    /// The argv a container starts with: entrypoint followed by cmd.
    pub fn argv(&self) -> Vec<String> {
        let mut v = self.entrypoint.clone().unwrap_or_default();
        v.extend(self.cmd.clone().unwrap_or_default());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_oci_json_and_env() {
        let raw = br#"{"architecture":"amd64","os":"linux",
            "config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],"Env":["PATH=/bin","A=1"],
            "WorkingDir":"/w","User":"1:2","Labels":{"b":"2","a":"1"},
            "ExposedPorts":{"80/tcp":{},"53/udp":{}}},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let oci = oci_spec::image::ImageConfiguration::from_reader(&raw[..]).unwrap();
        let mut c = ImageConfig::from_oci(&oci);
        assert_eq!(c.argv(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.user, "1:2");
        assert_eq!(c.exposed_ports, ["53/udp", "80/tcp"]);
        assert_eq!(c.labels.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(c.env_get("A"), Some("1"));
        c.env_set("A", "2");
        assert_eq!(c.env, ["PATH=/bin", "A=2"]);
        let back = ImageConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        assert!(ImageConfig::from_json(b"{").is_err());
    }
}
