//! Multi-queue concurrency, config space, write cache, reconnects.

mod common;

use std::time::Duration;

use common::*;
use cradle_devices::driver::blk::{BlkRequest, S_OK};
use cradle_devices::driver::{Driver, DriverConfig, VIRTIO_RING_F_EVENT_IDX};

#[test]
fn four_queues_with_concurrent_submitters() {
    let d = start(64 << 20, &["--num-queues", "4"]);
    let (_drv, qs) = connect(&d.sock, 4, 128);
    let threads: Vec<_> = qs
        .into_iter()
        .enumerate()
        .map(|(i, mut q)| {
            std::thread::spawn(move || {
                // Each queue owns its own 16 MiB stripe; 32 requests in flight.
                let base = i as u64 * (16 << 20) / 512;
                let mut submitted = 0u64;
                let mut done = 0u64;
                while done < 512 {
                    while submitted < 512 && q.free_slots() > 0 {
                        let sector = base + (submitted % 256) * 8;
                        let data = pattern(i as u64 * 1000 + submitted % 256, 4096);
                        q.submit(
                            BlkRequest::Write {
                                sector,
                                data: &data,
                            },
                            submitted,
                        )
                        .unwrap();
                        submitted += 1;
                    }
                    q.kick().unwrap();
                    for c in q.reap(Duration::from_secs(10)).unwrap() {
                        assert_eq!(c.status, S_OK);
                        done += 1;
                    }
                }
                for k in 0..256u64 {
                    assert_eq!(
                        q.read(base + k * 8, 4096).unwrap(),
                        pattern(i as u64 * 1000 + k, 4096)
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(eventually(|| d.device.counters.get("writes") == 4 * 512));
    assert_eq!(d.device.total_in_flight(), 0);
}

#[test]
fn config_space_describes_the_disk() {
    let d = start(10 << 20, &["--num-queues", "3", "--queue-size", "128"]);
    let mut drv = Driver::connect(
        &d.sock,
        DriverConfig {
            num_queues: 3,
            queue_size: 128,
            ..Default::default()
        },
    )
    .unwrap();
    let c = drv.get_config(0, 60).unwrap();
    let u32at = |o: usize| u32::from_le_bytes(c[o..o + 4].try_into().unwrap());
    assert_eq!(
        u64::from_le_bytes(c[0..8].try_into().unwrap()),
        (10 << 20) / 512,
        "capacity"
    );
    assert_eq!(u32at(12), 126, "seg_max");
    assert_eq!(u32at(20), 512, "blk_size");
    assert_eq!(c[32], 1, "writeback on");
    assert_eq!(u16::from_le_bytes([c[34], c[35]]), 3, "num_queues");
    assert_eq!(u32at(40), 1, "max_discard_seg");
    assert_eq!(u32at(52), 1, "max_write_zeroes_seg");
    assert_eq!(c[56], 1, "write_zeroes_may_unmap");
    // CONFIG_WCE: the guest turns the cache off and the device says so.
    drv.set_config(32, &[0]).unwrap();
    assert_eq!(drv.get_config(32, 1).unwrap(), vec![0]);
    let mut q =
        cradle_devices::driver::blk::BlkQueue::new(drv.take_queues().remove(0), 4096).unwrap();
    q.write(0, &[9; 4096]).unwrap();
    assert_eq!(q.read(0, 4096).unwrap(), vec![9; 4096]);
    assert!(!d
        .device
        .writeback
        .load(std::sync::atomic::Ordering::Relaxed));
}

#[test]
fn works_without_event_idx() {
    let d = start(1 << 20, &[]);
    let mut drv = Driver::connect(
        &d.sock,
        DriverConfig {
            features: !VIRTIO_RING_F_EVENT_IDX,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(drv.features() & VIRTIO_RING_F_EVENT_IDX, 0);
    let mut q =
        cradle_devices::driver::blk::BlkQueue::new(drv.take_queues().remove(0), 4096).unwrap();
    for i in 0..50u64 {
        q.write(i * 8, &pattern(i, 4096)).unwrap();
    }
    for i in 0..50u64 {
        assert_eq!(q.read(i * 8, 4096).unwrap(), pattern(i, 4096));
    }
}

#[test]
fn frontend_disconnect_then_reconnect() {
    let d = start(4 << 20, &["--num-queues", "2"]);
    for round in 0..3u64 {
        let (drv, mut qs) = connect(&d.sock, 2, 64);
        if round > 0 {
            assert_eq!(
                qs[0].read(0, 4096).unwrap(),
                pattern(round - 1, 4096),
                "data from the previous connection"
            );
        }
        qs[0].write(0, &pattern(round, 4096)).unwrap();
        // Leave requests in flight on queue 1 when the frontend goes away.
        for k in 0..16u64 {
            qs[1]
                .submit(
                    BlkRequest::Read {
                        sector: k * 8,
                        len: 4096,
                    },
                    k,
                )
                .unwrap();
        }
        qs[1].kick().unwrap();
        drop(qs);
        drop(drv);
    }
    assert!(eventually(|| d.device.total_in_flight() == 0));
}

#[test]
fn stop_queue_waits_for_in_flight_requests() {
    let d = start(4 << 20, &[]);
    let (mut drv, mut qs) = connect(&d.sock, 1, 64);
    let q = &mut qs[0];
    for k in 0..20u64 {
        q.submit(
            BlkRequest::Write {
                sector: k * 8,
                data: &[1; 4096],
            },
            k,
        )
        .unwrap();
    }
    q.kick().unwrap();
    // GET_VRING_BASE returns only once every request the device took from
    // the ring has been answered: the used ring then holds exactly `base`.
    let base = drv.stop_queue(0).unwrap();
    assert!(base <= 20, "base {base}");
    assert_eq!(d.device.total_in_flight(), 0);
    let done = q.poll().unwrap();
    assert_eq!(done.len() as u32, base);
    assert!(done.iter().all(|c| c.status == S_OK));
}

#[test]
fn stop_queue_waits_for_throttled_requests() {
    // 10 IOPS: a throttled request waits up to 100 ms for its token.
    let d = start(4 << 20, &["--iops", "10", "--iops-burst", "1"]);
    let (mut drv, mut qs) = connect(&d.sock, 1, 64);
    let q = &mut qs[0];
    for k in 0..20u64 {
        q.submit(
            BlkRequest::Read {
                sector: k * 8,
                len: 4096,
            },
            k,
        )
        .unwrap();
    }
    q.kick().unwrap();
    assert!(eventually(|| d.device.counters.get("throttled") >= 1));
    assert!(
        d.device.total_in_flight() >= 1,
        "a request waits for a token"
    );
    let base = drv.stop_queue(0).unwrap();
    // Everything taken from the ring was answered before the stop returned,
    // including the request that was waiting for a token.
    assert_eq!(d.device.total_in_flight(), 0);
    let done = q.poll().unwrap();
    assert_eq!(done.len() as u32, base);
    assert!(base < 20, "QoS kept some in the ring");
    assert!(done.iter().all(|c| c.status == S_OK));
}

#[test]
fn no_flush_feature_means_write_through() {
    let d = start(1 << 20, &[]);
    let mut drv = Driver::connect(
        &d.sock,
        DriverConfig {
            features: !(1u64 << 9),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(drv.features() & (1 << 9), 0, "FLUSH not negotiated");
    assert_eq!(drv.get_config(32, 1).unwrap(), vec![0], "writeback off");
    assert!(!d
        .device
        .writeback
        .load(std::sync::atomic::Ordering::Relaxed));
    drop(drv);
    // The next frontend negotiates FLUSH and gets the cache back.
    let mut drv = Driver::connect(&d.sock, DriverConfig::default()).unwrap();
    assert_eq!(drv.get_config(32, 1).unwrap(), vec![1]);
}
