//! blk-lv as a process: flags, capabilities, readiness, SIGTERM, --fd.

mod common;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use cradle_devices::driver::blk::{BlkRequest, S_OK};
use cradle_testbed::daemon::{
    pass_fd_as_3, refused_usage, run_to_end, terminate, Daemon, Finished,
};

fn run(args: &[&str]) -> Finished {
    run_to_end(BIN, args).unwrap()
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let img = img.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["--bogus"],
        &["--socket", "/x.sock", "--path", img, "--queue-size", "3"],
        &["--socket", "/x.sock", "--path", img, "--num-queues", "0"],
        &["--socket", "/x.sock", "--path", img, "--sandbox", "jail"],
        &["--socket", "/x.sock", "--path", img, "--seccomp", "maybe"],
        &[
            "--socket",
            "/x.sock",
            "--path",
            img,
            "--serial",
            "123456789012345678901",
        ],
        &[
            "--socket",
            "/x.sock",
            "--path",
            img,
            "--direct",
            "--buffered",
        ],
        &["--socket", "/x.sock", "--path", img, "--iops", "-1"],
        &["--socket", "/x.sock", "--path", img, "--poll-us", "10001"],
        &["--socket", "/x.sock", "--path", img, "--poll-us", "-5"],
        &["--socket", "/x.sock", "--fd", "3", "--path", img],
        &["--socket", "/x.sock"],
        &["--path", img],
        &["--socket", "/x.sock", "--path", img, "--log-level", "lo[ud"],
    ];
    for args in cases {
        refused_usage(BIN, args).unwrap();
    }
}

#[test]
fn print_capabilities_is_json() {
    let r = run(&["--print-capabilities"]);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout.trim(), r#"{"type": "block", "features": []}"#);
}

#[test]
fn missing_backing_file_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let r = run(&[
        "--socket",
        sock.to_str().unwrap(),
        "--path",
        "/nonexistent/disk",
        "--sandbox",
        "none",
    ]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("/nonexistent/disk"), "{}", r.stderr);
}

#[test]
fn notifies_ready_after_listening_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let sock = dir.path().join("blk.sock");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--socket",
        sock.to_str().unwrap(),
        "--path",
        img.to_str().unwrap(),
    ])
    .args([
        "--sandbox",
        "none",
        "--seccomp",
        "none",
        "--num-queues",
        "2",
    ])
    .stderr(Stdio::piped());
    let mut child = Daemon::spawn_ready(&mut cmd, Duration::from_secs(10)).unwrap();
    // READY=1 came after the socket was listening.
    let (_drv, mut qs) = connect(&sock, 2, 256);
    let q = &mut qs[0];
    let data = pattern(5, 256 * 1024);
    let mut submitted = 0u64;
    while q.free_slots() > 0 {
        q.submit(
            BlkRequest::Write {
                sector: submitted * 512,
                data: &data,
            },
            submitted,
        )
        .unwrap();
        submitted += 1;
    }
    q.kick().unwrap();
    // SIGTERM once the daemon is busy with the batch (first completion in).
    let mut done = q.reap(Duration::from_secs(10)).unwrap();
    child.signal(libc::SIGTERM).unwrap();
    let stopping = child.notification(Duration::from_secs(10)).unwrap();
    assert_eq!(stopping, "STOPPING=1");
    let st = child.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(st.code(), Some(0));
    // Every request the daemon answered succeeded and is on disk.
    done.extend(q.poll().unwrap());
    let disk = std::fs::read(&img).unwrap();
    for c in &done {
        assert_eq!(c.status, S_OK);
        let off = (c.tag * 512 * 512) as usize;
        assert!(
            disk[off..off + data.len()] == data[..],
            "write {} on disk",
            c.tag
        );
    }
    let err = child.stderr_text().unwrap();
    assert!(err.contains("drain finished"), "{err}");
}

#[test]
fn serves_an_inherited_socket_fd() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let sock = dir.path().join("inherited.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut cmd = Command::new(BIN);
    pass_fd_as_3(&mut cmd, listener.as_raw_fd());
    cmd.args([
        "--fd",
        "3",
        "--path",
        img.to_str().unwrap(),
        "--sandbox",
        "none",
        "--seccomp",
        "none",
    ]);
    let mut child = ChildGuard(cmd.stderr(Stdio::null()).spawn().unwrap());
    drop(listener);
    let (_drv, mut qs) = connect(&sock, 1, 64);
    qs[0].write(8, &[0x42; 4096]).unwrap();
    assert_eq!(qs[0].read(8, 4096).unwrap(), vec![0x42; 4096]);
    assert_eq!(
        terminate(&mut child, Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}
