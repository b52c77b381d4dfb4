//! The pod config: the one JSON document that tells `cradle-init` what to run.
//!
//! The launcher writes it as `/cradle/config.json` (PID-1 mode) or passes it
//! with `--config` (host mode). Every field has a default except `version`,
//! `id` and each container's `name` and `image`, so a minimal pod is:
//!
//! ```json
//! {
//!   "version": 1,
//!   "id": "demo",
//!   "containers": [
//!     { "name": "web", "image": { "rootfs": { "dir": "/srv/rootfs" } },
//!       "process": { "cmd": ["httpd", "-f"] } }
//!   ]
//! }
//! ```
//!
//! The schema is versioned by `version`; this crate reads version
//! [`CONFIG_VERSION`] and refuses any other, so a launcher and a guest that
//! disagree fail loudly at boot instead of misreading each other. Unknown
//! fields are rejected for the same reason.
//!
//! The full field-by-field reference is in `docs/guest.md`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The schema version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// Why a pod config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pod config {path}: {source}")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The JSON does not match the schema.
    #[error("invalid pod config: {0}")]
    Json(#[from] serde_json::Error),
    /// The JSON matches the schema but its values do not make a pod.
    #[error("invalid pod config: {0}")]
    Invalid(String),
}

/// A whole pod: what PID 1 sets up and the containers it supervises.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodConfig {
    /// Schema version; must be [`CONFIG_VERSION`].
    pub version: u32,
    /// Pod id, shown by vdocker's `/info` and used in container ids.
    pub id: String,
    /// Hostname of the pod (and of its containers); defaults to the id.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Guest networking (PID-1 mode only; host mode leaves the host's alone).
    #[serde(default)]
    pub network: NetworkConfig,
    /// Volumes the pod mounts and bind-mounts into its containers.
    #[serde(default)]
    pub volumes: Vec<VolumeConfig>,
    /// The containers, started in this order.
    pub containers: Vec<ContainerConfig>,
    /// Kernel modules to load before anything else (PID-1 mode): paths of
    /// `.ko` files in the initramfs, in dependency order.
    #[serde(default)]
    pub modules: Vec<PathBuf>,
    /// vdocker, the Docker Engine API subset.
    #[serde(default)]
    pub vdocker: VdockerConfig,
    /// Report milestones through the cradle VMM's control port (I/O port
    /// 0x600). Only the launcher sets it: on any other machine the port
    /// write would hit whatever device sits there.
    #[serde(default)]
    pub control_port: bool,
    /// Seconds between SIGTERM and SIGKILL at shutdown.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
}

fn default_grace() -> u64 {
    10
}

/// Guest network settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Interfaces to configure; `lo` is always brought up.
    #[serde(default)]
    pub interfaces: Vec<InterfaceConfig>,
    /// IPv4 default gateway.
    #[serde(default)]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// IPv6 default gateway.
    #[serde(default)]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Nameservers written to the containers' `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<std::net::IpAddr>,
    /// DNS search domains for `/etc/resolv.conf`.
    #[serde(default)]
    pub search: Vec<String>,
}

/// One network interface.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Interface name in the guest; default `eth0`.
    #[serde(default = "default_ifname")]
    pub name: String,
    /// Addresses with prefix length, v4 or v6: `"169.254.1.2/24"`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// MTU; the kernel's default when absent.
    #[serde(default)]
    pub mtu: Option<u32>,
}

fn default_ifname() -> String {
    "eth0".to_string()
}

/// A volume of the pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// Name, referenced by a container's `upper`.
    pub name: String,
    /// Where the volume comes from.
    pub source: VolumeSource,
    /// Path inside every container where it is bind-mounted; `None` keeps
    /// it out of the containers (e.g. a volume used as an overlay upper).
    #[serde(default)]
    pub mount_point: Option<PathBuf>,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// Where a volume's data lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum VolumeSource {
    /// A virtiofs share by tag.
    Virtiofs {
        /// The virtiofs tag.
        tag: String,
    },
    /// A virtio-blk disk by its serial.
    Block {
        /// The serial the VMM gave the disk (`/sys/block/*/serial`).
        serial: String,
        /// Filesystem type to mount.
        #[serde(default = "default_fs")]
        fs_type: String,
        /// Run `mkfs.<fs_type>` when the disk's first 64 KiB are all zero.
        #[serde(default)]
        mkfs: bool,
    },
    /// A directory of the machine cradle-init runs on (host mode, tests).
    Dir {
        /// The directory.
        path: PathBuf,
    },
    /// A fresh tmpfs.
    Tmpfs,
}

fn default_fs() -> String {
    "ext4".to_string()
}

/// vdocker settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VdockerConfig {
    /// Serve vdocker at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// TCP port, bound on each of the pod's addresses (PID-1 mode).
    #[serde(default = "default_port")]
    pub port: u16,
}

impl Default for VdockerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: default_port(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_port() -> u16 {
    1
}

/// One container of the pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// Name, unique in the pod; the docker CLI can use it instead of the id.
    pub name: String,
    /// The image's root filesystem.
    pub image: ImageConfig,
    /// What runs, as whom, where.
    #[serde(default)]
    pub process: ProcessConfig,
    /// When to start it again after it exits.
    #[serde(default)]
    pub restart: RestartConfig,
    /// Its final exit ends the pod with its exit status.
    #[serde(default)]
    pub critical: bool,
}

/// The image rootfs of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Image reference shown by `docker ps`/`inspect` (informational).
    #[serde(default)]
    pub reference: Option<String>,
    /// Where the files come from.
    pub rootfs: RootfsSource,
    /// Writable layer over the image: overlayfs with the image as its
    /// read-only lower. `false` uses the image directory itself.
    #[serde(default = "default_true")]
    pub overlay: bool,
    /// Name of a pod volume to hold the overlay's upper layer; a tmpfs when
    /// absent.
    #[serde(default)]
    pub upper_volume: Option<String>,
}

/// Where an image rootfs comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RootfsSource {
    /// A local directory (host mode, or a directory in the initramfs).
    Dir(PathBuf),
    /// A virtiofs share by tag, mounted read-only.
    Virtiofs(String),
}

/// The container's process, Docker's `Config` fields of the same names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Image ENTRYPOINT (possibly overridden by the launcher).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Image CMD (possibly overridden); appended to the entrypoint.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory; `/` when absent.
    #[serde(default)]
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved against the
    /// image's `/etc/passwd` and `/etc/group`; root when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Give the process a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open for `docker attach` (docker's `-i`); `/dev/null`
    /// otherwise.
    #[serde(default)]
    pub open_stdin: bool,
}

impl ProcessConfig {
    /// The argv Docker would run: entrypoint followed by cmd.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint
            .iter()
            .chain(self.cmd.iter())
            .cloned()
            .collect()
    }
}

/// When a container that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicyName {
    /// Never.
    #[default]
    No,
    /// After a nonzero exit status.
    OnFailure,
    /// After a zero exit status.
    OnSuccess,
    /// After any exit.
    Always,
}

/// Restart policy of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// Which exits restart it.
    #[serde(default)]
    pub policy: RestartPolicyName,
    /// Give up after this many restarts; unlimited when absent.
    #[serde(default)]
    pub max_restarts: Option<u32>,
    /// Milliseconds to wait before a restart.
    #[serde(default)]
    pub delay_ms: u64,
}

impl RestartConfig {
    /// Whether an exit with `status`, after `restarts` restarts so far,
    /// starts the container again.
    pub fn should_restart(&self, status: i32, restarts: u32) -> bool {
        let wanted = match self.policy {
            RestartPolicyName::No => false,
            RestartPolicyName::OnFailure => status != 0,
            RestartPolicyName::OnSuccess => status == 0,
            RestartPolicyName::Always => true,
        };
        wanted && self.max_restarts.is_none_or(|max| restarts < max)
    }
}

impl PodConfig {
    /// Reads and validates a pod config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates a pod config.
    pub fn parse(json: &[u8]) -> Result<Self, ConfigError> {
        let config: PodConfig = serde_json::from_slice(json)?;
        config.validate()?;
        Ok(config)
    }

    /// The hostname containers see.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.id)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.version != CONFIG_VERSION {
            return bad(format!(
                "version {} is not supported (this cradle-init reads version {CONFIG_VERSION})",
                self.version
            ));
        }
        if !is_name(&self.id) {
            return bad(format!("pod id {:?} must be [A-Za-z0-9_.-]+", self.id));
        }
        if self.containers.is_empty() {
            return bad("a pod needs at least one container".into());
        }
        let mut names = std::collections::HashSet::new();
        for c in &self.containers {
            if !is_name(&c.name) {
                return bad(format!(
                    "container name {:?} must be [A-Za-z0-9_.-]+",
                    c.name
                ));
            }
            if !names.insert(c.name.as_str()) {
                return bad(format!("container name {:?} is used twice", c.name));
            }
            if c.process.argv().is_empty() {
                return bad(format!("container {:?} has no entrypoint or cmd", c.name));
            }
            if let Some(v) = &c.image.upper_volume {
                if !self.volumes.iter().any(|x| &x.name == v) {
                    return bad(format!("container {:?}: no volume named {v:?}", c.name));
                }
            }
        }
        for v in &self.volumes {
            if let Some(p) = &v.mount_point {
                if !p.is_absolute() {
                    return bad(format!("volume {:?}: mount_point must be absolute", v.name));
                }
            }
        }
        for i in &self.network.interfaces {
            for a in &i.addresses {
                parse_cidr(a).map_err(ConfigError::Invalid)?;
            }
        }
        Ok(())
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Parses `ADDR/PREFIX` into an address and a prefix length checked against
/// the address family.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("address {s:?} needs a /prefix"))?;
    let addr: std::net::IpAddr = addr.parse().map_err(|e| format!("address {s:?}: {e}"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|e| format!("address {s:?}: prefix: {e}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(format!("address {s:?}: prefix longer than {max}"));
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = PodConfig::parse(
            br#"{"version":1,"id":"p1","containers":[{"name":"a",
                "image":{"rootfs":{"dir":"/r"}},"process":{"cmd":["true"]}}]}"#,
        )
        .unwrap();
        assert_eq!(c.hostname(), "p1");
        assert_eq!(c.vdocker.port, 1);
        assert!(c.vdocker.enabled);
        assert!(!c.control_port);
        assert!(c.containers[0].image.overlay);
        assert_eq!(c.containers[0].restart.policy, RestartPolicyName::No);
        assert_eq!(c.shutdown_grace_secs, 10);
    }

    #[test]
    fn full_config_round_trips() {
        let json = br#"{"version":1,"id":"p","hostname":"h",
          "network":{"interfaces":[{"name":"eth0","addresses":["169.254.1.2/24","fd00::2/64"],"mtu":1400}],
                     "gateway":"169.254.1.1","nameservers":["169.254.1.1"]},
          "volumes":[{"name":"data","source":{"virtiofs":{"tag":"data"}},"mount_point":"/data"},
                     {"name":"up","source":{"block":{"serial":"vol1","mkfs":true}}}],
          "modules":["/lib/modules/virtio_net.ko"],
          "control_port":true,
          "containers":[{"name":"a","image":{"rootfs":{"virtiofs":"img"},"upper_volume":"up"},
            "process":{"entrypoint":["/bin/sh","-c"],"cmd":["echo hi"],"env":["A=1"],
                       "workdir":"/tmp","user":"nobody","tty":true},
            "restart":{"policy":"on-failure","max_restarts":3,"delay_ms":100},"critical":true}]}"#;
        let c = PodConfig::parse(json).unwrap();
        let again = PodConfig::parse(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(
            again.containers[0].process.argv(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(again.network.interfaces[0].mtu, Some(1400));
        assert!(matches!(
            again.volumes[1].source,
            VolumeSource::Block { ref fs_type, mkfs: true, .. } if fs_type == "ext4"
        ));
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            (r#"{"version":2,"id":"p","containers":[]}"#, "version 2"),
            (r#"{"version":1,"id":"p","containers":[]}"#, "at least one"),
            (r#"{"version":1,"id":"a/b","containers":[]}"#, "pod id"),
            (
                r#"{"version":1,"id":"p","containers":[{"name":"a","image":{"rootfs":{"dir":"/"}}}]}"#,
                "no entrypoint",
            ),
            (
                r#"{"version":1,"id":"p","bogus":1,"containers":[]}"#,
                "unknown field",
            ),
            (
                r#"{"version":1,"id":"p","network":{"interfaces":[{"addresses":["1.2.3.4/40"]}]},
                   "containers":[{"name":"a","image":{"rootfs":{"dir":"/"}},"process":{"cmd":["x"]}}]}"#,
                "prefix longer",
            ),
        ];
        for (json, want) in cases {
            let err = PodConfig::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(want), "{json}: {err}");
        }
    }

    #[test]
    fn restart_policy_counts_restarts() {
        let r = RestartConfig {
            policy: RestartPolicyName::OnFailure,
            max_restarts: Some(2),
            delay_ms: 0,
        };
        assert!(r.should_restart(1, 0));
        assert!(r.should_restart(1, 1));
        assert!(!r.should_restart(1, 2));
        assert!(!r.should_restart(0, 0));
        let s = RestartConfig {
            policy: RestartPolicyName::OnSuccess,
            ..Default::default()
        };
        assert!(s.should_restart(0, 100));
        assert!(!s.should_restart(3, 0));
    }
}
