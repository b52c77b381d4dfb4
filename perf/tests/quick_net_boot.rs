//! `cradle-perf run net --quick` and `run boot --quick`, as CI runs them:
//! every mode and backend measured, reports written and re-rendered.
//! Figures are not checked (these machines are noisy); the harness is.

use std::path::{Path, PathBuf};
use std::process::Command;

use cradle_perf::boot::{BootLog, BootSummary, BootVmm};
use cradle_perf::net::report::NetSummary;
use cradle_perf::net::{NetBackend, NetLog};
use cradle_perf::record::Mode;

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cradle-perf"))
}

/// A workspace binary built next to cradle-perf.
fn sibling(name: &str) -> PathBuf {
    let p = exe().with_file_name(name);
    assert!(p.exists(), "{name} must be built next to cradle-perf");
    p
}

fn read<T: serde::de::DeserializeOwned>(dir: &Path, name: &str) -> T {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn rerender(dir: &Path) {
    std::fs::remove_file(dir.join("report.md")).unwrap();
    let st = Command::new(exe()).arg("report").arg(dir).status().unwrap();
    assert!(st.success());
    assert!(dir.join("report.md").exists());
}

#[test]
fn qemu_perf_net_quick_measures_raw_device_and_both_guest_backends() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(exe())
        .args(["run", "net", "--quick", "--out"])
        .arg(out.path())
        .arg("--net-tap")
        .arg(sibling("net-tap"))
        .status()
        .unwrap();
    assert!(status.success());
    let log: NetLog = read(out.path(), "measurements.json");
    for (mode, backend) in [
        (Mode::Raw, NetBackend::Raw),
        (Mode::Device, NetBackend::NetTap),
        (Mode::Guest, NetBackend::NetTap),
        (Mode::Guest, NetBackend::QemuTap),
    ] {
        let ms: Vec<_> = log
            .measurements
            .iter()
            .filter(|m| m.point.mode == mode && m.backend == backend)
            .collect();
        assert!(!ms.is_empty(), "no {mode:?} measurement for {backend:?}");
        for m in ms {
            assert!(m.packets > 0 && m.pps > 0.0 && m.seconds > 0.0, "{m:?}");
            if let Some(rel) = &m.raw_json {
                let raw = std::fs::read_to_string(out.path().join(rel)).unwrap();
                assert!(raw.contains("\"sum_received\""), "iperf3 JSON kept");
            }
        }
    }
    let dev = log
        .measurements
        .iter()
        .find(|m| m.point.mode == Mode::Device)
        .unwrap();
    assert!(dev.daemon_private_rss_kib.is_some() && dev.daemon_cpu_ms_per_mpkt.is_some());
    let summary: NetSummary = read(out.path(), "summary.json");
    assert!(summary.rows.iter().any(|r| r.ours_over_raw.is_some()));
    assert!(summary.rows.iter().any(|r| r.ours_over_peer.is_some()));
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("net-tap / raw tap writev"), "{md}");
    for chart in ["pps-device.svg", "pps-guest.svg"] {
        assert!(out.path().join(chart).exists(), "{chart}");
    }
    rerender(out.path());
}

#[test]
fn nested_perf_boot_quick_times_kcradle_and_qemu_microvm() {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(exe())
        .args(["run", "boot", "--quick", "--out"])
        .arg(out.path())
        .arg("--kcradle")
        .arg(sibling("kcradle"))
        .env("CRADLE_BOOT_PROBE", env!("CARGO_BIN_EXE_cradle-boot-probe"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // One line says where the boots ran.
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("cradle-perf boot:"))
            .count(),
        1,
        "{stderr}"
    );
    let log: BootLog = read(out.path(), "measurements.json");
    assert_eq!(log.measurements.len(), 2, "{log:?}");
    for vmm in [BootVmm::Kcradle, BootVmm::QemuMicrovm] {
        let m = log.measurements.iter().find(|m| m.vmm == vmm).unwrap();
        assert_eq!(m.probe.status, Some(0), "{m:?}");
        assert!(m.probe.exit_ms > 0.0, "{m:?}");
        assert!(m.probe.own_peak_kib > 0 && m.probe.peak_rss_kib >= m.probe.own_peak_kib);
        // Guest RAM is a memfd for both, and it is counted apart.
        assert!(m.probe.shmem_peak_kib > 8 << 10, "{m:?}");
    }
    // Ours must show its init line. (Nested QEMU microvm once lost its
    // console line under load while booting fine; the report counts such
    // a boot as not clean instead of failing the run.)
    let ours = log
        .measurements
        .iter()
        .find(|m| m.vmm == BootVmm::Kcradle)
        .unwrap();
    let init = ours.probe.init_ms.unwrap();
    assert!(init > 0.0 && init < ours.probe.exit_ms, "{ours:?}");
    let summary: BootSummary = read(out.path(), "summary.json");
    assert_eq!(summary.kcradle.as_ref().map(|c| c.ok), Some(1));
    assert_eq!(summary.qemu.as_ref().map(|c| c.boots), Some(1));
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains(&format!("- where: {}", log.placement)), "{md}");
    assert!(out.path().join("boot-ms.svg").exists());
    rerender(out.path());
}
