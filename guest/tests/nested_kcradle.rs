//! End to end with our own VMM: `kcradle boot` in a nested L1 boots the
//! Debian cloud kernel with an initramfs made by `cradle-init initramfs`
//! (cradle-init as `/init`, overlay module, a busybox image, the pod
//! config); cradle-init runs the pod, reports its milestones and the pod's
//! exit status on the control register, and kcradle exits with it.

mod common;

use cradle_testbed::{Kernel, NestedHost, L2_INITRAMFS, L2_KERNEL};
use std::path::PathBuf;
use std::process::Command;

/// kcradle from the same target directory as this test, built if needed
/// (a workspace test run has built it already).
fn kcradle() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let mut build = Command::new(env!("CARGO"));
    build
        .args([
            "build",
            "--quiet",
            "--locked",
            "-p",
            "cradle-vmm",
            "--bin",
            "kcradle",
        ])
        .env("CARGO_TARGET_DIR", profile_dir.parent().unwrap());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().unwrap();
    assert!(status.success(), "building kcradle failed");
    profile_dir.join("kcradle")
}

const POD: &str = r#"{"version":1,"id":"l2pod","hostname":"l2pod","control_port":true,
  "containers":[{"name":"main","critical":true,"image":{"rootfs":{"dir":"/img"}},
    "process":{"cmd":["sh","-c","echo l2-container-up on $(hostname) as $(id -u); exit 42"]}}]}"#;

#[test]
fn nested_kcradle_runs_cradle_init_and_exits_with_the_pod_status() {
    let kernel = Kernel::debian().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("cradle-init");
    let strip = Command::new("strip")
        .arg("-o")
        .arg(&init)
        .arg(env!("CARGO_BIN_EXE_cradle-init"))
        .status()
        .unwrap();
    assert!(strip.success());
    let cfg = dir.path().join("pod.json");
    std::fs::write(&cfg, POD).unwrap();
    let image = common::busybox_rootfs(dir.path());
    let l2 = dir.path().join("l2.cpio");
    let made = Command::new(env!("CARGO_BIN_EXE_cradle-init"))
        .args(["initramfs", "--out"])
        .arg(&l2)
        .arg("--binary")
        .arg(&init)
        .arg("--kernel-modules")
        .arg(&kernel.modules)
        .args(["--modules", "overlay", "--config"])
        .arg(&cfg)
        .arg("--tree")
        .arg(format!("{}:/img", image.display()))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );

    let script = format!(
        "timeout 200 kcradle boot --kernel {L2_KERNEL} --initrd {L2_INITRAMFS} --memory 256M \
           --cmdline 'console=ttyS0 reboot=k panic=-1 quiet' > /tmp/l2.log 2> /tmp/l2.err\n\
         echo \"kcradle-status=$?\"\n\
         echo --- kcradle stderr; cat /tmp/l2.err; echo --- L2 console; tr -d '\\r' < /tmp/l2.log | tail -c 4000\n"
    );
    let run = NestedHost::new()
        .binary_at(kcradle(), "/usr/bin/kcradle")
        .l2_kernel(&kernel)
        .l2_initramfs(&l2)
        .run(&script)
        .unwrap();
    let out = &run.output;
    assert!(
        out.starts_with("kcradle-status=42\n"),
        "{out}\n{}",
        run.console
    );
    assert!(
        out.contains("[main] l2-container-up on l2pod as 0"),
        "{out}"
    );
    assert!(out.contains("init-started"), "{out}");
    assert!(out.contains("container-started"), "{out}");
    assert!(
        out.contains("cradle-init: pod exited with status 42"),
        "{out}"
    );
    eprintln!(
        "L1 boot {:?}, whole run {:?}\n{out}",
        run.to_script, run.wall
    );
}
