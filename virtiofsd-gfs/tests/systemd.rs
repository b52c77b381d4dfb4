//! The systemd template unit: `systemd-analyze verify` accepts it without
//! a single warning, and its ExecStart line, expanded the way systemd
//! would with a sample environment file, starts a daemon that reports
//! READY=1, offers the tag of its environment file (not the instance
//! name, which carries a pod prefix) and stops on SIGTERM.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cradle_testbed::daemon::Daemon;
use cradle_testbed::unit::TemplateUnit;

const BIN: &str = env!("CARGO_BIN_EXE_virtiofsd-gfs");

fn unit() -> TemplateUnit {
    TemplateUnit::new("virtiofsd-gfs", include_str!("../virtiofsd-gfs@.service"))
}

#[test]
fn template_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let built = unit().with_binary(Path::new(BIN)).unwrap();
    for name in ["virtiofsd-gfs@.service", "virtiofsd-gfs@vm0-shared.service"] {
        built.verify(dir.path(), name).unwrap();
    }
    unit().check_conventions().unwrap();
}

#[test]
fn exec_start_runs_as_systemd_would() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let sock = dir.path().join("vm0.sock");
    let env = [
        ("GFS_SHARED_DIR", tree.to_str().unwrap()),
        ("GFS_SOCKET", sock.to_str().unwrap()),
        ("GFS_TAG", "shared"),
        (
            "GFS_ARGS",
            "--cache never --num-queues 2 --sandbox none --seccomp none",
        ),
    ];
    let argv = unit()
        .with_binary(Path::new(BIN))
        .unwrap()
        .exec_start(&env, "kc0-pod-fs-shared");
    let mut child = Daemon::spawn_ready(
        Command::new(&argv[0]).args(&argv[1..]),
        Duration::from_secs(10),
    )
    .unwrap();
    let (mut drv, _qs) = common::connect(&sock, 3);
    let cfg = drv.get_config(0, 40).unwrap();
    assert_eq!(&cfg[..7], b"shared\0", "--tag ${{GFS_TAG}}");
    assert_eq!(cfg[36], 2, "request queues");
    assert_eq!(
        child.terminate(Duration::from_secs(10)).unwrap().code(),
        Some(0)
    );
}
