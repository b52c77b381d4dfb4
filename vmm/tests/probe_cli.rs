//! `kcradle probe-kvm` as a process: output format and exit statuses.

use std::path::Path;
use std::process::Command;

fn kcradle(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kcradle"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn probe_kvm_prints_serial_and_loop_time() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        return;
    }
    let out = kcradle(&["probe-kvm", "--iterations", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0], "serial: cradle-kvm-ok\\ndone\\n");
    let rest = lines[1]
        .strip_prefix("ring0-loop: 1000 iterations in ")
        .and_then(|r| r.strip_suffix(" us"))
        .unwrap_or_else(|| panic!("bad loop line {:?}", lines[1]));
    rest.parse::<u64>().unwrap();
    assert!(out.stderr.is_empty());
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    for args in [
        &["probe-kvm", "--iterations", "0"][..],
        &["probe-kvm", "--iterations", "ten"],
        &["probe-kvm", "--bogus"],
        &["no-such-command"],
        &[],
    ] {
        let out = kcradle(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("kcradle: "), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}
