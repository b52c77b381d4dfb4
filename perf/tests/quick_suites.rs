//! `cradle-perf run blk|fs --quick`, as CI runs them: every drive mode for
//! ours and the peer (qemu-storage-daemon, virtiofsd), a parseable report. Figures are not
//! checked here (these machines are noisy); the harness is.

use std::path::{Path, PathBuf};
use std::process::Command;

use cradle_perf::backend::Backend;
use cradle_perf::record::Mode;
use cradle_perf::report::{RunLog, Summary};

#[test]
fn qemu_perf_blk_quick_reports_every_mode_for_ours_and_the_peer() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_cradle-perf"));
    let blk_lv = exe.with_file_name("blk-lv");
    assert!(blk_lv.exists(), "blk-lv must be built next to cradle-perf");
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(&exe)
        .args(["run", "blk", "--quick", "--out"])
        .arg(out.path())
        .arg("--blk-lv")
        .arg(&blk_lv)
        .status()
        .unwrap();
    assert!(status.success());

    let log: RunLog = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("measurements.json")).unwrap(),
    )
    .unwrap();
    for (mode, backend) in [
        (Mode::Raw, Backend::Raw),
        (Mode::Device, Backend::BlkLv),
        (Mode::Device, Backend::QemuStorageDaemon),
        (Mode::Guest, Backend::BlkLv),
        (Mode::Guest, Backend::QemuStorageDaemon),
    ] {
        let ms: Vec<_> = log
            .measurements
            .iter()
            .filter(|m| m.point.mode == mode && m.backend == backend)
            .collect();
        assert!(!ms.is_empty(), "no {mode:?} measurement for {backend:?}");
        for m in ms {
            assert!(m.iops > 0.0 && m.total_ios > 0, "{m:?}");
            let raw = std::fs::read_to_string(out.path().join(&m.fio_json)).unwrap();
            assert!(raw.contains("\"jobs\""), "raw JSON kept as produced");
        }
    }
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("summary.json")).unwrap())
            .unwrap();
    assert!(summary
        .rows
        .iter()
        .any(|r| r.ours_over_peer.is_some() && r.ours_over_raw.is_some()));
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("## Targets"));
    for chart in ["iops-device.svg", "iops-guest.svg"] {
        assert!(out.path().join(chart).exists(), "{chart}");
    }
}

/// `virtiofsd` as scripts/install-peers installs it.
fn reference_virtiofsd() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let installed = home.join(".cargo/bin/virtiofsd");
    if !installed.exists() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-peers");
        assert!(Command::new(script).status().unwrap().success());
    }
    installed
}

#[test]
fn qemu_perf_fs_quick_reports_every_mode_for_ours_and_virtiofsd() {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_cradle-perf"));
    let ours = exe.with_file_name("virtiofsd-gfs");
    assert!(
        ours.exists(),
        "virtiofsd-gfs must be built next to cradle-perf"
    );
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(&exe)
        .args(["run", "fs", "--quick", "--out"])
        .arg(out.path())
        .arg("--virtiofsd-gfs")
        .arg(&ours)
        .arg("--virtiofsd")
        .arg(reference_virtiofsd())
        .status()
        .unwrap();
    assert!(status.success());
    let log: RunLog = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("measurements.json")).unwrap(),
    )
    .unwrap();
    for job in [
        "fs-randread-4k",
        "fs-randwrite-4k",
        "fs-filecreate",
        "fs-filestat",
        "fs-filedelete",
    ] {
        for (mode, backend) in [
            (Mode::Raw, Backend::Raw),
            (Mode::Device, Backend::VirtiofsdGfs),
            (Mode::Device, Backend::Virtiofsd),
            (Mode::Guest, Backend::VirtiofsdGfs),
            (Mode::Guest, Backend::Virtiofsd),
        ] {
            let found = log.measurements.iter().any(|m| {
                m.point.job == job
                    && m.point.mode == mode
                    && m.backend == backend
                    && m.total_ios > 0
            });
            assert!(found, "no {job} {mode:?} measurement for {backend:?}");
        }
    }
    let md = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(md.contains("virtiofsd-gfs / virtiofsd"), "{md}");
    assert!(md.contains("fs-filecreate QD1x1 (guest)"), "{md}");
    assert!(md.contains("fs-filestat QD1x1 (device)"), "{md}");
    // Several requests in flight: over four queues for ours.
    assert!(log.measurements.iter().any(|m| m.point.mode == Mode::Device
        && m.point.queues == 4
        && m.backend == Backend::VirtiofsdGfs
        && m.total_ios > 0));
}
