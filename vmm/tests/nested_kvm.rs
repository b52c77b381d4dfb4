//! The KVM probe against real KVM implementations: the host's own
//! `/dev/kvm` (whatever it is) and the SVM KVM of a nested L1 guest.

use std::path::Path;

use cradle_testbed::kvm::{self, KvmMode};
use cradle_testbed::NestedHost;

const KCRADLE: &str = env!("CARGO_BIN_EXE_kcradle");

/// `ring0-loop: N iterations in T us` -> T.
fn loop_micros(output: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.starts_with("ring0-loop: "))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

#[test]
fn host_kvm_mode_is_detected() {
    let mode = kvm::detect(Path::new(KCRADLE));
    eprintln!("{}", mode.describe());
    match mode {
        KvmMode::Absent => assert!(!Path::new("/dev/kvm").exists()),
        KvmMode::Emulated(reason) => assert!(!reason.is_empty()),
        KvmMode::Native => {
            // Native means the full-size loop finished within the bound.
            let out = std::process::Command::new(KCRADLE)
                .args([
                    "probe-kvm",
                    "--iterations",
                    &kvm::PROBE_ITERATIONS.to_string(),
                ])
                .output()
                .unwrap();
            let micros = loop_micros(&String::from_utf8_lossy(&out.stdout)).unwrap();
            assert!(micros < kvm::PROBE_BOUND.as_micros() as u64);
        }
    }
}

#[test]
fn nested_kcradle_runs_a_long_mode_payload_on_l1_kvm() {
    let run = NestedHost::new()
        .binary_at(KCRADLE, "/usr/bin/kcradle")
        .run("kcradle probe-kvm --iterations 100000000")
        .unwrap();
    assert!(
        run.output.contains("serial: cradle-kvm-ok\\ndone\\n"),
        "{}",
        run.console
    );
    let micros = loop_micros(&run.output).expect("ring0-loop line");
    eprintln!(
        "L1 boot to script {:?}; 100M ring-0 iterations in L1's KVM: {} ms",
        run.to_script,
        micros / 1000
    );
}
