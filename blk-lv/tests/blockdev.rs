//! A real block device (a loop device with 4 KiB logical blocks): O_DIRECT
//! by default, geometry from the block ioctls, discard and write-zeroes
//! through fallocate on the device.

mod common;

use std::process::Command;

use common::*;
use cradle_devices::driver::blk::{BlkRequest, S_IOERR, S_OK};

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn loop_device(file: &std::path::Path) -> Loop {
    let out = Command::new("losetup")
        .args(["-f", "--show", "--sector-size", "4096"])
        .arg(file)
        .output()
        .expect("losetup (util-linux) is needed");
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Loop(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn loop_device_with_4k_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing.img");
    std::fs::write(&backing, vec![0x3cu8; 32 << 20]).unwrap();
    let dev = loop_device(&backing);
    let d = start_on(
        tempfile::tempdir().unwrap(),
        dev.0.clone().into(),
        &["--num-queues", "2"],
    );
    assert!(d.device.disk.is_block_device);
    assert!(d.device.disk.direct, "O_DIRECT by default on block devices");
    assert_eq!(d.device.disk.logical_block, 4096);
    let (mut drv, mut qs) = connect(&d.sock, 2, 64);
    let c = drv.get_config(0, 60).unwrap();
    assert_eq!(
        u64::from_le_bytes(c[0..8].try_into().unwrap()),
        (32 << 20) / 512
    );
    assert_eq!(
        u32::from_le_bytes(c[20..24].try_into().unwrap()),
        4096,
        "blk_size"
    );
    assert_eq!(
        u32::from_le_bytes(c[44..48].try_into().unwrap()),
        8,
        "discard_sector_alignment"
    );
    let q = &mut qs[0];
    let data = pattern(9, 64 * 1024);
    q.write(800, &data).unwrap();
    assert_eq!(q.read(800, 64 * 1024).unwrap(), data);
    assert_eq!(q.status(BlkRequest::Flush).unwrap(), S_OK);
    // Not a multiple of the 4 KiB logical block: the device refuses it.
    assert_eq!(
        q.status(BlkRequest::Read {
            sector: 1,
            len: 512
        })
        .unwrap(),
        S_IOERR
    );
    assert_eq!(
        q.status(BlkRequest::WriteZeroes {
            sector: 0,
            sectors: 64,
            unmap: false
        })
        .unwrap(),
        S_OK
    );
    assert_eq!(
        q.status(BlkRequest::Discard {
            sector: 64,
            sectors: 64
        })
        .unwrap(),
        S_OK
    );
    assert!(q.read(0, 32768).unwrap().iter().all(|b| *b == 0));
    assert!(q.read(128, 4096).unwrap().iter().all(|b| *b == 0x3c));
    drop(qs);
    drop(drv);
    assert!(eventually(|| d.device.total_in_flight() == 0));
    // The writes went through to the loop device's backing file.
    std::process::Command::new("sync").status().unwrap();
    let host = std::fs::read(&backing).unwrap();
    assert!(host[800 * 512..800 * 512 + 65536] == data[..]);
}
