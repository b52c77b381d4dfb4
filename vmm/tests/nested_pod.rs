//! End to end in a nested L1 (TCG with SVM, so KVM works inside): `kcradle
//! summon` then `kcradle run` boot a real pod as L2 with its rootfs, a GFS
//! volume and an LV volume over our vhost-user daemons and its network over
//! net-tap; the pod network and its NAT live inside L1 (link-local only).
//! Checked: an HTTP request to the published port is answered by the
//! container; `docker exec` and `docker cp` through `DIR/docker.sock`; a
//! file the pod writes to the GFS volume is on the host; `ps` and `stop`;
//! LV data survives a second `run`; the container's exit status becomes
//! `kcradle run`'s; nothing (tap, nftables table, daemon) is left.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cradle_image::write::write_docker_archive;
use cradle_image::ImageConfig;
use cradle_initramfs::ModuleIndex;
use cradle_testbed::{Kernel, NestedHost};
use cradle_vmm::launcher::initrd::GUEST_MODULES;

const KCRADLE: &str = env!("CARGO_BIN_EXE_kcradle");

fn sibling(name: &str) -> std::path::PathBuf {
    let p = Path::new(KCRADLE).with_file_name(name);
    if !p.is_file() {
        let target = Path::new(KCRADLE).parent().unwrap().parent().unwrap();
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--bins", "-p", "blk-lv", "-p", "virtiofsd-gfs"])
            .args(["-p", "net-tap", "-p", "cradle-guest"])
            .env("CARGO_TARGET_DIR", target)
            .status()
            .unwrap();
        assert!(st.success());
    }
    p
}

/// busybox httpd serving /www on port 80.
fn web_image(path: &Path) {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |p: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        if kind == tar::EntryType::Symlink {
            h.set_link_name("busybox").unwrap();
        }
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, p, data).unwrap();
    };
    add("bin/", tar::EntryType::Directory, 0o755, b"");
    add("www/", tar::EntryType::Directory, 0o755, b"");
    add("etc/", tar::EntryType::Directory, 0o755, b"");
    add(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &fs::read("/bin/busybox").unwrap(),
    );
    add("bin/sh", tar::EntryType::Symlink, 0o777, b"");
    add(
        "www/index.html",
        tar::EntryType::Regular,
        0o644,
        b"hello from the pod\n",
    );
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/:/bin/sh\n",
    );
    let layer = b.into_inner().unwrap();
    let cfg = ImageConfig {
        entrypoint: Some(vec!["/bin/busybox".into()]),
        cmd: Some(vec![
            "httpd".into(),
            "-f".into(),
            "-p".into(),
            "80".into(),
            "-h".into(),
            "/www".into(),
        ]),
        ..Default::default()
    };
    write_docker_archive(path, &cfg, &[layer], "demo/web:1").unwrap();
}

const SCRIPT: &str = r#"export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin
D="timeout 120 docker -H unix:///pod/docker.sock"
get() { printf 'GET %s HTTP/1.0\r\n\r\n' "$1" | timeout 5 nc 169.254.128.1 18080 2>/dev/null | tail -1; }
waithttp() { for i in $(seq 120); do r=$(get /); [ -n "$r" ] && echo "$r" && return; sleep 1; done; }
kcradle summon /pod docker-archive:/img.tar -q -p 18080:80 -v gfs:shared:/shared \
  -v lv:data:64M:/data --memory 512M --state-dir /st || echo summon-failed
kcradle run /pod --sandbox chroot --state-dir /st > /tmp/run1.log 2>&1 &
echo "http=$(waithttp)"
$D exec main /bin/busybox sh -c 'echo from-pod > /shared/f; echo lv-kept > /data/x; sync'; echo "exec=$?"
echo "gfs=$(cat /st/gfs/shared/f)"
echo cp-in > /tmp/cpin; $D cp /tmp/cpin main:/www/cp.txt; echo "cp=$?"
echo "http-cp=$(get /cp.txt)"
kcradle ps --state-dir /st | grep -c /pod | sed 's/^/ps=/'
timeout 60 kcradle stop /pod --state-dir /st; echo "stop=$?"
wait
kcradle run /pod --sandbox chroot --state-dir /st > /tmp/run2.log 2>&1 &
echo "http-again=$(waithttp)"
echo "lv=$($D exec main /bin/busybox cat /data/x)"
timeout 60 kcradle stop /pod --state-dir /st
wait
kcradle summon /pod2 docker-archive:/img.tar -q --memory 512M --state-dir /st \
  --cmd sh -c 'echo bye; exit 7'
timeout 120 kcradle run /pod2 --sandbox chroot --state-dir /st > /tmp/run3.log 2>&1; echo "exit=$?"
echo "left-taps=$(ls /sys/class/net | grep -c kc)"
echo "left-tables=$(nft list tables | grep -c kcradle)"
echo "left-daemons=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -cE '^(virtiofsd-gfs|blk-lv|net-tap|kcradle)$')"
echo --- run1; tail -c 2500 /tmp/run1.log
for f in /pod/logs/*.log; do echo "--- $f"; tail -3 $f; done
"#;

#[test]
fn nested_pod_serves_http_docker_volumes_and_exit_status() {
    let kernel = Kernel::debian().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img.tar");
    web_image(&img);
    let mut host = NestedHost::new()
        .configure(|l1| {
            // The L1 initramfs carries debug builds of every binary (and
            // virtiofsd-gfs's Ceph client libraries): ~400 MB to unpack
            // before L2 and the daemons need memory.
            l1.cpus(1)
                .memory_mib(3072)
                .modules(&[
                    "tun",
                    "nf_tables",
                    "nft_chain_nat",
                    "nft_nat",
                    "nft_masq",
                    "nft_fib_ipv4",
                ])
                .timeout(Duration::from_secs(570))
        })
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .binary_at(sibling("cradle-init"), "/usr/bin/cradle-init")
        .binary_at(sibling("virtiofsd-gfs"), "/usr/bin/virtiofsd-gfs")
        .binary_at(sibling("blk-lv"), "/usr/bin/blk-lv")
        .binary_at(sibling("net-tap"), "/usr/bin/net-tap")
        .binary_at("/usr/sbin/nft", "/usr/sbin/nft")
        .binary_at("/bin/ip", "/usr/sbin/ip")
        .binary_at("/sbin/mke2fs", "/sbin/mkfs.ext4")
        .binary_at("/usr/local/bin/docker", "/usr/local/bin/docker")
        // The guest initramfs builder resolves libraries with ldd (a bash
        // script).
        .binary_at("/bin/bash", "/bin/bash")
        .file("/usr/bin/ldd", "/usr/bin/ldd")
        .file(&img, "/img.tar")
        .file(&kernel.image, &format!("/boot/vmlinuz-{}", kernel.version));
    // The guest initramfs is built in L1 from the same modules.
    let index = ModuleIndex::load(&kernel.modules).unwrap();
    for name in ["modules.dep", "modules.builtin"] {
        let p = kernel.modules.join(name);
        host = host.file(&p, p.to_str().unwrap());
    }
    for m in index.resolve(GUEST_MODULES).unwrap() {
        host = host.file(&m, m.to_str().unwrap());
    }
    let run = match host.run(SCRIPT) {
        Ok(run) => run,
        Err(e) => panic!("{e}"),
    };
    let out = &run.output;
    eprintln!("{out}\nwall {:?}", run.wall);
    for want in [
        "http=hello from the pod\n",
        "exec=0\n",
        "gfs=from-pod\n",
        "cp=0\n",
        "http-cp=cp-in\n",
        "ps=1\n",
        "stop=0\n",
        "http-again=hello from the pod\n",
        "lv=lv-kept\n",
        "exit=7\n",
        "left-taps=0\n",
        "left-tables=0\n",
        "left-daemons=0\n",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing:\n{out}\n{}",
            run.console
        );
    }
}
