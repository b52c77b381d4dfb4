//! The systemd template unit: `systemd-analyze verify` accepts it without
//! a warning, and its ExecStart line, expanded as systemd would with a
//! sample environment file, starts a daemon (inside a network namespace
//! the test creates) that reports READY=1, moves a frame and stops
//! cleanly on SIGTERM, taking its tap with it.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{daemon_bin, frame, NetNs, PacketSocket, ETH_TEST};
use cradle_devices::driver::{Buffer, Driver, DriverConfig};

const UNIT: &str = include_str!("../net-tap@.service");
const INSTALLED: &str = "/usr/local/bin/net-tap";

fn key(unit: &str, k: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{k}=")))
        .unwrap_or_else(|| panic!("no {k}="))
        .to_string()
}

#[test]
fn template_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net-tap@pod0.service");
    std::fs::write(
        &path,
        UNIT.replace(INSTALLED, daemon_bin().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.trim().is_empty(), "warnings: {err}");
    assert_eq!(key(UNIT, "Type"), "notify");
    // An operator's file in /etc, kcradle's in /run (wins); one must exist.
    let envs: Vec<&str> = UNIT
        .lines()
        .filter_map(|l| l.strip_prefix("EnvironmentFile="))
        .collect();
    assert_eq!(
        envs,
        ["-/etc/cradle/net-tap/%i.env", "-/run/cradle/net-tap/%i.env"]
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
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for word in exec.split_whitespace() {
        let w = word.replace("%i", instance);
        if let Some(name) = w.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            out.push(var(name));
        } else if let Some(name) = w.strip_prefix('$') {
            out.extend(var(name).split_whitespace().map(String::from));
        } else {
            out.push(w);
        }
    }
    out
}

#[test]
fn exec_start_runs_as_systemd_would() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("pod0.sock");
    let env = [
        ("NET_TAP_SOCKET", sock.to_str().unwrap()),
        ("NET_TAP_IFNAME", "tap-pod0"),
        (
            "NET_TAP_ARGS",
            "--mac 52:54:00:12:34:56 --num-queue-pairs 2",
        ),
    ];
    let mut argv = expand(&key(UNIT, "ExecStart"), &env, "pod0");
    assert_eq!(argv[0], INSTALLED);
    argv[0] = daemon_bin().to_str().unwrap().to_string();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(&argv)
        .env("NOTIFY_SOCKET", &notify_path)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 32];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    let sockp = PacketSocket::open(&ns, "tap-pod0");
    let mut drv = Driver::connect(
        &sock,
        DriverConfig {
            num_queues: 5,
            queue_size: 64,
            memory_bytes: 4 << 20,
            features: u64::MAX,
        },
    )
    .unwrap();
    let cfg = drv.get_config(0, 10).unwrap();
    assert_eq!(&cfg[..6], &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    assert_eq!(u16::from_le_bytes([cfg[8], cfg[9]]), 2);
    let mut qs = drv.take_queues();
    let f = frame(100, 1);
    let a = drv.memory().alloc(112, 64).unwrap();
    qs[1].write(a, &[0u8; 12]).unwrap();
    qs[1].write(vm_memory::GuestAddress(a.0 + 12), &f).unwrap();
    let head = qs[1].add_chain(&[Buffer::readable(a, 112)]).unwrap();
    qs[1].kick().unwrap();
    qs[1]
        .wait_head(head, Duration::from_secs(5), &mut Vec::new())
        .unwrap();
    assert_eq!(
        sockp.recv(ETH_TEST, Duration::from_secs(5)).as_deref(),
        Some(&f[..])
    );
    drop(drv);
    // SAFETY: kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!ns.has_link("tap-pod0"), "created tap left behind");
}
