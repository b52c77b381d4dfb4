//! `bali run` inside a QEMU guest: a cgroup v2 hierarchy with the memory
//! controller delegated (which this host lacks), and an initramfs root
//! (where `pivot_root` is refused and bali moves the mount and chroots).

mod common;
use common::*;

use cradle_testbed::QemuGuest;
use std::time::Duration;

#[test]
fn qemu_memory_limit_in_a_delegated_cgroup() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let id = key_id(keys.path());
    let script = format!(
        r#"set -e
mkdir -p /sys/fs/cgroup /tmp
mount -t cgroup2 none /sys/fs/cgroup
echo +memory > /sys/fs/cgroup/cgroup.subtree_control
mkdir /sys/fs/cgroup/svc
# Only bali (then the service) lives in the delegated cgroup.
in_svc() {{ sh -c 'echo $$ > /sys/fs/cgroup/svc/cgroup.procs; exec "$@"' in_svc "$@"; }}
in_svc bali run --key {id} -m 64M /img.tar.gz -- 'cat /proc/self/cgroup'
echo "max=$(cat /sys/fs/cgroup/svc/memory.max)"
in_svc bali run --key {id} -m 32M /img.tar.gz -- 'cat /dev/zero > /dev/shm/fill; echo after-fill' || true
echo "events: $(grep -E '^(max|oom_kill) ' /sys/fs/cgroup/svc/memory.events | tr '\n' ' ')"
rmdir /sys/fs/cgroup/svc 2>/dev/null || true
"#
    );
    let run = QemuGuest::new()
        .binary_at(env!("CARGO_BIN_EXE_bali"), "/usr/bin/bali")
        .binary("/bin/busybox")
        .file(&img, "/img.tar.gz")
        .timeout(Duration::from_secs(240))
        .run(&script)
        .unwrap_or_else(|e| panic!("{e}"));
    let out = run.output;
    assert!(out.contains("0::/svc\n"), "{out}");
    assert!(out.contains("max=67108864\n"), "{out}");
    // The service filled tmpfs up to the 32M limit and was held there.
    let events = out.lines().find(|l| l.starts_with("events: ")).unwrap();
    let max: u64 = events
        .split_whitespace()
        .skip_while(|w| *w != "max")
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(max > 0, "{out}");
}
