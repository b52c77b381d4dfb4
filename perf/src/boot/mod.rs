//! The boot suite's data and report: kcradle against QEMU `-M microvm`
//! booting the same kernel and initramfs, time to init, boot to power-off
//! and the VMM's own memory.

pub mod probe;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::chart::{self, Group};
use crate::report::{fmt_ratio, write_targets, TargetCheck};
use crate::stats::{ratio, Samples};
use crate::PerfError;
use probe::ProbeResult;

/// Which VMM booted the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootVmm {
    /// Ours.
    Kcradle,
    /// The peer: `qemu-system-x86_64 -M microvm -accel kvm`.
    QemuMicrovm,
}

impl BootVmm {
    /// Its name in reports and in the L1 script's output.
    pub fn name(self) -> &'static str {
        match self {
            BootVmm::Kcradle => "kcradle",
            BootVmm::QemuMicrovm => "qemu-microvm",
        }
    }

    /// The VMM of `name`.
    pub fn from_name(name: &str) -> Option<BootVmm> {
        [BootVmm::Kcradle, BootVmm::QemuMicrovm]
            .into_iter()
            .find(|v| v.name() == name)
    }
}

/// One boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootMeasurement {
    /// Who booted it.
    pub vmm: BootVmm,
    /// Repetition index (the VMM that goes first alternates).
    pub repetition: u32,
    /// What the probe saw.
    #[serde(flatten)]
    pub probe: ProbeResult,
}

/// Everything a boot report is made from, as written to `measurements.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootLog {
    /// Always `boot`.
    pub suite: String,
    /// Whether `--quick` shortened the run.
    pub quick: bool,
    /// When the run started (UTC).
    pub started: String,
    /// The machine, one line.
    pub machine: String,
    /// Where the VMMs ran (host KVM, or nested in an L1 and why), one line.
    pub placement: String,
    /// Every boot, in the order taken.
    pub measurements: Vec<BootMeasurement>,
}

/// Output line of one boot in the L1 script: `@@boot VMM REP JSON`.
pub const LINE_MARK: &str = "@@boot ";

/// Reads the `@@boot VMM REP JSON` lines of an L1 script's output.
pub fn parse_lines(output: &str) -> Result<Vec<BootMeasurement>, PerfError> {
    let mut out = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix(LINE_MARK) else {
            continue;
        };
        let mut parts = rest.splitn(3, ' ');
        let (Some(vmm), Some(rep), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PerfError::Report(format!("bad boot line: {line}")));
        };
        let vmm = BootVmm::from_name(vmm)
            .ok_or_else(|| PerfError::Report(format!("unknown VMM in: {line}")))?;
        let repetition = rep
            .parse()
            .map_err(|_| PerfError::Report(format!("bad repetition in: {line}")))?;
        let probe: ProbeResult = serde_json::from_str(json)
            .map_err(|e| PerfError::Report(format!("probe JSON ({e}) in: {line}")))?;
        out.push(BootMeasurement {
            vmm,
            repetition,
            probe,
        });
    }
    Ok(out)
}

/// One VMM's reduced figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootCell {
    /// Boots that reached init and exited 0.
    pub ok: usize,
    /// Boots in all.
    pub boots: usize,
    /// Median time to init, ms.
    pub init_ms: Option<f64>,
    /// Its spread, (max - min) / median.
    pub init_spread: Option<f64>,
    /// Median boot to power-off, ms.
    pub exit_ms: Option<f64>,
    /// Its spread.
    pub exit_spread: Option<f64>,
    /// Largest VmHWM, KiB.
    pub peak_rss_kib: u64,
    /// Largest own memory (VmRSS without the guest RAM memfd), KiB.
    pub own_peak_kib: u64,
}

/// The reduced boot report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootSummary {
    /// kcradle's figures.
    pub kcradle: Option<BootCell>,
    /// QEMU microvm's figures.
    pub qemu: Option<BootCell>,
    /// kcradle / QEMU median time to init (below 1: kcradle is faster).
    pub init_ratio: Option<f64>,
    /// kcradle / QEMU median boot to power-off.
    pub exit_ratio: Option<f64>,
    /// Targets.
    pub targets: Vec<TargetCheck>,
}

fn cell(
    ms: &[BootMeasurement],
    vmm: BootVmm,
) -> Option<(BootCell, Option<Samples>, Option<Samples>)> {
    let mine: Vec<&BootMeasurement> = ms.iter().filter(|m| m.vmm == vmm).collect();
    if mine.is_empty() {
        return None;
    }
    // Only clean boots count towards the times.
    let good: Vec<&ProbeResult> = mine
        .iter()
        .map(|m| &m.probe)
        .filter(|p| p.status == Some(0) && p.init_ms.is_some())
        .collect();
    let init = Samples::new(good.iter().filter_map(|p| p.init_ms)).ok();
    let exit = Samples::new(good.iter().map(|p| p.exit_ms)).ok();
    let c = BootCell {
        ok: good.len(),
        boots: mine.len(),
        init_ms: init.as_ref().map(|s| s.median()),
        init_spread: init.as_ref().map(|s| s.spread()),
        exit_ms: exit.as_ref().map(|s| s.median()),
        exit_spread: exit.as_ref().map(|s| s.spread()),
        peak_rss_kib: mine.iter().map(|m| m.probe.peak_rss_kib).max().unwrap_or(0),
        own_peak_kib: mine.iter().map(|m| m.probe.own_peak_kib).max().unwrap_or(0),
    };
    Some((c, init, exit))
}

/// Reduces boots to medians, spreads, ratios and targets.
pub fn summarise(ms: &[BootMeasurement]) -> BootSummary {
    let ours = cell(ms, BootVmm::Kcradle);
    let peer = cell(ms, BootVmm::QemuMicrovm);
    let pick = |o: &Option<(BootCell, Option<Samples>, Option<Samples>)>, init: bool| {
        o.as_ref()
            .and_then(|(_, i, e)| if init { i.clone() } else { e.clone() })
    };
    let init_ratio = pick(&ours, true)
        .zip(pick(&peer, true))
        .and_then(|(o, p)| ratio(&o, &p));
    let exit_ratio = pick(&ours, false)
        .zip(pick(&peer, false))
        .and_then(|(o, p)| ratio(&o, &p));
    let mut targets = Vec::new();
    if let Some((c, _, _)) = &ours {
        targets.push(TargetCheck {
            what: "kcradle peak RSS excluding guest RAM".into(),
            goal: "<= 5 MiB".into(),
            measured: format!("{:.1} MiB", c.own_peak_kib as f64 / 1024.0),
            met: Some(c.own_peak_kib <= 5 * 1024),
        });
        targets.push(TargetCheck {
            what: "kcradle boots that reached init and powered off cleanly".into(),
            goal: "all".into(),
            measured: format!("{}/{}", c.ok, c.boots),
            met: Some(c.ok == c.boots),
        });
    }
    if ours.is_some() && peer.is_some() {
        targets.push(TargetCheck {
            what: "kcradle / QEMU microvm time to init".into(),
            goal: "<= 1.00x".into(),
            measured: fmt_ratio(init_ratio),
            met: init_ratio.map(|r| r <= 1.0),
        });
    }
    BootSummary {
        kcradle: ours.map(|c| c.0),
        qemu: peer.map(|c| c.0),
        init_ratio,
        exit_ratio,
        targets,
    }
}

fn fmt_ms(v: Option<f64>, spread: Option<f64>) -> String {
    match (v, spread) {
        (Some(v), Some(s)) => format!("{v:.0} ms (±{:.0}%)", s * 50.0),
        (Some(v), None) => format!("{v:.0} ms"),
        _ => "-".into(),
    }
}

/// Renders `report.md`.
pub fn markdown(log: &BootLog, s: &BootSummary) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# cradle-perf report: `boot` suite\n");
    let _ = writeln!(md, "- started: {}", log.started);
    let _ = writeln!(md, "- machine: {}", log.machine);
    let _ = writeln!(md, "- where: {}", log.placement);
    let _ = writeln!(
        md,
        "- run: {}{} boots",
        if log.quick {
            "--quick (one boot each: checks the harness, not the figures); "
        } else {
            ""
        },
        log.measurements.len()
    );
    let _ = writeln!(
        md,
        "\n## Boot times and memory (median over clean boots, ±half the spread)\n\n\
         | VMM | clean boots | time to init | boot to power-off | peak RSS (with guest RAM) | own memory (peak RSS without guest RAM) |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for (vmm, c) in [
        (BootVmm::Kcradle, &s.kcradle),
        (BootVmm::QemuMicrovm, &s.qemu),
    ] {
        if let Some(c) = c {
            let _ = writeln!(
                md,
                "| {} | {}/{} | {} | {} | {:.1} MiB | {:.1} MiB |",
                vmm.name(),
                c.ok,
                c.boots,
                fmt_ms(c.init_ms, c.init_spread),
                fmt_ms(c.exit_ms, c.exit_spread),
                c.peak_rss_kib as f64 / 1024.0,
                c.own_peak_kib as f64 / 1024.0
            );
        }
    }
    let _ = writeln!(
        md,
        "\nkcradle / QEMU microvm: time to init {}, boot to power-off {} (below 1: kcradle is faster).",
        fmt_ratio(s.init_ratio),
        fmt_ratio(s.exit_ratio)
    );
    write_targets(&mut md, &s.targets);
    let _ = writeln!(
        md,
        "\n## How to read this\n\n\
         - Both VMMs boot the same kernel and initramfs with 1 vCPU and 256 MiB of memfd-backed guest RAM \
         (QEMU: `-M microvm,memory-backend=...`), alternating which goes first.\n\
         - *time to init*: from starting the VMM to the initramfs script's first line on the serial console. \
         *boot to power-off*: to the VMM's exit after the guest powers off.\n\
         - *own memory* is the resident memory of every mapping of the VMM but its `/memfd:` ones (the guest RAM), \
         from `/proc/PID/smaps` every 10 ms; binaries and libraries count. The 5 MiB target applies to it.\n\
         - In a nested L1 (this machine's KVM emulates guest ring 0), absolute times include nested-virtualisation \
         exits under TCG: compare the two VMMs, not the numbers with other machines.\n\
         - Every boot is in `measurements.json`; `summary.json` has these tables as data; chart: `boot-ms.svg`."
    );
    md
}

/// Writes `summary.json`, `report.md` and `boot-ms.svg`.
pub fn write(out: &Path, log: &BootLog) -> Result<BootSummary, PerfError> {
    let s = summarise(&log.measurements);
    let io = |e: std::io::Error| PerfError::Report(format!("{}: {e}", out.display()));
    let json = serde_json::to_string_pretty(&s).map_err(|e| PerfError::Report(e.to_string()))?;
    fs::write(out.join("summary.json"), json).map_err(io)?;
    fs::write(out.join("report.md"), markdown(log, &s)).map_err(io)?;
    let cells = [&s.kcradle, &s.qemu];
    let groups: Vec<Group> = [("time to init", true), ("boot to power-off", false)]
        .into_iter()
        .map(|(label, init)| Group {
            label: label.into(),
            bars: cells
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let c = c.as_ref()?;
                    Some((i, if init { c.init_ms? } else { c.exit_ms? }))
                })
                .collect(),
        })
        .collect();
    chart::bars(
        &out.join("boot-ms.svg"),
        "boot, ms (lower is better)",
        "ms",
        &[BootVmm::Kcradle.name(), BootVmm::QemuMicrovm.name()],
        &groups,
    )?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "noise\n\
@@boot kcradle 0 {\"init_ms\":900.0,\"exit_ms\":1500.0,\"status\":0,\"peak_rss_kib\":40000,\"own_peak_kib\":3000,\"shmem_peak_kib\":37000}\r\n\
@@boot qemu-microvm 0 {\"init_ms\":1800.0,\"exit_ms\":2600.0,\"status\":0,\"peak_rss_kib\":90000,\"own_peak_kib\":30000,\"shmem_peak_kib\":60000}\n\
@@boot qemu-microvm 1 {\"init_ms\":2000.0,\"exit_ms\":3000.0,\"status\":0,\"peak_rss_kib\":90000,\"own_peak_kib\":31000,\"shmem_peak_kib\":60000}\n\
@@boot kcradle 1 {\"init_ms\":1100.0,\"exit_ms\":1700.0,\"status\":0,\"peak_rss_kib\":40000,\"own_peak_kib\":3500,\"shmem_peak_kib\":37000}\n\
@@boot kcradle 2 {\"init_ms\":null,\"exit_ms\":150000.0,\"status\":null,\"peak_rss_kib\":40000,\"own_peak_kib\":3100,\"shmem_peak_kib\":37000}\n";

    #[test]
    fn parses_probe_lines() {
        let ms = parse_lines(OUTPUT).unwrap();
        assert_eq!(ms.len(), 5);
        assert_eq!((ms[1].vmm, ms[1].repetition), (BootVmm::QemuMicrovm, 0));
        assert_eq!(ms[0].probe.init_ms, Some(900.0));
        assert_eq!(ms[4].probe.status, None);
        assert!(parse_lines("@@boot firecracker 0 {}").is_err());
        assert!(parse_lines("@@boot kcradle x {}").is_err());
        assert!(parse_lines("@@boot kcradle 0 {").is_err());
    }

    #[test]
    fn medians_ratios_and_targets_count_clean_boots_only() {
        let s = summarise(&parse_lines(OUTPUT).unwrap());
        let k = s.kcradle.as_ref().unwrap();
        assert_eq!((k.ok, k.boots), (2, 3));
        assert_eq!(k.init_ms, Some(1000.0));
        assert_eq!(k.exit_ms, Some(1600.0));
        assert!((k.init_spread.unwrap() - 0.2).abs() < 1e-12);
        assert_eq!(k.own_peak_kib, 3500);
        assert!((s.init_ratio.unwrap() - 1000.0 / 1900.0).abs() < 1e-12);
        assert!((s.exit_ratio.unwrap() - 1600.0 / 2800.0).abs() < 1e-12);
        let t = |needle: &str| s.targets.iter().find(|t| t.what.contains(needle)).unwrap();
        assert_eq!(t("excluding guest RAM").met, Some(true));
        assert_eq!(t("excluding guest RAM").measured, "3.4 MiB");
        assert_eq!(t("cleanly").measured, "2/3");
        assert_eq!(t("cleanly").met, Some(false));
        assert_eq!(t("time to init").met, Some(true));
    }

    #[test]
    fn writes_report_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = BootLog {
            suite: "boot".into(),
            quick: true,
            started: "2026-11-28T00:00:00Z".into(),
            machine: "test".into(),
            placement: "nested".into(),
            measurements: parse_lines(OUTPUT).unwrap(),
        };
        write(dir.path(), &log).unwrap();
        let md = fs::read_to_string(dir.path().join("report.md")).unwrap();
        assert!(
            md.contains("| kcradle | 2/3 | 1000 ms (±10%) | 1600 ms"),
            "{md}"
        );
        assert!(md.contains("time to init 0.53x"), "{md}");
        assert!(dir.path().join("boot-ms.svg").exists());
    }
}
