//! The binary as an operator meets it: flags, exit statuses, readiness,
//! SIGTERM, an inherited socket.

use std::io::Read;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cradle_devices::driver::{Driver, DriverConfig};

const BIN: &str = env!("CARGO_BIN_EXE_virtiofsd-gfs");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_exit(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn bad_flags_exit_2_with_one_line() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    let sock = d.path().join("s").display().to_string();
    let cases: &[&[&str]] = &[
        &["--no-such-flag"],
        &["--socket", &sock],
        &["--shared-dir", dir],
        &["--socket", &sock, "--shared-dir", "/nonexistent/dir"],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--cache",
            "sometimes",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--tag",
            &"t".repeat(37),
        ],
        &["--socket", &sock, "--shared-dir", dir, "--num-queues", "0"],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--queue-size",
            "100",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--inode-file-handles",
            "maybe",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--thread-pool-size",
            "x",
        ],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--rlimit-nofile",
            "0",
        ],
        &["--socket", &sock, "--shared-dir", dir, "--sandbox", "jail"],
        &[
            "--socket",
            &sock,
            "--shared-dir",
            dir,
            "--log-level",
            "loud[[",
        ],
        &["--socket", &sock, "--fd", "3", "--shared-dir", dir],
    ];
    for args in cases {
        let (code, _out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
}

#[test]
fn print_capabilities_is_json() {
    let (code, out, _) = run(&["--print-capabilities"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), r#"{"type": "fs", "features": []}"#);
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--shared-dir",
        "--tag",
        "--cache",
        "--readonly",
        "--writeback",
        "--xattr",
        "--posix-acl",
        "--num-queues",
        "--queue-size",
        "--thread-pool-size",
        "--inode-file-handles",
        "--rlimit-nofile",
        "--sandbox",
        "--seccomp",
        "--log-level",
        "--fd",
        "--socket",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn notifies_ready_after_listening_and_exits_0_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let sock = d.path().join("fs.sock");
    let notify_path = d.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(&tree)
        .args([
            "--sandbox",
            "none",
            "--seccomp",
            "none",
            "--thread-pool-size",
            "4",
        ])
        .env("NOTIFY_SOCKET", &notify_path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1");
    // Listening by the time READY=1 arrived.
    let drv = Driver::connect(
        &sock,
        DriverConfig {
            num_queues: 2,
            queue_size: 64,
            ..Default::default()
        },
    )
    .unwrap();
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    let st = wait_exit(&mut child, 30).expect("daemon exited");
    assert_eq!(st.code(), Some(0));
    drop(drv);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("serving"), "{err}");
}

#[test]
fn serves_an_inherited_socket_fd() {
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("inherited.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let fd = {
        use std::os::fd::AsRawFd;
        l.as_raw_fd()
    };
    // Let the child inherit the listener as fd 3.
    let mut cmd = Command::new(BIN);
    cmd.args(["--fd", "3", "--sandbox", "none", "--seccomp", "none"])
        .arg("--shared-dir")
        .arg(d.path())
        .stderr(Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: dup2 is async-signal-safe and touches only the child's fds.
        unsafe {
            cmd.pre_exec(move || {
                if fd != 3 && libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 onto itself keeps FD_CLOEXEC: clear it explicitly.
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    drop(l);
    let drv = Driver::connect(
        &sock,
        DriverConfig {
            num_queues: 2,
            queue_size: 64,
            ..Default::default()
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(drv.is_ok(), "{:?}", drv.err());
}
