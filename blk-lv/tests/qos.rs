//! QoS limits hold within ±10% over a 2 s window with several queues
//! pushing as hard as they can (a correctness test, not a speed test).

mod common;

use std::time::{Duration, Instant};

use common::*;
use cradle_devices::driver::blk::{BlkRequest, S_OK};

/// Runs `queues` closed-loop submitters for `window` and returns
/// (requests, bytes) completed.
fn hammer(sock: &std::path::Path, queues: u16, len: u32, window: Duration) -> (u64, u64) {
    let (_drv, qs) = connect(sock, queues, 64);
    let start = Instant::now();
    let threads: Vec<_> = qs
        .into_iter()
        .map(|mut q| {
            std::thread::spawn(move || {
                q.set_copy_reads(false);
                let mut n = 0u64;
                let mut tag = 0u64;
                loop {
                    while q.free_slots() > 0 && start.elapsed() < window {
                        q.submit(
                            BlkRequest::Read {
                                sector: (tag % 1024) * 8,
                                len,
                            },
                            tag,
                        )
                        .unwrap();
                        tag += 1;
                    }
                    q.kick().unwrap();
                    if q.in_flight() == 0 {
                        break;
                    }
                    for c in q.reap(Duration::from_secs(10)).unwrap() {
                        assert_eq!(c.status, S_OK);
                        // Count only what completed inside the window.
                        if start.elapsed() <= window {
                            n += 1;
                        }
                    }
                }
                n
            })
        })
        .collect();
    let n: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    (n, n * u64::from(len))
}

fn within(measured: f64, expected: f64) -> bool {
    (measured - expected).abs() <= expected * 0.10
}

#[test]
fn iops_limit_within_ten_percent() {
    let d = start(
        8 << 20,
        &["--num-queues", "2", "--iops", "500", "--iops-burst", "10"],
    );
    let (n, _) = hammer(&d.sock, 2, 4096, Duration::from_secs(2));
    let rate = n as f64 / 2.0;
    assert!(
        within(rate, 500.0),
        "measured {rate} IOPS for a 500 IOPS limit"
    );
    assert!(d.device.counters.get("throttled") > 0);
}

#[test]
fn bps_limit_within_ten_percent() {
    // 4 MiB/s with 64 KiB reads = 64 requests/s.
    let d = start(
        8 << 20,
        &[
            "--num-queues",
            "2",
            "--bps",
            "4194304",
            "--bps-burst",
            "131072",
        ],
    );
    let (_, bytes) = hammer(&d.sock, 2, 65536, Duration::from_secs(2));
    let rate = bytes as f64 / 2.0;
    assert!(
        within(rate, 4194304.0),
        "measured {rate} B/s for a 4 MiB/s limit"
    );
}

#[test]
fn no_limit_is_not_throttled() {
    let d = start(8 << 20, &[]);
    let (n, _) = hammer(&d.sock, 1, 4096, Duration::from_millis(300));
    assert!(n > 150, "only {n} requests in 300 ms without a limit");
    assert_eq!(d.device.counters.get("throttled"), 0);
}

#[test]
fn throttled_queue_does_not_block_other_queues() {
    let d = start(
        8 << 20,
        &["--num-queues", "2", "--iops", "20", "--iops-burst", "1"],
    );
    let (_drv, mut qs) = connect(&d.sock, 2, 64);
    let mut q1 = qs.pop().unwrap();
    let mut q0 = qs.pop().unwrap();
    // Queue 0: 20 reads at 20 IOPS, about a second of waiting.
    for k in 0..20u64 {
        q0.submit(
            BlkRequest::Read {
                sector: k * 8,
                len: 4096,
            },
            k,
        )
        .unwrap();
    }
    q0.kick().unwrap();
    assert!(eventually(|| d.device.counters.get("throttled") >= 1));
    // Queue 1: GET_ID and FLUSH are not rate limited and must not wait.
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(q1.status(BlkRequest::GetId).unwrap(), S_OK);
        assert_eq!(q1.status(BlkRequest::Flush).unwrap(), S_OK);
    }
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
    assert!(q0.in_flight() > 5, "queue 0 still throttled");
}
