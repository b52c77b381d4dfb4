//! Hostile chains built by hand on a raw virtqueue: each gets an error
//! status (or is dropped when it has no status byte) and a counter, and
//! nothing outside the chain's writable buffers is written.

mod common;

use std::time::Duration;

use common::*;
use cradle_devices::driver::blk::{S_IOERR, S_OK, T_IN, T_OUT};
use cradle_devices::driver::{Buffer, Driver, DriverConfig, Used, VirtQueue};
use vm_memory::GuestAddress;

struct Raw {
    _drv: Driver,
    q: VirtQueue,
    hdr: GuestAddress,
    data: GuestAddress,
    status: GuestAddress,
}

fn raw(d: &InProc, queue_size: u16) -> Raw {
    let mut drv = Driver::connect(
        &d.sock,
        DriverConfig {
            queue_size,
            memory_bytes: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let mem = drv.memory().clone();
    let q = drv.take_queues().remove(0);
    let hdr = mem.alloc(4096, 4096).unwrap();
    let data = mem.alloc(64 * 1024, 4096).unwrap();
    let status = mem.alloc(4096, 4096).unwrap();
    Raw {
        _drv: drv,
        q,
        hdr,
        data,
        status,
    }
}

impl Raw {
    fn header(&self, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&kind.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.q.write(self.hdr, &h).unwrap();
        self.q.write(self.status, &[0xee]).unwrap();
    }

    fn run(&mut self, bufs: &[Buffer]) -> Used {
        self.q.add_chain(bufs).unwrap();
        self.q.kick().unwrap();
        let u = self.q.wait_used(Duration::from_secs(5)).unwrap();
        assert_eq!(u.len(), 1);
        u[0]
    }

    fn status(&self) -> u8 {
        self.q.read(self.status, 1).unwrap()[0]
    }
}

const OUTSIDE: u64 = 1 << 40;

#[test]
fn chain_without_status_descriptor_is_dropped() {
    let d = start(1 << 20, &[]);
    let mut r = raw(&d, 64);
    r.header(T_IN, 0);
    let u = r.run(&[Buffer::readable(r.hdr, 16), Buffer::readable(r.data, 512)]);
    assert_eq!(u.len, 0);
    // Status outside guest memory, and a zero-length status: dropped too.
    let u = r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::writable(r.data, 512),
        Buffer::writable(GuestAddress(OUTSIDE), 1),
    ]);
    assert_eq!(u.len, 0);
    let u = r.run(&[Buffer::readable(r.hdr, 16), Buffer::writable(r.status, 0)]);
    assert_eq!(u.len, 0);
    assert_eq!(r.status(), 0xee, "nothing written");
    assert!(eventually(|| d.device.counters.get("no_status") == 3));
}

#[test]
fn short_header_gets_ioerr() {
    let d = start(1 << 20, &[]);
    let mut r = raw(&d, 64);
    r.header(T_IN, 0);
    r.q.write(r.data, &[0x55; 512]).unwrap();
    let u = r.run(&[
        Buffer::readable(r.hdr, 8),
        Buffer::writable(r.data, 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!((u.len, r.status()), (1, S_IOERR));
    // Header outside memory, header device-writable, chain of status only.
    r.header(T_IN, 0);
    r.run(&[
        Buffer::readable(GuestAddress(OUTSIDE), 16),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_IOERR);
    r.header(T_IN, 0);
    r.run(&[
        Buffer::writable(r.hdr, 16),
        Buffer::writable(r.data, 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_IOERR);
    r.header(T_IN, 0);
    r.run(&[Buffer::writable(r.status, 1)]);
    assert_eq!(r.status(), S_IOERR);
    assert_eq!(
        r.q.read(r.data, 512).unwrap(),
        vec![0x55; 512],
        "data untouched"
    );
    assert!(eventually(|| d.device.counters.get("bad_header") == 4));
}

#[test]
fn data_outside_guest_memory_gets_ioerr() {
    let d = start(1 << 20, &[]);
    let mut r = raw(&d, 64);
    r.header(T_IN, 0);
    let u = r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::writable(GuestAddress(OUTSIDE), 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!((u.len, r.status()), (1, S_IOERR));
    // Straddling the end of guest memory.
    let end = r.q.memory().size();
    r.header(T_OUT, 0);
    r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::readable(GuestAddress(end - 256), 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_IOERR);
    // u64 wrap-around.
    r.header(T_IN, 0);
    r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::writable(GuestAddress(u64::MAX - 100), 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_IOERR);
    assert!(eventually(|| d.device.counters.get("bad_buffer") == 3));
}

#[test]
fn length_not_multiple_of_512_gets_ioerr() {
    let d = start(1 << 20, &[]);
    let mut r = raw(&d, 64);
    r.q.write(r.data, &[0x33; 1024]).unwrap();
    r.header(T_IN, 0);
    r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::writable(r.data, 1000),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_IOERR);
    r.header(T_IN, 0);
    r.run(&[Buffer::readable(r.hdr, 16), Buffer::writable(r.status, 1)]);
    assert_eq!(r.status(), S_IOERR, "read without data");
    assert_eq!(
        r.q.read(r.data, 1024).unwrap(),
        vec![0x33; 1024],
        "data untouched"
    );
    // Two segments that add up to 1024 are fine.
    r.header(T_IN, 0);
    r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::writable(r.data, 300),
        Buffer::writable(GuestAddress(r.data.0 + 4096), 724),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_OK);
    assert!(eventually(|| d.device.counters.get("bad_length") == 2));
}

#[test]
fn wrong_direction_gets_ioerr_and_writes_nothing() {
    let d = start(1 << 20, &[]);
    std::fs::write(&d.disk, vec![0x77u8; 1 << 20]).unwrap();
    let mut r = raw(&d, 64);
    r.q.write(r.data, &[0x11; 512]).unwrap();
    // A read whose data buffer is device-readable must not be filled.
    r.header(T_IN, 0);
    r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::readable(r.data, 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_IOERR);
    assert_eq!(r.q.read(r.data, 512).unwrap(), vec![0x11; 512]);
    // A write whose data buffer is device-writable must not reach the disk.
    r.header(T_OUT, 0);
    r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::writable(r.data, 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_IOERR);
    assert_eq!(&std::fs::read(&d.disk).unwrap()[..512], &[0x77; 512]);
    assert!(eventually(|| d.device.counters.get("bad_direction") == 2));
}

#[test]
fn more_segments_than_seg_max_gets_ioerr() {
    let d = start(1 << 20, &["--queue-size", "16"]);
    let mut drv = Driver::connect(
        &d.sock,
        DriverConfig {
            queue_size: 16,
            memory_bytes: 8 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let seg_max = u32::from_le_bytes(drv.get_config(12, 4).unwrap().try_into().unwrap());
    assert_eq!(seg_max, 14);
    let mem = drv.memory().clone();
    let mut q = drv.take_queues().remove(0);
    let hdr = mem.alloc(16, 16).unwrap();
    let data = mem.alloc(512 * 32, 4096).unwrap();
    let status = mem.alloc(16, 16).unwrap();
    let table = mem.alloc(16 * 64, 16).unwrap();
    let mut run = |segs: u32| {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&T_IN.to_le_bytes());
        q.write(hdr, &h).unwrap();
        let mut bufs = vec![Buffer::readable(hdr, 16)];
        for i in 0..segs {
            bufs.push(Buffer::writable(
                GuestAddress(data.0 + 512 * u64::from(i)),
                512,
            ));
        }
        bufs.push(Buffer::writable(status, 1));
        q.add_indirect_chain(table, &bufs).unwrap();
        q.kick().unwrap();
        q.wait_used(Duration::from_secs(5)).unwrap();
        q.read(status, 1).unwrap()[0]
    };
    assert_eq!(run(14), S_OK, "seg_max segments through an indirect table");
    assert_eq!(run(15), S_IOERR);
    assert!(eventually(
        || d.device.counters.get("too_many_segments") == 1
    ));
}

#[test]
fn looping_chain_terminates() {
    let d = start(1 << 20, &[]);
    let mut r = raw(&d, 8);
    r.header(T_IN, 0);
    // Build a valid chain, then point its last descriptor back at its head.
    let head =
        r.q.add_chain(&[Buffer::readable(r.hdr, 16), Buffer::writable(r.status, 1)])
            .unwrap();
    let desc = r.q.rings().desc;
    let second = {
        let raw =
            r.q.read(GuestAddress(desc.0 + 16 * u64::from(head) + 14), 2)
                .unwrap();
        u16::from_le_bytes([raw[0], raw[1]])
    };
    let at = GuestAddress(desc.0 + 16 * u64::from(second) + 12);
    r.q.write(at, &[3, 0]).unwrap(); // NEXT | WRITE
    r.q.write(GuestAddress(at.0 + 2), &head.to_le_bytes())
        .unwrap();
    r.q.kick().unwrap();
    let u = r.q.wait_used(Duration::from_secs(5)).unwrap();
    assert_eq!(u.len(), 1);
    // The daemon still serves good requests afterwards.
    r.header(T_IN, 0);
    r.run(&[
        Buffer::readable(r.hdr, 16),
        Buffer::writable(r.data, 512),
        Buffer::writable(r.status, 1),
    ]);
    assert_eq!(r.status(), S_OK);
}
