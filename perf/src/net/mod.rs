//! The net suite's data: packet-rate measurements of net-tap against raw
//! tap `writev` (device mode) and against QEMU's built-in tap backend
//! (guest mode), and their report.

pub mod iperf;
pub mod load;
pub mod netns;
pub mod report;

use serde::{Deserialize, Serialize};

use crate::record::Mode;

/// Who moved the packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetBackend {
    /// `writev` straight into the tap: the limit.
    Raw,
    /// Ours: the vhost-user-net daemon.
    NetTap,
    /// The peer: QEMU's `-netdev tap` (in guest mode).
    QemuTap,
}

impl NetBackend {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            NetBackend::Raw => "raw",
            NetBackend::NetTap => "net-tap",
            NetBackend::QemuTap => "qemu-tap",
        }
    }
}

/// Where and how packets flowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetPoint {
    /// Drive mode.
    pub mode: Mode,
    /// `tx`: from the (userspace or guest) driver out to the host.
    pub direction: String,
    /// Ethernet frame length without FCS, bytes.
    pub frame_len: u32,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetMeasurement {
    /// What ran.
    pub point: NetPoint,
    /// Who moved the packets.
    pub backend: NetBackend,
    /// Repetition index (runs alternate between backends).
    pub repetition: u32,
    /// Packets counted at the receiving end.
    pub packets: u64,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Packets per second at the receiving end.
    pub pps: f64,
    /// Daemon peak RSS after the run (`VmHWM`), KiB.
    pub daemon_peak_rss_kib: Option<u64>,
    /// Daemon's own resident memory (RssAnon + RssFile), KiB.
    pub daemon_private_rss_kib: Option<u64>,
    /// Daemon CPU time per million packets, ms.
    pub daemon_cpu_ms_per_mpkt: Option<f64>,
    /// The packet source's own CPU time per million packets, ms (raw mode:
    /// the writer thread, i.e. the kernel's cost of the tap writes).
    pub source_cpu_ms_per_mpkt: Option<f64>,
    /// iperf3's JSON as produced (guest mode), relative to the output
    /// directory.
    pub raw_json: Option<String>,
    /// Why the run produced no figure (then it is left out of medians and
    /// listed in the report).
    #[serde(default)]
    pub failed: Option<String>,
}

impl NetMeasurement {
    /// Gbit/s of Ethernet frames (no FCS, preamble or gap) at this rate.
    pub fn gbit_s(&self) -> f64 {
        gbit_s(self.pps, self.point.frame_len)
    }
}

/// Gbit/s of `frame_len`-byte frames at `pps`.
pub fn gbit_s(pps: f64, frame_len: u32) -> f64 {
    pps * f64::from(frame_len) * 8.0 / 1e9
}

/// CPU milliseconds per million packets.
pub fn ms_per_mpkt(cpu_ns: u64, packets: u64) -> Option<f64> {
    (packets > 0).then(|| cpu_ns as f64 / 1e6 / (packets as f64 / 1e6))
}

/// Everything a net report is made from, as written to `measurements.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetLog {
    /// Always `net`.
    pub suite: String,
    /// Whether `--quick` shortened the run.
    pub quick: bool,
    /// When the run started (UTC).
    pub started: String,
    /// The machine, one line.
    pub machine: String,
    /// Every measurement, in the order taken.
    pub measurements: Vec<NetMeasurement>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_costs() {
        // 1 Mpps of 1514-byte frames is 12.112 Gbit/s.
        assert!((gbit_s(1e6, 1514) - 12.112).abs() < 1e-9);
        assert_eq!(gbit_s(0.0, 60), 0.0);
        // 2 s of CPU for 4 M packets: 500 ms per million.
        assert_eq!(ms_per_mpkt(2_000_000_000, 4_000_000), Some(500.0));
        assert_eq!(ms_per_mpkt(5, 0), None);
    }
}
