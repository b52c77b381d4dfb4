//! blk-lv under the real Linux virtio_blk driver (QEMU TCG guests through
//! the test bed). One guest at a time per test; nextest's `vm` group caps
//! how many run at once.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use cradle_testbed::daemon::terminate;
use cradle_testbed::QemuGuest;

const MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

struct Daemon {
    child: ChildGuard,
    sock: std::path::PathBuf,
    img: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(size: u64, args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        std::fs::File::create(&img).unwrap().set_len(size).unwrap();
        Self::start_on(dir, img, args)
    }

    fn start_on(dir: tempfile::TempDir, img: std::path::PathBuf, args: &[&str]) -> Daemon {
        let sock = dir.path().join("blk.sock");
        let mut argv = vec![
            "--socket",
            sock.to_str().unwrap(),
            "--path",
            img.to_str().unwrap(),
        ];
        argv.extend_from_slice(args);
        let child = spawn_daemon(&sock, &argv);
        Daemon {
            child,
            sock,
            img,
            _dir: dir,
        }
    }

    fn guest(&self, queues: u32) -> QemuGuest {
        QemuGuest::new()
            .modules(MODULES)
            .vhost_user_blk(&self.sock, queues)
            .timeout(Duration::from_secs(240))
    }

    /// SIGTERM, exit 0, and the daemon's log.
    fn stop(&mut self) -> String {
        let st = terminate(&mut self.child, Duration::from_secs(30));
        let mut log = String::new();
        use std::io::Read;
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert_eq!(
            st.and_then(|s| s.code()),
            Some(0),
            "daemon exit; log:\n{log}"
        );
        log
    }
}

fn md5(data: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    std::fs::write(&p, data).unwrap();
    let out = std::process::Command::new("md5sum")
        .arg(&p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// (offset in 4 KiB blocks, pattern seed)
const SPOTS: &[(u64, u64)] = &[
    (0, 1),
    (17, 2),
    (4095, 3),
    (8191, 4),
    (12345, 5),
    (16383 - 16, 6),
];

#[test]
fn qemu_pattern_survives_power_cycle() {
    let mut d = Daemon::start(64 << 20, &[]);
    let pat_dir = tempfile::tempdir().unwrap();
    // Boot 1: write a 64 KiB pattern at each spot, fsync, power off.
    let mut write = String::from("set -e\n");
    let mut guest = d.guest(1);
    for (blk, seed) in SPOTS {
        let p = pat_dir.path().join(format!("p{seed}"));
        std::fs::write(&p, pattern(*seed, 64 * 1024)).unwrap();
        guest = guest.file(&p, &format!("/p{seed}"));
        write.push_str(&format!(
            "dd if=/p{seed} of=/dev/vda bs=4096 seek={blk} conv=fsync 2>/dev/null\n"
        ));
    }
    write.push_str("sync\necho written\n");
    let run = guest.run(&write).unwrap();
    assert!(run.output.contains("written"), "{}", run.output);
    // Boot 2, same daemon (the frontend reconnects): read them back.
    let mut read = String::new();
    for (blk, seed) in SPOTS {
        read.push_str(&format!(
            "echo \"{seed} $(dd if=/dev/vda bs=4096 skip={blk} count=16 2>/dev/null | md5sum)\"\n"
        ));
    }
    let run = d.guest(1).run(&read).unwrap();
    for (_, seed) in SPOTS {
        let want = md5(&pattern(*seed, 64 * 1024));
        assert!(
            run.output.contains(&format!("{seed} {want}")),
            "seed {seed}: {}",
            run.output
        );
    }
    // And from the host.
    let host = std::fs::read(&d.img).unwrap();
    for (blk, seed) in SPOTS {
        let off = (*blk * 4096) as usize;
        assert!(
            host[off..off + 65536] == pattern(*seed, 64 * 1024)[..],
            "host copy of seed {seed}"
        );
    }
    d.stop();
}

#[test]
fn qemu_fio_crc32c_verify_on_four_queues() {
    let mut d = Daemon::start(256 << 20, &["--num-queues", "4"]);
    let script = "set -e
echo queues $(ls /sys/block/vda/mq | wc -l)
fio --name=verify --filename=/dev/vda --direct=1 --ioengine=psync --rw=randwrite --bs=4k \
    --numjobs=4 --offset_increment=32m --size=4m --verify=crc32c --verify_fatal=1 \
    --do_verify=1 --group_reporting --output-format=terse --terse-version=3 > /tmp/fio.out
echo fio-exit $?
grep -c verify /tmp/fio.out || true
";
    let run = d
        .guest(4)
        .cpus(2)
        .binary("/usr/bin/fio")
        .run(script)
        .unwrap();
    assert!(
        run.output.contains("fio-exit 0"),
        "{}\n{}",
        run.output,
        run.console
    );
    // 4 queues offered; virtio_blk uses min(queues, vCPUs) of them.
    assert!(run.output.contains("queues 2"), "{}", run.output);
    let log = d.stop();
    assert!(!log.contains("io_errors"), "{log}");
    assert!(log.contains("writes="), "{log}");
}

#[test]
fn qemu_blkdiscard_punches_holes_in_the_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0x5au8; 64 << 20]).unwrap();
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(allocated(&img) >= 64 << 20);
    let mut d = Daemon::start_on(dir, img, &[]);
    let script = "set -e
cat /sys/block/vda/queue/discard_max_bytes
blkdiscard -o 0 -l 16777216 /dev/vda
blkdiscard -o 33554432 -l 8388608 /dev/vda
sync
echo first $(dd if=/dev/vda bs=4096 count=1 2>/dev/null | od -An -tx1 | head -1)
echo zeroed $(dd if=/dev/vda bs=4096 skip=8192 count=1 2>/dev/null | od -An -tx1 | head -1)
echo kept $(dd if=/dev/vda bs=4096 skip=4096 count=1 2>/dev/null | od -An -tx1 | head -1)
";
    let run = d.guest(1).run(script).unwrap();
    assert!(run.output.contains("first 00 00 00"), "{}", run.output);
    assert!(run.output.contains("zeroed 00 00 00"), "{}", run.output);
    assert!(run.output.contains("kept 5a 5a 5a"), "{}", run.output);
    let after = allocated(&d.img);
    // 24 MiB punched; allow 1 MiB for the extent-tree blocks the split needs.
    assert!(
        after <= (64 << 20) - (24 << 20) + (1 << 20),
        "{after} bytes still allocated"
    );
    assert_eq!(std::fs::metadata(&d.img).unwrap().len(), 64 << 20);
    let host = std::fs::read(&d.img).unwrap();
    assert!(host[..16 << 20].iter().all(|b| *b == 0));
    assert!(host[16 << 20..32 << 20].iter().all(|b| *b == 0x5a));
    let log = d.stop();
    assert!(log.contains("discards="), "{log}");
}

#[test]
fn qemu_readonly_disk_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0x11u8; 8 << 20]).unwrap();
    let mut d = Daemon::start_on(dir, img, &["--readonly"]);
    let script = "
echo ro $(cat /sys/block/vda/ro)
if dd if=/dev/zero of=/dev/vda bs=4096 count=1 oflag=direct conv=fsync 2>/dev/null; then echo write-ok; else echo write-refused; fi
echo data $(dd if=/dev/vda bs=4096 count=1 2>/dev/null | od -An -tx1 | head -1)
";
    let run = d.guest(1).run(script).unwrap();
    assert!(run.output.contains("ro 1"), "{}", run.output);
    assert!(run.output.contains("write-refused"), "{}", run.output);
    assert!(run.output.contains("data 11 11 11"), "{}", run.output);
    assert!(
        std::fs::read(&d.img).unwrap().iter().all(|b| *b == 0x11),
        "host file untouched"
    );
    d.stop();
}

#[test]
fn qemu_fstrim_returns_deleted_file_blocks_to_the_host() {
    let mut d = Daemon::start(128 << 20, &[]);
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    let guest = |d: &Daemon| {
        d.guest(1)
            .binary("/usr/sbin/mkfs.ext4")
            .binary("/usr/sbin/fstrim")
    };
    // Boot 1: a filesystem with a 32 MiB file.
    let run = guest(&d)
        .run(
            "set -e
mkfs.ext4 -q -F -E nodiscard /dev/vda
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt
dd if=/dev/zero of=/mnt/big bs=1M count=32 2>/dev/null
sync
umount /mnt
echo filled",
        )
        .unwrap();
    assert!(run.output.contains("filled"), "{}", run.output);
    let full = allocated(&d.img);
    assert!(full >= 32 << 20, "{full}");
    // Boot 2: delete it and trim.
    let run = guest(&d)
        .run(
            "set -e
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt
rm /mnt/big
sync
fstrim -v /mnt
umount /mnt
echo trimmed",
        )
        .unwrap();
    assert!(run.output.contains("trimmed"), "{}", run.output);
    let after = allocated(&d.img);
    assert!(after + (30 << 20) <= full, "allocated {full} -> {after}");
    let log = d.stop();
    assert!(log.contains("discards="), "{log}");
}

/// mke2fs zeroes its inode tables and journal with
/// `fallocate(ZERO_RANGE)` on /dev/vda, which the guest kernel turns into
/// WRITE_ZEROES requests without UNMAP; a failed one is only visible as a
/// kernel "I/O error ... WRITE_ZEROES" line, because the kernel then falls
/// back to writing zeroes and mkfs succeeds anyway. The disk is a file in
/// a tmpfs, which has no ZERO_RANGE (as in the nested test bed, whose L1
/// root is a tmpfs): blk-lv must zero it another way.
#[test]
fn qemu_mkfs_ext4_on_a_tmpfs_file_without_io_errors() {
    let dir = tempfile::Builder::new()
        .prefix("blk-lv-mkfs")
        .tempdir_in("/dev/shm")
        .unwrap();
    let img = dir.path().join("disk.img");
    // Junk, so that a write-zeroes that did nothing would show.
    std::fs::write(&img, vec![0xa5u8; 128 << 20]).unwrap();
    let mut d = Daemon::start_on(dir, img, &[]);
    let script = "set -e
mkfs.ext4 -F -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 /dev/vda > /tmp/mkfs.out 2>&1
echo mkfs-ok
echo errors $(dmesg | grep -c 'error' || true)
dmesg | grep 'error' || true
mkdir -p /mnt
mount -t ext4 /dev/vda /mnt
echo hello > /mnt/f
umount /mnt
echo mounted
";
    let run = d
        .guest(1)
        .binary("/usr/sbin/mkfs.ext4")
        .run(script)
        .unwrap();
    assert!(run.output.contains("mkfs-ok"), "{}", run.output);
    assert!(run.output.contains("mounted"), "{}", run.output);
    assert!(
        run.output.contains("errors 0"),
        "{}\n{}",
        run.output,
        run.console
    );
    let log = d.stop();
    assert!(log.contains("write_zeroes="), "{log}");
    assert!(!log.contains("io_errors"), "{log}");
}
