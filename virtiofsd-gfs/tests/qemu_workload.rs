//! The real Linux virtiofs driver in a QEMU guest against our daemon and,
//! with the very same script and checks, against the reference virtiofsd
//! (proving the test fair).

mod common;
mod workload;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::{start, Which};
use workload::{check_host_view, check_run, guest, seed, WORKLOAD};

fn run_workload(which: Which) {
    let tree = tempfile::tempdir().unwrap();
    fs::set_permissions(tree.path(), fs::Permissions::from_mode(0o755)).unwrap();
    seed(tree.path());
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("fs.sock");
    let _d = start(which, tree.path(), &sock, "auto", &["--xattr"]);
    let run = guest(&sock)
        .run(WORKLOAD)
        .unwrap_or_else(|e| panic!("{which:?}: {e}"));
    check_run(&run.output);
    check_host_view(tree.path());
}

#[test]
fn qemu_workload_against_ours() {
    run_workload(Which::Ours);
}

#[test]
fn qemu_workload_against_reference_virtiofsd() {
    run_workload(Which::Reference);
}
