//! Every request type through a real socket, the real vhost-user protocol
//! and io_uring, driven by our userspace driver.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use cradle_devices::driver::blk::{BlkRequest, S_IOERR, S_OK, S_UNSUPP};

#[test]
fn write_read_flush_roundtrip() {
    let d = start(8 << 20, &[]);
    let (_drv, mut qs) = connect(&d.sock, 1, 256);
    let q = &mut qs[0];
    for (i, sector) in [0u64, 7, 4096, (8 << 20) / 512 - 8].into_iter().enumerate() {
        let data = pattern(i as u64, 4096);
        q.write(sector, &data).unwrap();
        assert_eq!(q.read(sector, 4096).unwrap(), data);
    }
    assert_eq!(q.status(BlkRequest::Flush).unwrap(), S_OK);
    // The host file has the data at the same offsets.
    let host = std::fs::read(&d.disk).unwrap();
    assert_eq!(&host[7 * 512..7 * 512 + 4096], &pattern(1, 4096)[..]);
    assert!(eventually(|| d.device.counter("flushes") == 1));
    assert_eq!(d.device.counter("writes"), 4);
    assert_eq!(d.device.counter("bytes_read"), 4 * 4096);
}

#[test]
fn get_id_returns_serial() {
    let d = start(1 << 20, &["--serial", "vol-42"]);
    let (_drv, mut qs) = connect(&d.sock, 1, 64);
    let c = qs[0].execute(BlkRequest::GetId).unwrap();
    assert_eq!(c.status, S_OK);
    assert_eq!(&c.data[..6], b"vol-42");
    assert!(c.data[6..].iter().all(|b| *b == 0));
    assert_eq!(c.used_len, 21);
}

#[test]
fn discard_and_write_zeroes_punch_holes() {
    let d = start(16 << 20, &[]);
    let (_drv, mut qs) = connect(&d.sock, 1, 64);
    let q = &mut qs[0];
    let mb = vec![0xabu8; 256 * 1024];
    for i in 0..16u64 {
        for k in 0..4u64 {
            q.write(i * 2048 + k * 512, &mb).unwrap();
        }
    }
    let before = std::fs::metadata(&d.disk).unwrap().blocks();
    // Discard 4 MiB, zero 1 MiB with unmap, zero 1 MiB without.
    assert_eq!(
        q.status(BlkRequest::Discard {
            sector: 0,
            sectors: 8192
        })
        .unwrap(),
        S_OK
    );
    assert_eq!(
        q.status(BlkRequest::WriteZeroes {
            sector: 8192,
            sectors: 2048,
            unmap: true
        })
        .unwrap(),
        S_OK
    );
    assert_eq!(
        q.status(BlkRequest::WriteZeroes {
            sector: 10240,
            sectors: 2048,
            unmap: false
        })
        .unwrap(),
        S_OK
    );
    let after = std::fs::metadata(&d.disk).unwrap().blocks();
    assert!(
        after * 512 <= before * 512 - (5 << 20),
        "blocks before {before}, after {after}"
    );
    assert!(q.read(0, 4096).unwrap().iter().all(|b| *b == 0));
    assert!(q.read(10240, 4096).unwrap().iter().all(|b| *b == 0));
    assert_eq!(q.read(12288, 4096).unwrap(), vec![0xab; 4096]);
    assert_eq!(
        std::fs::metadata(&d.disk).unwrap().len(),
        16 << 20,
        "size kept"
    );
    assert!(eventually(
        || d.device.counter("discards") == 1 && d.device.counter("write_zeroes") == 2
    ));
}

#[test]
fn unsupported_type_gets_unsupp() {
    let d = start(1 << 20, &[]);
    let (_drv, mut qs) = connect(&d.sock, 1, 64);
    assert_eq!(
        qs[0]
            .status(BlkRequest::Raw {
                kind: 99,
                sector: 0
            })
            .unwrap(),
        S_UNSUPP
    );
    assert!(eventually(|| d.device.counter("unsupported") == 1));
}

#[test]
fn out_of_range_gets_ioerr() {
    let d = start(1 << 20, &[]);
    let (_drv, mut qs) = connect(&d.sock, 1, 64);
    let q = &mut qs[0];
    let last = (1 << 20) / 512 - 1;
    assert_eq!(
        q.status(BlkRequest::Read {
            sector: last,
            len: 512
        })
        .unwrap(),
        S_OK
    );
    assert_eq!(
        q.status(BlkRequest::Read {
            sector: last,
            len: 1024
        })
        .unwrap(),
        S_IOERR
    );
    assert_eq!(
        q.status(BlkRequest::Write {
            sector: last + 1,
            data: &[1; 512]
        })
        .unwrap(),
        S_IOERR
    );
    assert_eq!(
        q.status(BlkRequest::Read {
            sector: u64::MAX,
            len: 512
        })
        .unwrap(),
        S_IOERR
    );
    assert_eq!(
        q.status(BlkRequest::Discard {
            sector: last,
            sectors: 2
        })
        .unwrap(),
        S_IOERR
    );
    assert!(eventually(|| d.device.counter("out_of_range") == 4));
}

#[test]
fn readonly_refuses_modifications() {
    let d = start(1 << 20, &["--readonly"]);
    std::fs::write(&d.disk, vec![7u8; 1 << 20]).unwrap();
    let (drv, mut qs) = connect(&d.sock, 1, 64);
    assert_ne!(drv.features() & (1 << 5), 0, "VIRTIO_BLK_F_RO offered");
    let q = &mut qs[0];
    assert_eq!(q.read(0, 512).unwrap(), vec![7u8; 512]);
    assert_eq!(
        q.status(BlkRequest::Write {
            sector: 0,
            data: &[0; 512]
        })
        .unwrap(),
        S_IOERR
    );
    assert_eq!(
        q.status(BlkRequest::Discard {
            sector: 0,
            sectors: 1
        })
        .unwrap(),
        S_IOERR
    );
    assert_eq!(
        q.status(BlkRequest::WriteZeroes {
            sector: 0,
            sectors: 1,
            unmap: false
        })
        .unwrap(),
        S_IOERR
    );
    assert_eq!(
        std::fs::read(&d.disk).unwrap(),
        vec![7u8; 1 << 20],
        "file untouched"
    );
    assert!(eventually(|| d.device.counter("read_only") == 3));
}

#[test]
fn flush_after_completed_writes_and_in_a_mixed_batch() {
    let d = start(8 << 20, &[]);
    let (_drv, mut qs) = connect(&d.sock, 1, 128);
    let q = &mut qs[0];
    // Writes completed first, then one batch (one kick) mixing a FLUSH
    // with more writes: every request completes OK exactly once.
    for k in 0..16u64 {
        q.submit(
            BlkRequest::Write {
                sector: k * 8,
                data: &pattern(k, 4096),
            },
            k,
        )
        .unwrap();
    }
    q.kick().unwrap();
    let mut done = 0;
    while done < 16 {
        done += q.reap(std::time::Duration::from_secs(5)).unwrap().len();
    }
    q.submit(BlkRequest::Flush, 100).unwrap();
    for k in 16..32u64 {
        q.submit(
            BlkRequest::Write {
                sector: k * 8,
                data: &pattern(k, 4096),
            },
            k,
        )
        .unwrap();
    }
    q.kick().unwrap();
    let mut tags = Vec::new();
    while tags.len() < 17 {
        for c in q.reap(std::time::Duration::from_secs(5)).unwrap() {
            assert_eq!(c.status, S_OK, "tag {}", c.tag);
            tags.push(c.tag);
        }
    }
    tags.sort();
    let mut want: Vec<u64> = (16..32).collect();
    want.push(100);
    assert_eq!(tags, want);
    assert_eq!(q.status(BlkRequest::Flush).unwrap(), S_OK);
    let host = std::fs::read(&d.disk).unwrap();
    for k in 0..32u64 {
        let off = (k * 4096) as usize;
        assert!(host[off..off + 4096] == pattern(k, 4096)[..], "block {k}");
    }
    assert!(eventually(|| d.device.counter("flushes") == 2));
}

/// tmpfs (and other filesystems) have no `FALLOC_FL_ZERO_RANGE`: a
/// WRITE_ZEROES without UNMAP must still zero the range, and keep it
/// allocated. This is what a guest's mkfs.ext4 sends when the disk is a
/// file in a tmpfs (the nested test bed's L1 root, /dev/shm).
#[test]
fn write_zeroes_without_zero_range_support_falls_back() {
    let dir = tempfile::Builder::new()
        .prefix("blk-lv-wz")
        .tempdir_in("/dev/shm")
        .unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![0xcdu8; 4 << 20]).unwrap();
    let zero_range = nix_fallocate(
        &disk,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
    );
    assert_eq!(
        zero_range,
        Err(libc::EOPNOTSUPP),
        "this test needs a filesystem without ZERO_RANGE at /dev/shm"
    );
    let d = start_on(dir, disk, &[]);
    let (_drv, mut qs) = connect(&d.sock, 1, 64);
    let q = &mut qs[0];
    for (sector, unmap) in [(0u64, false), (4096, true), (2048, false)] {
        assert_eq!(
            q.status(BlkRequest::WriteZeroes {
                sector,
                sectors: 1024,
                unmap
            })
            .unwrap(),
            S_OK,
            "sector {sector} unmap {unmap}"
        );
    }
    let host = std::fs::read(&d.disk).unwrap();
    assert_eq!(host.len(), 4 << 20);
    let zeroed = |s: usize| host[s * 512..(s + 1024) * 512].iter().all(|b| *b == 0);
    assert!(zeroed(0) && zeroed(2048) && zeroed(4096));
    assert!(host[1024 * 512..2048 * 512].iter().all(|b| *b == 0xcd));
    assert!(host[(5120) * 512..].iter().all(|b| *b == 0xcd));
    // Without UNMAP the range stays allocated: 3.5 MiB of 4 still are
    // (only the UNMAP request may punch its 512 KiB out).
    let allocated = std::fs::metadata(&d.disk).unwrap().blocks() * 512;
    assert!(allocated >= (7 << 20) / 2, "{allocated}");
    assert!(eventually(|| d.device.counter("write_zeroes") == 3));
    assert_eq!(d.device.counter("io_errors"), 0);
}

/// `fallocate(mode)` over the first 4 KiB of `path`: `Err(errno)` on failure.
fn nix_fallocate(path: &std::path::Path, mode: i32) -> Result<(), i32> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    // SAFETY: plain syscall on an fd we own.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, 0, 4096) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}
