//! End to end: `kcradle boot` inside a nested L1 (TCG with SVM) boots the
//! Debian cloud kernel with a busybox initramfs as L2 on L1's `/dev/kvm`.
//! The L2 script reports a milestone and its exit status through the
//! control register (busybox `devmem` on its MMIO address: the cloud kernel
//! has no `/dev/port`), and kcradle exits with that status.

use cradle_testbed::{Kernel, NestedHost, QemuGuest, L2_INITRAMFS, L2_KERNEL};

const KCRADLE: &str = env!("CARGO_BIN_EXE_kcradle");

/// Runs in L2: announces itself, shows what it sees, reports status 42.
const L2_SCRIPT: &str = "devmem 0xfe000000 32 0x01000001
echo l2-in-kcradle
uname -r
grep -c ^processor /proc/cpuinfo
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
         tr -d '\\r' < /tmp/l2.log | grep -A2 l2-in-kcradle\n\
         echo \"l2-wall $start $end\"\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- L2 console; tail -c 3000 /tmp/l2.log\n"
    )
}

#[test]
fn nested_kcradle_boots_the_debian_kernel_to_its_exit_status() {
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new().standalone_initramfs(L2_SCRIPT).unwrap();
    let run = NestedHost::new()
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&boot_script(1))
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
    assert_eq!(lines.get(3), Some(&"1"), "{out}");
    assert!(out.contains("init-started"), "{out}");
    assert!(!out.contains("not-reached"), "{out}");
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}
