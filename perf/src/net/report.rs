//! The net report: per mode and frame size, each backend's median packet
//! rate with its spread, Gbit/s, the ratios net-tap/raw (device mode) and
//! net-tap/qemu-tap (guest mode), targets and resources.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{gbit_s, NetBackend, NetLog, NetMeasurement, NetPoint};
use crate::chart::{self, Group};
use crate::record::Mode;
use crate::report::{fmt_ratio, write_targets, TargetCheck};
use crate::stats::{ratio, Samples};
use crate::PerfError;

/// One backend's figures at one point.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetCell {
    /// Median packets per second.
    pub pps: f64,
    /// (max - min) / median over repetitions.
    pub spread: f64,
    /// Repetitions.
    pub samples: usize,
    /// Gbit/s at the median rate.
    pub gbit_s: f64,
    /// Median daemon CPU per million packets, ms.
    pub daemon_cpu_ms_per_mpkt: Option<f64>,
    /// Median source CPU per million packets, ms.
    pub source_cpu_ms_per_mpkt: Option<f64>,
    /// Largest daemon peak RSS, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Largest daemon-own resident memory, KiB.
    pub private_rss_kib: Option<u64>,
}

/// A row of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetRow {
    /// What ran.
    pub point: NetPoint,
    /// Per backend.
    pub cells: BTreeMap<NetBackend, NetCell>,
    /// net-tap / raw tap at the same frame size (device mode rows).
    pub ours_over_raw: Option<f64>,
    /// net-tap / QEMU tap (guest mode rows).
    pub ours_over_peer: Option<f64>,
    /// Raw writer's CPU per packet / net-tap's CPU per packet (device
    /// rows): the packet-rate ratio net-tap would reach if both had a CPU
    /// to themselves, which a shared machine cannot give either.
    #[serde(default)]
    pub cpu_ratio: Option<f64>,
}

/// The reduced net report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetSummary {
    /// Rows in mode/direction/frame order.
    pub rows: Vec<NetRow>,
    /// Targets.
    pub targets: Vec<TargetCheck>,
    /// Runs that produced no figure, one line each.
    #[serde(default)]
    pub failures: Vec<String>,
}

fn median_of(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    Samples::new(v).ok().map(|s| s.median())
}

/// Reduces measurements to rows and target checks.
pub fn summarise(ms: &[NetMeasurement]) -> NetSummary {
    let mut groups: BTreeMap<NetPoint, BTreeMap<NetBackend, Vec<&NetMeasurement>>> =
        BTreeMap::new();
    let mut failures = Vec::new();
    for m in ms {
        if let Some(why) = &m.failed {
            failures.push(format!(
                "{} {} {} B {} r{}: {why}",
                m.point.mode.name(),
                m.point.direction,
                m.point.frame_len,
                m.backend.name(),
                m.repetition
            ));
            continue;
        }
        groups
            .entry(m.point.clone())
            .or_default()
            .entry(m.backend)
            .or_default()
            .push(m);
    }
    let mut samples: BTreeMap<(NetPoint, NetBackend), Samples> = BTreeMap::new();
    let mut rows = Vec::new();
    for (point, by) in &groups {
        let mut cells = BTreeMap::new();
        for (b, ms) in by {
            let Ok(pps) = Samples::new(ms.iter().map(|m| m.pps)) else {
                continue;
            };
            cells.insert(
                *b,
                NetCell {
                    pps: pps.median(),
                    spread: pps.spread(),
                    samples: pps.len(),
                    gbit_s: gbit_s(pps.median(), point.frame_len),
                    daemon_cpu_ms_per_mpkt: median_of(
                        ms.iter().filter_map(|m| m.daemon_cpu_ms_per_mpkt),
                    ),
                    source_cpu_ms_per_mpkt: median_of(
                        ms.iter().filter_map(|m| m.source_cpu_ms_per_mpkt),
                    ),
                    peak_rss_kib: ms.iter().filter_map(|m| m.daemon_peak_rss_kib).max(),
                    private_rss_kib: ms.iter().filter_map(|m| m.daemon_private_rss_kib).max(),
                },
            );
            samples.insert((point.clone(), *b), pps);
        }
        rows.push(NetRow {
            point: point.clone(),
            cells,
            ours_over_raw: None,
            ours_over_peer: None,
            cpu_ratio: None,
        });
    }
    let raw_cpu: BTreeMap<(String, u32), f64> = rows
        .iter()
        .filter(|r| r.point.mode == Mode::Raw)
        .filter_map(|r| {
            let c = r.cells.get(&NetBackend::Raw)?.source_cpu_ms_per_mpkt?;
            Some(((r.point.direction.clone(), r.point.frame_len), c))
        })
        .collect();
    for row in &mut rows {
        if row.point.mode == Mode::Device {
            let key = (row.point.direction.clone(), row.point.frame_len);
            let ours = row
                .cells
                .get(&NetBackend::NetTap)
                .and_then(|c| c.daemon_cpu_ms_per_mpkt);
            row.cpu_ratio = ours
                .zip(raw_cpu.get(&key))
                .and_then(|(o, r)| (o > 0.0).then(|| r / o));
        }
        let ours = samples.get(&(row.point.clone(), NetBackend::NetTap));
        let raw_point = NetPoint {
            mode: Mode::Raw,
            ..row.point.clone()
        };
        let raw = samples.get(&(raw_point, NetBackend::Raw));
        let peer = samples.get(&(row.point.clone(), NetBackend::QemuTap));
        if row.point.mode == Mode::Device {
            row.ours_over_raw = ours.zip(raw).and_then(|(o, r)| ratio(o, r));
        }
        row.ours_over_peer = ours.zip(peer).and_then(|(o, p)| ratio(o, p));
    }
    let mut targets = targets(&rows);
    targets.push(TargetCheck {
        what: "runs that completed".into(),
        goal: "all".into(),
        measured: format!("{}/{}", ms.len() - failures.len(), ms.len()),
        met: Some(failures.is_empty()),
    });
    NetSummary {
        rows,
        targets,
        failures,
    }
}

/// net-tap ≥ 0.8x raw tap writev packet rate (device mode: the daemon's own
/// cost, no guest); the daemon's own memory ≤ 10 MiB.
fn targets(rows: &[NetRow]) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| r.point.mode == Mode::Device) {
        out.push(TargetCheck {
            what: format!(
                "{} {}-byte frames (device): net-tap / raw tap writev",
                row.point.direction, row.point.frame_len
            ),
            goal: ">= 0.80x".into(),
            measured: fmt_ratio(row.ours_over_raw),
            met: row.ours_over_raw.map(|r| r >= 0.8),
        });
        out.push(TargetCheck {
            what: format!(
                "{} {}-byte frames (device): same, by CPU time per packet (raw writer / net-tap)",
                row.point.direction, row.point.frame_len
            ),
            goal: ">= 0.80x".into(),
            measured: fmt_ratio(row.cpu_ratio),
            met: row.cpu_ratio.map(|r| r >= 0.8),
        });
    }
    let own = rows
        .iter()
        .filter_map(|r| r.cells.get(&NetBackend::NetTap)?.private_rss_kib)
        .max();
    if let Some(kib) = own {
        out.push(TargetCheck {
            what: "net-tap own resident memory (RssAnon+RssFile) under load".into(),
            goal: "<= 10 MiB".into(),
            measured: format!("{:.1} MiB", kib as f64 / 1024.0),
            met: Some(kib <= 10 * 1024),
        });
    }
    out
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{v:.1} {unit}"))
        .unwrap_or_else(|| "-".into())
}

/// Renders `report.md`.
pub fn markdown(log: &NetLog, s: &NetSummary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# cradle-perf report: `net` suite\n");
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
        "\n## Packet rate (median pps over repetitions, ±half the spread; Gbit/s of Ethernet frames)\n\n\
         | direction | frame | mode | raw | net-tap | qemu-tap | net-tap / raw | net-tap / raw by CPU per packet | net-tap / qemu-tap |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for row in &s.rows {
        let cell = |b: NetBackend| {
            row.cells
                .get(&b)
                .map(|c| {
                    format!(
                        "{:.0} (±{:.0}%) {:.2} Gbit/s",
                        c.pps,
                        c.spread * 50.0,
                        c.gbit_s
                    )
                })
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            md,
            "| {} | {} B | {} | {} | {} | {} | {} | {} | {} |",
            row.point.direction,
            row.point.frame_len,
            row.point.mode.name(),
            cell(NetBackend::Raw),
            cell(NetBackend::NetTap),
            cell(NetBackend::QemuTap),
            fmt_ratio(row.ours_over_raw),
            fmt_ratio(row.cpu_ratio),
            fmt_ratio(row.ours_over_peer)
        );
    }
    write_targets(&mut md, &s.targets);
    if !s.failures.is_empty() {
        let _ = writeln!(md, "\n## Failed runs (left out of the medians)\n");
        for f in &s.failures {
            let _ = writeln!(md, "- {f}");
        }
    }
    let _ = writeln!(
        md,
        "\n## Resources\n\nCPU per million packets: the daemon's (net-tap), or the packet source's own thread \
         (raw: the `writev` syscalls, the kernel work net-tap's tap writes also pay; device: the driver's \
         work of posting, kicking and reclaiming, without its busy-wait for completions). Peak RSS in guest mode \
         counts guest RAM the daemon mapped; own memory is RssAnon+RssFile.\n\n\
         | direction | frame | mode | backend | daemon CPU / Mpkt | source CPU / Mpkt | peak RSS | own memory |\n\
         |---|---:|---|---|---:|---:|---:|---:|"
    );
    for row in &s.rows {
        for (b, c) in &row.cells {
            let _ = writeln!(
                md,
                "| {} | {} B | {} | {} | {} | {} | {} | {} |",
                row.point.direction,
                row.point.frame_len,
                row.point.mode.name(),
                b.name(),
                opt(c.daemon_cpu_ms_per_mpkt, "ms"),
                opt(c.source_cpu_ms_per_mpkt, "ms"),
                opt(c.peak_rss_kib.map(|k| k as f64 / 1024.0), "MiB"),
                opt(c.private_rss_kib.map(|k| k as f64 / 1024.0), "MiB"),
            );
        }
    }
    let _ = writeln!(
        md,
        "\n## How to read this\n\n\
         - *raw* writes frames (12-byte virtio-net header + frame) with `writev` into a tap opened with the flags \
         net-tap uses, in a network namespace the suite made, pinned to the daemon's CPU: the limit.\n\
         - *device* keeps net-tap's TX queue full through cradle's userspace virtio driver (pinned to the other CPU); \
         net-tap writes each frame to its tap. Both modes count frames at the other end: the tap's kernel receive \
         counter over the measured window (after a ramp). \
         The driver busy-polls for completions, as a guest vCPU with packets queued does.\n\
         - *by CPU per packet*: the raw writer's CPU time per packet over net-tap's. On a machine shared with other \
         work neither gets a whole CPU, and a daemon that sleeps between batches loses more to wake-up latency than \
         a writer that never sleeps; this ratio is what net-tap would reach with a CPU of its own.\n\
         - *guest* runs `iperf3 -u -b 0` in a Linux guest (QEMU TCG here) to an iperf3 server in the namespace, once \
         with net-tap (vhost-user) and once with QEMU's `-netdev tap` on the same tap; the rate is what the server \
         received. Under TCG the guest is the bottleneck, so the ratio is compressed towards 1.\n\
         - Runs alternate between backends (A/B/A/B). Raw iperf3 JSON is in `raw/`; `summary.json` has these tables as data."
    );
    md
}

/// Writes `summary.json`, `report.md` and `pps-device.svg`/`pps-guest.svg`.
pub fn write(out: &Path, log: &NetLog) -> Result<NetSummary, PerfError> {
    let s = summarise(&log.measurements);
    let io = |e: std::io::Error| PerfError::Report(format!("{}: {e}", out.display()));
    let json = serde_json::to_string_pretty(&s).map_err(|e| PerfError::Report(e.to_string()))?;
    fs::write(out.join("summary.json"), json).map_err(io)?;
    fs::write(out.join("report.md"), markdown(log, &s)).map_err(io)?;
    let series = [NetBackend::NetTap, NetBackend::QemuTap, NetBackend::Raw];
    let names: Vec<&str> = series.iter().map(|b| b.name()).collect();
    for mode in [Mode::Device, Mode::Guest] {
        let groups: Vec<Group> = s
            .rows
            .iter()
            .filter(|r| r.point.mode == mode)
            .map(|r| {
                let mut bars: Vec<(usize, f64)> = series
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| r.cells.get(b).map(|c| (i, c.pps)))
                    .collect();
                let raw = s.rows.iter().find(|x| {
                    x.point.mode == Mode::Raw
                        && x.point.frame_len == r.point.frame_len
                        && x.point.direction == r.point.direction
                });
                if let Some(c) = raw
                    .and_then(|x| x.cells.get(&NetBackend::Raw))
                    .filter(|_| mode == Mode::Device)
                {
                    bars.push((2, c.pps));
                }
                Group {
                    label: format!("{} {} B", r.point.direction, r.point.frame_len),
                    bars,
                }
            })
            .collect();
        if !groups.is_empty() {
            chart::bars(
                &out.join(format!("pps-{}.svg", mode.name())),
                &format!("net packets/s, {} mode", mode.name()),
                "packets/s",
                &names,
                &groups,
            )?;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(mode: Mode, backend: NetBackend, rep: u32, pps: f64) -> NetMeasurement {
        NetMeasurement {
            point: NetPoint {
                mode,
                direction: "tx".into(),
                frame_len: 60,
            },
            backend,
            repetition: rep,
            packets: pps as u64,
            seconds: 1.0,
            pps,
            daemon_peak_rss_kib: (backend == NetBackend::NetTap).then_some(5000),
            daemon_private_rss_kib: (backend == NetBackend::NetTap).then_some(4000 + rep as u64),
            daemon_cpu_ms_per_mpkt: (backend == NetBackend::NetTap).then_some(900.0),
            source_cpu_ms_per_mpkt: Some(1000.0),
            raw_json: None,
            failed: None,
        }
    }

    fn sample() -> Vec<NetMeasurement> {
        use NetBackend::*;
        vec![
            m(Mode::Raw, Raw, 0, 1_000_000.0),
            m(Mode::Raw, Raw, 1, 900_000.0),
            m(Mode::Raw, Raw, 2, 1_100_000.0),
            m(Mode::Device, NetTap, 0, 700_000.0),
            m(Mode::Device, NetTap, 1, 850_000.0),
            m(Mode::Device, NetTap, 2, 800_000.0),
            m(Mode::Guest, NetTap, 0, 30_000.0),
            m(Mode::Guest, QemuTap, 0, 20_000.0),
            NetMeasurement {
                failed: Some("TX stalled".into()),
                ..m(Mode::Guest, NetTap, 1, 0.0)
            },
        ]
    }

    #[test]
    fn ratios_and_targets_use_medians() {
        let s = summarise(&sample());
        let dev = s
            .rows
            .iter()
            .find(|r| r.point.mode == Mode::Device)
            .unwrap();
        let c = &dev.cells[&NetBackend::NetTap];
        assert_eq!((c.pps, c.samples), (800_000.0, 3));
        assert!((c.spread - 150_000.0 / 800_000.0).abs() < 1e-12);
        assert!((c.gbit_s - 0.384).abs() < 1e-12);
        assert!((dev.ours_over_raw.unwrap() - 0.8).abs() < 1e-12);
        assert_eq!(dev.ours_over_peer, None);
        // Raw spends 1000 ms per Mpkt, net-tap 900: 1.11x by CPU.
        assert!((dev.cpu_ratio.unwrap() - 1000.0 / 900.0).abs() < 1e-12);
        let guest = s.rows.iter().find(|r| r.point.mode == Mode::Guest).unwrap();
        assert!((guest.ours_over_peer.unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(guest.ours_over_raw, None);
        let t = &s.targets[0];
        assert!(t.what.contains("net-tap / raw"), "{t:?}");
        assert_eq!((t.measured.as_str(), t.met), ("0.80x", Some(true)));
        let mem = s
            .targets
            .iter()
            .find(|t| t.what.contains("memory"))
            .unwrap();
        assert_eq!((mem.measured.as_str(), mem.met), ("3.9 MiB", Some(true)));
        // The failed run is listed, not counted.
        assert_eq!(guest.cells[&NetBackend::NetTap].samples, 1);
        assert_eq!(s.failures, ["guest tx 60 B net-tap r1: TX stalled"]);
        let cpu = s
            .targets
            .iter()
            .find(|t| t.what.contains("CPU time"))
            .unwrap();
        assert_eq!((cpu.measured.as_str(), cpu.met), ("1.11x", Some(true)));
        let done = s
            .targets
            .iter()
            .find(|t| t.what.contains("completed"))
            .unwrap();
        assert_eq!((done.measured.as_str(), done.met), ("8/9", Some(false)));
    }

    #[test]
    fn writes_report_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = NetLog {
            suite: "net".into(),
            quick: false,
            started: "2026-11-28T00:00:00Z".into(),
            machine: "test".into(),
            measurements: sample(),
        };
        write(dir.path(), &log).unwrap();
        let md = fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(md.contains("| tx | 60 B | device |"), "{md}");
        assert!(md.contains("| 0.80x | 1.11x | - |"), "{md}");
        assert!(
            md.contains("- guest tx 60 B net-tap r1: TX stalled"),
            "{md}"
        );
        assert!(dir.path().join("pps-device.svg").exists());
        assert!(dir.path().join("pps-guest.svg").exists());
        let back: NetSummary =
            serde_json::from_str(&fs::read_to_string(dir.path().join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(back.rows.len(), 3);
    }
}
