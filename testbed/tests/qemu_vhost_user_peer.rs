//! A vhost-user-blk disk served by the reference peer, qemu-storage-daemon:
//! data written on either side is seen by the other.

use std::fs;
use std::os::unix::fs::FileExt;

use cradle_testbed::peers::QemuStorageDaemon;
use cradle_testbed::QemuGuest;

const HOST_OFFSET: u64 = 100 * 512;
const GUEST_SECTOR: u64 = 2048;

#[test]
fn qemu_guest_and_host_share_a_qemu_storage_daemon_disk() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let file = fs::File::create(&image).unwrap();
    file.set_len(16 << 20).unwrap();
    file.write_all_at(b"host-pattern-1234", HOST_OFFSET)
        .unwrap();
    drop(file);
    let socket = dir.path().join("blk.sock");
    let qsd = QemuStorageDaemon::vhost_user_blk(&image, &socket, 1, true).unwrap();

    let script = format!(
        "set -e\n\
         cat /sys/block/vda/size\n\
         dd if=/dev/vda bs=512 skip={} count=1 2>/dev/null | head -c 17; echo\n\
         printf 'guest-pattern-5678' | dd of=/dev/vda bs=512 seek={GUEST_SECTOR} conv=notrunc,fsync 2>/dev/null\n",
        HOST_OFFSET / 512
    );
    let run = QemuGuest::new()
        .vhost_user_blk(qsd.socket(), 1)
        .run(&script)
        .unwrap();
    let mut lines = run.output.lines();
    assert_eq!(
        lines.next(),
        Some("32768"),
        "capacity in sectors: {}",
        run.console
    );
    assert_eq!(lines.next(), Some("host-pattern-1234"));
    drop(qsd);

    let mut buf = [0u8; 18];
    fs::File::open(&image)
        .unwrap()
        .read_exact_at(&mut buf, GUEST_SECTOR * 512)
        .unwrap();
    assert_eq!(&buf, b"guest-pattern-5678");
}
