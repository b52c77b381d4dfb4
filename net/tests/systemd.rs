//! The systemd template unit: `systemd-analyze verify` accepts it without
//! a warning, and its ExecStart line, expanded as systemd would with a
//! sample environment file, starts a daemon (inside a network namespace
//! the test creates) that reports READY=1, moves a frame and stops
//! cleanly on SIGTERM, taking its tap with it.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{connect_two_pairs, daemon_bin, frame, transmit_and_see, NetNs, PacketSocket};
use cradle_testbed::daemon::Daemon;
use cradle_testbed::unit::TemplateUnit;

fn unit() -> TemplateUnit {
    TemplateUnit::new("net-tap", include_str!("../net-tap@.service"))
}

#[test]
fn template_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    unit()
        .with_binary(&daemon_bin())
        .unwrap()
        .verify(dir.path(), "net-tap@pod0.service")
        .unwrap();
    unit().check_conventions().unwrap();
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
    let argv = unit()
        .with_binary(&daemon_bin())
        .unwrap()
        .exec_start(&env, "pod0");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name]).args(&argv);
    // `ip netns exec` execs the daemon: the pid is the daemon's.
    let mut child = Daemon::spawn_ready(&mut cmd, Duration::from_secs(10)).unwrap();
    let sockp = PacketSocket::open(&ns, "tap-pod0");
    let mut drv = connect_two_pairs(&sock);
    let cfg = drv.get_config(0, 10).unwrap();
    assert_eq!(&cfg[..6], &[0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    assert_eq!(u16::from_le_bytes([cfg[8], cfg[9]]), 2);
    let mut qs = drv.take_queues();
    transmit_and_see(&mut qs[1], &sockp, &frame(100, 1));
    drop(drv);
    assert_eq!(
        child.terminate(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
    assert!(!ns.has_link("tap-pod0"), "created tap left behind");
}
