//! The daemon as a process: flags, tap creation and cleanup, inherited
//! tap fds. Everything runs inside network namespaces the tests create.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use common::{connect_two_pairs, daemon_bin, frame, transmit_and_see, Daemon, NetNs, PacketSocket};
use cradle_devices::driver::{Driver, DriverConfig};
use cradle_testbed::daemon::refused_usage;

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["--tap", "t0"][..],
        &["--socket", "/nonexistent/x.sock"],
        &["--socket", "s", "--tap", "a/b"],
        &["--socket", "s", "--tap", "t", "--mac", "01:00:5e:00:00:01"],
        &["--socket", "s", "--tap", "t", "--mtu", "10"],
        &["--socket", "s", "--tap", "t", "--num-queue-pairs", "0"],
        &["--socket", "s", "--tap", "t", "--offload", "maybe"],
        &["--socket", "s", "--tap", "t", "--queue-size", "100"],
        &["--socket", "s", "--tap", "t", "--readonly"],
        &["--socket", "s", "--tap-fd", "5", "--num-queue-pairs", "2"],
        &["--socket", "s", "--tap", "t", "--log-level", "loud=x=y"],
        &["--socket", "s", "--tap", "t", "--what"],
    ] {
        if args[1] == "/nonexistent/x.sock" {
            // A good flag set whose socket cannot be made is a runtime
            // failure, not a usage error.
            continue;
        }
        refused_usage(daemon_bin().to_str().unwrap(), args).unwrap();
    }
}

#[test]
fn print_capabilities_names_the_device_type() {
    let out = Command::new(daemon_bin())
        .arg("--print-capabilities")
        .output()
        .unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("\"type\": \"net\""), "{s}");
}

#[test]
fn a_created_tap_is_removed_at_exit_and_an_attached_one_is_kept() {
    let ns = NetNs::new();
    let mut d = Daemon::start(
        &ns,
        &["--tap", "ntnew", "--num-queue-pairs", "2", "--mtu", "1400"],
    );
    assert!(ns.has_link("ntnew"));
    let link = ns.exec(&["ip", "link", "show", "ntnew"]);
    assert!(link.contains("mtu 1400") && link.contains(",UP"), "{link}");
    assert_eq!(d.stop(), Some(0), "{}", d.log_text());
    assert!(!ns.has_link("ntnew"), "created tap still there");

    ns.exec(&[
        "ip",
        "tuntap",
        "add",
        "dev",
        "ntold",
        "mode",
        "tap",
        "multi_queue",
        "vnet_hdr",
    ]);
    ns.exec(&["ip", "link", "set", "ntold", "mtu", "1300", "up"]);
    let mut d = Daemon::start(&ns, &["--tap", "ntold", "--num-queue-pairs", "2"]);
    assert!(d.log_text().contains("created=false"), "{}", d.log_text());
    assert_eq!(d.stop(), Some(0));
    let link = ns.exec(&["ip", "link", "show", "ntold"]);
    assert!(
        link.contains("mtu 1300"),
        "attached tap reconfigured: {link}"
    );
}

#[test]
fn attaching_to_a_tap_without_vnet_hdr_fails_cleanly() {
    let ns = NetNs::new();
    ns.exec(&["ip", "tuntap", "add", "dev", "ntplain", "mode", "tap"]);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(daemon_bin())
        .args([
            "--socket",
            "/tmp/net-tap-never.sock",
            "--tap",
            "ntplain",
            "--sandbox",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ntplain"));
    assert!(ns.has_link("ntplain"));
}

/// Opens one queue of a multi-queue vnet_hdr tap inside `ns`, without
/// CLOEXEC so a child inherits it.
fn open_tap_queue(ns: &NetNs, name: &'static str) -> OwnedFd {
    ns.run(move || {
        // SAFETY: plain open of a device node.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR) };
        assert!(fd >= 0);
        #[repr(C)]
        struct Req {
            name: [u8; 16],
            flags: i16,
            pad: [u8; 22],
        }
        let mut r = Req {
            name: [0; 16],
            flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE)
                as i16,
            pad: [0; 22],
        };
        r.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF with a valid ifreq.
        assert_eq!(unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut r) }, 0);
        // SAFETY: fresh fd we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    })
}

#[test]
fn inherited_tap_fds_carry_traffic() {
    let ns = NetNs::new();
    let q0 = open_tap_queue(&ns, "ntfd");
    let q1 = open_tap_queue(&ns, "ntfd");
    ns.exec(&["ip", "link", "set", "ntfd", "up"]);
    let fds = format!("{},{}", q0.as_raw_fd(), q1.as_raw_fd());
    let mut d = Daemon::start(&ns, &["--tap-fd", &fds, "--num-queue-pairs", "2"]);
    drop((q0, q1));
    let sock = PacketSocket::open(&ns, "ntfd");
    let mut drv = connect_two_pairs(&d.socket);
    let mut qs = drv.take_queues();
    transmit_and_see(&mut qs[1], &sock, &frame(120, 3));
    drop(drv);
    assert!(d.log_text().contains("created=false"));
    assert_eq!(d.stop(), Some(0));
}

#[test]
fn the_daemon_runs_sandboxed_without_capabilities_under_seccomp() {
    let ns = NetNs::new();
    let d = Daemon::start(&ns, &["--tap", "ntsb"]);
    let pid = d.child.as_ref().unwrap().id();
    let root: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(root, vec!["net.sock".to_string()], "sandbox root");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(field("Seccomp:"), "2", "seccomp filter mode");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
    // The relay's private socket lives in a network namespace of the
    // daemon's own, not in the one it was started in.
    use std::os::unix::fs::MetadataExt;
    let own = std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .ino();
    let started_in = std::fs::metadata(format!("/run/netns/{}", ns.name))
        .unwrap()
        .ino();
    assert_ne!(own, started_in);
}

#[test]
fn an_inherited_listening_socket_is_served() {
    let ns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inherited.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd = l.as_raw_fd();
    // SAFETY: clearing FD_CLOEXEC on a socket we own so the child inherits it.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(daemon_bin())
        .args(["--fd", &fd.to_string(), "--tap", "ntinh"])
        .spawn()
        .unwrap();
    drop(l);
    let mut drv = None;
    for _ in 0..100 {
        if let Ok(d) = Driver::connect(
            &path,
            DriverConfig {
                num_queues: 3,
                queue_size: 64,
                memory_bytes: 4 << 20,
                features: u64::MAX,
            },
        ) {
            drv = Some(d);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut drv = drv.expect("daemon never served the inherited socket");
    assert_eq!(drv.get_config(8, 2).unwrap(), vec![1, 0]);
    drop(drv);
    let st = cradle_testbed::daemon::terminate(&mut child, Duration::from_secs(10));
    assert_eq!(st.and_then(|s| s.code()), Some(0));
}
