//! `kcradle run` on the host side: daemons, the pod network inside a
//! network namespace made by the test, and teardown; `docker.sock`
//! reaching a real vdocker (cradle-init in host mode) with the real docker
//! CLI (exec, cp, logs, attach); `ps`, `stop` and `rm`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cradle_image::write::write_docker_archive;
use cradle_image::ImageConfig;
use cradle_vmm::launcher::proxy::DockerProxy;

mod common;

use common::{bin_dir, build_binaries, Netns};

fn kcradle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kcradle"))
}

fn layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add("bin/", tar::EntryType::Directory, 0o755, b"");
    add("etc/", tar::EntryType::Directory, 0o755, b"");
    add(
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &fs::read("/bin/busybox").unwrap(),
    );
    add(
        "etc/passwd",
        tar::EntryType::Regular,
        0o644,
        b"root:x:0:0:root:/:/bin/busybox\n",
    );
    b.into_inner().unwrap()
}

/// A bundle in `dir/b`, with volumes and a published port.
fn summon_bundle(dir: &Path, state: &Path) -> PathBuf {
    let cfg = ImageConfig {
        cmd: Some(vec!["/bin/busybox".into(), "sleep".into(), "30".into()]),
        ..Default::default()
    };
    let archive = dir.join("img.tar");
    write_docker_archive(&archive, &cfg, &[layer()], "t/img:1").unwrap();
    let b = dir.join("b");
    let out = kcradle()
        .arg("summon")
        .arg(&b)
        .arg(format!("docker-archive:{}", archive.display()))
        .args(["-q", "-p", "18080:80", "-v", "lv:data:16M:/data"])
        .args(["-v", "gfs:shared:/shared", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                out.push(c);
            }
        }
    }
    out
}

/// The pod's VMM (`kcradle-vmm`, built beside kcradle, with the bundle's
/// pod archive) is jailed:
/// its root is the empty `run/jail/` (the host's tree is out of sight) and
/// it has no_new_privs. Waits for the jail, entered once the daemons are
/// connected.
fn assert_vmm_jailed(b: &Path) {
    let archive = b.join("run/pod.cpio");
    let archive = archive.to_str().unwrap();
    let vmm_exe = Path::new(env!("CARGO_BIN_EXE_kcradle-vmm"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let (pid, status) = loop {
        let vmm = fs::read_dir("/proc").unwrap().flatten().find_map(|e| {
            let c = fs::read(e.path().join("cmdline")).ok()?;
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            (c.starts_with(vmm_exe.to_str().unwrap()) && c.contains(archive)).then(|| e.file_name())
        });
        if let Some(pid) = vmm {
            let pid = pid.to_string_lossy().into_owned();
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if status.contains("NoNewPrivs:\t1") {
                break (pid, status);
            }
        }
        assert!(Instant::now() < deadline, "the VMM never entered its jail");
        std::thread::sleep(Duration::from_millis(100));
    };
    let cmdline = String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .replace('\0', " ");
    let jail = b.join("run/jail");
    assert!(
        cmdline.contains(&format!("--jail {}", jail.display())),
        "{cmdline}"
    );
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "the jail is empty");
    assert!(!root.join("etc").exists());
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let mounts: Vec<Vec<&str>> = mountinfo.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(mounts.len(), 1, "one mount, the jail at /: {mountinfo}");
    assert!(mounts[0][3].ends_with("/run/jail"), "{mountinfo}");
    assert_eq!(mounts[0][4], "/", "{mountinfo}");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kcradle run did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn start_run(ns: &Netns, b: &Path, state: &Path, kernel: Option<&Path>) -> std::process::Child {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0])
        .arg(env!("CARGO_BIN_EXE_kcradle"))
        .arg("run")
        .arg(b)
        .arg("--state-dir")
        .arg(state)
        .env("KCRADLE_BIN_DIR", bin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(k) = kernel {
        cmd.arg("--kernel").arg(k);
    }
    cmd.spawn().unwrap()
}

/// Nothing of the pod is left: processes, tap, nftables table, sockets,
/// pod record.
fn assert_torn_down(ns: &Netns, b: &Path, state: &Path) {
    let b_str = b.to_str().unwrap();
    assert_eq!(processes_mentioning(b_str), Vec::<String>::new());
    assert!(!ns.sh(&["ip", "-o", "link"]).contains("kc0"));
    assert!(!ns.sh(&["nft", "list", "tables"]).contains("kcradle"));
    assert!(fs::read_dir(b.join("run")).unwrap().next().is_none());
    assert!(!b.join("docker.sock").exists());
    let ps = kcradle()
        .args(["ps", "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&ps.stdout).lines().count(), 1);
}

/// The VM fails to start (a file that is not a kernel): every daemon was
/// started, and everything is gone when `run` returns the VMM's status.
#[test]
fn run_in_a_netns_leaves_nothing_behind_when_the_vm_fails() {
    build_binaries();
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let b = summon_bundle(t.path(), &state);
    let release = cradle_vmm::launcher::initrd::default_kernel().unwrap().1;
    let fake = t.path().join(format!("vmlinuz-{release}"));
    fs::write(&fake, vec![0u8; 4096]).unwrap();
    let ns = Netns::new("vmfail");
    let out = wait_output(
        start_run(&ns, &b, &state, Some(&fake)),
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for log in ["fs-rootfs", "fs-shared", "blk-data", "net"] {
        assert!(
            b.join("logs").join(format!("{log}.log")).is_file(),
            "{log} was not started: {err}"
        );
    }
    assert_torn_down(&ns, &b, &state);
    // A stopped bundle: stop says so, rm deletes it.
    let st = kcradle()
        .arg("stop")
        .arg(&b)
        .arg("--state-dir")
        .arg(&state)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    let st = kcradle()
        .arg("rm")
        .arg(&b)
        .arg("--state-dir")
        .arg(&state)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!b.exists());
    // rm of something that is not a bundle: exit 2, nothing deleted.
    let out = kcradle()
        .arg("rm")
        .arg(t.path())
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(t.path().join("img.tar").exists());
}

/// A pod whose VM is running (the Debian kernel on this host's slow KVM,
/// or failing early where there is none): while it runs, `ps` lists it and
/// its tap, rules and daemons exist, and its VMM is jailed; `kcradle stop`
/// ends it and nothing is left (the jail directory included).
#[test]
fn stop_tears_down_a_running_pod() {
    build_binaries();
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let b = summon_bundle(t.path(), &state);
    let ns = Netns::new("stop");
    let mut child = start_run(&ns, &b, &state, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut was_running = false;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if b.join("docker.sock").exists() {
            was_running = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if was_running {
        let ps = kcradle()
            .args(["ps", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        let ps = String::from_utf8_lossy(&ps.stdout);
        assert!(ps.contains("169.254.128.2"), "{ps}");
        assert!(ns.sh(&["ip", "-o", "link"]).contains("kc0"));
        assert!(ns.sh(&["nft", "list", "tables"]).contains("kcradle-0"));
        assert!(processes_mentioning(b.to_str().unwrap()).len() >= 5);
        if Path::new("/dev/kvm").exists() {
            assert_vmm_jailed(&b);
        }
        let st = kcradle()
            .arg("stop")
            .arg(&b)
            .arg("--state-dir")
            .arg(&state)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = wait_output(child, Duration::from_secs(60));
    eprintln!(
        "was running: {was_running}; run ended {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_torn_down(&ns, &b, &state);
}

/// docker.sock reaches a real vdocker: cradle-init in host mode on the
/// bundle's own rootfs, driven by the docker CLI through the proxy.
#[test]
fn docker_cli_through_docker_sock() {
    build_binaries();
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let b = summon_bundle(t.path(), &state);
    let mut pod: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("pod.json")).unwrap()).unwrap();
    pod["containers"][0]["image"]["rootfs"] = serde_json::json!({"dir": b.join("rootfs")});
    pod["volumes"] = serde_json::json!([]);
    // A line at start, then a tick a second: what logs and attach see.
    pod["containers"][0]["process"]["cmd"] = serde_json::json!([
        "/bin/busybox",
        "sh",
        "-c",
        "echo started; i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo tick $i; /bin/busybox sleep 1; done"
    ]);
    pod["control_port"] = serde_json::json!(false);
    let cfg = t.path().join("host-pod.json");
    fs::write(&cfg, serde_json::to_vec(&pod).unwrap()).unwrap();
    let mut init = Command::new(bin_dir().join("cradle-init"))
        .arg("host")
        .arg("--config")
        .arg(&cfg)
        .args(["--listen", "127.0.0.1:0", "--run-dir"])
        .arg(t.path().join("init-run"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(init.stderr.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("cradle-init ended").unwrap();
        if let Some(addr) = line.strip_prefix("vdocker listening on ") {
            break addr.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        lines.for_each(|l| eprintln!("cradle-init: {}", l.unwrap_or_default()))
    });
    let sock = b.join("docker.sock");
    let proxy = DockerProxy::start(&sock, ([127, 0, 0, 1], port).into()).unwrap();
    let host = format!("unix://{}", sock.display());
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(["-H", &host])
            .args(args)
            .output()
            .unwrap()
    };
    // vdocker listens before the container has started: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !docker(&["exec", "main", "/bin/busybox", "true"])
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the container never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = docker(&["exec", "main", "/bin/busybox", "echo", "through the sock"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through the sock\n");
    // stdin through a hijacked exec, ended by a half-close.
    let mut child = Command::new("docker")
        .args([
            "-H",
            &host,
            "exec",
            "-i",
            "main",
            "/bin/busybox",
            "wc",
            "-c",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"12345").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    // docker cp both ways.
    let f = t.path().join("note.txt");
    fs::write(&f, "copied in\n").unwrap();
    let out = docker(&["cp", f.to_str().unwrap(), "main:/note.txt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = t.path().join("back.txt");
    let out = docker(&["cp", "main:/note.txt", back.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&back).unwrap(), "copied in\n");
    // docker logs: the container's output so far.
    let out = docker(&["logs", "main"]);
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && logs.starts_with("started\n"),
        "{logs}"
    );
    // docker attach (hijacked, output only): live ticks arrive; ending the
    // client leaves the container running.
    let mut attach = Command::new("docker")
        .args([
            "-H",
            &host,
            "attach",
            "--no-stdin",
            "--sig-proxy=false",
            "main",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = attach.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(first.starts_with("tick "), "{first}");
    let next = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_ne!(first, next, "a live stream, not a replay");
    let _ = attach.kill();
    let _ = attach.wait();
    assert!(docker(&["exec", "main", "/bin/busybox", "true"])
        .status
        .success());
    drop(proxy);
    assert!(!sock.exists());
    let _ = init.kill();
    let _ = init.wait();
}
