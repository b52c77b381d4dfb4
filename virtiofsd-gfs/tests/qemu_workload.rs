//! The real Linux virtiofs driver in a QEMU guest against our daemon and,
//! with the very same script and checks, against the reference virtiofsd
//! (proving the test fair).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{start, Which};
use cradle_testbed::QemuGuest;

/// The guest side: every file operation of issue #4, each checked in the
/// guest; the host side is checked after the run.
const WORKLOAD: &str = r#"
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

fn run_workload(which: Which) {
    let tree = tempfile::tempdir().unwrap();
    fs::set_permissions(tree.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(tree.path().join("host.txt"), "written on the host\n").unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("fs.sock");
    let _d = start(which, tree.path(), &sock, "auto", &["--xattr"]);
    let run = QemuGuest::new()
        .vhost_user_fs(&sock, "gfs")
        .binary("/usr/bin/setfattr")
        .binary("/usr/bin/getfattr")
        .binary("/usr/bin/fio")
        .run(WORKLOAD)
        .unwrap_or_else(|e| panic!("{which:?}: {e}"));
    assert!(run.output.contains("written on the host"), "{}", run.output);
    assert!(run.output.contains("WORKLOAD-OK"), "{}", run.output);
    assert!(run.output.contains("g 640 1234 4321 5"), "{}", run.output);
    check_host_view(tree.path());
}

fn check_host_view(t: &Path) {
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
    let out = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", "user.gfs"])
        .arg(t.join("g"))
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hello");
}

#[test]
fn qemu_workload_against_ours() {
    run_workload(Which::Ours);
}

#[test]
fn qemu_workload_against_reference_virtiofsd() {
    run_workload(Which::Reference);
}
