//! The systemd template unit: `systemd-analyze verify` accepts it without
//! a single warning, and its ExecStart line, expanded the way systemd
//! would with a sample environment file, starts a daemon that reports
//! READY=1, offers the tag of its environment file (not the instance
//! name, which carries a pod prefix) and stops on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

const UNIT: &str = include_str!("../virtiofsd-gfs@.service");
const INSTALLED: &str = "/usr/local/bin/virtiofsd-gfs";
const BIN: &str = env!("CARGO_BIN_EXE_virtiofsd-gfs");

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
    for name in ["virtiofsd-gfs@.service", "virtiofsd-gfs@vm0-shared.service"] {
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
    assert_eq!(key(UNIT, "KillSignal"), "SIGTERM");
    // An operator's file in /etc, kcradle's in /run (wins); one must exist.
    let envs: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.strip_prefix("EnvironmentFile="))
        .collect();
    assert_eq!(
        envs,
        [
            "-/etc/cradle/virtiofsd-gfs/%i.env",
            "-/run/cradle/virtiofsd-gfs/%i.env"
        ]
    );
    let asserts: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.strip_prefix("AssertPathExists=|"))
        .collect();
    assert_eq!(envs.iter().map(|e| &e[1..]).collect::<Vec<_>>(), asserts);
}

/// Expands `${VAR}`, `$VAR` (split into words) and `%i` like systemd.
fn expand(exec: &str, env: &[(&str, &str)], instance: &str) -> Vec<String> {
    let get = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or("")
    };
    let mut out = Vec::new();
    for word in exec.split_whitespace() {
        let w = word.replace("%i", instance);
        if let Some(name) = w.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            out.push(get(name).to_string());
        } else if let Some(name) = w.strip_prefix('$') {
            out.extend(get(name).split_whitespace().map(String::from));
        } else {
            out.push(w);
        }
    }
    out
}

#[test]
fn exec_start_runs_as_systemd_would() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let sock = dir.path().join("vm0.sock");
    let env = [
        ("GFS_SHARED_DIR", tree.to_str().unwrap()),
        ("GFS_SOCKET", sock.to_str().unwrap()),
        ("GFS_TAG", "shared"),
        (
            "GFS_ARGS",
            "--cache never --num-queues 2 --sandbox none --seccomp none",
        ),
    ];
    let argv = expand(
        &key(&unit_with_binary(), "ExecStart"),
        &env,
        "kc0-pod-fs-shared",
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
        .unwrap();
    let mut buf = [0u8; 32];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    let (mut drv, _qs) = common::connect(&sock, 3);
    let cfg = drv.get_config(0, 40).unwrap();
    assert_eq!(&cfg[..7], b"shared\0", "--tag ${{GFS_TAG}}");
    assert_eq!(cfg[36], 2, "request queues");
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let end = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st.code(), Some(0));
}
