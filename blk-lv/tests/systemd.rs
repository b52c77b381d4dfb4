//! The systemd template unit: `systemd-analyze verify` accepts it without
//! a single warning, and its ExecStart line, expanded the way systemd
//! would with a sample environment file, starts a daemon that reports
//! READY=1 and stops cleanly on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use common::*;

const UNIT: &str = include_str!("../blk-lv@.service");
const INSTALLED: &str = "/usr/local/bin/blk-lv";

fn unit_with_binary() -> String {
    assert!(UNIT.contains(INSTALLED));
    UNIT.replace(INSTALLED, BIN)
}

fn key(unit: &str, k: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{k}=")))
        .unwrap_or_else(|| panic!("no {k}="))
        .to_string()
}

#[test]
fn template_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["blk-lv@.service", "blk-lv@vol0.service"] {
        let path = dir.path().join(name);
        std::fs::write(&path, unit_with_binary()).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(err.trim().is_empty(), "{name}: warnings: {err}");
    }
    assert_eq!(key(UNIT, "Type"), "notify");
    // An operator's file in /etc, kcradle's in /run (wins); one must exist.
    let envs: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.strip_prefix("EnvironmentFile="))
        .collect();
    assert_eq!(
        envs,
        ["-/etc/cradle/blk-lv/%i.env", "-/run/cradle/blk-lv/%i.env"]
    );
    let asserts: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.strip_prefix("AssertPathExists=|"))
        .collect();
    assert_eq!(envs.iter().map(|e| &e[1..]).collect::<Vec<_>>(), asserts);
    assert_eq!(key(UNIT, "KillSignal"), "SIGTERM");
}

/// Expands `${VAR}`, `$VAR` (split into words) and `%i` like systemd.
fn expand(exec: &str, env: &[(&str, &str)], instance: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in exec.split_whitespace() {
        let w = word.replace("%i", instance);
        if let Some(name) = w.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            out.push(
                env.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default(),
            );
        } else if let Some(name) = w.strip_prefix('$') {
            let v = env
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .unwrap_or("");
            out.extend(v.split_whitespace().map(String::from));
        } else {
            out.push(w);
        }
    }
    out
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
    let argv = expand(
        &key(&unit_with_binary(), "ExecStart"),
        &env,
        "kc0-pod-blk-vol0",
    );
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .map(ChildGuard)
        .unwrap();
    let mut buf = [0u8; 32];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    let (_drv, mut qs) = connect(&sock, 2, 64);
    let id = qs[0]
        .execute(cradle_devices::driver::blk::BlkRequest::GetId)
        .unwrap();
    assert_eq!(&id.data[..8], b"lv-vol0\0", "--serial ${{BLK_LV_SERIAL}}");
    signal(&child, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child, 10).and_then(|s| s.code()), Some(0));
}
