//! The net suite: net-tap against raw tap `writev` (raw and device modes,
//! counted at the tap) and against QEMU's built-in tap backend (guest
//! mode, iperf3 UDP), all inside a network namespace made for the run.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cradle_testbed::peers::wait_for_socket;
use cradle_testbed::QemuGuest;

use super::{SuiteConfig, Workspace, DAEMON_CPU, LOADGEN_CPU};
use crate::net::iperf::{parse_udp, UdpResult};
use crate::net::load::{device_tx, raw_tx, PacketRun};
use crate::net::netns::NetNs;
use crate::net::{ms_per_mpkt, NetBackend, NetLog, NetMeasurement, NetPoint};
use crate::procstat::ProcStat;
use crate::record::Mode;
use crate::PerfError;

/// Tap the raw writer creates.
const RAW_TAP: &str = "cpraw0";
/// Tap net-tap creates for device mode.
const DEVICE_TAP: &str = "cpdev0";
/// Tap shared by both guest-mode backends (made with `ip tuntap`).
const GUEST_TAP: &str = "cpgst0";
/// The namespace's end of the guest link (link-local).
const HOST_IP: &str = "169.254.77.1";
/// The guest's address.
const GUEST_IP: &str = "169.254.77.2";
/// Queue pairs of the guest NIC. QEMU opens a tap with one queue pair
/// without `IFF_MULTI_QUEUE`, which a multi-queue tap (net-tap's kind)
/// refuses; with two both backends attach to the same tap alike. The
/// one-vCPU guest drives one of them.
const GUEST_PAIRS: u32 = 2;
/// The guest NIC's MAC.
const MAC: &str = "52:54:00:cf:00:02";
/// UDP + IPv4 + Ethernet header bytes around an iperf3 payload.
const UDP_OVERHEAD: u32 = 8 + 20 + 14;
/// Marks one iperf3 run's JSON in the guest output.
const JOB_MARK: &str = "@@cradle-perf-net ";
/// Marks its end.
const END_MARK: &str = "@@cradle-perf-end";

/// Frame sizes of a run: minimum Ethernet frames (packet rate) and, in the
/// full suite, full 1500-MTU frames (bandwidth).
fn frame_sizes(cfg: &SuiteConfig) -> Vec<u32> {
    if cfg.quick {
        vec![60]
    } else {
        vec![60, 1514]
    }
}

/// Runs the net suite; iperf3 JSON goes to `out/raw/`.
pub fn run_net(cfg: &SuiteConfig) -> Result<NetLog, PerfError> {
    let ws = Workspace::new(cfg)?;
    let ns = NetNs::new()?;
    let base = ws.log("net");
    let mut log = NetLog {
        suite: "net".into(),
        quick: base.quick,
        started: base.started,
        machine: base.machine,
        measurements: Vec::new(),
    };
    let sizes = frame_sizes(cfg);
    let socket = ws.work.path().join("net.sock");
    let host_modes: Vec<NetBackend> = [
        (Mode::Raw, NetBackend::Raw),
        (Mode::Device, NetBackend::NetTap),
    ]
    .into_iter()
    .filter(|(m, _)| cfg.modes.contains(m))
    .map(|(_, b)| b)
    .collect();
    if cfg.modes.contains(&Mode::Guest) {
        ns.exec(&[
            "ip",
            "tuntap",
            "add",
            "dev",
            GUEST_TAP,
            "mode",
            "tap",
            "multi_queue",
            "vnet_hdr",
        ])?;
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            GUEST_TAP,
        ])?;
        ns.exec(&["ip", "link", "set", GUEST_TAP, "up"])?;
    }
    for rep in 0..cfg.repetitions {
        let flip = rep % 2 == 1;
        let mut order = host_modes.clone();
        if flip {
            order.reverse();
        }
        for backend in order {
            for &size in &sizes {
                let m = match backend {
                    NetBackend::Raw => raw_point(&ns, cfg, size, rep)?,
                    _ => device_point(&ns, cfg, &socket, size, rep)?,
                };
                log.measurements.push(m);
            }
        }
        if cfg.modes.contains(&Mode::Guest) {
            let mut order = [NetBackend::NetTap, NetBackend::QemuTap];
            if flip {
                order.reverse();
            }
            for backend in order {
                let ms = guest_runs(&ns, cfg, &ws, &socket, backend, &sizes, rep)?;
                log.measurements.extend(ms);
            }
        }
    }
    Ok(log)
}

fn measurement(
    mode: Mode,
    backend: NetBackend,
    frame_len: u32,
    rep: u32,
    run: &PacketRun,
) -> NetMeasurement {
    NetMeasurement {
        point: NetPoint {
            mode,
            direction: "tx".into(),
            frame_len,
        },
        backend,
        repetition: rep,
        packets: run.packets,
        seconds: run.seconds,
        pps: if run.seconds > 0.0 {
            run.packets as f64 / run.seconds
        } else {
            0.0
        },
        daemon_peak_rss_kib: None,
        daemon_private_rss_kib: None,
        daemon_cpu_ms_per_mpkt: None,
        source_cpu_ms_per_mpkt: ms_per_mpkt(run.source_cpu_ns, run.packets),
        raw_json: None,
        failed: None,
    }
}

fn raw_point(
    ns: &NetNs,
    cfg: &SuiteConfig,
    size: u32,
    rep: u32,
) -> Result<NetMeasurement, PerfError> {
    let name = ns.name().to_string();
    let (ramp, runtime) = (cfg.ramp, cfg.runtime);
    let cpu: usize = DAEMON_CPU.parse().unwrap_or(1);
    let run = ns.run(move || {
        let up = || {
            let st = Command::new("ip")
                .args(["netns", "exec", &name, "ip", "link", "set", RAW_TAP, "up"])
                .status()
                .map_err(|e| PerfError::Setup(format!("ip link set up: {e}")))?;
            if st.success() {
                Ok(())
            } else {
                Err(PerfError::Setup(format!("ip link set {RAW_TAP} up: {st}")))
            }
        };
        raw_tx(RAW_TAP, up, size as usize, ramp, runtime, cpu)
    })?;
    Ok(measurement(Mode::Raw, NetBackend::Raw, size, rep, &run))
}

fn device_point(
    ns: &NetNs,
    cfg: &SuiteConfig,
    socket: &Path,
    size: u32,
    rep: u32,
) -> Result<NetMeasurement, PerfError> {
    let daemon = NetTap::start(ns, &cfg.bin.net_tap, socket, &["--tap", DEVICE_TAP])?;
    let pid = daemon.pid();
    let sock = socket.to_path_buf();
    let (ramp, runtime) = (cfg.ramp, cfg.runtime);
    let before = ProcStat::read(pid);
    let run =
        ns.run(move || device_tx(&sock, DEVICE_TAP, size as usize, ramp, runtime, LOADGEN_CPU));
    let after = ProcStat::read(pid);
    drop(daemon);
    let run = run?;
    let mut m = measurement(Mode::Device, NetBackend::NetTap, size, rep, &run);
    // source_cpu_ms_per_mpkt is the driver thread's: if it nears the
    // window's length per packet, the load generator is the bottleneck.
    if let (Some(b), Some(a)) = (before, after) {
        // CPU covers ramp and run; so do the packets it is divided by.
        let total = run.packets as f64 * (ramp + runtime).as_secs_f64() / run.seconds.max(1e-9);
        m.daemon_cpu_ms_per_mpkt = ms_per_mpkt(a.cpu_ns - b.cpu_ns, total as u64);
        m.daemon_peak_rss_kib = Some(a.peak_rss_kib);
        m.daemon_private_rss_kib = Some(a.private_kib);
    }
    Ok(m)
}

/// Boots one guest with `backend`'s NIC and runs one iperf3 UDP flood per
/// frame size to the namespace.
fn guest_runs(
    ns: &NetNs,
    cfg: &SuiteConfig,
    ws: &Workspace<'_>,
    socket: &Path,
    backend: NetBackend,
    sizes: &[u32],
    rep: u32,
) -> Result<Vec<NetMeasurement>, PerfError> {
    let secs = cfg.runtime.as_secs().max(1);
    let mut script = format!(
        "ip link set eth0 up\nip addr add {GUEST_IP}/24 dev eth0\n\
         ping -c 1 -W 10 {HOST_IP} > /dev/null || {{ echo no-ping; exit 10; }}\n"
    );
    for (i, size) in sizes.iter().enumerate() {
        let payload = size.saturating_sub(UDP_OVERHEAD).max(16);
        script.push_str(&format!(
            "echo '{JOB_MARK}{i}'\ntimeout {} iperf3 -c {HOST_IP} --connect-timeout 5000 -u -b 0 -l {payload} -t {secs} -J 2> /tmp/iperf.err\n\
             echo '{END_MARK}'\ncat /tmp/iperf.err\nsleep 1\n",
            secs + 30
        ));
    }
    let timeout = Duration::from_secs(90 + (secs + 15) * sizes.len() as u64);
    let mut guest = QemuGuest::new()
        .cpus(1)
        .binary("/usr/bin/iperf3")
        // QEMU 7.2 crashes starting a vhost-user NIC with MSI-X under TCG;
        // both NICs use INTx so they compare alike.
        .net_msix(false)
        .timeout(timeout);
    let daemon = match backend {
        NetBackend::NetTap => {
            let d = NetTap::start(
                ns,
                &cfg.bin.net_tap,
                socket,
                &["--tap", GUEST_TAP, "--mac", MAC, "--num-queue-pairs", "2"],
            )?;
            guest = guest.vhost_user_net(socket, MAC, GUEST_PAIRS);
            Some(d)
        }
        _ => {
            guest = guest.tap_net(GUEST_TAP, MAC, GUEST_PAIRS);
            None
        }
    };
    let server = Iperf3Server::start(ns)?;
    let before = daemon.as_ref().and_then(|d| ProcStat::read(d.pid()));
    // QEMU looks its tap up in the namespace of the thread that starts it.
    let run = ns.run(move || {
        guest
            .run(&script)
            .map_err(|e| PerfError::Setup(format!("guest ({}): {e}", backend.name())))
    });
    let after = daemon.as_ref().and_then(|d| ProcStat::read(d.pid()));
    drop(server);
    drop(daemon);
    let run = run?;
    let mut out = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        let text =
            between(&run.output, &format!("{JOB_MARK}{i}\n"), END_MARK).ok_or_else(|| {
                PerfError::Fio(format!("guest printed no iperf3 result for {size} B"))
            })?;
        // Anything before the JSON object (a warning) is not iperf3's JSON.
        let text = text.find('{').map_or(text, |at| &text[at..]);
        let rel = ws.save(&format!("guest-{}-tx-{size}-r{rep}", backend.name()), text)?;
        // A run that stalled or failed is kept, with its reason, and left
        // out of the figures.
        let (udp, failed) = match parse_udp(text) {
            Ok(u) => (u, None),
            Err(e) => {
                eprintln!(
                    "cradle-perf net: {} guest run at {size} B failed: {e}",
                    backend.name()
                );
                (
                    UdpResult {
                        sent: 0,
                        received: 0,
                        bytes: 0,
                        seconds: 0.0,
                    },
                    Some(e.to_string()),
                )
            }
        };
        let mut m = NetMeasurement {
            point: NetPoint {
                mode: Mode::Guest,
                direction: "tx".into(),
                frame_len: size,
            },
            backend,
            repetition: rep,
            packets: udp.received,
            seconds: udp.seconds,
            pps: udp.pps(),
            daemon_peak_rss_kib: None,
            daemon_private_rss_kib: None,
            daemon_cpu_ms_per_mpkt: None,
            source_cpu_ms_per_mpkt: None,
            raw_json: Some(rel),
            failed,
        };
        if let (Some(b), Some(a)) = (before, after) {
            m.daemon_peak_rss_kib = Some(a.peak_rss_kib);
            m.daemon_private_rss_kib = Some(a.private_kib);
            // One boot carries every size: its CPU is shared over all packets.
            let all: u64 =
                out.iter().map(|x: &NetMeasurement| x.packets).sum::<u64>() + udp.received;
            if i + 1 == sizes.len() {
                m.daemon_cpu_ms_per_mpkt = ms_per_mpkt(a.cpu_ns - b.cpu_ns, all);
            }
        }
        out.push(m);
    }
    Ok(out)
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

/// net-tap inside the namespace, pinned to the daemon CPU, with its
/// production sandbox and seccomp filter; SIGTERM and wait on drop.
struct NetTap {
    child: Child,
    socket: PathBuf,
}

impl NetTap {
    fn start(ns: &NetNs, bin: &Path, socket: &Path, args: &[&str]) -> Result<NetTap, PerfError> {
        let _ = std::fs::remove_file(socket);
        // taskset and `ip netns exec` both exec: the child's pid is net-tap's.
        let mut child = Command::new("taskset")
            .args(["-c", DAEMON_CPU, "ip", "netns", "exec", ns.name()])
            .arg(bin)
            .arg("--socket")
            .arg(socket)
            .args(["--log-level", "warn"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| PerfError::Setup(format!("{}: {e}", bin.display())))?;
        if let Err(e) = wait_for_socket(&mut child, socket) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(PerfError::Setup(format!("net-tap: {e}")));
        }
        Ok(NetTap {
            child,
            socket: socket.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NetTap {
    fn drop(&mut self) {
        stop(&mut self.child);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// SIGTERM, up to 5 s to exit, then SIGKILL.
fn stop(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `iperf3 -s` on the namespace's end of the guest link.
struct Iperf3Server(Child);

impl Iperf3Server {
    fn start(ns: &NetNs) -> Result<Iperf3Server, PerfError> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "iperf3", "-s", "-B", HOST_IP])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| PerfError::Setup(format!("iperf3 -s (apt-get install iperf3): {e}")))?;
        Ok(Iperf3Server(child))
    }
}

impl Drop for Iperf3Server {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}
