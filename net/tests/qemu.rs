//! The real Linux virtio_net driver in a QEMU guest, through net-tap, to a
//! peer in a network namespace the test creates (link-local addresses).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::time::Duration;

use common::{Daemon, NetNs};
use cradle_testbed::QemuGuest;
use sha2::{Digest, Sha256};

const HOST_IP: &str = "169.254.10.1";
const GUEST_IP: &str = "169.254.10.2";
const MAC: &str = "52:54:00:0a:0b:0c";
const MB: usize = 200;

/// Deterministic pseudo-random bytes (xorshift), so both ends can hash them.
fn pattern(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Host-side peer in the namespace: port 5001 receives MB megabytes and
/// returns their sha256; port 5002 sends MB megabytes and returns theirs.
fn start_peer(
    ns: &NetNs,
) -> (
    std::thread::JoinHandle<String>,
    std::thread::JoinHandle<String>,
) {
    let (tx_ready, rx_ready) = std::sync::mpsc::channel();
    let tx2 = tx_ready.clone();
    let recv = ns.spawn(move || {
        let l = TcpListener::bind((HOST_IP, 5001)).unwrap();
        tx_ready.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut h = Sha256::new();
        let mut left = MB << 20;
        let mut buf = vec![0u8; 1 << 16];
        while left > 0 {
            let n = s.read(&mut buf[..left.min(1 << 16)]).unwrap();
            assert!(n > 0, "guest closed early, {left} bytes missing");
            h.update(&buf[..n]);
            left -= n;
        }
        let _ = s.shutdown(Shutdown::Both);
        hex::encode(h.finalize())
    });
    let send = ns.spawn(move || {
        let l = TcpListener::bind((HOST_IP, 5002)).unwrap();
        tx2.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_write_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut h = Sha256::new();
        let mut st = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; 1 << 16];
        for _ in 0..(MB << 4) {
            pattern(&mut buf, &mut st);
            h.update(&buf);
            s.write_all(&buf).unwrap();
        }
        let _ = s.shutdown(Shutdown::Both);
        hex::encode(h.finalize())
    });
    rx_ready.recv().unwrap();
    rx_ready.recv().unwrap();
    (recv, send)
}

#[test]
fn qemu_guest_pings_and_moves_200mb_each_way_over_two_queue_pairs() {
    let ns = NetNs::new();
    let mut d = Daemon::start(
        &ns,
        &["--tap", "ntq", "--num-queue-pairs", "2", "--mac", MAC],
    );
    ns.exec(&["ip", "addr", "add", &format!("{HOST_IP}/24"), "dev", "ntq"]);
    let (recv, send) = start_peer(&ns);
    // Two transfers pinned to the two vCPUs, so the guest transmits on
    // both queues (XPS) and the tap steers each flow's answers back to
    // the queue it came from.
    let script = format!(
        "ip link set eth0 up\n\
         ip addr add {GUEST_IP}/24 dev eth0\n\
         ping -c 3 -w 20 {HOST_IP} || exit 10\n\
         mkfifo /tmp/f\n\
         sha256sum < /tmp/f > /tmp/tx.sum &\n\
         ( dd if=/dev/urandom bs=64k count={} 2>/dev/null | tee /tmp/f | taskset 1 nc {HOST_IP} 5001 ) &\n\
         taskset 2 nc {HOST_IP} 5002 | sha256sum > /tmp/rx.sum\n\
         wait\n\
         echo \"TX $(cut -d' ' -f1 /tmp/tx.sum)\"\n\
         echo \"RX $(cut -d' ' -f1 /tmp/rx.sum)\"\n",
        MB * 16
    );
    // net_msix(false): QEMU 7.2 crashes starting a vhost-user NIC with
    // MSI-X under TCG (see the test bed's docs).
    let run = QemuGuest::new()
        .cpus(2)
        .vhost_user_net(&d.socket, MAC, 2)
        .net_msix(false)
        .timeout(Duration::from_secs(280))
        .run(&script);
    let run = match run {
        Ok(r) => r,
        Err(e) => panic!("guest failed: {e}\ndaemon log:\n{}", d.log_text()),
    };
    let host_rx = recv.join().unwrap();
    let host_tx = send.join().unwrap();
    let line = |p: &str| {
        run.output
            .lines()
            .find_map(|l| l.strip_prefix(p))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(line("TX "), host_rx, "guest→host checksum\n{}", run.output);
    assert_eq!(line("RX "), host_tx, "host→guest checksum\n{}", run.output);
    let c0 = d.stop_counters(0);
    let c1 = common::Counters::parse(&d.log_text(), 1);
    eprintln!("pair 0: {:?}\npair 1: {:?}\n{}", c0.0, c1.0, run.output);
    for (i, c) in [(0, &c0), (1, &c1)] {
        assert!(c.get("rx_packets") > 0, "pair {i} carried no RX: {:?}", c.0);
        assert!(c.get("tx_packets") > 0, "pair {i} carried no TX: {:?}", c.0);
        assert_eq!(
            c.get("tx_bad_hdr") + c.get("tx_oversize") + c.get("tx_short"),
            0
        );
    }
    assert!(c0.get("rx_bytes") + c1.get("rx_bytes") >= (MB as u64) << 20);
    assert!(c0.get("tx_bytes") + c1.get("tx_bytes") >= (MB as u64) << 20);
}
