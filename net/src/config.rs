//! Command-line flags and the validated configuration.

use std::fmt;
use std::str::FromStr;

use clap::{Parser, ValueEnum};
use cradle_devices::daemon::{CommonArgs, DaemonCli};

/// Most queue pairs: 2 * pairs + 1 virtqueues must fit the 64-queue mask
/// of vhost-user-backend.
pub const MAX_QUEUE_PAIRS: u16 = 31;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("'{s}' is not a MAC address like 52:54:00:12:34:56"));
        }
        let mut m = [0u8; 6];
        for (b, p) in m.iter_mut().zip(&parts) {
            if p.len() != 2 {
                return Err(format!("'{s}' is not a MAC address like 52:54:00:12:34:56"));
            }
            *b = u8::from_str_radix(p, 16)
                .map_err(|_| format!("'{s}' is not a MAC address like 52:54:00:12:34:56"))?;
        }
        if m[0] & 1 != 0 {
            return Err(format!(
                "'{s}' is a multicast address, the guest needs a unicast one"
            ));
        }
        if m == [0; 6] {
            return Err("00:00:00:00:00:00 is not a usable MAC address".into());
        }
        Ok(Mac(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl Mac {
    /// A random locally administered unicast address.
    pub fn random() -> Mac {
        let mut m = [0u8; 6];
        // SAFETY: getrandom writes at most m.len() bytes into `m`.
        let n = unsafe { libc::getrandom(m.as_mut_ptr().cast(), m.len(), 0) };
        if n != 6 {
            // No entropy source: derive something per process instead.
            let p = std::process::id().to_le_bytes();
            m[2..].copy_from_slice(&p);
        }
        m[0] = (m[0] & 0xfe) | 0x02;
        Mac(m)
    }
}

/// `--offload on|off`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    /// Offer checksum and TSO offloads both ways.
    On,
    /// Offer none: every frame is complete and checksummed.
    Off,
}

/// `net-tap`: vhost-user-net daemon moving frames between a guest and a
/// tap device.
#[derive(Parser, Debug, Clone)]
#[command(name = "net-tap", version, about)]
pub struct Cli {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
    /// Tap interface to attach to, created (multi-queue, vnet_hdr) if missing.
    #[arg(long, value_name = "NAME", conflicts_with = "tap_fd")]
    pub tap: Option<String>,
    /// Tap queue fds opened by a supervisor, one per queue pair (repeat or comma-separate).
    #[arg(long, value_name = "N", value_delimiter = ',', num_args = 1.., value_parser = clap::value_parser!(i32).range(0..))]
    pub tap_fd: Vec<i32>,
    /// Guest MAC address in the device config space (default: random, locally administered).
    #[arg(long, value_name = "MAC")]
    pub mac: Option<Mac>,
    /// MTU offered to the guest (and set on a tap the daemon creates).
    #[arg(long, value_name = "N", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(68..=65535))]
    pub mtu: u16,
    /// Queue pairs (RX + TX virtqueues, tap queues, worker threads).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_QUEUE_PAIRS)))]
    pub num_queue_pairs: u16,
    /// Checksum and segmentation offloads.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    pub offload: OnOff,
}

/// Where the tap comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TapSource {
    /// Attach to (or create) the interface of that name.
    Name(String),
    /// Inherited queue fds.
    Fds(Vec<i32>),
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared daemon flags.
    pub common: CommonArgs,
    /// The tap.
    pub tap: TapSource,
    /// Guest MAC.
    pub mac: Mac,
    /// Device MTU.
    pub mtu: u16,
    /// Queue pairs.
    pub queue_pairs: u16,
    /// Offer offloads.
    pub offload: bool,
}

impl DaemonCli for Cli {
    type Config = Config;

    fn common(&self) -> &CommonArgs {
        &self.common
    }

    /// Checks what clap cannot; the error is the one-line reason for exit 2.
    fn into_config(self) -> Result<Config, String> {
        if self.common.readonly {
            return Err("--readonly has no meaning for a network device".into());
        }
        if self.common.num_queues != 1 {
            return Err(
                "use --num-queue-pairs N for net-tap (it serves 2 * N + 1 virtqueues)".into(),
            );
        }
        let tap = match (self.tap, self.tap_fd.is_empty()) {
            (Some(name), true) => {
                if !crate::tap::valid_name(&name) {
                    return Err(format!(
                        "invalid value '{name}' for '--tap': not an interface name (1..=15 bytes, no '/', ':' or spaces)"
                    ));
                }
                TapSource::Name(name)
            }
            (None, false) => {
                if self.tap_fd.len() != usize::from(self.num_queue_pairs) {
                    return Err(format!(
                        "--tap-fd gives {} fds but --num-queue-pairs is {}",
                        self.tap_fd.len(),
                        self.num_queue_pairs
                    ));
                }
                TapSource::Fds(self.tap_fd)
            }
            (None, true) => return Err("one of --tap or --tap-fd is required".into()),
            (Some(_), false) => return Err("--tap and --tap-fd exclude each other".into()),
        };
        if self.common.socket.is_none() && self.common.fd.is_none() {
            return Err("one of --socket or --fd is required".into());
        }
        Ok(Config {
            common: self.common,
            tap,
            mac: self.mac.unwrap_or_else(Mac::random),
            mtu: self.mtu,
            queue_pairs: self.num_queue_pairs,
            offload: self.offload == OnOff::On,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("net-tap").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.into_config()
    }

    #[test]
    fn good_flags() {
        let c = parse(&[
            "--socket",
            "/tmp/x.sock",
            "--tap",
            "tap0",
            "--mac",
            "52:54:00:12:34:56",
            "--mtu",
            "9000",
            "--num-queue-pairs",
            "2",
            "--offload",
            "off",
        ])
        .unwrap();
        assert_eq!(c.tap, TapSource::Name("tap0".into()));
        assert_eq!(c.mac.to_string(), "52:54:00:12:34:56");
        assert_eq!((c.mtu, c.queue_pairs, c.offload), (9000, 2, false));
        let c = parse(&["--fd", "3", "--tap-fd", "4,5", "--num-queue-pairs", "2"]).unwrap();
        assert_eq!(c.tap, TapSource::Fds(vec![4, 5]));
        assert_eq!(c.mac.0[0] & 3, 2, "random MAC is local unicast");
    }

    #[test]
    fn bad_flags() {
        for args in [
            &["--socket", "s"][..],
            &["--socket", "s", "--tap", "a/b"],
            &["--socket", "s", "--tap", "averyveryverylongname"],
            &["--socket", "s", "--tap", "t", "--mac", "01:00:5e:00:00:01"],
            &["--socket", "s", "--tap", "t", "--mac", "52:54:00:12:34"],
            &["--socket", "s", "--tap", "t", "--mac", "zz:54:00:12:34:56"],
            &["--socket", "s", "--tap", "t", "--mtu", "67"],
            &["--socket", "s", "--tap", "t", "--mtu", "65536"],
            &["--socket", "s", "--tap", "t", "--num-queue-pairs", "0"],
            &["--socket", "s", "--tap", "t", "--num-queue-pairs", "32"],
            &["--socket", "s", "--tap", "t", "--offload", "maybe"],
            &["--socket", "s", "--tap", "t", "--readonly"],
            &["--socket", "s", "--tap", "t", "--num-queues", "4"],
            &["--socket", "s", "--tap-fd", "4", "--num-queue-pairs", "2"],
            &["--socket", "s", "--tap", "t", "--tap-fd", "4"],
            &["--tap", "t"],
            &["--socket", "s", "--tap", "t", "--bogus"],
        ] {
            assert!(parse(args).is_err(), "{args:?} accepted");
        }
    }
}
