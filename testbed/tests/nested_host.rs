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
