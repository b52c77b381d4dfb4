//! L1 under TCG with an emulated SVM CPU gets a working /dev/kvm.

use cradle_testbed::NestedHost;

#[test]
fn nested_l1_has_kvm() {
    let run = NestedHost::new()
        .run("grep -c -w svm /proc/cpuinfo; ls -l /dev/kvm | cut -c1; grep '^kvm_amd ' /proc/modules | cut -d' ' -f1")
        .unwrap();
    let lines: Vec<&str> = run.output.lines().collect();
    assert_eq!(lines, ["1", "c", "kvm_amd"], "{}", run.console);
    eprintln!(
        "L1 boot to script: {:?}, whole run: {:?}",
        run.to_script, run.wall
    );
}

#[test]
fn nested_missing_kvm_is_reported() {
    // Without SVM in the CPU model kvm_amd cannot load: the runner says so.
    let run = NestedHost::new()
        .configure(|g| g.cpu_model("qemu64,-svm"))
        .run_status("true")
        .unwrap();
    assert_eq!(run.status, 97, "{}", run.console);
    assert!(run.output.contains("/dev/kvm missing"), "{}", run.output);
}

#[test]
fn nested_qemu_microvm_boots_l2_on_l1_kvm() {
    use cradle_testbed::{Kernel, QemuGuest, L2_INITRAMFS, L2_KERNEL};
    let kernel = Kernel::debian().unwrap();
    let l2 = QemuGuest::new()
        .standalone_initramfs("echo l2-says-hello; uname -r")
        .unwrap();
    let script = format!(
        "start=$(cut -d' ' -f1 /proc/uptime)\n\
         qemu-system-x86_64 -M microvm -accel kvm -cpu host -m 256 -nodefaults -no-user-config \
           -display none -serial stdio -no-reboot -kernel {L2_KERNEL} -initrd {L2_INITRAMFS} \
           -append 'console=ttyS0 panic=-1 quiet' > /tmp/l2.log 2>&1\n\
         end=$(cut -d' ' -f1 /proc/uptime)\n\
         tr -d '\\r' < /tmp/l2.log | grep -A1 l2-says-hello\n\
         grep -q CRADLE-TESTBED-EXIT-standalone=0 /tmp/l2.log\n\
         echo \"l2-wall $start $end\""
    );
    let run = NestedHost::new()
        .with_qemu()
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let lines: Vec<&str> = run.output.lines().collect();
    assert_eq!(lines[0], "l2-says-hello", "{}", run.console);
    assert_eq!(lines[1], kernel.version);
    eprintln!(
        "L1 boot {:?}, whole run {:?}, {}",
        run.to_script, run.wall, lines[2]
    );
}
