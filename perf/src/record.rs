//! One measurement: a job at one queue depth, driven one way, against one
//! backend, once. Reports are built from a list of these.

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::fio::{Direction, FioReport};

/// How the I/O reached the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// fio's io_uring engine directly on the host file.
    Raw,
    /// Our userspace virtio driver speaking vhost-user to the daemon: the
    /// daemon's own cost, without a guest.
    Device,
    /// fio inside a Linux guest against its virtio disk.
    Guest,
}

impl Mode {
    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Device => "device",
            Mode::Guest => "guest",
        }
    }
}

/// Where a job ran and how.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Point {
    /// Job name (the job file's section).
    pub job: String,
    /// Outstanding I/Os per queue.
    pub iodepth: u32,
    /// Queues (and fio jobs).
    pub queues: u32,
    /// Drive mode.
    pub mode: Mode,
}

/// One run's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measurement {
    /// What ran.
    pub point: Point,
    /// Who served it.
    pub backend: Backend,
    /// Repetition index (runs alternate between backends).
    pub repetition: u32,
    /// I/Os per second.
    pub iops: f64,
    /// Bytes per second.
    pub bw_bytes: u64,
    /// Completed I/Os.
    pub total_ios: u64,
    /// Mean completion latency, ns.
    pub clat_mean_ns: f64,
    /// Median completion latency, ns.
    pub clat_p50_ns: Option<u64>,
    /// 99th percentile completion latency, ns.
    pub clat_p99_ns: Option<u64>,
    /// Daemon peak RSS after the run, KiB. Includes guest-RAM pages the
    /// daemon touched through the VM's shared memfd.
    pub daemon_peak_rss_kib: Option<u64>,
    /// Daemon's own resident memory after the run (RssAnon + RssFile), KiB:
    /// what the daemon costs beyond the guest's RAM.
    #[serde(default)]
    pub daemon_private_rss_kib: Option<u64>,
    /// Daemon CPU time per I/O during the run, ns.
    pub daemon_cpu_ns_per_io: Option<f64>,
    /// fio's JSON as produced, relative to the output directory.
    pub fio_json: String,
}

impl Measurement {
    /// Figures from a fio (or fio-shaped) report; latency comes from the
    /// direction that did most of the I/O.
    pub fn from_report(
        point: Point,
        backend: Backend,
        repetition: u32,
        report: &FioReport,
        fio_json: String,
    ) -> Self {
        let dirs: Vec<&Direction> = report
            .jobs
            .iter()
            .flat_map(|j| [&j.read, &j.write])
            .collect();
        let main = dirs.iter().max_by_key(|d| d.total_ios).copied();
        Measurement {
            point,
            backend,
            repetition,
            iops: report.total_iops(),
            bw_bytes: report.total_bw_bytes(),
            total_ios: dirs.iter().map(|d| d.total_ios).sum(),
            clat_mean_ns: main.map(|d| d.clat_ns.mean).unwrap_or(0.0),
            clat_p50_ns: main.and_then(|d| d.clat_ns.percentile(50.0)),
            clat_p99_ns: main.and_then(|d| d.clat_ns.percentile(99.0)),
            daemon_peak_rss_kib: None,
            daemon_private_rss_kib: None,
            daemon_cpu_ns_per_io: None,
            fio_json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_busy_direction() {
        let report =
            FioReport::parse(include_str!("../tests/data/fio-randread-qd32.json")).unwrap();
        let point = Point {
            job: "blk-randread-4k".into(),
            iodepth: 32,
            queues: 1,
            mode: Mode::Raw,
        };
        let m = Measurement::from_report(point, Backend::Raw, 0, &report, "raw/x.json".into());
        let read = &report.jobs[0].read;
        assert_eq!(m.total_ios, read.total_ios);
        assert_eq!(m.clat_p99_ns, read.clat_ns.percentile(99.0));
        assert_eq!(m.iops, read.iops);
        let json = serde_json::to_string(&m).unwrap();
        let back: Measurement = serde_json::from_str(&json).unwrap();
        assert_eq!(back.point, m.point);
        assert!(json.contains("\"mode\":\"raw\""), "{json}");
    }
}
