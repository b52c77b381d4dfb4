//! Helpers shared by bali's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bali binary under test, with `BALI_KEY` pointing into `dir`.
pub fn bali(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bali"));
    c.env("BALI_KEY", dir.join("key"));
    c
}

/// Runs and returns output, printing stderr on failure for diagnosis.
pub fn run(mut c: Command) -> Output {
    let out = c.output().expect("spawn bali");
    if !out.status.success() {
        eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// The key id of the key in `dir` (created if needed).
pub fn key_id(dir: &Path) -> String {
    let mut c = bali(dir);
    c.arg("key");
    let out = run(c);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Asserts a one-line error and exit status 2.
pub fn assert_bad(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("bali: "), "{err:?}");
}

/// Writes a small tar holding a few files, returns its path.
pub fn small_tar(dir: &Path) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20u32 {
        let data = format!("file {i}\n").repeat(100 + i as usize * 37);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("d/f{i}"), data.as_bytes())
            .unwrap();
    }
    let p = dir.join("in.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}
