//! `kcradle boot`: from a validated [`VmConfig`] to a running VM, and from
//! the way it ended to kcradle's exit status.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::arch::x86_64::acpi::ACPI_SLEEP_CONTROL_PORT;
use crate::boot::{BootError, LinuxBoot};
use crate::config::{ConfigError, SerialConfig, VmConfig};
use crate::control::{
    ControlDevice, CONTROL_MMIO_BASE, CONTROL_MMIO_LEN, CONTROL_PORT, CONTROL_PORT_LEN,
};
use crate::devices::acpi_pm::AcpiPm;
use crate::devices::bus::BusError;
use crate::devices::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
use crate::devices::serial::{SerialConsole, SerialError, COM1_PORT, COM1_PORT_LEN};
use crate::exit::{ExitReason, ExitSignal};
use crate::irq::GsiRouter;
use crate::jail::{self, JailError};
use crate::pci::{
    PciConfigIo, PciRoot, PCI_CONFIG_IO_LEN, PCI_CONFIG_IO_PORT, PCI_MMIO_END, PCI_MMIO_START,
};
use crate::seccomp::{self, Filters, SeccompError, ThreadFilter};
use crate::signals;
use crate::vcpu::Buses;
use crate::virtio::pci::{TransportError, VirtioPciDevice, BAR0_SIZE};
use crate::virtio::vhost_user::{DeviceSpec, VhostUserDevice, VhostUserError};
use crate::virtio::VirtioBackend;
use crate::vm::{Vm, VmError, VmSpec};

/// Why `kcradle boot` could not run the VM.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A flag or config value is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The VM could not be built or run.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The console output file could not be opened.
    #[error("cannot open the serial output file: {0}")]
    SerialOutput(io::Error),
    /// The console could not be wired.
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// A vhost-user daemon could not be reached or set up.
    #[error(transparent)]
    VhostUser(#[from] VhostUserError),
    /// A virtio device could not be wired into KVM.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The stop-signal thread could not be set up.
    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),
    /// The seccomp filters could not be built.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A platform device could not be placed on the port bus.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The jail could not be entered.
    #[error(transparent)]
    Jail(#[from] JailError),
}

impl LaunchError {
    /// 2 for what the user can fix (flags, files, sizes), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Config(_) | LaunchError::SerialOutput(_) | LaunchError::Jail(_) => 2,
            LaunchError::Vm(VmError::Boot(e)) => match e {
                BootError::BootParams(_)
                | BootError::StartInfo(_)
                | BootError::Arch(_)
                | BootError::GuestMemory { .. } => 1,
                _ => 2,
            },
            LaunchError::Vm(VmError::BadCpuCount { .. }) => 2,
            LaunchError::VhostUser(
                VhostUserError::Connect { .. } | VhostUserError::Unsupported { .. },
            ) => 2,
            _ => 1,
        }
    }
}

/// CPUs and bytes of RAM this host has.
pub fn host_resources() -> (usize, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: `sysinfo` is plain integers, for which all-zero is valid.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: sysinfo only writes the struct we pass it.
    let memory = if unsafe { libc::sysinfo(&mut info) } == 0 {
        #[allow(clippy::useless_conversion)] // c_ulong is u32 on some targets
        u64::from(info.totalram).saturating_mul(u64::from(info.mem_unit))
    } else {
        u64::MAX
    };
    (cpus, memory)
}

fn serial_output(config: &SerialConfig) -> Result<Box<dyn Write + Send>, LaunchError> {
    Ok(match config {
        SerialConfig::Stdio => Box::new(io::stdout()),
        SerialConfig::None => Box::new(io::sink()),
        SerialConfig::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(LaunchError::SerialOutput)?,
        ),
    })
}

/// The platform devices on their buses: COM1 (`console`), the i8042, PCI
/// configuration access to `pci`, the ACPI sleep control register and the
/// control register (by port and by MMIO); the i8042, ACPI and control
/// devices end the VM through `exit`; milestones are timed from `started`.
pub fn platform_buses<W: Write + Send + 'static>(
    console: Arc<Mutex<SerialConsole<W>>>,
    pci: Arc<Mutex<PciRoot>>,
    exit: &Arc<ExitSignal>,
    started: Instant,
) -> Result<Buses, BusError> {
    let buses = Buses::default();
    let control = Arc::new(Mutex::new(ControlDevice::new(started, exit.clone())));
    {
        let mut pio = buses.pio.lock().unwrap_or_else(PoisonError::into_inner);
        pio.insert(
            u64::from(COM1_PORT),
            u64::from(COM1_PORT_LEN),
            Box::new(console),
        )?;
        pio.insert(
            u64::from(I8042_PORT),
            u64::from(I8042_PORT_LEN),
            Box::new(I8042::new(exit.clone())),
        )?;
        pio.insert(
            u64::from(PCI_CONFIG_IO_PORT),
            u64::from(PCI_CONFIG_IO_LEN),
            Box::new(PciConfigIo::new(pci)),
        )?;
        pio.insert(
            u64::from(ACPI_SLEEP_CONTROL_PORT),
            1,
            Box::new(AcpiPm::new(exit.clone())),
        )?;
        pio.insert(
            u64::from(CONTROL_PORT),
            u64::from(CONTROL_PORT_LEN),
            Box::new(control.clone()),
        )?;
    }
    buses
        .mmio
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(CONTROL_MMIO_BASE, CONTROL_MMIO_LEN, Box::new(control))?;
    Ok(buses)
}

/// Queue size of virtio-fs queues.
pub const FS_QUEUE_SIZE: u16 = 256;
/// Queue size of virtio-net queues.
pub const NET_QUEUE_SIZE: u16 = 256;

/// How long kcradle waits for a daemon's socket to accept.
pub const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Puts a virtio device on the PCI bus with its BAR 0 at the `index`-th
/// slot of the 32-bit window, and its BAR on the MMIO bus.
pub fn add_virtio_device(
    vm: &Vm,
    pci: &Arc<Mutex<PciRoot>>,
    buses: &Buses,
    router: &Arc<Mutex<GsiRouter>>,
    index: usize,
    backend: Box<dyn VirtioBackend>,
    watch_filter: &ThreadFilter,
) -> Result<(), LaunchError> {
    let bar = PCI_MMIO_START + (index as u64) * u64::from(BAR0_SIZE);
    if bar + u64::from(BAR0_SIZE) > PCI_MMIO_END {
        return Err(ConfigError("too many virtio devices for the PCI window".into()).into());
    }
    let device = Arc::new(Mutex::new(VirtioPciDevice::new(
        backend,
        bar,
        vm.shared_fd(),
        router.clone(),
    )?));
    watch_backend(&device, watch_filter.clone());
    let slot = pci
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .add(Box::new(device.clone()))
        .map_err(|e| ConfigError(e.to_string()))?;
    buses
        .mmio
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(bar, u64::from(BAR0_SIZE), Box::new(device))?;
    tracing::info!(slot, bar = format_args!("{bar:#x}"), "virtio device on PCI");
    Ok(())
}

/// Watches a device's daemon connection: when the daemon hangs up, the
/// device is marked NEEDS_RESET and the VM keeps running.
pub fn watch_backend(device: &Arc<Mutex<VirtioPciDevice>>, filter: ThreadFilter) {
    let Some(fd) = device
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .hangup_fd()
    else {
        return;
    };
    let device = device.clone();
    let spawned = std::thread::Builder::new()
        .name("backend-watch".into())
        .spawn(move || {
            if seccomp::install(&filter).is_err() {
                return;
            }
            watch_hangup(fd, &device)
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch a vhost-user connection");
    }
}

/// Blocks until `fd` hangs up, then marks `device` NEEDS_RESET.
fn watch_hangup(fd: std::os::fd::RawFd, device: &Mutex<VirtioPciDevice>) {
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the socket stays open as long as
        // the device, which this thread keeps alive.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            let mut dev = device.lock().unwrap_or_else(PoisonError::into_inner);
            tracing::error!(?dev, "vhost-user daemon disconnected; device needs reset");
            dev.mark_needs_reset();
            return;
        }
    }
}

/// Feeds kcradle's stdin to the guest console until EOF, waiting while the
/// UART's receive FIFO is full.
pub fn forward_stdin<W: Write + Send + 'static>(
    console: Arc<Mutex<SerialConsole<W>>>,
    filter: ThreadFilter,
) {
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            if seccomp::install(&filter).is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            loop {
                let n = match io::Read::read(&mut io::stdin(), &mut buf) {
                    Ok(0) => return,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return,
                };
                let mut done = 0;
                while done < n {
                    let taken = console
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .enqueue_input(&buf[done..n]);
                    done += taken;
                    if taken == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot forward stdin to the console");
    }
}

/// kcradle's resident memory without the guest's: anonymous and file
/// pages, leaving out the shared memfd pages of guest RAM (`RssShmem`).
pub fn vmm_rss_kib(status_file: &mut std::fs::File) -> Option<u64> {
    use std::io::{Read, Seek};
    status_file.seek(io::SeekFrom::Start(0)).ok()?;
    let mut status = String::new();
    status_file.read_to_string(&mut status).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(field("RssAnon:")? + field("RssFile:")?)
}

/// Connects to every daemon of `config`, in PCI slot order: disks, shares,
/// network interfaces.
fn connect_backends(
    config: &VmConfig,
    vm: &Vm,
) -> Result<Vec<Box<dyn VirtioBackend>>, LaunchError> {
    let connect = |socket: &std::path::Path, spec: DeviceSpec| {
        VhostUserDevice::connect(socket, spec, vm.memory().clone(), BACKEND_CONNECT_TIMEOUT)
            .map(|d| Box::new(d) as Box<dyn VirtioBackend>)
            .map_err(|err| match signals::stop_requested() {
                // A stop signal interrupted a blocking handshake call.
                Some(signal) => VhostUserError::Stopped {
                    path: socket.to_path_buf(),
                    signal,
                },
                None => err,
            })
    };
    let mut backends = Vec::new();
    for disk in &config.disks {
        let spec = DeviceSpec::blk(disk.num_queues, disk.queue_size);
        backends.push(connect(&disk.socket, spec)?);
    }
    for fs in &config.fs {
        let spec = DeviceSpec::fs(&fs.tag, fs.num_queues, FS_QUEUE_SIZE);
        backends.push(connect(&fs.socket, spec)?);
    }
    for net in &config.nets {
        let spec = DeviceSpec::net(net.mac.0, net.num_queue_pairs, NET_QUEUE_SIZE);
        backends.push(connect(&net.socket, spec)?);
    }
    Ok(backends)
}

/// Checks `config`, builds the VM, runs it to its end and says why it
/// ended. `started` is when kcradle started: milestones are timed from it.
pub fn boot(config: &VmConfig, started: Instant) -> Result<ExitReason, LaunchError> {
    // Before anything that can take long: from here on a stop signal ends
    // kcradle through its own exit path, not by the default action.
    signals::catch_stop_signals().map_err(LaunchError::Signals)?;
    let (host_cpus, host_memory) = host_resources();
    config.validate(host_cpus, host_memory)?;
    let out = serial_output(&config.serial)?;
    let vm = Vm::new(&VmSpec {
        cpus: config.cpus,
        memory: config.memory.0,
        hugepages: config.hugepages,
    })?;
    let loaded = vm.load_linux(&LinuxBoot {
        kernel: config.kernel.clone(),
        initrd: config.initrd.clone(),
        cmdline: config.cmdline.clone(),
    })?;

    // Every daemon is connected before anything else starts: with --jail
    // their sockets are out of reach afterwards, and the jail is entered
    // while kcradle is still single-threaded.
    let backends = match connect_backends(config, &vm) {
        Err(LaunchError::VhostUser(VhostUserError::Stopped { path, signal })) => {
            tracing::info!(
                signal,
                socket = %path.display(),
                "stop signal while connecting to the daemons; the guest never started"
            );
            return Ok(ExitReason::Signal(signal));
        }
        other => other?,
    };

    let exit = Arc::new(ExitSignal::new());
    let filters = Filters::new(config.seccomp)?;
    // Opened now: the VMM threads' filter has no open(), and the jail has
    // no /proc.
    let mut status_file = std::fs::File::open("/proc/self/status").ok();
    if let Some(dir) = &config.jail {
        jail::enter(dir)?;
    }
    signals::forward_stop_signals(exit.clone(), filters.vmm.clone())
        .map_err(LaunchError::Signals)?;
    let console = SerialConsole::new(out)?;
    console.attach_irqfd(vm.fd())?;
    let console = Arc::new(Mutex::new(console));
    if config.serial == SerialConfig::Stdio {
        forward_stdin(console.clone(), filters.vmm.clone());
    }
    let pci = Arc::new(Mutex::new(PciRoot::new()));
    let buses = platform_buses(console, pci.clone(), &exit, started)?;
    let router = Arc::new(Mutex::new(GsiRouter::new()));
    for (index, backend) in backends.into_iter().enumerate() {
        add_virtio_device(&vm, &pci, &buses, &router, index, backend, &filters.vmm)?;
    }
    tracing::info!(
        entry = format_args!("{:#x}", loaded.entry),
        protocol = ?loaded.protocol,
        initrd = ?loaded.initrd,
        cpus = config.cpus,
        memory_mib = config.memory.0 >> 20,
        "kernel loaded"
    );
    // The setup's buffers (kernel file reads, config, handshakes) are
    // free by now: hand their pages back before the VM runs for hours
    // (glibc keeps up to 128 KiB of free heap otherwise).
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
    let reason = vm.run(buses, exit, &filters)?;
    tracing::info!(
        ?reason,
        ms = started.elapsed().as_secs_f64() * 1e3,
        vmm_rss_kib = status_file.as_mut().and_then(vmm_rss_kib).unwrap_or(0),
        "VM ended"
    );
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_without_guest_memory_is_read() {
        let mut f = std::fs::File::open("/proc/self/status").unwrap();
        let kib = vmm_rss_kib(&mut f).unwrap();
        assert!(kib > 0);
        assert!(
            vmm_rss_kib(&mut f).is_some(),
            "the same file re-reads after a seek"
        );
    }
}
