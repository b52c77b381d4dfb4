//! Thousands of random, mostly malformed chains: the daemon answers every
//! one exactly once, writes nothing outside the buffers it was given, never
//! dies, and still serves good requests afterwards.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use cradle_devices::driver::blk::{BlkQueue, S_OK};
use cradle_devices::driver::{Buffer, Driver, DriverConfig};
use vm_memory::GuestAddress;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
}

#[test]
fn random_hostile_chains() {
    let d = start(1 << 20, &["--num-queues", "1"]);
    let mut drv = Driver::connect(
        &d.sock,
        DriverConfig {
            queue_size: 64,
            memory_bytes: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let mem = drv.memory().clone();
    let mut q = drv.take_queues().remove(0);
    // Buffers live in `arena`; `canary` is never handed to the device.
    let arena = mem.alloc(256 * 1024, 4096).unwrap();
    let canary = mem.alloc(64 * 1024, 4096).unwrap();
    let tables = mem.alloc(64 * 16 * 8, 4096).unwrap();
    q.write(canary, &[0xc5; 64 * 1024]).unwrap();
    let end = mem.size();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut answered = 0u64;
    for round in 0..200 {
        let mut heads = HashSet::new();
        for k in 0..8u64 {
            let n = 1 + rng.next() % 6;
            let mut bufs = Vec::new();
            for i in 0..n {
                let addr = match rng.next() % 8 {
                    0 => end - 256,
                    1 => end + rng.next() % 4096,
                    2 => u64::MAX - rng.next() % 4096,
                    3 => 0,
                    _ => arena.0 + (rng.next() % (192 * 1024)),
                };
                let len = rng.pick(&[0u32, 1, 15, 16, 17, 512, 513, 4096, 65536, u32::MAX]);
                // Inside guest memory, stay in the arena (or page 0, which
                // holds nothing): a writable buffer over the rings would be
                // the guest corrupting its own queue, not a device bug.
                let len = if addr >= arena.0 && addr < arena.0 + 256 * 1024 {
                    len.min(64 * 1024)
                } else if addr == 0 {
                    len.min(4096)
                } else {
                    len
                };
                bufs.push(Buffer {
                    addr,
                    len,
                    write: rng.next() % 2 == 0,
                });
                if i == 0 && rng.next() % 3 != 0 {
                    // A plausible header at the first buffer.
                    let mut h = [0u8; 16];
                    let t = rng.pick(&[0u32, 1, 4, 8, 11, 13, 2, 99, u32::MAX]);
                    h[0..4].copy_from_slice(&t.to_le_bytes());
                    let r = rng.next();
                    let s = rng.pick(&[0u64, 1, 2047, 2048, u64::MAX, r]);
                    h[8..16].copy_from_slice(&s.to_le_bytes());
                    let a = arena.0 + (rng.next() % 1024) * 16;
                    q.write(GuestAddress(a), &h).unwrap();
                    bufs[0] = Buffer {
                        addr: a,
                        len: 16,
                        write: false,
                    };
                }
            }
            let head = if rng.next() % 4 == 0 {
                let t = GuestAddress(tables.0 + k * 16 * 8);
                q.add_indirect_chain(t, &bufs)
            } else {
                q.add_chain(&bufs)
            }
            .unwrap();
            heads.insert(head);
        }
        q.kick().unwrap();
        while !heads.is_empty() {
            for u in q
                .wait_used(Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
            {
                assert!(
                    heads.remove(&u.head),
                    "head {} answered twice or unknown",
                    u.head
                );
                answered += 1;
            }
        }
    }
    assert_eq!(answered, 1600);
    assert_eq!(
        q.read(canary, 64 * 1024).unwrap(),
        vec![0xc5; 64 * 1024],
        "canary untouched"
    );
    // Still serving, on a new connection.
    drop(q);
    drop(drv);
    let (_drv, mut qs) = connect(&d.sock, 1, 64);
    let mut b: BlkQueue = qs.remove(0);
    b.write(0, &[1; 4096]).unwrap();
    assert_eq!(
        b.status(cradle_devices::driver::blk::BlkRequest::Flush)
            .unwrap(),
        S_OK
    );
    assert!(d.device.counters.get("requests") >= 1600);
}
