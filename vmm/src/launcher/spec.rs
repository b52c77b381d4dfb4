//! The small value syntaxes of `kcradle summon`: volumes, published ports,
//! sizes and the entrypoint. Each parser refuses a bad value with one line,
//! so clap turns it into exit status 2 before anything is made.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A bad value on the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SpecError(pub String);

fn bad(msg: impl Into<String>) -> SpecError {
    SpecError(msg.into())
}

/// Smallest LV volume: below this no filesystem fits.
pub const MIN_LV_SIZE: u64 = 16 << 20;

/// A byte size: `512M`, `10G`, `1T`, `4096K` (binary units) or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, SpecError> {
    let err = || bad(format!("bad size {s:?} (examples: 512M, 10G)"));
    let (digits, shift) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 10),
        Some((i, 'M' | 'm')) => (&s[..i], 20),
        Some((i, 'G' | 'g')) => (&s[..i], 30),
        Some((i, 'T' | 't')) => (&s[..i], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let n: u64 = digits.parse().map_err(|_| err())?;
    n.checked_mul(1 << shift).ok_or_else(err)
}

/// Volume and container names: `[A-Za-z0-9_.-]+`, not starting with `.`,
/// so they are safe as file names and virtiofs tags.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn mount_point(name: &str, p: &str) -> Result<PathBuf, SpecError> {
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p == "/" {
        return Err(bad(format!(
            "volume {name}: mount point {p:?} must be an absolute path other than /"
        )));
    }
    Ok(PathBuf::from(p))
}

/// `--volume gfs:NAME:/path[:ro]` or `--volume lv:NAME:SIZE:/path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VolumeSpec {
    /// A shared tree `GFS_ROOT/NAME`, served by virtiofsd-gfs.
    Gfs {
        /// Volume name.
        name: String,
        /// Where the container sees it.
        mount_point: PathBuf,
        /// Mounted read-only.
        read_only: bool,
    },
    /// A block volume file `LV_ROOT/NAME.img`, served by blk-lv.
    Lv {
        /// Volume name.
        name: String,
        /// Size in bytes.
        size: u64,
        /// Where the container sees it.
        mount_point: PathBuf,
    },
}

impl VolumeSpec {
    /// The volume's name.
    pub fn name(&self) -> &str {
        match self {
            VolumeSpec::Gfs { name, .. } | VolumeSpec::Lv { name, .. } => name,
        }
    }
}

impl FromStr for VolumeSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let parts: Vec<&str> = s.split(':').collect();
        let check_name = |n: &str| {
            if valid_name(n) {
                Ok(n.to_string())
            } else {
                Err(bad(format!(
                    "bad volume name {n:?}: use [A-Za-z0-9_.-], not starting with '.'"
                )))
            }
        };
        match parts.as_slice() {
            ["gfs", name, path] => Ok(VolumeSpec::Gfs {
                name: check_name(name)?,
                mount_point: mount_point(name, path)?,
                read_only: false,
            }),
            ["gfs", name, path, "ro"] => Ok(VolumeSpec::Gfs {
                name: check_name(name)?,
                mount_point: mount_point(name, path)?,
                read_only: true,
            }),
            ["gfs", _, _, opt] => Err(bad(format!("bad gfs volume option {opt:?}: only ro"))),
            ["lv", name, size, path] => {
                let name = check_name(name)?;
                let bytes = parse_size(size).map_err(|e| bad(format!("volume {name}: {e}")))?;
                if bytes < MIN_LV_SIZE || bytes % 4096 != 0 {
                    return Err(bad(format!(
                        "volume {name}: size {size:?} must be at least 16M and a multiple of 4K"
                    )));
                }
                Ok(VolumeSpec::Lv {
                    mount_point: mount_point(&name, path)?,
                    name,
                    size: bytes,
                })
            }
            _ => Err(bad(format!(
                "bad volume {s:?}: expected gfs:NAME:/path[:ro] or lv:NAME:SIZE:/path"
            ))),
        }
    }
}

/// Transport of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The name nft and docker use.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `--publish HOSTPORT:PORT[/tcp|/udp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishSpec {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the pod.
    pub port: u16,
    /// Transport.
    pub proto: Proto,
}

impl FromStr for PublishSpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        let err = || {
            bad(format!(
                "bad --publish {s:?}: expected HOSTPORT:PORT[/tcp|/udp]"
            ))
        };
        let (ports, proto) = match s.split_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return Err(err()),
            None => (s, Proto::Tcp),
        };
        let (h, p) = ports.split_once(':').ok_or_else(err)?;
        let port = |v: &str| v.parse::<u16>().ok().filter(|&n| n != 0).ok_or_else(err);
        Ok(PublishSpec {
            host_port: port(h)?,
            port: port(p)?,
            proto,
        })
    }
}

/// `--entrypoint`: a JSON array (`'["/bin/sh","-c"]'`) or one executable,
/// as docker's flag of the same name.
pub fn parse_entrypoint(s: &str) -> Result<Vec<String>, SpecError> {
    if s.trim_start().starts_with('[') {
        let v: Vec<String> = serde_json::from_str(s)
            .map_err(|e| bad(format!("bad --entrypoint JSON array: {e}")))?;
        return Ok(v);
    }
    if s.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![s.to_string()])
}

/// A parsed `--entrypoint` (a newtype so clap keeps it one value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entrypoint(pub Vec<String>);

impl FromStr for Entrypoint {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        parse_entrypoint(s).map(Entrypoint)
    }
}

/// `--env K=V` (or `K`, taking the value from kcradle's environment, as
/// docker does).
pub fn parse_env(s: &str) -> Result<String, SpecError> {
    let key = s.split('=').next().unwrap_or("");
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err(bad(format!("bad --env {s:?}: expected KEY=VALUE")));
    }
    if s.contains('=') {
        return Ok(s.to_string());
    }
    match std::env::var(key) {
        Ok(v) => Ok(format!("{key}={v}")),
        Err(_) => Err(bad(format!(
            "--env {key}: not set in kcradle's environment"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        assert_eq!(
            "gfs:shared:/data:ro".parse::<VolumeSpec>().unwrap(),
            VolumeSpec::Gfs {
                name: "shared".into(),
                mount_point: "/data".into(),
                read_only: true
            }
        );
        assert_eq!(
            "lv:db:1G:/var/lib/db".parse::<VolumeSpec>().unwrap(),
            VolumeSpec::Lv {
                name: "db".into(),
                size: 1 << 30,
                mount_point: "/var/lib/db".into()
            }
        );
        for bad in [
            "lv:db:10X:/x",
            "lv:db:0:/x",
            "lv:db:1M:/x",
            "lv:db:-1G:/x",
            "lv:db:99999999999999999999G:/x",
            "gfs:../x:/d",
            "gfs:x:rel",
            "gfs:x:/",
            "gfs:x:/a/../b",
            "gfs:x:/d:rw",
            "nfs:x:/d",
            "lv:x:/d",
        ] {
            assert!(bad.parse::<VolumeSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn publish_and_entrypoint() {
        assert_eq!(
            "8080:80".parse::<PublishSpec>().unwrap(),
            PublishSpec {
                host_port: 8080,
                port: 80,
                proto: Proto::Tcp
            }
        );
        assert_eq!(
            "53:53/udp".parse::<PublishSpec>().unwrap().proto,
            Proto::Udp
        );
        for bad in ["80", "0:80", "80:70000", "80:80/sctp", "a:b"] {
            assert!(bad.parse::<PublishSpec>().is_err(), "{bad}");
        }
        assert_eq!(parse_entrypoint("/bin/sh").unwrap(), ["/bin/sh"]);
        assert_eq!(
            parse_entrypoint(r#"["/bin/sh","-c"]"#).unwrap(),
            ["/bin/sh", "-c"]
        );
        assert!(parse_entrypoint("[1]").is_err());
        assert_eq!(parse_env("A=b=c").unwrap(), "A=b=c");
        assert!(parse_env("=x").is_err());
    }
}
