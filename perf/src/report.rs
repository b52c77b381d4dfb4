//! Turns measurements into the report: per job and mode, the median and
//! spread of each backend, the ratios ours/peer and ours/raw, the targets
//! met or not, and resource figures. Written as `summary.json`,
//! `report.md` and SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::chart::{self, Group};
use crate::record::{Measurement, Mode, Point};
use crate::stats::{ratio, Samples};
use crate::PerfError;

/// Everything a report is made from, as written to `measurements.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunLog {
    /// Suite name.
    pub suite: String,
    /// Whether `--quick` shortened the run.
    pub quick: bool,
    /// When the run started (UTC, RFC 3339).
    pub started: String,
    /// The machine, one line.
    pub machine: String,
    /// Every measurement, in the order taken.
    pub measurements: Vec<Measurement>,
}

/// One backend's figures at one point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Median IOPS.
    pub iops: f64,
    /// (max - min) / median of IOPS over repetitions.
    pub spread: f64,
    /// Repetitions.
    pub samples: usize,
    /// Median bandwidth, bytes/s.
    pub bw_bytes: f64,
    /// Median of the p50 completion latency, ns.
    pub p50_ns: Option<f64>,
    /// Median daemon CPU per I/O, ns.
    pub cpu_ns_per_io: Option<f64>,
    /// Largest daemon peak RSS, KiB (guest RAM the daemon mapped included).
    pub peak_rss_kib: Option<u64>,
    /// Largest daemon-own resident memory (RssAnon + RssFile), KiB.
    #[serde(default)]
    pub private_rss_kib: Option<u64>,
}

/// A row of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    /// What ran.
    pub point: Point,
    /// Per backend.
    pub cells: BTreeMap<Backend, Cell>,
    /// ours / the peer (median IOPS): blk-lv / qemu-storage-daemon or
    /// virtiofsd-gfs / virtiofsd.
    pub ours_over_peer: Option<f64>,
    /// ours / raw at the same job and depth (median IOPS).
    pub ours_over_raw: Option<f64>,
}

/// A target from the project's goals and whether the run met it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetCheck {
    /// What is compared.
    pub what: String,
    /// The goal, as text.
    pub goal: String,
    /// The measured figure, as text.
    pub measured: String,
    /// Met, not met, or not measured (`None`).
    pub met: Option<bool>,
}

/// The reduced report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Rows in job/depth/mode order.
    pub rows: Vec<Row>,
    /// Targets.
    pub targets: Vec<TargetCheck>,
}

fn median_of(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    Samples::new(values).ok().map(|s| s.median())
}

/// Reduces measurements to rows and target checks.
pub fn summarise(measurements: &[Measurement]) -> Summary {
    let mut groups: BTreeMap<Point, BTreeMap<Backend, Vec<&Measurement>>> = BTreeMap::new();
    for m in measurements {
        groups
            .entry(m.point.clone())
            .or_default()
            .entry(m.backend)
            .or_default()
            .push(m);
    }
    let mut raw_iops: BTreeMap<(String, u32, u32), f64> = BTreeMap::new();
    let mut raw_p50: BTreeMap<(String, u32, u32), f64> = BTreeMap::new();
    let mut rows = Vec::new();
    for (point, by_backend) in &groups {
        let mut cells = BTreeMap::new();
        for (backend, ms) in by_backend {
            let Ok(iops) = Samples::new(ms.iter().map(|m| m.iops)) else {
                continue;
            };
            let cell = Cell {
                iops: iops.median(),
                spread: iops.spread(),
                samples: iops.len(),
                bw_bytes: median_of(ms.iter().map(|m| m.bw_bytes as f64)).unwrap_or(0.0),
                p50_ns: median_of(ms.iter().filter_map(|m| m.clat_p50_ns.map(|v| v as f64))),
                cpu_ns_per_io: median_of(ms.iter().filter_map(|m| m.daemon_cpu_ns_per_io)),
                peak_rss_kib: ms.iter().filter_map(|m| m.daemon_peak_rss_kib).max(),
                private_rss_kib: ms.iter().filter_map(|m| m.daemon_private_rss_kib).max(),
            };
            if *backend == Backend::Raw {
                let key = (point.job.clone(), point.iodepth, point.queues);
                raw_iops.insert(key.clone(), cell.iops);
                if let Some(p) = cell.p50_ns {
                    raw_p50.insert(key, p);
                }
            }
            cells.insert(*backend, cell);
        }
        let iops_of = |pick: fn(Backend) -> bool| {
            by_backend
                .iter()
                .find(|(b, _)| pick(**b))
                .and_then(|(_, ms)| Samples::new(ms.iter().map(|m| m.iops)).ok())
        };
        let ours = iops_of(Backend::is_ours);
        let peer = iops_of(Backend::is_peer);
        let ours_over_peer = ours
            .as_ref()
            .zip(peer.as_ref())
            .and_then(|(o, p)| ratio(o, p));
        rows.push(Row {
            point: point.clone(),
            cells,
            ours_over_peer,
            ours_over_raw: None,
        });
    }
    for row in &mut rows {
        let key = (row.point.job.clone(), row.point.iodepth, row.point.queues);
        let ours = row.cells.iter().find(|(b, _)| b.is_ours()).map(|(_, c)| c);
        if let (Some(ours), Some(raw)) = (ours, raw_iops.get(&key)) {
            row.ours_over_raw = (*raw > 0.0).then(|| ours.iops / raw);
        }
    }
    let targets = targets(&rows, &raw_p50);
    Summary { rows, targets }
}

/// A ratio as the reports print it (`1.23x`, `-` when not measured).
pub(crate) fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

/// Appends the `## Targets` table every suite's report ends its figures with.
pub(crate) fn write_targets(md: &mut String, targets: &[TargetCheck]) {
    let _ = writeln!(
        md,
        "\n## Targets\n\n| target | goal | measured | met |\n|---|---|---:|---|"
    );
    for t in targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {} | {} | {} | {} |", t.what, t.goal, t.measured, met);
    }
}

/// The blk targets of the harness's issue, checked on device-mode rows (the
/// daemon's own cost; guest-mode figures under TCG measure the emulator).
fn targets(rows: &[Row], raw_p50: &BTreeMap<(String, u32, u32), f64>) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let device_random_qd32: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            r.point.mode == Mode::Device && r.point.iodepth >= 32 && r.point.job.contains("rand")
        })
        .collect();
    for row in &device_random_qd32 {
        let p = &row.point;
        out.push(check(
            format!(
                "{} QD{}x{}q: blk-lv / raw io_uring",
                p.job, p.iodepth, p.queues
            ),
            ">= 0.90x",
            row.ours_over_raw,
            0.9,
        ));
        out.push(check(
            format!(
                "{} QD{}x{}q: blk-lv / qemu-storage-daemon",
                p.job, p.iodepth, p.queues
            ),
            ">= 1.50x",
            row.ours_over_peer,
            1.5,
        ));
    }
    for row in rows
        .iter()
        .filter(|r| r.point.mode == Mode::Device && r.point.iodepth == 1)
        .filter(|r| r.point.job.starts_with("blk-"))
    {
        let p = &row.point;
        let key = (p.job.clone(), p.iodepth, p.queues);
        let added = row
            .cells
            .get(&Backend::BlkLv)
            .and_then(|c| c.p50_ns)
            .zip(raw_p50.get(&key))
            .map(|(ours, raw)| (ours - raw) / 1000.0);
        out.push(TargetCheck {
            what: format!("{} QD1: latency added by blk-lv over raw (p50)", p.job),
            goal: "<= 10 us".into(),
            measured: added
                .map(|a| format!("{a:.1} us"))
                .unwrap_or_else(|| "-".into()),
            met: added.map(|a| a <= 10.0),
        });
    }
    // fs: ratios against virtiofsd, in device mode (the daemon's own cost)
    // and in the guest.
    for row in rows
        .iter()
        .filter(|r| r.point.mode != Mode::Raw && r.point.job.starts_with("fs-"))
    {
        let p = &row.point;
        let (goal, min) = if p.job.contains("-file") {
            (">= 1.50x", 1.5)
        } else {
            (">= 2.00x", 2.0)
        };
        out.push(check(
            format!(
                "{} QD{}x{} ({}): virtiofsd-gfs / virtiofsd",
                p.job,
                p.iodepth,
                p.queues,
                p.mode.name()
            ),
            goal,
            row.ours_over_peer,
            min,
        ));
    }
    for ours in [Backend::BlkLv, Backend::VirtiofsdGfs] {
        // The daemon's own memory: RssAnon + RssFile where recorded; else
        // the peak in device mode, whose small memfd barely counts (in
        // guest mode the peak includes the guest RAM the daemon mapped).
        let own = rows
            .iter()
            .filter_map(|r| r.cells.get(&ours).and_then(|c| c.private_rss_kib))
            .max();
        let device_peak = rows
            .iter()
            .filter(|r| r.point.mode == Mode::Device)
            .filter_map(|r| r.cells.get(&ours).and_then(|c| c.peak_rss_kib))
            .max();
        let (what, kib) = match (own, device_peak) {
            (Some(k), _) => ("own resident memory (RssAnon+RssFile)", k),
            (None, Some(k)) => ("peak RSS in device mode", k),
            (None, None) => continue,
        };
        out.push(TargetCheck {
            what: format!("{} {what} under load", ours.name()),
            goal: "<= 10 MiB".into(),
            measured: format!("{:.1} MiB", kib as f64 / 1024.0),
            met: Some(kib <= 10 * 1024),
        });
    }
    out
}

fn check(what: String, goal: &str, measured: Option<f64>, min: f64) -> TargetCheck {
    TargetCheck {
        what,
        goal: goal.into(),
        measured: fmt_ratio(measured),
        met: measured.map(|m| m >= min),
    }
}

/// (ours, the peer) of a suite.
fn pair(suite: &str) -> (Backend, Backend) {
    if suite == "fs" {
        (Backend::VirtiofsdGfs, Backend::Virtiofsd)
    } else {
        (Backend::BlkLv, Backend::QemuStorageDaemon)
    }
}

/// Renders `report.md`.
pub fn markdown(log: &RunLog, summary: &Summary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# cradle-perf report: `{}` suite\n", log.suite);
    let _ = writeln!(md, "- started: {}", log.started);
    let _ = writeln!(md, "- machine: {}", log.machine);
    let _ = writeln!(
        md,
        "- run: {}{} measurements",
        if log.quick {
            "--quick (short runs, one repetition: checks the harness, not the figures); "
        } else {
            ""
        },
        log.measurements.len()
    );
    let _ = writeln!(
        md,
        "\n## IOPS (median over repetitions; spread = (max-min)/median)\n"
    );
    let (ours, peer) = pair(&log.suite);
    let _ = writeln!(
        md,
        "| job | QD x queues | mode | raw | {o} | {p} | {o} / {p} | {o} / raw |",
        o = ours.name(),
        p = peer.name()
    );
    let _ = writeln!(md, "|---|---|---|---:|---:|---:|---:|---:|");
    for row in &summary.rows {
        let cell = |b: Backend| {
            row.cells
                .get(&b)
                .map(|c| format!("{:.0} (±{:.0}%)", c.iops, c.spread * 50.0))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            md,
            "| {} | {} x {} | {} | {} | {} | {} | {} | {} |",
            row.point.job,
            row.point.iodepth,
            row.point.queues,
            row.point.mode.name(),
            cell(Backend::Raw),
            cell(ours),
            cell(peer),
            fmt_ratio(row.ours_over_peer),
            fmt_ratio(row.ours_over_raw)
        );
    }
    write_targets(&mut md, &summary.targets);
    let _ = writeln!(
        md,
        "\n## Daemon resources (device and guest modes)\n\nPeak RSS counts the guest-RAM pages a daemon maps from the VM's memfd (large in guest mode); own memory is RssAnon+RssFile, the daemon's cost beyond the guest.\n\n| job | QD x queues | mode | backend | p50 latency | CPU per I/O | peak RSS | own memory |\n|---|---|---|---|---:|---:|---:|---:|"
    );
    for row in &summary.rows {
        for (b, c) in &row.cells {
            let _ = writeln!(
                md,
                "| {} | {} x {} | {} | {} | {} | {} | {} | {} |",
                row.point.job,
                row.point.iodepth,
                row.point.queues,
                row.point.mode.name(),
                b.name(),
                c.p50_ns
                    .map(|v| format!("{:.1} us", v / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                c.cpu_ns_per_io
                    .map(|v| format!("{:.2} us", v / 1000.0))
                    .unwrap_or_else(|| "-".into()),
                c.peak_rss_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "-".into()),
                c.private_rss_kib
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## How to read this\n\n\
         - *raw* is fio on the host file or directory (io_uring for blk, psync for fs): the limit.\n\
         - *device* drives each daemon over vhost-user with cradle's userspace virtio driver (no guest): the daemon's own cost. \
         The driver and the daemon are pinned to different CPUs; raw fio is pinned to the daemon's CPU.\n\
         - *guest* runs the same fio job inside a Linux guest. Here guests run under QEMU TCG, so guest figures compare \
         backends under the same emulator, not absolute speed.\n\
         - Runs alternate between backends (A/B/A/B), on the same file with the same queues, depth and O_DIRECT.\n\
         - Raw fio JSON for every measurement is in `raw/`; `summary.json` has these tables as data.\n\
         - Charts: `iops-device.svg`, `iops-guest.svg`."
    );
    md
}

/// Writes `summary.json`, `report.md` and the charts into `out`.
pub fn write(out: &Path, log: &RunLog) -> Result<Summary, PerfError> {
    let summary = summarise(&log.measurements);
    let io = |e: std::io::Error| PerfError::Report(format!("{}: {e}", out.display()));
    let json =
        serde_json::to_string_pretty(&summary).map_err(|e| PerfError::Report(e.to_string()))?;
    fs::write(out.join("summary.json"), json).map_err(io)?;
    fs::write(out.join("report.md"), markdown(log, &summary)).map_err(io)?;
    let (ours, peer) = pair(&log.suite);
    let series = [ours, peer, Backend::Raw];
    let names: Vec<&str> = series.iter().map(|b| b.name()).collect();
    for mode in [Mode::Device, Mode::Guest] {
        let groups: Vec<Group> = summary
            .rows
            .iter()
            .filter(|r| r.point.mode == mode)
            .map(|r| {
                let key = (r.point.job.clone(), r.point.iodepth, r.point.queues);
                let raw = summary
                    .rows
                    .iter()
                    .find(|x| {
                        x.point.mode == Mode::Raw
                            && (x.point.job.clone(), x.point.iodepth, x.point.queues) == key
                    })
                    .and_then(|x| x.cells.get(&Backend::Raw));
                let mut bars: Vec<(usize, f64)> = series
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| r.cells.get(b).map(|c| (i, c.iops)))
                    .collect();
                if let Some(raw) = raw.filter(|_| mode == Mode::Device) {
                    bars.push((2, raw.iops));
                }
                Group {
                    label: format!(
                        "{} qd{}",
                        r.point.job.trim_start_matches("blk-"),
                        r.point.iodepth
                    ),
                    bars,
                }
            })
            .collect();
        if !groups.is_empty() {
            let title = format!("{} IOPS, {} mode", log.suite, mode.name());
            chart::bars(
                &out.join(format!("iops-{}.svg", mode.name())),
                &title,
                "IOPS",
                &names,
                &groups,
            )?;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(
        job: &str,
        qd: u32,
        mode: Mode,
        backend: Backend,
        rep: u32,
        iops: f64,
        p50: u64,
    ) -> Measurement {
        Measurement {
            point: Point {
                job: job.into(),
                iodepth: qd,
                queues: 4,
                mode,
            },
            backend,
            repetition: rep,
            iops,
            bw_bytes: (iops * 4096.0) as u64,
            total_ios: iops as u64,
            clat_mean_ns: p50 as f64,
            clat_p50_ns: Some(p50),
            clat_p99_ns: Some(p50 * 2),
            daemon_peak_rss_kib: (backend != Backend::Raw).then_some(6000),
            daemon_private_rss_kib: None,
            daemon_cpu_ns_per_io: Some(2000.0),
            fio_json: String::new(),
        }
    }

    fn sample() -> Vec<Measurement> {
        use Backend::*;
        vec![
            m("blk-randread-4k", 32, Mode::Raw, Raw, 0, 100_000.0, 300_000),
            m("blk-randread-4k", 32, Mode::Raw, Raw, 1, 100_000.0, 300_000),
            m(
                "blk-randread-4k",
                32,
                Mode::Device,
                BlkLv,
                0,
                95_000.0,
                320_000,
            ),
            m(
                "blk-randread-4k",
                32,
                Mode::Device,
                BlkLv,
                1,
                93_000.0,
                320_000,
            ),
            m(
                "blk-randread-4k",
                32,
                Mode::Device,
                BlkLv,
                2,
                97_000.0,
                320_000,
            ),
            m(
                "blk-randread-4k",
                32,
                Mode::Device,
                QemuStorageDaemon,
                0,
                50_000.0,
                600_000,
            ),
            m(
                "blk-randread-4k",
                32,
                Mode::Device,
                QemuStorageDaemon,
                1,
                70_000.0,
                600_000,
            ),
            m("blk-randread-4k", 1, Mode::Raw, Raw, 0, 10_000.0, 80_000),
            m(
                "blk-randread-4k",
                1,
                Mode::Device,
                BlkLv,
                0,
                9_000.0,
                95_000,
            ),
        ]
    }

    #[test]
    fn ratios_use_medians_and_raw_of_the_same_job() {
        let s = summarise(&sample());
        let row = s
            .rows
            .iter()
            .find(|r| r.point.mode == Mode::Device && r.point.iodepth == 32)
            .unwrap();
        let ours = &row.cells[&Backend::BlkLv];
        assert_eq!((ours.iops, ours.samples), (95_000.0, 3));
        assert!((ours.spread - 4_000.0 / 95_000.0).abs() < 1e-9);
        assert!((row.ours_over_peer.unwrap() - 95_000.0 / 60_000.0).abs() < 1e-9);
        assert!((row.ours_over_raw.unwrap() - 0.95).abs() < 1e-9);
    }

    #[test]
    fn targets_are_checked() {
        let s = summarise(&sample());
        let find = |needle: &str| s.targets.iter().find(|t| t.what.contains(needle)).unwrap();
        assert_eq!(find("blk-lv / raw").met, Some(true));
        assert_eq!(find("blk-lv / qemu-storage-daemon").met, Some(true));
        let lat = find("latency added");
        assert_eq!(lat.measured, "15.0 us");
        assert_eq!(lat.met, Some(false));
        assert_eq!(find("RSS").met, Some(true));
    }

    #[test]
    fn writes_report_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog {
            suite: "blk".into(),
            quick: true,
            started: "2026-11-28T00:00:00Z".into(),
            machine: "test".into(),
            measurements: sample(),
        };
        let summary = write(dir.path(), &log).unwrap();
        let md = fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| blk-randread-4k | 32 x 4 | device |"), "{md}");
        assert!(md.contains("1.58x"), "{md}");
        assert!(dir.path().join("iops-device.svg").exists());
        let back: Summary =
            serde_json::from_str(&fs::read_to_string(dir.path().join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(back.rows.len(), summary.rows.len());
    }
}
