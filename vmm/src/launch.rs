//! `kcradle boot`: from a validated [`VmConfig`] to a running VM, and from
//! the way it ended to kcradle's exit status.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::boot::{BootError, LinuxBoot};
use crate::config::{ConfigError, SerialConfig, VmConfig};
use crate::control::{
    ControlDevice, CONTROL_MMIO_BASE, CONTROL_MMIO_LEN, CONTROL_PORT, CONTROL_PORT_LEN,
};
use crate::devices::bus::BusError;
use crate::devices::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
use crate::devices::serial::{SerialConsole, SerialError, COM1_PORT, COM1_PORT_LEN};
use crate::exit::{ExitReason, ExitSignal};
use crate::vcpu::Buses;
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
    SerialOutput(#[source] io::Error),
    /// The console could not be wired.
    #[error(transparent)]
    Serial(#[from] SerialError),
    /// A platform device could not be placed on the port bus.
    #[error("platform device layout: {0}")]
    Bus(#[from] BusError),
}

impl LaunchError {
    /// 2 for what the user can fix (flags, files, sizes), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            LaunchError::Config(_) | LaunchError::SerialOutput(_) => 2,
            LaunchError::Vm(VmError::Boot(e)) => match e {
                BootError::BootParams(_) | BootError::Arch(_) | BootError::GuestMemory { .. } => 1,
                _ => 2,
            },
            LaunchError::Vm(VmError::BadCpuCount { .. }) => 2,
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

/// The platform devices on their buses: COM1 (`console`), the i8042 and
/// the control register (by port and by MMIO), the latter two raising
/// `exit`; milestones are timed from `started`.
pub fn platform_buses<W: Write + Send + 'static>(
    console: SerialConsole<W>,
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

/// Checks `config`, builds the VM, runs it to its end and says why it
/// ended. `started` is when kcradle started: milestones are timed from it.
pub fn boot(config: &VmConfig, started: Instant) -> Result<ExitReason, LaunchError> {
    let (host_cpus, host_memory) = host_resources();
    config.validate(host_cpus, host_memory)?;
    if !(config.disks.is_empty() && config.fs.is_empty() && config.nets.is_empty()) {
        return Err(ConfigError(
            "--disk, --fs and --net need the virtio-pci transport, which this kcradle does not have yet"
                .into(),
        )
        .into());
    }
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
    tracing::info!(
        entry = format_args!("{:#x}", loaded.entry),
        initrd = ?loaded.initrd,
        cpus = config.cpus,
        memory_mib = config.memory.0 >> 20,
        "kernel loaded"
    );

    let exit = Arc::new(ExitSignal::new());
    let console = SerialConsole::new(out)?;
    console.attach_irqfd(vm.fd())?;
    let buses = platform_buses(console, &exit, started)?;
    let reason = vm.run(buses, exit)?;
    tracing::info!(
        ?reason,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "VM ended"
    );
    Ok(reason)
}
