//! The QEMU TCG runner against the real Debian kernel.

use std::time::Duration;

use cradle_testbed::{Kernel, QemuGuest, TestbedError};

#[test]
fn qemu_runs_uname_in_the_debian_kernel() {
    let kernel = Kernel::debian().expect("linux-image-cloud-amd64 must be installed");
    let run = QemuGuest::new()
        .run("uname -r; echo cpus=$(nproc)")
        .unwrap();
    assert_eq!(run.status, 0);
    let mut lines = run.output.lines();
    assert_eq!(
        lines.next(),
        Some(kernel.version.as_str()),
        "{}",
        run.console
    );
    assert_eq!(lines.next(), Some("cpus=1"));
    eprintln!(
        "boot to script: {:?}, whole run: {:?}",
        run.to_script, run.wall
    );
}

#[test]
fn qemu_failing_command_reports_status_and_console() {
    let err = QemuGuest::new()
        .run("echo about to fail; exit 3")
        .unwrap_err();
    match &err {
        TestbedError::CommandFailed {
            status,
            output,
            console,
        } => {
            assert_eq!(*status, 3);
            assert_eq!(output.trim(), "about to fail");
            assert!(console.contains("CRADLE-TESTBED-BEGIN"), "{console}");
        }
        other => panic!("expected CommandFailed, got {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("status 3") && text.contains("--- console"),
        "{text}"
    );
}

#[test]
fn qemu_hanging_guest_times_out_with_console() {
    let err = QemuGuest::new()
        .timeout(Duration::from_secs(20))
        .run("echo hanging now; sleep 600")
        .unwrap_err();
    match err {
        TestbedError::Timeout { after, console } => {
            assert_eq!(after, Duration::from_secs(20));
            assert!(console.contains("hanging now"), "{console}");
        }
        other => panic!("expected Timeout, got {other}"),
    }
}

#[test]
fn missing_kernel_is_a_clear_error() {
    let kernel = Kernel {
        image: "/nonexistent/vmlinuz-0.0.0".into(),
        version: "0.0.0".into(),
        modules: "/nonexistent".into(),
    };
    let err = QemuGuest::new().kernel(kernel).run("true").unwrap_err();
    assert!(matches!(err, TestbedError::MissingKernel(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/vmlinuz-0.0.0"));
}
