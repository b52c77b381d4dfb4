//! cradle-init in a real Linux guest (QEMU TCG through the test bed): it
//! loads a module, configures the network over netlink, runs a busybox
//! container from a rootfs in the initramfs, and the host's docker CLI
//! reaches vdocker on port 1 through a user-mode network forward.

use cradle_testbed::QemuGuest;
use std::process::Command;
use std::time::{Duration, Instant};

fn overlay_module() -> std::path::PathBuf {
    let kernel = cradle_testbed::Kernel::debian().expect("Debian cloud kernel");
    kernel.modules.join("kernel/fs/overlayfs/overlay.ko")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn docker(port: u16, args: &[&str], input: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg("docker")
        .arg("-H")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    if let Some(data) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(data.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn out(o: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CONFIG: &str = r#"{"version":1,"id":"vmpod","hostname":"vmpod",
  "network":{"interfaces":[{"name":"eth0","mtu":1400,
      "addresses":["169.254.100.15/24","169.254.100.20/24","fd00::15/64"]}],
    "gateway":"169.254.100.2","nameservers":["169.254.100.3"]},
  "modules":["/cradle/overlay.ko"],
  "shutdown_grace_secs":3,
  "containers":[{"name":"web","critical":true,"image":{"rootfs":{"dir":"/img"}},
    "process":{"cmd":["sh","-c","echo hello from the guest; trap 'echo bye; exit 3' TERM; while :; do sleep 0.2; done"]}}]}"#;

/// Builds the image rootfs from the initramfs's busybox, then runs
/// cradle-init's PID-1 code under the test bed's init.
const SCRIPT: &str = r#"
mkdir -p /img/bin /img/etc /img/root
cp /bin/busybox /img/bin/busybox
for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox /img/bin/$a; done
echo 'root:x:0:0:root:/root:/bin/sh' > /img/etc/passwd
echo 'root:x:0:' > /img/etc/group
lsmod | grep -q '^overlay' && echo overlay-preloaded
/usr/bin/cradle-init init --config /cradle/config.json
echo "pod-status=$?"
lsmod | grep -q '^overlay' && echo overlay-loaded
grep -q ' /sys/fs/cgroup cgroup2 ' /proc/mounts && echo cgroup2-mounted
grep -q ' /dev/mqueue mqueue ' /proc/mounts && echo mqueue-mounted
ip addr show eth0
"#;

#[test]
fn qemu_cradle_init_serves_docker_exec_and_logs() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, CONFIG).unwrap();
    let guest = QemuGuest::new()
        .memory_mib(512)
        .binary_at(env!("CARGO_BIN_EXE_cradle-init"), "/usr/bin/cradle-init")
        .file(&cfg, "/cradle/config.json")
        .file(overlay_module(), "/cradle/overlay.ko")
        .user_net("169.254.100.0/24", &[(port, 1)])
        .timeout(Duration::from_secs(240));
    let vm = std::thread::spawn(move || guest.run(SCRIPT));

    // Wait for vdocker through the forward (boot under TCG takes seconds).
    let deadline = Instant::now() + Duration::from_secs(200);
    loop {
        let o = docker(port, &["ps", "--format", "{{.Names}}"], None);
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("web") {
            break;
        }
        if vm.is_finished() {
            panic!("guest ended early: {:?}", vm.join().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "vdocker never answered: {}",
            out(&o)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let exec = docker(
        port,
        &[
            "exec",
            "web",
            "sh",
            "-c",
            "echo $((6*7)); hostname; cat /etc/resolv.conf",
        ],
        None,
    );
    assert!(exec.status.success(), "{}", out(&exec));
    assert_eq!(
        String::from_utf8_lossy(&exec.stdout),
        "42\nvmpod\nnameserver 169.254.100.3\n"
    );
    let piped = docker(port, &["exec", "-i", "web", "wc", "-c"], Some("12345"));
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim(),
        "5",
        "{}",
        out(&piped)
    );
    let code = docker(port, &["exec", "web", "sh", "-c", "exit 9"], None);
    assert_eq!(code.status.code(), Some(9), "{}", out(&code));
    let logs = docker(port, &["logs", "web"], None);
    assert_eq!(
        String::from_utf8_lossy(&logs.stdout),
        "hello from the guest\n",
        "{}",
        out(&logs)
    );

    // Ending the critical container ends the pod and cradle-init.
    let kill = docker(port, &["kill", "-s", "TERM", "web"], None);
    assert!(kill.status.success(), "{}", out(&kill));
    let run = vm
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("guest run: {e}"));
    let o = &run.output;
    assert!(o.contains("pod-status=3"), "{o}\n{}", run.console);
    assert!(
        !o.contains("overlay-preloaded") && o.contains("overlay-loaded"),
        "{o}"
    );
    // Addresses and MTU set over netlink.
    assert!(o.contains("mtu 1400"), "{o}");
    assert!(
        o.contains("169.254.100.20/24") && o.contains("fd00::15/64"),
        "{o}"
    );
    // The container's output was mirrored to the console.
    assert!(
        run.console.contains("[web] hello from the guest"),
        "{}",
        run.console
    );
    assert!(run.console.contains("[web] bye"), "{}", run.console);
}

const PID1_CONFIG: &str = r#"{"version":1,"id":"pid1pod","hostname":"pid1pod",
  "network":{"interfaces":[{"name":"eth0","addresses":["169.254.100.15/24"]}],
    "gateway":"169.254.100.2"},
  "modules":["/lib/modules/virtio_ring.ko","/lib/modules/virtio.ko",
    "/lib/modules/virtio_pci_modern_dev.ko","/lib/modules/virtio_pci_legacy_dev.ko",
    "/lib/modules/virtio_pci.ko","/lib/modules/failover.ko","/lib/modules/net_failover.ko",
    "/lib/modules/virtio_net.ko","/cradle/overlay.ko"],
  "shutdown_grace_secs":3,
  "containers":[{"name":"web","critical":true,"image":{"rootfs":{"dir":"/img"}},
    "process":{"cmd":["/bin/busybox","sh","-c","echo pid1 container up; trap 'echo bye; exit 4' TERM; while :; do sleep 0.2; done"]}}]}"#;

/// cradle-init as the kernel's init (`rdinit=`), no test bed script: it
/// mounts the basic filesystems itself, loads the virtio-net driver stack
/// (the test bed puts the modules in the initramfs for `user_net`, and
/// only its own init would load them), and powers the machine off when the
/// pod ends. The test bed reports a guest that powered off without its
/// markers as `GuestDied`, with the console, which is what is checked.
#[test]
fn qemu_pid1_cradle_init_runs_the_pod_and_powers_off() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    std::fs::write(&cfg, PID1_CONFIG).unwrap();
    std::fs::write(dir.path().join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.path().join("group"), "root:x:0:\n").unwrap();
    let guest = QemuGuest::new()
        .memory_mib(512)
        .cmdline("rdinit=/usr/bin/cradle-init")
        .binary_at(env!("CARGO_BIN_EXE_cradle-init"), "/usr/bin/cradle-init")
        .file(&cfg, "/cradle/config.json")
        .file(overlay_module(), "/cradle/overlay.ko")
        .file("/bin/busybox", "/img/bin/busybox")
        .file(dir.path().join("passwd"), "/img/etc/passwd")
        .file(dir.path().join("group"), "/img/etc/group")
        .user_net("169.254.100.0/24", &[(port, 1)])
        .timeout(Duration::from_secs(240));
    let vm = std::thread::spawn(move || guest.run("true"));
    let deadline = Instant::now() + Duration::from_secs(200);
    loop {
        let o = docker(port, &["ps", "--format", "{{.Names}}"], None);
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains("web") {
            break;
        }
        if vm.is_finished() {
            panic!("guest ended early: {:?}", vm.join().unwrap());
        }
        assert!(
            Instant::now() < deadline,
            "vdocker never answered: {}",
            out(&o)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let exec = docker(
        port,
        &[
            "exec",
            "web",
            "/bin/busybox",
            "sh",
            "-c",
            "cat /proc/1/comm; hostname",
        ],
        None,
    );
    assert!(exec.status.success(), "{}", out(&exec));
    let text = String::from_utf8_lossy(&exec.stdout).into_owned();
    assert!(text.starts_with("cradle-init\npid1pod\n"), "{text}");
    let logs = docker(port, &["logs", "web"], None);
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "pid1 container up\n");
    let kill = docker(port, &["kill", "-s", "TERM", "web"], None);
    assert!(kill.status.success(), "{}", out(&kill));
    let console = match vm.join().unwrap() {
        Err(cradle_testbed::TestbedError::GuestDied { console, .. }) => console,
        other => panic!("expected a power-off without test bed markers, got {other:?}"),
    };
    assert!(console.contains("[web] bye"), "{console}");
    assert!(
        console.contains("cradle-init: pod exited with status 4"),
        "{console}"
    );
    assert!(console.contains("reboot: Power down"), "{console}");
}
