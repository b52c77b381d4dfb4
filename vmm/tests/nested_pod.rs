//! End to end in a nested L1 (TCG with SVM, so KVM works inside): `kcradle
//! summon` then `kcradle run` boot a real pod as L2 with its rootfs, a GFS
//! volume and an LV volume over our vhost-user daemons and its network over
//! net-tap; the pod network and its NAT live inside L1 (link-local only).
//! Checked: an HTTP request to the published port is answered by the
//! container; `docker exec` and `docker cp` through `DIR/docker.sock`; a
//! file the pod writes to the GFS volume is on the host; `ps` and `stop`;
//! LV data survives a second `run`; the container's exit status becomes
//! `kcradle run`'s. Two more bundles, summoned on this host from a real
//! `docker-registry` (image pushed by skopeo) and from an OCI layout made
//! by umoci, run in the same L1 one after the other and answer HTTP;
//! `docker logs` and `docker attach` through the second one's docker.sock
//! see its output (and attach leaves it running). The pod's VMM
//! (`kcradle-vmm`) runs jailed (empty root, no_new_privs). Nothing (tap, nftables table,
//! daemon) is left.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use cradle_image::write::write_docker_archive;
use cradle_initramfs::ModuleIndex;
use cradle_testbed::{Kernel, NestedHost};
use cradle_vmm::launcher::initrd::GUEST_MODULES;

const KCRADLE: &str = env!("CARGO_BIN_EXE_kcradle");

/// A binary cargo built beside kcradle (the daemons and cradle-init).
fn sibling(name: &str) -> std::path::PathBuf {
    common::build_binaries();
    common::bin_dir().join(name)
}

/// busybox httpd serving /www (holding `index`) on port 80, as a
/// docker-archive.
fn web_image(path: &Path, index: &str) {
    let cfg = common::httpd_config();
    write_docker_archive(path, &cfg, &[common::web_layer(index)], "demo/web:1").unwrap();
}

/// The OCI image's command: a line at start, httpd in the background,
/// then a tick a second (what `docker logs` and `docker attach` see).
const OCI_CMD: &[&str] = &[
    "sh",
    "-c",
    "echo started-oci; /bin/busybox httpd -p 80 -h /www; i=0; \
     while [ $i -lt 900 ]; do i=$((i+1)); echo tick $i; /bin/busybox sleep 1; done",
];

/// `kcradle summon` on this host; the bundle is then carried into L1.
fn summon_here(bundle: &Path, image: &str, state: &Path) {
    let out = Command::new(KCRADLE)
        .arg("summon")
        .arg(bundle)
        .arg(image)
        .args(["-q", "-p", "18080:80", "--memory", "512M", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "summon {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Bundles summoned here from a real `docker-registry` (an image pushed
/// by skopeo) and from an OCI layout made by umoci, as one tar holding
/// `preg/` and `poci/` (they have no volumes, so no host paths).
fn host_bundles(dir: &Path) -> std::path::PathBuf {
    let state = dir.join("host-state");
    let reg = cradle_testbed::registry::DockerRegistry::start().unwrap();
    let archive = dir.join("reg.tar");
    web_image(&archive, "hello from the registry\n");
    reg.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/web:v1",
    )
    .unwrap();
    summon_here(&dir.join("preg"), &reg.reference("demo/web:v1"), &state);
    common::umoci_layout(dir, "layout", "v1", "hello from umoci\n", OCI_CMD);
    let oci = format!("oci:{}:v1", dir.join("layout").display());
    summon_here(&dir.join("poci"), &oci, &state);
    let tar_path = dir.join("bundles.tar");
    let mut b = tar::Builder::new(fs::File::create(&tar_path).unwrap());
    b.follow_symlinks(false);
    for name in ["preg", "poci"] {
        b.append_dir_all(name, dir.join(name)).unwrap();
    }
    b.finish().unwrap();
    tar_path
}

const SCRIPT: &str = r#"export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin
D="timeout 120 docker -H unix:///pod/docker.sock"
get() { printf 'GET %s HTTP/1.0\r\n\r\n' "$1" | timeout 5 nc 169.254.128.1 18080 2>/dev/null | tail -1; }
t() { echo "T $1 $(cut -d' ' -f1 /proc/uptime)"; }
waithttp() { for i in $(seq 120); do r=$(get /); [ -n "$r" ] && echo "$r" && return; sleep 1; done; }
kcradle summon /pod docker-archive:/img.tar -q -p 18080:80 -v gfs:shared:/shared \
  -v lv:data:64M:/data --memory 512M --state-dir /st || echo summon-failed
t run1
kcradle run /pod --sandbox chroot --state-dir /st > /tmp/run1.log 2>&1 &
echo "http=$(waithttp)"
vmm=$(for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline 2>/dev/null | grep -q '^/usr/bin/kcradle-vmm .*/pod/run/pod.cpio' && echo ${p#/proc/}; done | head -1)
echo "vmm-jail=$(ls -A /proc/$vmm/root | wc -l) $(grep NoNewPrivs /proc/$vmm/status | tr -d ' \t')"
$D exec main /bin/busybox sh -c 'echo from-pod > /shared/f; echo lv-kept > /data/x; sync'; echo "exec=$?"
echo "gfs=$(cat /st/gfs/shared/f)"
echo cp-in > /tmp/cpin; $D cp /tmp/cpin main:/www/cp.txt; echo "cp=$?"
echo "http-cp=$(get /cp.txt)"
kcradle ps --state-dir /st | grep -c /pod | sed 's/^/ps=/'
timeout 60 kcradle stop /pod --state-dir /st; echo "stop=$?"
wait
t run2
kcradle run /pod --sandbox chroot --state-dir /st > /tmp/run2.log 2>&1 &
echo "http-again=$(waithttp)"
echo "lv=$($D exec main /bin/busybox cat /data/x)"
timeout 60 kcradle stop /pod --state-dir /st
wait
t pod2
kcradle summon /pod2 docker-archive:/img.tar -q --memory 512M --state-dir /st \
  --cmd sh -c 'echo bye; exit 7'
timeout 120 kcradle run /pod2 --sandbox chroot --state-dir /st > /tmp/run3.log 2>&1; echo "exit=$?"
t untar
tar -xf /bundles.tar -C / && echo untar=ok
kcradle run /preg --sandbox chroot --state-dir /st > /tmp/run-reg.log 2>&1 &
echo "http-reg=$(waithttp)"
timeout 60 kcradle stop /preg --state-dir /st; echo "stop-reg=$?"
wait
O="timeout 120 docker -H unix:///poci/docker.sock"
t oci
kcradle run /poci --sandbox chroot --state-dir /st > /tmp/run-oci.log 2>&1 &
echo "http-oci=$(waithttp)"
$O logs main > /tmp/logs.out 2>&1; echo "logs=$? $(grep -c started-oci /tmp/logs.out)"
t attach
# End the client with SIGKILL: with a plain timeout (SIGTERM) this step
# once ran into the L1 time limit.
timeout -s KILL 6 docker -H unix:///poci/docker.sock attach --no-stdin --sig-proxy=false main > /tmp/attach.out 2>&1
echo "attach=$(grep -c '^tick' /tmp/attach.out | sed 's/^[1-9][0-9]*$/ticks/')"
echo "http-oci-after-attach=$(get /)"
timeout 60 kcradle stop /poci --state-dir /st; echo "stop-oci=$?"
wait
t end
echo "left-taps=$(ls /sys/class/net | grep -c kc)"
echo "left-tables=$(nft list tables | grep -c kcradle)"
echo "left-daemons=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -cE '^(virtiofsd-gfs|blk-lv|net-tap|kcradle|kcradle-vmm)$')"
echo "vmm-rss: $(grep -ho 'vmm_rss_kib=[0-9]*' /tmp/run*.log | tr '\n' ' ')"
echo --- run1; tail -c 2500 /tmp/run1.log
for f in /pod/logs/*.log; do echo "--- $f"; tail -3 $f; done
echo --- run-oci; tail -c 1500 /tmp/run-oci.log; echo --- attach; head -c 500 /tmp/attach.out
"#;

#[test]
fn nested_pod_serves_http_docker_volumes_and_exit_status() {
    let kernel = Kernel::debian().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img.tar");
    web_image(&img, "hello from the pod\n");
    let bundles = host_bundles(dir.path());
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
        .binary_at(env!("CARGO_BIN_EXE_kcradle-vmm"), "/usr/bin/kcradle-vmm")
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
        .file(&bundles, "/bundles.tar")
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
        // The VMM runs jailed: an empty root, no_new_privs.
        "vmm-jail=0 NoNewPrivs:1\n",
        "exec=0\n",
        "gfs=from-pod\n",
        "cp=0\n",
        "http-cp=cp-in\n",
        "ps=1\n",
        "stop=0\n",
        "http-again=hello from the pod\n",
        "lv=lv-kept\n",
        "exit=7\n",
        "untar=ok\n",
        "http-reg=hello from the registry\n",
        "stop-reg=0\n",
        "http-oci=hello from umoci\n",
        "logs=0 1\n",
        "attach=ticks\n",
        "http-oci-after-attach=hello from umoci\n",
        "stop-oci=0\n",
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
