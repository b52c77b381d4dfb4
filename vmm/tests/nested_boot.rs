//! End to end: `kcradle boot` inside a nested L1 (TCG with SVM) boots the
//! Debian cloud kernel with a busybox initramfs as L2 on L1's `/dev/kvm`.
//! The L2 script reports a milestone and its exit status through the
//! control register (busybox `devmem` on its MMIO address: the cloud kernel
//! has no `/dev/port`), and kcradle exits with that status.

use cradle_testbed::{Kernel, NestedHost, QemuGuest, L2_INITRAMFS, L2_KERNEL, L2_VMLINUX};

const KCRADLE: &str = env!("CARGO_BIN_EXE_kcradle");

/// Runs in L2: announces itself, shows what it sees, reports status 42.
const L2_SCRIPT: &str = "devmem 0xfe000000 32 0x01000001
echo l2-in-kcradle
uname -r
grep -c ^processor /proc/cpuinfo
cat /sys/bus/pci/devices/0000:00:00.0/vendor
devmem 0xfe000000 32 0x0200002a
echo not-reached
";

fn boot_script(cpus: u8) -> String {
    format!(
        "start=$(cut -d' ' -f1 /proc/uptime)\n\
         timeout 150 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --cpus {cpus} \
           --memory 256M --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' \
           > /tmp/l2.log 2> /tmp/l2.err\n\
         echo \"kcradle-status=$?\"\n\
         end=$(cut -d' ' -f1 /proc/uptime)\n\
         tr -d '\\r' < /tmp/l2.log | grep -A3 l2-in-kcradle\n\
         echo \"l2-wall $start $end\"\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- L2 console; tail -c 3000 /tmp/l2.log\n"
    )
}

#[test]
fn nested_kcradle_boots_the_debian_kernel_to_its_exit_status() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new().standalone_initramfs(L2_SCRIPT).unwrap();
    // L1 needs as many CPUs as L2: kcradle refuses more vCPUs than host CPUs.
    let run = NestedHost::new()
        .configure(|l1| l1.cpus(2))
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&boot_script(2))
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"kcradle-status=42"),
        "{out}\n{}",
        run.console
    );
    assert_eq!(lines.get(1), Some(&"l2-in-kcradle"), "{out}");
    assert_eq!(lines.get(2), Some(&kernel.version.as_str()), "{out}");
    // Both vCPUs, found through the ACPI MADT.
    assert_eq!(lines.get(3), Some(&"2"), "{out}");
    // The host bridge, found by scanning bus 0 through 0xcf8/0xcfc.
    assert_eq!(lines.get(4), Some(&"0x1b36"), "{out}");
    assert!(out.contains("init-started"), "{out}");
    assert!(!out.contains("not-reached"), "{out}");
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}

/// Milliseconds from kcradle's start to the guest's init-started milestone,
/// from kcradle's log line `... milestone=init-started ms=1234.5 ...`.
fn init_ms(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("init-started"))?;
    let ms = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ms="))?;
    ms.parse().ok()
}

/// The same Debian kernel booted twice in one L1: as its ELF vmlinux
/// through the PVH entry, then as its bzImage. Both reach init with 2 vCPUs
/// and end kcradle with the guest's status; the two times to init are
/// printed (benchmark figures, not assertions).
#[test]
fn nested_kcradle_boots_the_debian_vmlinux_through_pvh() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new().standalone_initramfs(L2_SCRIPT).unwrap();
    let boot = |image: &str, tag: &str| {
        format!(
            "timeout 150 kcradle boot --kernel {image} --initrd {L2_INITRAMFS} --cpus 2 \
               --memory 256M --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' \
               > /tmp/{tag}.log 2> /tmp/{tag}.err\n\
             echo \"{tag}-status=$?\"\n\
             tr -d '\\r' < /tmp/{tag}.log | grep -A3 l2-in-kcradle\n"
        )
    };
    let script = format!(
        "{}{}echo --- pvh stderr; cat /tmp/pvh.err; echo --- bz stderr; cat /tmp/bz.err\n\
         echo --- pvh console; tail -c 3000 /tmp/pvh.log\n",
        boot(L2_VMLINUX, "pvh"),
        boot(L2_KERNEL, "bz")
    );
    let run = NestedHost::new()
        .configure(|l1| l1.cpus(2))
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .l2_kernel(&kernel)
        .l2_vmlinux(&kernel)
        .unwrap()
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"pvh-status=42"),
        "{out}\n{}",
        run.console
    );
    // Reached init, the same kernel, both vCPUs (ACPI MADT via the start
    // info's RSDP), the host bridge.
    assert_eq!(
        &lines[1..5],
        ["l2-in-kcradle", kernel.version.as_str(), "2", "0x1b36"],
        "{out}"
    );
    assert_eq!(lines.get(5), Some(&"bz-status=42"), "{out}");
    let pvh_err = out.split("--- pvh stderr").nth(1).unwrap_or_default();
    let bz_err = out.split("--- bz stderr").nth(1).unwrap_or_default();
    assert!(pvh_err.contains("protocol=Pvh"), "{out}");
    let (pvh, bz) = (init_ms(pvh_err), init_ms(bz_err));
    assert!(pvh.is_some() && bz.is_some(), "{out}");
    eprintln!(
        "time to init in the same L1: PVH {:?} ms, bzImage {:?} ms\n{out}",
        pvh, bz
    );
}

/// Runs in L2 under both VMMs: the test bed's init powers off after it.
const PEER_SCRIPT: &str = "echo l2-up; grep -c ^processor /proc/cpuinfo\n";

/// Same L1, same kernel and initramfs: kcradle and QEMU microvm (the peer)
/// each boot L2 until the guest powers off. Checks that a guest power-off
/// (ACPI S5) ends kcradle with status 0, and records both wall times from
/// VMM start to power-off as benchmark figures.
#[test]
fn nested_kcradle_and_qemu_microvm_boot_the_same_guest() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new().standalone_initramfs(PEER_SCRIPT).unwrap();
    let append = "console=ttyS0 reboot=k panic=-1 quiet";
    let script = format!(
        "t0=$(cut -d' ' -f1 /proc/uptime)\n\
         timeout 150 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --cpus 2 \
           --memory 256M --cmdline '{append}' > /tmp/ours.log 2> /tmp/ours.err\n\
         echo \"kcradle-status=$?\"\n\
         t1=$(cut -d' ' -f1 /proc/uptime)\n\
         timeout 150 qemu-system-x86_64 -M microvm -accel kvm -cpu host -smp 2 -m 256 \
           -nodefaults -no-user-config -display none -serial stdio -no-reboot \
           -kernel {L2_KERNEL} -initrd {L2_INITRAMFS} -append '{append}' > /tmp/qemu.log 2>&1\n\
         echo \"qemu-status=$?\"\n\
         t2=$(cut -d' ' -f1 /proc/uptime)\n\
         tr -d '\\r' < /tmp/ours.log | grep -A1 l2-up\n\
         tr -d '\\r' < /tmp/qemu.log | grep -A1 l2-up\n\
         echo \"walls $t0 $t1 $t2\"\n\
         grep milestone /tmp/ours.err; cat /tmp/ours.err | tail -3\n"
    );
    let run = NestedHost::new()
        .configure(|l1| l1.cpus(2))
        .with_qemu()
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"kcradle-status=0"),
        "{out}\n{}",
        run.console
    );
    assert_eq!(lines.get(1), Some(&"qemu-status=0"), "{out}");
    assert_eq!(&lines[2..6], ["l2-up", "2", "l2-up", "2"], "{out}");
    let walls: Vec<f64> = lines
        .iter()
        .find_map(|l| l.strip_prefix("walls "))
        .map(|w| w.split(' ').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(walls.len(), 3, "{out}");
    eprintln!(
        "boot to power-off in the same L1: kcradle {:.2} s, QEMU microvm {:.2} s\n{out}",
        walls[1] - walls[0],
        walls[2] - walls[1]
    );
}

/// The blk-lv daemon built next to kcradle (the workspace builds both).
fn blk_lv() -> std::path::PathBuf {
    let path = std::path::Path::new(KCRADLE).with_file_name("blk-lv");
    assert!(
        path.exists(),
        "{} missing: build the workspace (cargo build -p blk-lv)",
        path.display()
    );
    path
}

/// Runs in L2: reads the disk L1 prepared, writes a marker, reports.
const DISK_SCRIPT: &str = "devmem 0xfe000000 32 0x01000001
grep -c ^processor /proc/cpuinfo
cat /sys/block/vda/size
dd if=/dev/vda bs=4096 count=1 2>/dev/null | head -c 16; echo
printf 'written-by-l2-on-kcradle' | dd of=/dev/vda bs=4096 seek=1 conv=sync 2>/dev/null
sync
echo 3 > /proc/sys/vm/drop_caches
dd if=/dev/vda bs=4096 skip=1 count=1 2>/dev/null | head -c 24; echo
devmem 0xfe000000 32 0x02000007
";

/// A blk-lv disk in L1 through kcradle's virtio-pci and vhost-user path:
/// the Debian guest, with 2 vCPUs and a 2-queue disk, loads virtio_pci and
/// virtio_blk, reads what L1 wrote and writes what L1 then finds in the
/// image file. kcradle runs jailed (`--jail`): the daemon socket was
/// connected before the pivot, so the disk works from inside the jail.
#[test]
fn nested_kcradle_guest_does_io_on_a_blk_lv_disk() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new()
        .modules(&["virtio_pci", "virtio_blk"])
        .standalone_initramfs(DISK_SCRIPT)
        .unwrap();
    let script = format!(
        "dd if=/dev/zero of=/tmp/disk.img bs=1M count=16 2>/dev/null\n\
         printf 'written-by-l1---' | dd of=/tmp/disk.img conv=notrunc 2>/dev/null\n\
         blk-lv --socket /tmp/blk.sock --path /tmp/disk.img --num-queues 2 --sandbox none --seccomp none \
           2> /tmp/blk.err &\n\
         mkdir -p /tmp/jail\n\
         timeout 150 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --memory 256M \
           --cpus 2 --disk socket=/tmp/blk.sock,num_queues=2 --jail /tmp/jail \
           --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' > /tmp/l2.log 2> /tmp/l2.err\n\
         echo \"kcradle-status=$?\"\n\
         tr -d '\\r' < /tmp/l2.log | grep -a -B1 -A3 '^32768$'\n\
         dd if=/tmp/disk.img bs=4096 skip=1 count=1 2>/dev/null | head -c 24; echo\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- blk-lv; cat /tmp/blk.err\n\
         echo --- L2 console; tail -c 3000 /tmp/l2.log\n"
    );
    let run = NestedHost::new()
        .configure(|l1| l1.cpus(2))
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .binary_at(blk_lv(), "/usr/bin/blk-lv")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"kcradle-status=7"),
        "{out}\n{}",
        run.console
    );
    // Two vCPUs; 16 MiB in 512-byte sectors, then L1's bytes as L2 read
    // them, then L2's bytes as L2 read them back, then as L1 finds them.
    assert_eq!(
        &lines[1..6],
        [
            "2",
            "32768",
            "written-by-l1---",
            "written-by-l2-on-kcradle",
            "written-by-l2-on-kcradle"
        ],
        "{out}"
    );
    assert!(out.contains("jailed: private mount namespace"), "{out}");
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}

/// A program found on PATH (the reference peers are installed by the
/// project's setup script).
fn on_path(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{name} not on PATH: run the project's setup script"))
}

/// Runs in L2: mounts the share, reads L1's file, writes its own.
const FS_SCRIPT: &str = "mount -t virtiofs gfs /mnt || echo mount-failed
cat /mnt/from-l1
echo written-by-l2 > /mnt/from-l2
umount /mnt
devmem 0xfe000000 32 0x02000009
";

/// A virtio-fs share from the reference virtiofsd in L1 through kcradle's
/// virtio-pci and vhost-user path (a frontend and a daemon written by
/// different people).
#[test]
fn nested_kcradle_guest_mounts_a_virtiofs_share() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new()
        .modules(&["virtio_pci", "virtiofs"])
        .standalone_initramfs(FS_SCRIPT)
        .unwrap();
    let script = format!(
        "mkdir -p /tmp/share && echo written-by-l1 > /tmp/share/from-l1\n\
         virtiofsd --socket-path /tmp/fs.sock --shared-dir /tmp/share --sandbox none \
           --cache never 2> /tmp/fs.err &\n\
         timeout 150 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --memory 256M \
           --fs tag=gfs,socket=/tmp/fs.sock \
           --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' > /tmp/l2.log 2> /tmp/l2.err\n\
         echo \"kcradle-status=$?\"\n\
         tr -d '\\r' < /tmp/l2.log | grep -A0 '^written-by-l1$'\n\
         cat /tmp/share/from-l2\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- virtiofsd; tail -5 /tmp/fs.err\n\
         echo --- L2 console; tail -c 3000 /tmp/l2.log\n"
    );
    let run = NestedHost::new()
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .binary_at(on_path("virtiofsd"), "/usr/bin/virtiofsd")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"kcradle-status=9"),
        "{out}\n{}",
        run.console
    );
    assert_eq!(&lines[1..3], ["written-by-l1", "written-by-l2"], "{out}");
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}

/// The net-tap daemon built next to kcradle (the workspace builds both).
fn net_tap() -> std::path::PathBuf {
    let path = std::path::Path::new(KCRADLE).with_file_name("net-tap");
    assert!(
        path.exists(),
        "{} missing: build the workspace (cargo build -p net-tap)",
        path.display()
    );
    path
}

/// Runs in L2: brings up the NIC with a link-local address and pings L1's
/// end of the tap; the exit status says whether the ping answered.
const NET_SCRIPT: &str = "cat /sys/class/net/eth0/address
ip link set eth0 up
ip addr add 169.254.10.2/24 dev eth0
if ping -c 2 -W 3 169.254.10.1 > /dev/null; then echo ping-ok; devmem 0xfe000000 32 0x0200000b
else echo ping-failed; devmem 0xfe000000 32 0x0200000c; fi
";

/// A net-tap interface in L1 through kcradle's virtio-pci and vhost-user
/// path: the guest sees the MAC kcradle was given and reaches L1 over the
/// tap (link-local addresses, all inside the nested L1).
#[test]
fn nested_kcradle_guest_pings_through_net_tap() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new()
        .modules(&["virtio_pci", "virtio_net"])
        .standalone_initramfs(NET_SCRIPT)
        .unwrap();
    let script = format!(
        "net-tap --socket /tmp/net.sock --tap tap0 --sandbox none --seccomp none 2> /tmp/net.err &\n\
         for i in $(seq 50); do [ -e /sys/class/net/tap0 ] && break; sleep 0.1; done\n\
         ip link set tap0 up\n\
         ip addr add 169.254.10.1/24 dev tap0\n\
         timeout 150 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --memory 256M \
           --net socket=/tmp/net.sock,mac=52:54:00:12:34:56 \
           --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' > /tmp/l2.log 2> /tmp/l2.err\n\
         echo \"kcradle-status=$?\"\n\
         tr -d '\\r' < /tmp/l2.log | grep -A1 '^52:54:00:12:34:56$'\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- net-tap; tail -5 /tmp/net.err\n\
         echo --- L2 console; tail -c 3000 /tmp/l2.log\n"
    );
    let run = NestedHost::new()
        .configure(|l1| l1.modules(&["tun"]))
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .binary_at(net_tap(), "/usr/bin/net-tap")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"kcradle-status=11"),
        "{out}\n{}",
        run.console
    );
    assert_eq!(&lines[1..3], ["52:54:00:12:34:56", "ping-ok"], "{out}");
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}

/// Runs in L2: shows the queues the driver set up (one rx-N/tx-N per
/// combined channel), then pings L1's end of the tap.
const MQ_NET_SCRIPT: &str = "ls /sys/class/net/eth0/queues | tr '\\n' ' '; echo
ip link set eth0 up
ip addr add 169.254.20.2/24 dev eth0
if ping -c 2 -W 3 169.254.20.1 > /dev/null; then echo ping-ok; devmem 0xfe000000 32 0x0200000d
else echo ping-failed; devmem 0xfe000000 32 0x0200000e; fi
";

/// A two-pair net-tap interface (VIRTIO_NET_F_MQ, control queue served by
/// the daemon): the 2-vCPU guest brings up both combined channels (the
/// driver's VQ_PAIRS_SET went through the control queue) and pings through
/// the tap, which lives in a network namespace the test makes inside L1.
#[test]
fn nested_kcradle_guest_uses_two_net_queue_pairs_through_net_tap() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new()
        .modules(&["virtio_pci", "virtio_net"])
        .standalone_initramfs(MQ_NET_SCRIPT)
        .unwrap();
    let script = format!(
        "unshare -n sleep 600 & ns=$!\n\
         for i in $(seq 50); do [ \"$(readlink /proc/$ns/ns/net)\" != \"$(readlink /proc/self/ns/net)\" ] && break; sleep 0.1; done\n\
         in_ns() {{ nsenter -t $ns -n \"$@\"; }}\n\
         in_ns net-tap --socket /tmp/net.sock --tap tap0 --num-queue-pairs 2 --sandbox none \
           --seccomp none 2> /tmp/net.err &\n\
         for i in $(seq 50); do in_ns ip link show tap0 > /dev/null 2>&1 && break; sleep 0.1; done\n\
         in_ns ip link set tap0 up\n\
         in_ns ip addr add 169.254.20.1/24 dev tap0\n\
         timeout 150 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --memory 256M \
           --cpus 2 --net socket=/tmp/net.sock,mac=52:54:00:12:34:57,num_queue_pairs=2 \
           --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' > /tmp/l2.log 2> /tmp/l2.err\n\
         echo \"kcradle-status=$?\"\n\
         tr -d '\\r' < /tmp/l2.log | grep -A1 '^rx-0'\n\
         ip link show tap0 > /dev/null 2>&1 && echo tap-in-root-ns\n\
         kill $ns\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- net-tap; tail -5 /tmp/net.err\n\
         echo --- L2 console; tail -c 3000 /tmp/l2.log\n"
    );
    let run = NestedHost::new()
        .configure(|l1| l1.cpus(2).modules(&["tun"]))
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .binary_at(net_tap(), "/usr/bin/net-tap")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"kcradle-status=13"),
        "{out}\n{}",
        run.console
    );
    assert_eq!(&lines[1..3], ["rx-0 rx-1 tx-0 tx-1 ", "ping-ok"], "{out}");
    assert!(!out.contains("tap-in-root-ns"), "{out}");
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}

/// The virtiofsd-gfs daemon built next to kcradle.
fn virtiofsd_gfs() -> std::path::PathBuf {
    let path = std::path::Path::new(KCRADLE).with_file_name("virtiofsd-gfs");
    assert!(
        path.exists(),
        "{} missing: build the workspace (cargo build -p virtiofsd-gfs)",
        path.display()
    );
    path
}

/// Runs in L2: uses the share, then reboots (no status reported).
const GFS_SCRIPT: &str = "mount -t virtiofs gfs /mnt || echo mount-failed
cat /mnt/from-l1
echo written-by-l2 > /mnt/from-l2
umount /mnt
reboot -f
";

/// Our own fs daemon with two request queues, and the guest's `reboot`
/// ending the VM: kcradle exits 0 and logs a reset.
#[test]
fn nested_kcradle_guest_uses_virtiofsd_gfs_then_reboots() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new()
        .modules(&["virtio_pci", "virtiofs"])
        .standalone_initramfs(GFS_SCRIPT)
        .unwrap();
    let script = format!(
        "mkdir -p /tmp/share && echo written-by-l1 > /tmp/share/from-l1\n\
         virtiofsd-gfs --socket /tmp/fs.sock --shared-dir /tmp/share --num-queues 2 \
           --sandbox none --seccomp none 2> /tmp/fs.err &\n\
         timeout 150 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --memory 256M \
           --fs tag=gfs,socket=/tmp/fs.sock,num_queues=2 \
           --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' > /tmp/l2.log 2> /tmp/l2.err\n\
         echo \"kcradle-status=$?\"\n\
         tr -d '\\r' < /tmp/l2.log | grep -A0 '^written-by-l1$'\n\
         cat /tmp/share/from-l2\n\
         grep -c 'reason=Reset' /tmp/l2.err\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- virtiofsd-gfs; tail -5 /tmp/fs.err\n\
         echo --- L2 console; tail -c 3000 /tmp/l2.log\n"
    );
    let run = NestedHost::new()
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .binary_at(virtiofsd_gfs(), "/usr/bin/virtiofsd-gfs")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"kcradle-status=0"),
        "{out}\n{}",
        run.console
    );
    assert_eq!(
        &lines[1..4],
        ["written-by-l1", "written-by-l2", "1"],
        "{out}"
    );
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}
