//! The systemd template unit: `systemd-analyze verify` accepts it without
//! a single warning, and its ExecStart line, expanded the way systemd
//! would with a sample environment file, starts a daemon that reports
//! READY=1 and stops cleanly on SIGTERM.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use cradle_testbed::daemon::Daemon;
use cradle_testbed::unit::TemplateUnit;

fn unit() -> TemplateUnit {
    TemplateUnit::new("blk-lv", include_str!("../blk-lv@.service"))
}

#[test]
fn template_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let built = unit().with_binary(Path::new(BIN)).unwrap();
    for name in ["blk-lv@.service", "blk-lv@vol0.service"] {
        built.verify(dir.path(), name).unwrap();
    }
    unit().check_conventions().unwrap();
}

#[test]
fn exec_start_runs_as_systemd_would() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol0.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let sock = dir.path().join("vol0.sock");
    let env = [
        ("BLK_LV_PATH", img.to_str().unwrap()),
        ("BLK_LV_SOCKET", sock.to_str().unwrap()),
        ("BLK_LV_SERIAL", "lv-vol0"),
        ("BLK_LV_ARGS", "--num-queues 2 --iops 100000"),
    ];
    let argv = unit()
        .with_binary(Path::new(BIN))
        .unwrap()
        .exec_start(&env, "kc0-pod-blk-vol0");
    let mut child = Daemon::spawn_ready(
        Command::new(&argv[0]).args(&argv[1..]),
        Duration::from_secs(10),
    )
    .unwrap();
    let (_drv, mut qs) = connect(&sock, 2, 64);
    let id = qs[0]
        .execute(cradle_devices::driver::blk::BlkRequest::GetId)
        .unwrap();
    assert_eq!(&id.data[..8], b"lv-vol0\0", "--serial ${{BLK_LV_SERIAL}}");
    assert_eq!(
        child.terminate(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}
