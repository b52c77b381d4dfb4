//! `kcradle boot` as a process on the host's `/dev/kvm`, booting a tiny
//! hand-made bzImage: a valid setup header whose 64-bit entry point prints
//! a banner and the command line it finds through the zero page (`rsi`),
//! reports a milestone and an exit status on the control port. That runs
//! the whole path (flags or JSON, loader, zero page, vCPU setup, devices,
//! exit status) in milliseconds; real kernels boot in the nested test bed.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use cradle_vmm::control::{encode_message, ControlMessage, Milestone, CONTROL_PORT};
use cradle_vmm::devices::serial::COM1_PORT;
use cradle_vmm::payload::{Asm, CodeMode};

const CMD_LINE_PTR_OFFSET: u32 = 0x228;

fn have_kvm() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("skipped: /dev/kvm is absent on this machine");
    false
}

/// A bzImage with one setup sector whose protected-mode part has the
/// 64-bit entry at +0x200, exiting with `status`.
fn fake_bzimage(status: u8) -> tempfile::NamedTempFile {
    bzimage_with_entry(&entry_code(status))
}

fn entry_code(status: u8) -> Vec<u8> {
    Asm::new(CodeMode::Long)
        .write_port(COM1_PORT, b"fake-kernel: ")
        .load_edi_from_rsi(CMD_LINE_PTR_OFFSET)
        .out_cstring_at_rdi()
        .write_port(COM1_PORT, b"\n")
        .mov_dx(CONTROL_PORT)
        .mov_eax(encode_message(ControlMessage::Milestone(
            Milestone::InitStarted,
        )))
        .out_dx_eax()
        .mov_eax(encode_message(ControlMessage::Exit(status)))
        .out_dx_eax()
        .halt_loop()
        .finish()
}

fn bzimage_with_entry(entry: &[u8]) -> tempfile::NamedTempFile {
    let mut image = vec![0u8; 2 * 512];
    image[0x1f1] = 1; // setup_sects
    image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol 2.15
    image[0x211] = 0x01; // LOADED_HIGH
    image[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    image[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    image[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    image[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // XLF_KERNEL_64
    image[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
    image[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    image.extend_from_slice(&[0x90; 0x200]); // 32-bit entry area, unused
    image.extend_from_slice(entry);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&image).unwrap();
    file
}

/// `hvm_start_info.cmdline_paddr`.
const PVH_CMDLINE_PADDR_OFFSET: u32 = 0x18;
/// Where the fake ELF kernel's code is loaded and entered.
const ELF_LOAD: u64 = 0x10_0000;

/// An ELF64 with one PT_LOAD segment at 1 MiB holding `code` and a PT_NOTE
/// with the PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`) pointing at it.
fn fake_pvh_elf(code: &[u8]) -> tempfile::NamedTempFile {
    let (note_at, code_at) = (0x200usize, 0x1000usize);
    let mut elf = vec![0u8; code_at];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4..7].copy_from_slice(&[2, 1, 1]); // 64-bit, little endian, v1
    elf[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[0x12..0x14].copy_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
    elf[0x18..0x20].copy_from_slice(&ELF_LOAD.to_le_bytes()); // e_entry
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    let phdr = |elf: &mut Vec<u8>, at: usize, kind: u32, offset: u64, addr: u64, size: u64| {
        elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        elf[at + 4..at + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
        elf[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
        elf[at + 16..at + 24].copy_from_slice(&addr.to_le_bytes()); // vaddr
        elf[at + 24..at + 32].copy_from_slice(&addr.to_le_bytes()); // paddr
        elf[at + 32..at + 40].copy_from_slice(&size.to_le_bytes()); // filesz
        elf[at + 40..at + 48].copy_from_slice(&size.to_le_bytes()); // memsz
        elf[at + 48..at + 56].copy_from_slice(&4u64.to_le_bytes()); // align
    };
    phdr(&mut elf, 64, 1, code_at as u64, ELF_LOAD, code.len() as u64); // PT_LOAD
    phdr(&mut elf, 120, 4, note_at as u64, 0, 20); // PT_NOTE
                                                   // namesz 4, descsz 4, type 18, "Xen\0", the 32-bit entry.
    for (i, word) in [4u32, 4, 18].iter().enumerate() {
        elf[note_at + 4 * i..note_at + 4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    elf[note_at + 12..note_at + 16].copy_from_slice(b"Xen\0");
    elf[note_at + 16..note_at + 20].copy_from_slice(&(ELF_LOAD as u32).to_le_bytes());
    elf.extend_from_slice(code);
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&elf).unwrap();
    file
}

/// 32-bit PVH entry code: prints the command line it finds through the
/// start info (`ebx`), then reports `status`.
fn pvh_entry_code(status: u8) -> Vec<u8> {
    Asm::new(CodeMode::Protected)
        .write_port(COM1_PORT, b"fake-pvh: ")
        .load_edi_from_ebx(PVH_CMDLINE_PADDR_OFFSET)
        .out_cstring_at_edi()
        .write_port(COM1_PORT, b"\n")
        .mov_dx(CONTROL_PORT)
        .mov_eax(encode_message(ControlMessage::Exit(status)))
        .out_dx_eax()
        .halt_loop()
        .finish()
}

fn kcradle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kcradle"))
        .args(args)
        .env("KCRADLE_LOG", "info")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn boot_runs_a_kernel_to_the_exit_status_it_reports() {
    if !have_kvm() {
        return;
    }
    let kernel = fake_bzimage(42);
    let out = kcradle(&[
        "boot",
        "--kernel",
        kernel.path().to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 hello=world",
        "--memory",
        "64M",
        "--cpus",
        "2",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(42),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout, "fake-kernel: console=ttyS0 hello=world\n");
    assert!(stderr.contains("init-started"), "{stderr}");
    assert!(stderr.contains("VM ended"), "{stderr}");
}

/// An ELF kernel boots through its PVH entry: 32-bit protected mode, the
/// start info in `ebx`, the command line where the start info says.
#[test]
fn boot_runs_an_elf_kernel_through_its_pvh_entry() {
    if !have_kvm() {
        return;
    }
    let kernel = fake_pvh_elf(&pvh_entry_code(23));
    let out = kcradle(&[
        "boot",
        "--kernel",
        kernel.path().to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 via=pvh",
        "--memory",
        "64M",
        "--cpus",
        "2",
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(23),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout, "fake-pvh: console=ttyS0 via=pvh\n");
    assert!(stderr.contains("Pvh"), "{stderr}");
}

#[test]
fn boot_from_a_json_config_with_console_to_a_file() {
    if !have_kvm() {
        return;
    }
    let kernel = fake_bzimage(0);
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console.log");
    let config = dir.path().join("vm.json");
    let initrd = dir.path().join("extra.cpio");
    std::fs::write(&initrd, b"070701").unwrap();
    std::fs::write(
        &config,
        serde_json::json!({
            "kernel": kernel.path(),
            "initrd": [initrd],
            "cmdline": "from-json",
            "memory": 64,
            "serial": format!("file={}", console.display()),
        })
        .to_string(),
    )
    .unwrap();
    let out = kcradle(&["boot", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(&console).unwrap(),
        "fake-kernel: from-json\n"
    );
}

#[test]
fn user_mistakes_exit_2_with_one_line() {
    let kernel = fake_bzimage(0);
    let k = kernel.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["boot"], "--kernel"),
        (
            &["boot", "--kernel", "/nonexistent/vmlinuz"],
            "/nonexistent/vmlinuz",
        ),
        (&["boot", "--kernel", k, "--memory", "16M"], "too small"),
        (
            &["boot", "--kernel", k, "--memory", "lots"],
            "bad memory size",
        ),
        (
            &["boot", "--kernel", k, "--memory", "100000G"],
            "more than this host",
        ),
        (&["boot", "--kernel", k, "--cpus", "200"], "200 vCPUs"),
        (
            &["boot", "--kernel", "/etc/hostname"],
            "is not a kernel: neither a bzImage nor an ELF vmlinux",
        ),
        (
            &["boot", "--kernel", k, "--initrd", "/nonexistent/initrd"],
            "initramfs",
        ),
        (&["boot", "--kernel", k, "--serial", "tty"], "bad serial"),
        (
            &["boot", "--kernel", k, "--jail", "/nonexistent/jail"],
            "is not a directory",
        ),
        (
            &[
                "boot",
                "--kernel",
                k,
                "--fs",
                "tag=a,socket=/x",
                "--fs",
                "tag=a,socket=/y",
            ],
            "used twice",
        ),
        (
            &[
                "boot",
                "--kernel",
                k,
                "--net",
                "socket=/x,mac=52:54:00:00:00:01,num_queue_pairs=32",
            ],
            "more than 31",
        ),
        (
            &["boot", "--config", "/nonexistent/vm.json"],
            "cannot read config",
        ),
        (
            &["boot", "--config", "/x.json", "--cpus", "2"],
            "cannot be used with",
        ),
    ];
    for (args, expected) in cases {
        let out = kcradle(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: {stderr} lacks {expected:?}"
        );
    }
}

#[test]
fn sigterm_stops_a_running_vm_with_status_143() {
    if !have_kvm() {
        return;
    }
    // A guest that prints and then waits forever.
    let entry = Asm::new(CodeMode::Long)
        .write_port(COM1_PORT, b"waiting\n")
        .halt_loop()
        .finish();
    let kernel = bzimage_with_entry(&entry);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcradle"))
        .args([
            "boot",
            "--kernel",
            kernel.path().to_str().unwrap(),
            "--memory",
            "64M",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the guest's line, so the VM is surely running.
    let mut stdout = child.stdout.take().unwrap();
    let mut line = [0u8; 8];
    std::io::Read::read_exact(&mut stdout, &mut line).unwrap();
    assert_eq!(&line, b"waiting\n");
    let started = std::time::Instant::now();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("stop signal received"), "{stderr}");
    assert!(stderr.contains("vmm_rss_kib="), "{stderr}");
}

/// `--jail DIR`: the running kcradle's root is DIR (its mount namespace
/// holds that one mount), it has no capabilities and no_new_privs, and the
/// guest still runs (its console line comes after the jail, which is
/// entered before the vCPUs start) and stops on SIGTERM.
#[test]
fn jailed_kcradle_sees_only_its_jail_and_still_runs_the_guest() {
    if !have_kvm() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the jail needs root (mount namespace, pivot_root)");
        return;
    }
    let entry = Asm::new(CodeMode::Long)
        .write_port(COM1_PORT, b"jailed-guest-up\n")
        .halt_loop()
        .finish();
    let kernel = bzimage_with_entry(&entry);
    let work = tempfile::tempdir().unwrap();
    let jail = work.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    std::fs::write(jail.join("marker"), "in-the-jail").unwrap();
    let console = work.path().join("console.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcradle"))
        .args([
            "boot",
            "--kernel",
            kernel.path().to_str().unwrap(),
            "--memory",
            "64M",
            "--serial",
            &format!("file={}", console.display()),
            "--jail",
            jail.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&console)
        .unwrap_or_default()
        .contains("jailed-guest-up")
    {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the guest never ran: {}", text(&out.stderr));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let proc = format!("/proc/{}", child.id());

    // Its root is the jail: the marker is there, the host's /etc is not.
    let root = std::path::PathBuf::from(format!("{proc}/root"));
    assert_eq!(
        std::fs::read_to_string(root.join("marker")).unwrap(),
        "in-the-jail"
    );
    assert!(!root.join("etc").exists());
    // One mount: the jail directory, mounted at /.
    let mountinfo = std::fs::read_to_string(format!("{proc}/mountinfo")).unwrap();
    let mounts: Vec<Vec<&str>> = mountinfo.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(mounts.len(), 1, "{mountinfo}");
    assert_eq!(mounts[0][4], "/", "{mountinfo}");
    assert!(mounts[0][3].ends_with("/jail"), "{mountinfo}");
    // No capabilities, no new privileges, on every thread.
    for task in std::fs::read_dir(format!("{proc}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for field in ["CapEff:", "CapPrm:", "CapBnd:"] {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    }

    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("jailed"), "{stderr}");
}

#[test]
fn a_disk_socket_that_never_answers_exits_2_after_the_bounded_retry() {
    if !have_kvm() {
        return;
    }
    let kernel = fake_bzimage(0);
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("missing.sock");
    let started = std::time::Instant::now();
    let out = kcradle(&[
        "boot",
        "--kernel",
        kernel.path().to_str().unwrap(),
        "--memory",
        "64M",
        "--disk",
        &format!("socket={}", sock.display()),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("did not answer within"), "{stderr}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(9));
    assert!(out.stdout.is_empty(), "the guest never ran");
}

/// Waits until kcradle `pid` has its own handler for signal `sig` (it is
/// past flag parsing and in its setup), then checks it is still
/// single-threaded: the jail, entered after the daemons are connected,
/// needs that.
fn wait_for_stop_handler(pid: u32, sig: libc::c_int) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .map(|m| u64::from_str_radix(m.trim(), 16).unwrap())
            .unwrap();
        if caught & (1 << (sig - 1)) != 0 {
            assert!(status.contains("Threads:\t1\n"), "{status}");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no handler: {status}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A stop signal while kcradle waits for its daemons ends it at once and
/// cleanly: 128 + N, one log line, no guest, no connection left open.
/// Two waits: a socket that never appears (the bounded retry), and a
/// daemon that accepted and never answers the handshake (a blocked read).
#[test]
fn a_stop_signal_during_the_daemon_connect_ends_kcradle_cleanly() {
    if !have_kvm() {
        return;
    }
    let kernel = fake_bzimage(0);
    let dir = tempfile::tempdir().unwrap();
    let boot = |sock: &Path| {
        Command::new(env!("CARGO_BIN_EXE_kcradle"))
            .args(["boot", "--kernel", kernel.path().to_str().unwrap()])
            .args(["--memory", "64M", "--disk"])
            .arg(format!("socket={}", sock.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ended = |child: std::process::Child, sig: libc::c_int| {
        let started = std::time::Instant::now();
        // SAFETY: signalling our own child process.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(128 + sig), "{stderr}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("stop signal while connecting to the daemons"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "the guest never ran");
    };

    // The socket never appears: SIGTERM within the 10 s retry.
    let missing = dir.path().join("missing.sock");
    let child = boot(&missing);
    wait_for_stop_handler(child.id(), libc::SIGTERM);
    std::thread::sleep(std::time::Duration::from_millis(200));
    ended(child, libc::SIGTERM);
    assert!(!missing.exists());

    // A daemon that reads the first two requests (SET_OWNER, GET_FEATURES:
    // a 12-byte header each) and never replies: SIGINT while kcradle
    // blocks reading the reply.
    let sock = dir.path().join("mute.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let child = boot(&sock);
    let (mut conn, _) = listener.accept().unwrap();
    let mut headers = [0u8; 24];
    std::io::Read::read_exact(&mut conn, &mut headers).unwrap();
    ended(child, libc::SIGINT);
    // kcradle's end of the connection is closed.
    let mut rest = Vec::new();
    assert_eq!(std::io::Read::read_to_end(&mut conn, &mut rest).unwrap(), 0);
}

#[test]
fn stdin_reaches_the_guest_console() {
    if !have_kvm() {
        return;
    }
    // The guest echoes one line it reads from COM1, then exits 0.
    let entry = Asm::new(CodeMode::Long)
        .write_port(COM1_PORT, b"ready\n")
        .echo_com1_line()
        .mov_dx(CONTROL_PORT)
        .mov_eax(encode_message(ControlMessage::Exit(0)))
        .out_dx_eax()
        .halt_loop()
        .finish();
    let kernel = bzimage_with_entry(&entry);
    let mut child = Command::new(env!("CARGO_BIN_EXE_kcradle"))
        .args([
            "boot",
            "--kernel",
            kernel.path().to_str().unwrap(),
            "--memory",
            "64M",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"typed by the host\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ready\ntyped by the host\n");
}

/// net-tap, built next to kcradle, serving `pairs` queue pairs from a tap
/// in a network namespace of its own (`unshare -n`, gone when it exits).
fn net_tap_in_netns(socket: &Path, pairs: u16) -> std::process::Child {
    let bin = Path::new(env!("CARGO_BIN_EXE_kcradle")).with_file_name("net-tap");
    assert!(
        bin.exists(),
        "{} missing: cargo build -p net-tap",
        bin.display()
    );
    let child = Command::new("unshare")
        .arg("-n")
        .arg(&bin)
        .args(["--socket", socket.to_str().unwrap(), "--tap", "mq0"])
        .args(["--num-queue-pairs", &pairs.to_string()])
        .args(["--sandbox", "none", "--seccomp", "none"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "net-tap never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

/// `--net ...,num_queue_pairs=2` against a real net-tap: with a daemon
/// serving two pairs (five queues, the control queue last) the VM starts
/// and runs to its exit status; with a daemon serving four pairs the
/// control queue would be at another index, so kcradle refuses before the
/// guest starts: one line, exit 2.
#[test]
fn multi_queue_net_needs_a_daemon_with_the_same_queue_pairs() {
    if !have_kvm() {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: net-tap needs root for its tap");
        return;
    }
    let kernel = fake_bzimage(5);
    let dir = tempfile::tempdir().unwrap();
    for (pairs, want) in [(2u16, 5), (4, 2)] {
        let socket = dir.path().join(format!("net{pairs}.sock"));
        let mut daemon = net_tap_in_netns(&socket, pairs);
        let net = format!(
            "socket={},mac=52:54:00:00:00:0{pairs},num_queue_pairs=2",
            socket.display()
        );
        let out = kcradle(&[
            "boot",
            "--kernel",
            kernel.path().to_str().unwrap(),
            "--memory",
            "64M",
            "--net",
            &net,
        ]);
        let _ = daemon.kill();
        let _ = daemon.wait();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(want), "{pairs} pairs: {stderr}");
        if want == 2 {
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.contains("9 queues offered, 5 configured"),
                "{stderr}"
            );
        }
    }
}
