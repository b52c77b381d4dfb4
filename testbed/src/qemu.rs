//! `QemuGuest`: boots a kernel and a generated busybox initramfs under QEMU
//! TCG (q35) with shared memfd RAM, attaches vhost-user devices, runs one
//! script and returns its status and output.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cradle_initramfs::{Compression, Initramfs, ModuleIndex};

use crate::console::run_with_console;
use crate::init_script::{self, parse_console, Markers};
use crate::{cache_dir, GuestRun, Kernel, TestbedError};

/// MAC address of the user-mode NIC, so `/init` can find it among others.
const USER_NET_MAC: &str = "52:54:00:c0:ff:ee";
/// Host part of the guest's address on the user-mode network (QEMU's
/// first DHCP lease, which is also where `hostfwd` forwards by default).
const USER_NET_GUEST_HOST: u32 = 15;
/// Host part of QEMU's gateway on the user-mode network.
const USER_NET_GATEWAY_HOST: u32 = 2;

/// A vhost-user device served by some backend on a Unix socket.
#[derive(Debug, Clone)]
enum VhostUser {
    Blk {
        socket: PathBuf,
        queues: u32,
    },
    Fs {
        socket: PathBuf,
        tag: String,
    },
    Net {
        socket: PathBuf,
        mac: String,
        queue_pairs: u32,
    },
    /// Not vhost-user: QEMU's own tap backend, for side-by-side measurements.
    Tap {
        ifname: String,
        mac: String,
        queue_pairs: u32,
    },
}

/// QEMU user-mode networking restricted to port forwards from 127.0.0.1.
#[derive(Debug, Clone)]
struct UserNet {
    net: String,
    forwards: Vec<(u16, u16)>,
}

/// A Linux guest to boot under QEMU TCG. Build it with the chained setters,
/// then [`QemuGuest::run`] a script in it; each run boots a fresh guest.
///
/// ```no_run
/// use cradle_testbed::QemuGuest;
/// use std::time::Duration;
/// let run = QemuGuest::new()
///     .cpus(2)
///     .vhost_user_blk("/tmp/blk.sock", 2)
///     .timeout(Duration::from_secs(60))
///     .run("dd if=/dev/vda bs=4096 count=1 | md5sum")?;
/// println!("{}", run.output);
/// # Ok::<(), cradle_testbed::TestbedError>(())
/// ```
#[derive(Debug, Clone)]
pub struct QemuGuest {
    kernel: Option<Kernel>,
    qemu: PathBuf,
    cpu_model: String,
    cpus: u32,
    memory_mib: u32,
    cmdline: String,
    modules: Vec<String>,
    binaries: Vec<(PathBuf, String)>,
    base_files: Vec<(PathBuf, String)>,
    files: Vec<(PathBuf, String)>,
    devices: Vec<VhostUser>,
    user_net: Option<UserNet>,
    net_msix: bool,
    timeout: Duration,
}

impl Default for QemuGuest {
    fn default() -> Self {
        Self::new()
    }
}

impl QemuGuest {
    /// One vCPU, 512 MiB, the installed Debian kernel, a 120 s timeout.
    pub fn new() -> Self {
        QemuGuest {
            kernel: None,
            qemu: PathBuf::from("qemu-system-x86_64"),
            cpu_model: "qemu64".into(),
            cpus: 1,
            memory_mib: 512,
            cmdline: String::new(),
            modules: Vec::new(),
            binaries: Vec::new(),
            base_files: Vec::new(),
            files: Vec::new(),
            devices: Vec::new(),
            user_net: None,
            net_msix: true,
            timeout: Duration::from_secs(120),
        }
    }

    /// Boots this kernel instead of [`Kernel::debian`].
    pub fn kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = Some(kernel);
        self
    }

    /// Number of vCPUs.
    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n.max(1);
        self
    }

    /// Guest RAM in MiB (a shared memfd, as vhost-user needs).
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// QEMU `-cpu` model (default `qemu64`).
    pub fn cpu_model(mut self, model: &str) -> Self {
        self.cpu_model = model.to_string();
        self
    }

    /// Extra kernel command-line arguments.
    pub fn cmdline(mut self, extra: &str) -> Self {
        self.cmdline = extra.to_string();
        self
    }

    /// Kernel modules `/init` loads (dependencies resolved and loaded first).
    pub fn modules<S: AsRef<str>>(mut self, names: &[S]) -> Self {
        self.modules
            .extend(names.iter().map(|s| s.as_ref().to_string()));
        self
    }

    /// Copies a host binary to the same guest path with the shared libraries
    /// it needs (kept in the cached part of the initramfs).
    pub fn binary(mut self, host: impl AsRef<Path>) -> Self {
        let host = host.as_ref().to_path_buf();
        let guest = host.to_string_lossy().into_owned();
        self.binaries.push((host, guest));
        self
    }

    /// Like [`QemuGuest::binary`] but installed at `guest`.
    pub fn binary_at(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.binaries
            .push((host.as_ref().to_path_buf(), guest.to_string()));
        self
    }

    /// Copies a host file to `guest` for this run only.
    pub fn file(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.files
            .push((host.as_ref().to_path_buf(), guest.to_string()));
        self
    }

    /// Copies a large, rarely changing host file to `guest` in the cached
    /// part of the initramfs (kernels and initramfs images for nested runs).
    pub fn cached_file(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.base_files
            .push((host.as_ref().to_path_buf(), guest.to_string()));
        self
    }

    /// Attaches a `vhost-user-blk-pci` disk with `queues` queues; the first
    /// one appears as `/dev/vda`.
    pub fn vhost_user_blk(mut self, socket: impl AsRef<Path>, queues: u32) -> Self {
        self.devices.push(VhostUser::Blk {
            socket: socket.as_ref().to_path_buf(),
            queues,
        });
        self.modules(&["virtio_pci", "virtio_blk"])
    }

    /// Attaches a `vhost-user-fs-pci` device mountable with
    /// `mount -t virtiofs TAG /mnt`.
    pub fn vhost_user_fs(mut self, socket: impl AsRef<Path>, tag: &str) -> Self {
        self.devices.push(VhostUser::Fs {
            socket: socket.as_ref().to_path_buf(),
            tag: tag.to_string(),
        });
        self.modules(&["virtio_pci", "virtiofs"])
    }

    /// Attaches a `virtio-net-pci` NIC backed by `-netdev vhost-user`.
    pub fn vhost_user_net(mut self, socket: impl AsRef<Path>, mac: &str, queue_pairs: u32) -> Self {
        self.devices.push(VhostUser::Net {
            socket: socket.as_ref().to_path_buf(),
            mac: mac.to_string(),
            queue_pairs: queue_pairs.max(1),
        });
        self.modules(&["virtio_pci", "virtio_net"])
    }

    /// MSI-X for the `vhost_user_net` and `tap_net` NICs (default on). QEMU 7.2 as
    /// shipped in Debian bookworm segfaults in `vhost_net_start` when the
    /// guest driver starts a vhost-user virtio-net-pci device that uses
    /// MSI-X under TCG; `false` gives those NICs `vectors=0` (INTx), and
    /// the `tap_net` ones too so that both can be compared in one setup.
    pub fn net_msix(mut self, on: bool) -> Self {
        self.net_msix = on;
        self
    }

    /// Attaches a `virtio-net-pci` NIC on QEMU's own tap backend
    /// (`-netdev tap,ifname=...,vhost=off`) to an existing multi-queue tap.
    /// QEMU looks the tap up in its network namespace, which is the one
    /// of the thread that calls [`QemuGuest::run`]. Meant for measuring
    /// vhost-user-net daemons against QEMU's built-in path.
    pub fn tap_net(mut self, ifname: &str, mac: &str, queue_pairs: u32) -> Self {
        self.devices.push(VhostUser::Tap {
            ifname: ifname.to_string(),
            mac: mac.to_string(),
            queue_pairs: queue_pairs.max(1),
        });
        self.modules(&["virtio_pci", "virtio_net"])
    }

    /// Adds a NIC on QEMU user-mode networking with network `net` (an IPv4
    /// CIDR; use link-local 169.254.x.0/24), `restrict=on` so the guest
    /// reaches nothing outside, and TCP forwards from `127.0.0.1:HOST` to
    /// the guest's `GUEST` port. `/init` gives the guest address `.15`.
    pub fn user_net(mut self, net: &str, forwards: &[(u16, u16)]) -> Self {
        self.user_net = Some(UserNet {
            net: net.to_string(),
            forwards: forwards.to_vec(),
        });
        self.modules(&["virtio_pci", "virtio_net"])
    }

    /// Upper bound for the whole run, boot included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs `script` with busybox `sh` in a freshly booted guest; a nonzero
    /// exit status is [`TestbedError::CommandFailed`].
    pub fn run(&self, script: &str) -> Result<GuestRun, TestbedError> {
        let run = self.run_status(script)?;
        if run.status != 0 {
            return Err(TestbedError::CommandFailed {
                status: run.status,
                output: run.output,
                console: run.console,
            });
        }
        Ok(run)
    }

    /// Runs `script` and returns whatever status it exited with.
    pub fn run_status(&self, script: &str) -> Result<GuestRun, TestbedError> {
        let kernel = self.resolve_kernel()?;
        let work = tempfile::Builder::new()
            .prefix("cradle-testbed-")
            .tempdir()
            .map_err(|e| TestbedError::io("temporary directory", e))?;
        let initrd = work.path().join("initrd");
        let nonce = Markers::fresh_nonce();
        self.write_initramfs(&kernel, script, &nonce, &initrd)?;
        let markers = Markers::new(&nonce);

        let mut cmd = self.command(&kernel, &initrd)?;
        let captured = run_with_console(&mut cmd, self.timeout, Some(&markers))?;
        let transcript = parse_console(&captured.console, &markers);
        match transcript.status {
            Some(status) => Ok(GuestRun {
                status,
                output: transcript.output,
                console: captured.console,
                wall: captured.wall,
                to_script: captured.to_begin,
            }),
            None if captured.timed_out => Err(TestbedError::Timeout {
                after: self.timeout,
                console: captured.console,
            }),
            None => Err(TestbedError::GuestDied {
                qemu_stderr: captured.stderr,
                console: captured.console,
            }),
        }
    }

    /// Writes this guest's whole initramfs, running `script`, into the cache
    /// and returns its path: what another VMM (QEMU microvm or `kcradle` in
    /// a [`NestedHost`](crate::NestedHost)) boots as an L2 guest. The same
    /// configuration and script give the same file. The script's output and
    /// status appear on the guest's console between marker lines.
    pub fn standalone_initramfs(&self, script: &str) -> Result<PathBuf, TestbedError> {
        let kernel = self.resolve_kernel()?;
        let base = self.base_initramfs(&kernel)?;
        let overlay = self.overlay(script, "standalone")?;
        let stem = base
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = cache_dir().join(format!("{stem}-{}.cpio", overlay.fingerprint()?));
        if !path.exists() {
            let tmp = cache_dir().join(format!(".tmp-standalone-{}", Markers::fresh_nonce()));
            let written = self.write_initramfs(&kernel, script, "standalone", &tmp);
            let renamed = written
                .and_then(|()| fs::rename(&tmp, &path).map_err(|e| TestbedError::io(&path, e)));
            if renamed.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            renamed?;
        }
        Ok(path)
    }

    fn resolve_kernel(&self) -> Result<Kernel, TestbedError> {
        let kernel = match &self.kernel {
            Some(k) => k.clone(),
            None => Kernel::debian()?,
        };
        if !kernel.image.is_file() {
            return Err(TestbedError::MissingKernel(format!(
                "{}: no such file",
                kernel.image.display()
            )));
        }
        Ok(kernel)
    }

    /// The cached base archive followed by the per-run one, in `dest`.
    fn write_initramfs(
        &self,
        kernel: &Kernel,
        script: &str,
        nonce: &str,
        dest: &Path,
    ) -> Result<(), TestbedError> {
        let base = self.base_initramfs(kernel)?;
        fs::copy(&base, dest).map_err(|e| TestbedError::io(dest, e))?;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(dest)
            .map_err(|e| TestbedError::io(dest, e))?;
        self.overlay(script, nonce)?.write_to(&mut file)?;
        file.flush().map_err(|e| TestbedError::io(dest, e))
    }

    /// The part of the initramfs shared by every run of this configuration.
    fn base_initramfs(&self, kernel: &Kernel) -> Result<PathBuf, TestbedError> {
        let mut fs = Initramfs::new();
        for dir in [
            "/proc",
            "/sys",
            "/tmp",
            "/run",
            "/root",
            "/mnt",
            "/etc/testbed",
        ] {
            fs.dir(dir, 0o755)?;
        }
        let busybox = Path::new("/bin/busybox");
        if !busybox.exists() {
            return Err(TestbedError::MissingTool(
                "/bin/busybox (package busybox-static)".into(),
            ));
        }
        fs.busybox(busybox)?;
        if !self.modules.is_empty() {
            let index = ModuleIndex::load(&kernel.modules)?;
            let order = fs.modules(&index, &self.modules)?;
            fs.bytes(init_script::MODULES_LIST, 0o644, order.join("\n") + "\n")?;
        }
        for (host, guest) in &self.binaries {
            fs.binary_at(host, guest)?;
        }
        for (host, guest) in &self.base_files {
            fs.host_file(host, guest)?;
        }
        fs.bytes("/init", 0o755, init_script::INIT)?;
        Ok(fs.build_cached(&cache_dir(), Compression::None)?)
    }

    /// The per-run archive appended after the cached one.
    fn overlay(&self, script: &str, nonce: &str) -> Result<Initramfs, TestbedError> {
        let mut fs = Initramfs::default();
        fs.bytes(init_script::NONCE, 0o644, nonce)?;
        for (host, guest) in &self.files {
            fs.host_file(host, guest)?;
        }
        fs.bytes(init_script::SCRIPT, 0o755, script)?;
        if let Some(net) = &self.user_net {
            let (base, prefix) = parse_cidr(&net.net)?;
            let guest = Ipv4Addr::from(u32::from(base) + USER_NET_GUEST_HOST);
            let gateway = Ipv4Addr::from(u32::from(base) + USER_NET_GATEWAY_HOST);
            fs.bytes(init_script::USER_NET_MAC, 0o644, USER_NET_MAC)?;
            fs.bytes(
                init_script::USER_NET_ADDR,
                0o644,
                format!("{guest}/{prefix} {gateway}\n"),
            )?;
        }
        Ok(fs)
    }

    /// The QEMU command line. `no_timer_check` keeps a guest booting on a
    /// loaded host: under TCG the kernel's IO-APIC timer check can miss its
    /// ticks and panic ("IO-APIC + timer doesn't work!").
    fn command(&self, kernel: &Kernel, initrd: &Path) -> Result<Command, TestbedError> {
        let mut cmd = Command::new(&self.qemu);
        let mem = format!("{}M", self.memory_mib);
        cmd.args([
            "-nodefaults",
            "-no-user-config",
            "-M",
            "q35",
            "-accel",
            "tcg",
        ])
        .args([
            "-cpu",
            &self.cpu_model,
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &mem,
        ])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        ])
        .args(["-numa", "node,memdev=mem"])
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            &format!(
                "console=ttyS0 panic=-1 quiet no_timer_check {}",
                self.cmdline
            ),
        ])
        .args([
            "-display",
            "none",
            "-vga",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
        ]);
        for (i, dev) in self.devices.iter().enumerate() {
            match dev {
                VhostUser::Blk { socket, queues } => {
                    cmd.args([
                        "-chardev",
                        &format!("socket,id=vu{i},path={}", socket_arg(socket)?),
                    ]);
                    cmd.args([
                        "-device",
                        &format!("vhost-user-blk-pci,chardev=vu{i},num-queues={queues}"),
                    ]);
                }
                VhostUser::Fs { socket, tag } => {
                    cmd.args([
                        "-chardev",
                        &format!("socket,id=vu{i},path={}", socket_arg(socket)?),
                    ]);
                    cmd.args([
                        "-device",
                        &format!("vhost-user-fs-pci,chardev=vu{i},tag={tag}"),
                    ]);
                }
                VhostUser::Net {
                    socket,
                    mac,
                    queue_pairs,
                } => {
                    cmd.args([
                        "-chardev",
                        &format!("socket,id=vu{i},path={}", socket_arg(socket)?),
                    ]);
                    cmd.args([
                        "-netdev",
                        &format!("vhost-user,id=vn{i},chardev=vu{i},queues={queue_pairs}"),
                    ]);
                    let mq = nic_queue_options(*queue_pairs, self.net_msix);
                    cmd.args([
                        "-device",
                        &format!("virtio-net-pci,netdev=vn{i},mac={mac}{mq}"),
                    ]);
                }
                VhostUser::Tap {
                    ifname,
                    mac,
                    queue_pairs,
                } => {
                    cmd.args([
                        "-netdev",
                        &format!(
                            "tap,id=tn{i},ifname={ifname},script=no,downscript=no,vhost=off,queues={queue_pairs}"
                        ),
                    ]);
                    let mq = nic_queue_options(*queue_pairs, self.net_msix);
                    cmd.args([
                        "-device",
                        &format!("virtio-net-pci,netdev=tn{i},mac={mac}{mq}"),
                    ]);
                }
            }
        }
        if let Some(net) = &self.user_net {
            let (base, _) = parse_cidr(&net.net)?;
            let guest = Ipv4Addr::from(u32::from(base) + USER_NET_GUEST_HOST);
            let mut netdev = format!("user,id=un,net={},restrict=on", net.net);
            for (host, port) in &net.forwards {
                netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-{guest}:{port}"));
            }
            cmd.args(["-netdev", &netdev]);
            cmd.args([
                "-device",
                &format!("virtio-net-pci,netdev=un,mac={USER_NET_MAC}"),
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(cmd)
    }
}

/// `virtio-net-pci` options for `queue_pairs` pairs: multi-queue with one
/// MSI-X vector per queue plus config and control, or INTx (`vectors=0`)
/// when MSI-X is off.
fn nic_queue_options(queue_pairs: u32, msix: bool) -> String {
    let mut opts = String::new();
    if queue_pairs > 1 {
        opts.push_str(",mq=on");
    }
    if !msix {
        opts.push_str(",vectors=0");
    } else if queue_pairs > 1 {
        opts.push_str(&format!(",vectors={}", 2 * queue_pairs + 2));
    }
    opts
}

/// Socket paths go into a comma-separated QEMU option string.
fn socket_arg(path: &Path) -> Result<String, TestbedError> {
    let s = path.to_string_lossy();
    if s.contains(',') {
        return Err(TestbedError::BadConfig(format!(
            "socket path {s:?} contains a comma"
        )));
    }
    Ok(s.into_owned())
}

/// `169.254.100.0/24` -> (169.254.100.0, 24).
fn parse_cidr(net: &str) -> Result<(Ipv4Addr, u8), TestbedError> {
    let bad = || {
        TestbedError::BadConfig(format!(
            "user_net: {net:?} is not an IPv4 CIDR like 169.254.100.0/24"
        ))
    };
    let (addr, prefix) = net.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(8..=29).contains(&prefix) {
        return Err(bad());
    }
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("169.254.100.0/24").unwrap(),
            (Ipv4Addr::new(169, 254, 100, 0), 24)
        );
        assert!(parse_cidr("169.254.100.0").is_err());
        assert!(parse_cidr("nonsense/24").is_err());
        assert!(parse_cidr("169.254.0.0/31").is_err());
    }

    #[test]
    fn command_line_has_shared_memory_and_devices() {
        let kernel = Kernel {
            image: "/boot/vmlinuz-x".into(),
            version: "x".into(),
            modules: "/lib/modules/x".into(),
        };
        let g = QemuGuest::new()
            .cpus(2)
            .vhost_user_blk("/s/blk.sock", 4)
            .vhost_user_fs("/s/fs.sock", "t")
            .vhost_user_net("/s/net.sock", "52:54:00:00:00:01", 2)
            .user_net("169.254.100.0/24", &[(8080, 1)]);
        let cmd = g.command(&kernel, Path::new("/i")).unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let all = args.join(" ");
        assert!(
            all.contains("memory-backend-memfd,id=mem,size=512M,share=on"),
            "{all}"
        );
        assert!(
            all.contains("vhost-user-blk-pci,chardev=vu0,num-queues=4"),
            "{all}"
        );
        assert!(all.contains("vhost-user-fs-pci,chardev=vu1,tag=t"), "{all}");
        assert!(
            all.contains("vhost-user,id=vn2,chardev=vu2,queues=2"),
            "{all}"
        );
        assert!(all.contains("mq=on,vectors=6"), "{all}");
        assert!(
            all.contains("restrict=on,hostfwd=tcp:127.0.0.1:8080-169.254.100.15:1"),
            "{all}"
        );
        assert!(
            args.contains(&"-nodefaults".to_string()),
            "no default NIC may reach outside"
        );
        assert!(socket_arg(Path::new("/a,b")).is_err());
    }

    #[test]
    fn net_without_msix_and_plain_tap() {
        let kernel = Kernel {
            image: "/boot/vmlinuz-x".into(),
            version: "x".into(),
            modules: "/lib/modules/x".into(),
        };
        let g = QemuGuest::new()
            .vhost_user_net("/s/net.sock", "52:54:00:00:00:01", 2)
            .tap_net("tap9", "52:54:00:00:00:02", 2);
        let cmd = g.command(&kernel, Path::new("/i")).unwrap();
        let all: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let all = all.join(" ");
        assert!(
            all.contains("virtio-net-pci,netdev=vn0,mac=52:54:00:00:00:01,mq=on,vectors=6"),
            "{all}"
        );
        assert!(
            all.contains("tap,id=tn1,ifname=tap9,script=no,downscript=no,vhost=off,queues=2"),
            "{all}"
        );
        assert!(
            all.contains("virtio-net-pci,netdev=tn1,mac=52:54:00:00:00:02,mq=on,vectors=6"),
            "{all}"
        );
        let all = g.net_msix(false).command(&kernel, Path::new("/i")).unwrap();
        let all: Vec<String> = all
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let all = all.join(" ");
        assert!(
            all.contains("mac=52:54:00:00:00:01,mq=on,vectors=0"),
            "{all}"
        );
        assert!(
            all.contains("mac=52:54:00:00:00:02,mq=on,vectors=0"),
            "{all}"
        );
    }
}
