//! The VM description `kcradle boot` takes, from flags or a JSON file
//! (`--config`), and its validation. Every check a user can fail is here,
//! so a bad value is one clear line before anything starts.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::seccomp::SeccompMode;

/// Smallest guest RAM we boot: the Debian kernel alone needs ~50 MiB to
/// decompress itself.
pub const MIN_MEMORY: u64 = 64 << 20;
/// Default guest RAM.
pub const DEFAULT_MEMORY: u64 = 512 << 20;
/// Default kernel command line.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";
/// Largest virtqueue the virtio spec allows.
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// A configuration value that is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// A memory size: `512M`, `2G`, `65536K`, or a plain number of MiB (as
/// QEMU's `-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "String")]
pub struct MemorySize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Mib(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for MemorySize {
    type Error = ConfigError;
    fn try_from(repr: SizeRepr) -> Result<Self, ConfigError> {
        match repr {
            SizeRepr::Mib(n) => MemorySize::from_str(&n.to_string()),
            SizeRepr::Text(s) => MemorySize::from_str(&s),
        }
    }
}

impl From<MemorySize> for String {
    fn from(size: MemorySize) -> String {
        format!("{}M", size.0 >> 20)
    }
}

impl FromStr for MemorySize {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        let (digits, shift) = match s.char_indices().last() {
            Some((i, 'K' | 'k')) => (&s[..i], 10),
            Some((i, 'M' | 'm')) => (&s[..i], 20),
            Some((i, 'G' | 'g')) => (&s[..i], 30),
            _ => (s, 20),
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| bad(format!("bad memory size {s:?} (examples: 512M, 2G, 1024)")))?;
        n.checked_mul(1 << shift)
            .map(MemorySize)
            .ok_or_else(|| bad(format!("memory size {s:?} is too large")))
    }
}

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SerialConfig {
    /// kcradle's stdout.
    #[default]
    Stdio,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded.
    None,
}

impl FromStr for SerialConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "stdio" => Ok(SerialConfig::Stdio),
            "none" => Ok(SerialConfig::None),
            _ => match s.strip_prefix("file=") {
                Some(path) if !path.is_empty() => Ok(SerialConfig::File(path.into())),
                _ => Err(bad(format!(
                    "bad serial {s:?}: expected stdio, file=PATH or none"
                ))),
            },
        }
    }
}

impl TryFrom<String> for SerialConfig {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        s.parse()
    }
}

impl From<SerialConfig> for String {
    fn from(s: SerialConfig) -> String {
        match s {
            SerialConfig::Stdio => "stdio".into(),
            SerialConfig::None => "none".into(),
            SerialConfig::File(p) => format!("file={}", p.display()),
        }
    }
}

/// Splits `key=value,key=value` into pairs, refusing keys not in `known`
/// and repeated keys.
fn key_values<'a>(
    what: &str,
    s: &'a str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, ConfigError> {
    let mut seen = HashSet::new();
    s.split(',')
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("bad --{what} item {item:?}: expected key=value")))?;
            if !known.contains(&k) {
                return Err(bad(format!(
                    "unknown --{what} key {k:?} (known: {})",
                    known.join(", ")
                )));
            }
            if !seen.insert(k) {
                return Err(bad(format!("--{what} key {k:?} given twice")));
            }
            Ok((k, v))
        })
        .collect()
}

fn number<T: FromStr>(what: &str, key: &str, v: &str) -> Result<T, ConfigError> {
    v.parse()
        .map_err(|_| bad(format!("bad --{what} {key}={v:?}: expected a number")))
}

fn one() -> u16 {
    1
}

fn default_queue_size() -> u16 {
    256
}

/// A vhost-user-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Request queues.
    #[serde(default = "one")]
    pub num_queues: u16,
    /// Entries per queue.
    #[serde(default = "default_queue_size")]
    pub queue_size: u16,
}

impl FromStr for DiskConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut disk = DiskConfig {
            socket: PathBuf::new(),
            num_queues: 1,
            queue_size: default_queue_size(),
        };
        for (k, v) in key_values("disk", s, &["socket", "num_queues", "queue_size"])? {
            match k {
                "socket" => disk.socket = v.into(),
                "num_queues" => disk.num_queues = number("disk", k, v)?,
                _ => disk.queue_size = number("disk", k, v)?,
            }
        }
        Ok(disk)
    }
}

/// A vhost-user-fs share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsConfig {
    /// Mount tag the guest uses.
    pub tag: String,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Request queues.
    #[serde(default = "one")]
    pub num_queues: u16,
}

impl FromStr for FsConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut fs = FsConfig {
            tag: String::new(),
            socket: PathBuf::new(),
            num_queues: 1,
        };
        for (k, v) in key_values("fs", s, &["tag", "socket", "num_queues"])? {
            match k {
                "tag" => fs.tag = v.into(),
                "socket" => fs.socket = v.into(),
                _ => fs.num_queues = number("fs", k, v)?,
            }
        }
        Ok(fs)
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl FromStr for MacAddr {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let err = || {
            bad(format!(
                "bad MAC address {s:?}: expected six hex bytes like 52:54:00:12:34:56"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if mac[0] & 1 != 0 {
            return Err(bad(format!("MAC address {s} is multicast")));
        }
        Ok(MacAddr(mac))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.0.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A vhost-user-net interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// The guest's MAC.
    pub mac: MacAddr,
    /// RX/TX queue pairs.
    #[serde(default = "one")]
    pub num_queue_pairs: u16,
}

impl FromStr for NetConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (mut socket, mut mac, mut pairs) = (None, None, 1);
        for (k, v) in key_values("net", s, &["socket", "mac", "num_queue_pairs"])? {
            match k {
                "socket" => socket = Some(PathBuf::from(v)),
                "mac" => mac = Some(v.parse()?),
                _ => pairs = number("net", k, v)?,
            }
        }
        Ok(NetConfig {
            socket: socket.ok_or_else(|| bad("--net needs socket=PATH"))?,
            mac: mac.ok_or_else(|| bad("--net needs mac=MAC"))?,
            num_queue_pairs: pairs,
        })
    }
}

fn default_cpus() -> u8 {
    1
}

fn default_memory() -> MemorySize {
    MemorySize(DEFAULT_MEMORY)
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.into()
}

/// One microVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// bzImage to boot.
    pub kernel: PathBuf,
    /// Initramfs parts, concatenated in order.
    #[serde(default)]
    pub initrd: Vec<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// vCPUs.
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    /// Guest RAM.
    #[serde(default = "default_memory")]
    pub memory: MemorySize,
    /// Back RAM with 2 MiB hugepages.
    #[serde(default)]
    pub hugepages: bool,
    /// vhost-user-blk disks.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// vhost-user-fs shares.
    #[serde(default)]
    pub fs: Vec<FsConfig>,
    /// vhost-user-net interfaces.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// Guest console.
    #[serde(default)]
    pub serial: SerialConfig,
    /// What a syscall outside a thread's allowlist does.
    #[serde(default)]
    pub seccomp: SeccompMode,
    /// Directory to pivot into before the vCPUs start (see `jail`).
    #[serde(default)]
    pub jail: Option<PathBuf>,
}

fn check_file(what: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(bad(format!(
            "{what} {} is not a regular file",
            path.display()
        ))),
        Err(e) => Err(bad(format!("{what} {}: {e}", path.display()))),
    }
}

/// Most queue pairs of a `--net`: its 2 * N + 1 queues and their MSI-X
/// vectors plus the config vector stay within 64.
pub const MAX_NET_QUEUE_PAIRS: u16 = 31;

fn check_queues(what: &str, n: u16) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(bad(format!(
            "{what}: the number of queues must be at least 1"
        )));
    }
    Ok(())
}

impl VmConfig {
    /// Reads a JSON description.
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read config {}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| bad(format!("bad config {}: {e}", path.display())))
    }

    /// Checks everything that can be checked before touching KVM, against
    /// a host with `host_cpus` CPUs and `host_memory` bytes of RAM.
    pub fn validate(&self, host_cpus: usize, host_memory: u64) -> Result<(), ConfigError> {
        check_file("kernel", &self.kernel)?;
        for part in &self.initrd {
            check_file("initramfs", part)?;
        }
        if self.cpus == 0 || usize::from(self.cpus) > host_cpus {
            return Err(bad(format!(
                "{} vCPUs asked; this host has {host_cpus} CPUs",
                self.cpus
            )));
        }
        let memory = self.memory.0;
        let granule = if self.hugepages { 2 << 20 } else { 4096 };
        if memory < MIN_MEMORY {
            return Err(bad(format!(
                "memory {} MiB is too small; at least {} MiB is needed",
                memory >> 20,
                MIN_MEMORY >> 20
            )));
        }
        if memory > host_memory {
            return Err(bad(format!(
                "memory {} MiB is more than this host's {} MiB",
                memory >> 20,
                host_memory >> 20
            )));
        }
        if memory % granule != 0 {
            return Err(bad(format!(
                "memory must be a multiple of {} KiB",
                granule >> 10
            )));
        }
        let mut sockets = HashSet::new();
        let mut socket = |what: &str, p: &Path| {
            if p.as_os_str().is_empty() {
                return Err(bad(format!("{what} needs socket=PATH")));
            }
            if !sockets.insert(p.to_path_buf()) {
                return Err(bad(format!("socket {} is used twice", p.display())));
            }
            Ok(())
        };
        for d in &self.disks {
            socket("--disk", &d.socket)?;
            check_queues("--disk", d.num_queues)?;
            if !d.queue_size.is_power_of_two() || d.queue_size > MAX_QUEUE_SIZE {
                return Err(bad(format!(
                    "--disk queue_size={} must be a power of two up to {MAX_QUEUE_SIZE}",
                    d.queue_size
                )));
            }
        }
        let mut tags = HashSet::new();
        for f in &self.fs {
            socket("--fs", &f.socket)?;
            check_queues("--fs", f.num_queues)?;
            // virtio-fs config space holds the tag in 36 bytes.
            if f.tag.is_empty() || f.tag.len() > 36 {
                return Err(bad(format!("--fs tag {:?} must be 1 to 36 bytes", f.tag)));
            }
            if !tags.insert(f.tag.clone()) {
                return Err(bad(format!("--fs tag {:?} is used twice", f.tag)));
            }
        }
        if let Some(dir) = &self.jail {
            if !dir.is_dir() {
                return Err(bad(format!("--jail {} is not a directory", dir.display())));
            }
        }
        let mut macs = HashSet::new();
        for n in &self.nets {
            socket("--net", &n.socket)?;
            check_queues("--net", n.num_queue_pairs)?;
            if n.num_queue_pairs > MAX_NET_QUEUE_PAIRS {
                return Err(bad(format!(
                    "--net num_queue_pairs={} is more than {MAX_NET_QUEUE_PAIRS}",
                    n.num_queue_pairs
                )));
            }
            if !macs.insert(n.mac) {
                return Err(bad(format!("MAC {} is used twice", String::from(n.mac))));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const GIB: u64 = 1 << 30;

    #[test]
    fn json_jail_is_optional_and_must_be_a_directory() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k", "jail": "/run/vm0"}"#).unwrap();
        assert_eq!(c.jail, Some(PathBuf::from("/run/vm0")));
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(c.jail, None);
        let kernel = tempfile::NamedTempFile::new().unwrap();
        let mut c = config(kernel.path());
        c.jail = Some(kernel.path().to_path_buf());
        let err = c.validate(4, 8 << 30).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        c.jail = Some(std::env::temp_dir());
        c.validate(4, 8 << 30).unwrap();
    }

    #[test]
    fn memory_sizes() {
        assert_eq!("512M".parse(), Ok(MemorySize(512 << 20)));
        assert_eq!("2G".parse(), Ok(MemorySize(2 << 30)));
        assert_eq!("1024".parse(), Ok(MemorySize(1 << 30)));
        assert_eq!("65536k".parse(), Ok(MemorySize(64 << 20)));
        assert!("".parse::<MemorySize>().is_err());
        assert!("12X".parse::<MemorySize>().is_err());
        assert!("-1M".parse::<MemorySize>().is_err());
        assert!("99999999999999999G".parse::<MemorySize>().is_err());
    }

    #[test]
    fn device_flags() {
        let d: DiskConfig = "socket=/run/b.sock,num_queues=4,queue_size=128"
            .parse()
            .unwrap();
        assert_eq!((d.num_queues, d.queue_size), (4, 128));
        assert_eq!(d.socket, PathBuf::from("/run/b.sock"));
        let f: FsConfig = "tag=data,socket=/run/f.sock".parse().unwrap();
        assert_eq!((f.tag.as_str(), f.num_queues), ("data", 1));
        let n: NetConfig = "socket=/run/n.sock,mac=52:54:00:12:34:56,num_queue_pairs=2"
            .parse()
            .unwrap();
        assert_eq!(n.mac.0, [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(n.num_queue_pairs, 2);
        for bad in [
            "socket=/a,colour=red",
            "socket=/a,socket=/b",
            "socket",
            "socket=/a,num_queues=many",
        ] {
            assert!(bad.parse::<DiskConfig>().is_err(), "{bad}");
        }
        assert!("socket=/a".parse::<NetConfig>().is_err(), "mac is required");
        assert!("socket=/a,mac=01:00:5e:00:00:01"
            .parse::<NetConfig>()
            .is_err());
        assert!("socket=/a,mac=52:54:00:12:34".parse::<NetConfig>().is_err());
    }

    #[test]
    fn serial_choices() {
        assert_eq!("stdio".parse(), Ok(SerialConfig::Stdio));
        assert_eq!("none".parse(), Ok(SerialConfig::None));
        assert_eq!(
            "file=/tmp/c.log".parse(),
            Ok(SerialConfig::File("/tmp/c.log".into()))
        );
        assert!("file=".parse::<SerialConfig>().is_err());
        assert!("tty".parse::<SerialConfig>().is_err());
    }

    fn kernel_file() -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"not checked here").unwrap();
        f
    }

    fn config(kernel: &Path) -> VmConfig {
        serde_json::from_value(serde_json::json!({ "kernel": kernel })).unwrap()
    }

    #[test]
    fn json_defaults_and_round_trip() {
        let k = kernel_file();
        let c = config(k.path());
        assert_eq!(
            (c.cpus, c.memory, c.cmdline.as_str()),
            (1, MemorySize(DEFAULT_MEMORY), DEFAULT_CMDLINE)
        );
        assert_eq!(c.serial, SerialConfig::Stdio);
        let full = serde_json::json!({
            "kernel": k.path(), "initrd": [k.path()], "cpus": 2, "memory": "1G",
            "disks": [{"socket": "/b.sock", "num_queues": 2}],
            "fs": [{"tag": "gfs", "socket": "/f.sock"}],
            "nets": [{"socket": "/n.sock", "mac": "52:54:00:00:00:01"}],
            "serial": "file=/tmp/console.log"
        });
        let c: VmConfig = serde_json::from_value(full).unwrap();
        assert_eq!(c.memory, MemorySize(GIB));
        assert_eq!(c.disks[0].queue_size, 256);
        let back: VmConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let numeric: VmConfig =
            serde_json::from_value(serde_json::json!({"kernel": "/k", "memory": 256})).unwrap();
        assert_eq!(numeric.memory, MemorySize(256 << 20));
        assert!(serde_json::from_value::<VmConfig>(
            serde_json::json!({"kernel": "/k", "colour": 1})
        )
        .is_err());
    }

    #[test]
    fn validation_catches_each_mistake() {
        let k = kernel_file();
        let ok = config(k.path());
        assert_eq!(ok.validate(2, 4 * GIB), Ok(()));
        type Change = Box<dyn Fn(&mut VmConfig)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|c| c.kernel = "/nonexistent/vmlinuz".into()),
                "/nonexistent/vmlinuz",
            ),
            (Box::new(|c| c.kernel = "/".into()), "not a regular file"),
            (
                Box::new(|c| c.initrd = vec!["/nonexistent/initrd".into()]),
                "initramfs",
            ),
            (Box::new(|c| c.cpus = 0), "vCPUs"),
            (Box::new(|c| c.cpus = 3), "this host has 2 CPUs"),
            (Box::new(|c| c.memory = MemorySize(32 << 20)), "too small"),
            (
                Box::new(|c| c.memory = MemorySize(8 * GIB)),
                "more than this host",
            ),
            (
                Box::new(|c| {
                    c.hugepages = true;
                    c.memory = MemorySize(65 << 20)
                }),
                "multiple of 2048 KiB",
            ),
            (
                Box::new(|c| c.disks = vec!["socket=/a,queue_size=100".parse().unwrap()]),
                "power of two",
            ),
            (
                Box::new(|c| c.disks = vec!["socket=/a,num_queues=0".parse().unwrap()]),
                "at least 1",
            ),
            (
                Box::new(|c| {
                    c.disks = vec!["socket=/a".parse().unwrap(), "socket=/a".parse().unwrap()]
                }),
                "used twice",
            ),
            (
                Box::new(|c| {
                    c.fs = vec![
                        "tag=x,socket=/a".parse().unwrap(),
                        "tag=x,socket=/b".parse().unwrap(),
                    ]
                }),
                "tag \"x\" is used twice",
            ),
            (
                Box::new(|c| c.fs = vec!["socket=/a".parse().unwrap()]),
                "1 to 36 bytes",
            ),
            (
                Box::new(|c| {
                    c.nets = vec![
                        "socket=/a,mac=52:54:00:00:00:01".parse().unwrap(),
                        "socket=/b,mac=52:54:00:00:00:01".parse().unwrap(),
                    ]
                }),
                "MAC 52:54:00:00:00:01 is used twice",
            ),
        ];
        for (change, expected) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let err = c.validate(2, 4 * GIB).unwrap_err();
            assert!(
                err.0.contains(expected),
                "{err} does not mention {expected:?}"
            );
        }
    }
}
