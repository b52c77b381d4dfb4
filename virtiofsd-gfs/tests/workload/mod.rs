//! The guest side shared by the QEMU tests: one script doing every file
//! operation of issue #4 under the real virtiofs driver, with the checks
//! of its output and of the tree as the host sees it afterwards (the same
//! for every daemon and backend, so a pass means the same thing); and two
//! guests run at once on two sockets.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use cradle_testbed::{GuestRun, QemuGuest};

/// The guest script: every check is made in the guest (`set -e`).
pub const WORKLOAD: &str = r#"
set -e
mount -t virtiofs gfs /mnt
cd /mnt
cat host.txt
echo hello > f
echo world >> f
test "$(cat f)" = "$(printf 'hello\nworld')"
truncate -s 5 f
test "$(cat f)" = hello
mv f g
test ! -e f
ln g hard
ln -s g soft
test "$(readlink soft)" = g
test "$(stat -c %h g)" = 2
mkdir -p d/e
rmdir d/e
echo x > d/gone
rm d/gone
chmod 640 g
chown 1234:4321 g
touch -d '2001-02-03 04:05:06' g
setfattr -n user.gfs -v hello g
test "$(getfattr --only-values -n user.gfs g)" = hello
dd if=/dev/zero of=big bs=64k count=16 2>/dev/null
fio --name=mm --filename=/mnt/mmap --size=256k --bs=4k --rw=write --ioengine=mmap --verify=crc32c --do_verify=1 --output=/dev/null
sync
ls -la /mnt > /dev/null
stat -c '%n %a %u %g %s' g
echo WORKLOAD-OK
"#;

/// Puts the file the workload reads first into the tree it will see.
pub fn seed(tree: &Path) {
    fs::write(tree.join("host.txt"), "written on the host\n").unwrap();
}

/// A guest on the vhost-user-fs `sock` (tag `gfs`) with the tools the
/// workload runs.
pub fn guest(sock: &Path) -> QemuGuest {
    QemuGuest::new()
        .vhost_user_fs(sock, "gfs")
        .binary("/usr/bin/setfattr")
        .binary("/usr/bin/getfattr")
        .binary("/usr/bin/fio")
}

/// The workload's output: it read the host's file, finished, and saw
/// the final attributes of `g`.
pub fn check_run(out: &str) {
    assert!(out.contains("written on the host"), "{out}");
    assert!(out.contains("WORKLOAD-OK"), "{out}");
    assert!(out.contains("g 640 1234 4321 5"), "{out}");
}

/// The tree `t` after the workload, as the host sees it.
pub fn check_host_view(t: &Path) {
    assert_eq!(fs::read(t.join("g")).unwrap(), b"hello");
    assert!(!t.join("f").exists());
    let g = fs::metadata(t.join("g")).unwrap();
    assert_eq!(g.mode() & 0o7777, 0o640);
    assert_eq!((g.uid(), g.gid()), (1234, 4321));
    assert_eq!(g.mtime(), 981_173_106, "2001-02-03 04:05:06 UTC");
    assert_eq!(g.nlink(), 2);
    assert_eq!(fs::metadata(t.join("hard")).unwrap().ino(), g.ino());
    assert_eq!(fs::read_link(t.join("soft")).unwrap(), Path::new("g"));
    assert!(t.join("d").is_dir() && !t.join("d/e").exists() && !t.join("d/gone").exists());
    assert_eq!(fs::read(t.join("big")).unwrap(), vec![0u8; 1 << 20]);
    assert_eq!(fs::metadata(t.join("mmap")).unwrap().len(), 256 << 10);
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.gfs"])
        .arg(t.join("g"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hello");
}

/// Guest `a` on `sa` and guest `b` on `sb` at the same time, each running
/// `script(me, peer)`; panics with both results unless both succeed.
pub fn two_guests(
    sa: &Path,
    sb: &Path,
    script: impl Fn(&str, &str) -> String,
) -> (GuestRun, GuestRun) {
    let ta = {
        let (sa, sa_script) = (sa.to_path_buf(), script("a", "b"));
        std::thread::spawn(move || QemuGuest::new().vhost_user_fs(&sa, "gfs").run(&sa_script))
    };
    let rb = QemuGuest::new()
        .vhost_user_fs(sb, "gfs")
        .run(&script("b", "a"));
    let ra = ta.join().unwrap();
    match (ra, rb) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("guest a: {a:?}\nguest b: {b:?}"),
    }
}
