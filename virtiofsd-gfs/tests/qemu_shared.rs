//! GFS semantics under the real guest driver: a large tree lists
//! correctly, and two VMs (one daemon each) on one tree see each other's
//! writes with `--cache never`.

mod common;
mod workload;

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use common::{start, Which};
use cradle_testbed::QemuGuest;
use workload::two_guests;

#[test]
fn qemu_lists_a_tree_of_10000_files() {
    let tree = tempfile::tempdir().unwrap();
    let mut want = String::new();
    let mut names = Vec::new();
    for d in 0..100 {
        let dir = tree.path().join(format!("dir{d:03}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("file{f:03}")), format!("{d}/{f}")).unwrap();
            names.push(format!("/mnt/dir{d:03}/file{f:03}"));
        }
    }
    names.sort();
    for n in &names {
        writeln!(want, "{n}").unwrap();
    }
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("fs.sock");
    let _d = start(Which::Ours, tree.path(), &sock, "auto", &[]);
    let run = QemuGuest::new()
        .vhost_user_fs(&sock, "gfs")
        .timeout(Duration::from_secs(300))
        .run(
            "set -e\nmount -t virtiofs gfs /mnt\n\
             find /mnt -type f | sort > /tmp/list\n\
             wc -l < /tmp/list\nmd5sum < /tmp/list\n\
             cat /mnt/dir042/file042; echo\n\
             ls /mnt/dir099 | wc -l\n",
        )
        .unwrap();
    let mut lines = run.output.lines();
    assert_eq!(lines.next().map(str::trim), Some("10000"), "{}", run.output);
    let md5 = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(want.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        lines.next().map(str::trim),
        Some(String::from_utf8_lossy(&md5.stdout).trim()),
        "same sorted listing as the host"
    );
    assert_eq!(lines.next(), Some("42/42"));
    assert_eq!(lines.next().map(str::trim), Some("100"));
}

/// One guest's side of the exchange: write our stage number, wait until
/// the peer reached the same stage, twice; the peer's file is also re-read
/// through a descriptor opened before its last write.
fn peer_script(me: &str, peer: &str) -> String {
    format!(
        r#"set -e
mount -t virtiofs gfs /mnt
# `echo N > file` truncates before it writes: a reader can see an empty
# file in between, which counts as 0.
value_of() {{
  v=$(cat "$1" 2>/dev/null || true)
  case "$v" in ''|*[!0-9]*) v=0 ;; esac
  echo "$v"
}}
wait_for() {{
  i=0
  while [ "$(value_of /mnt/{peer})" -lt "$1" ]; do
    i=$((i+1)); [ $i -lt 600 ] || {{ echo "timeout waiting for {peer} >= $1"; exit 1; }}
    sleep 0.1
  done
}}
echo 1 > /mnt/{me}
wait_for 1
exec 3< /mnt/{peer}
echo 2 > /mnt/{me}
wait_for 2
test "$(cat <&3)" = 2
echo "seen {peer} 2"
touch /mnt/{me}.done
"#
    )
}

#[test]
fn qemu_two_guests_see_each_others_writes_with_cache_never() {
    let tree = tempfile::tempdir().unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let (sa, sb) = (
        sock_dir.path().join("a.sock"),
        sock_dir.path().join("b.sock"),
    );
    let _da = start(Which::Ours, tree.path(), &sa, "never", &[]);
    let _db = start(Which::Ours, tree.path(), &sb, "never", &[]);
    let (ra, rb) = two_guests(&sa, &sb, peer_script);
    assert!(ra.output.contains("seen b 2"), "{}", ra.output);
    assert!(rb.output.contains("seen a 2"), "{}", rb.output);
    assert_eq!(fs::read_to_string(tree.path().join("a")).unwrap(), "2\n");
    assert_eq!(fs::read_to_string(tree.path().join("b")).unwrap(), "2\n");
    assert!(tree.path().join("a.done").exists() && tree.path().join("b.done").exists());
}

/// With `--cache auto`, a change made elsewhere (here: on the host, as
/// another VM's daemon would) reaches a guest that keeps reading the file
/// by name within about the 1 s attribute timeout; with `never`, at once.
fn convergence_rounds(cache: &str) -> u32 {
    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("f"), "old").unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("fs.sock");
    let _d = start(Which::Ours, tree.path(), &sock, cache, &[]);
    let host_tree = tree.path().to_path_buf();
    // The host writer: as soon as the guest says it has the old content
    // cached, replace it (different length, so a stale size shows).
    let writer = std::thread::spawn(move || {
        let ready = host_tree.join("ready");
        let end = std::time::Instant::now() + Duration::from_secs(120);
        while !ready.exists() {
            assert!(std::time::Instant::now() < end, "guest never got ready");
            std::thread::sleep(Duration::from_millis(5));
        }
        fs::write(host_tree.join("f"), "brand new").unwrap();
        fs::write(host_tree.join("written"), "").unwrap();
    });
    let run = QemuGuest::new()
        .vhost_user_fs(&sock, "gfs")
        .run(
            "set -e\nmount -t virtiofs gfs /mnt\n\
             test \"$(cat /mnt/f)\" = old\n\
             touch /mnt/ready\n\
             while [ ! -e /mnt/written ]; do sleep 0.01; done\n\
             n=0\n\
             while [ \"$(cat /mnt/f)\" != 'brand new' ]; do\n\
               n=$((n+1)); [ $n -lt 600 ] || exit 1\n\
               sleep 0.05\n\
             done\n\
             echo rounds=$n\n",
        )
        .unwrap();
    writer.join().unwrap();
    run.output
        .lines()
        .find_map(|l| l.strip_prefix("rounds="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", run.output))
}

#[test]
fn qemu_cache_auto_sees_changes_within_the_timeout_never_at_once() {
    // 50 ms per round: `never` needs none, `auto` at most ~1 s (+ slack
    // for a TCG guest), and at least one round when the attributes were
    // still cached.
    assert_eq!(convergence_rounds("never"), 0);
    let auto = convergence_rounds("auto");
    assert!(auto <= 40, "cache=auto took {auto} rounds of 50 ms");
}
