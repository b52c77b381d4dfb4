//! A single-vCPU VM for hand-written payloads: the KVM probe runs on it, and
//! so do the tests of the vCPU setup, port I/O and MMIO exits.
//!
//! Without an irqchip `hlt` exits to us and ends the run. With one (for
//! interrupt tests) `hlt` stays in the kernel, so a run ends when a stop
//! condition on an access holds, or at a timeout. Every port and MMIO access
//! is recorded with the time the exit reached the VMM; port accesses go to a
//! [`Bus`], MMIO reads are answered with all-ones.

use std::time::{Duration, Instant};

use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vm_memory::mmap::FromRangesError;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::arch::x86_64::layout::BOOT_STACK_POINTER;
use crate::arch::x86_64::{
    setup_fpu, setup_long_mode, setup_pvh_mode, setup_real_mode, setup_real_mode_regs, setup_regs,
    ArchError, BootRegs,
};
use crate::devices::bus::Bus;
use crate::kick::Watchdog;
use crate::memory::{register_guest_memory, MemoryError};
use crate::payload::CodeMode;

/// Guest-physical address where payloads are loaded (segment 0x1000 in
/// real mode): clear of the GDT, zero page, stack and page tables.
pub const PAYLOAD_START: u64 = 0x1_0000;

/// The boot page tables map all 4 GiB so payloads can reach the PCI hole.
const IDENTITY_MAP_GIB: u64 = 4;

/// How long [`MiniVm::run`] lets a payload run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the mini VM could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` is missing or not accessible.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// KVM_CREATE_VM failed.
    #[error("KVM_CREATE_VM failed: {0}")]
    CreateVm(kvm_ioctls::Error),
    /// The guest RAM could not be mapped.
    #[error("cannot allocate guest memory: {0}")]
    GuestMemory(FromRangesError),
    /// KVM refused the guest memory.
    #[error(transparent)]
    SetMemory(#[from] MemoryError),
    /// KVM_CREATE_VCPU failed.
    #[error("KVM_CREATE_VCPU failed: {0}")]
    CreateVcpu(kvm_ioctls::Error),
    /// Setting up the vCPU's registers or boot tables failed.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// The payload does not fit in guest RAM.
    #[error("cannot load the payload: {0}")]
    LoadPayload(GuestMemoryError),
    /// KVM_RUN failed.
    #[error("KVM_RUN failed: {0}")]
    Run(kvm_ioctls::Error),
    /// The vCPU exited for a reason a payload should never cause.
    #[error("unexpected vCPU exit: {0}")]
    UnexpectedExit(String),
    /// The payload did not halt within the exit budget.
    #[error("payload did not halt after {0} exits")]
    TooManyExits(usize),
    /// KVM_CREATE_IRQCHIP failed.
    #[error("KVM_CREATE_IRQCHIP failed: {0}")]
    CreateIrqchip(kvm_ioctls::Error),
    /// The watchdog thread or its signal handler could not be set up.
    #[error("cannot arm the vCPU watchdog: {0}")]
    Watchdog(vmm_sys_util::errno::Error),
    /// The payload neither halted nor met the stop condition in time.
    #[error("payload still running after {0:?}")]
    Timeout(Duration),
}

/// One access the payload made to something that is not RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// `out` to `port` with these bytes.
    PortWrite {
        /// I/O port.
        port: u16,
        /// Bytes written, little endian, 1 to 4 of them.
        data: Vec<u8>,
    },
    /// `in` from `port` of `len` bytes (answered with 0xff).
    PortRead {
        /// I/O port.
        port: u16,
        /// Access width in bytes.
        len: usize,
    },
    /// A store to unbacked guest-physical `addr`.
    MmioWrite {
        /// Guest-physical address.
        addr: u64,
        /// Bytes stored, little endian.
        data: Vec<u8>,
    },
    /// A load from unbacked guest-physical `addr` (answered with 0xff).
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Access width in bytes.
        len: usize,
    },
}

/// An [`Access`] and when its exit reached the VMM.
#[derive(Debug, Clone)]
pub struct Event {
    /// Time the exit was returned by KVM_RUN.
    pub at: Instant,
    /// What the guest did.
    pub access: Access,
}

/// Everything a payload did until it halted.
#[derive(Debug, Clone, Default)]
pub struct RunLog {
    /// Accesses in the order the guest made them.
    pub events: Vec<Event>,
}

impl RunLog {
    /// The concatenated bytes written to `port`.
    pub fn port_bytes(&self, port: u16) -> Vec<u8> {
        self.port_writes(port)
            .flat_map(|(_, d)| d.iter().copied())
            .collect()
    }

    /// The writes to `port`, each with its timestamp.
    pub fn port_writes(&self, port: u16) -> impl Iterator<Item = (Instant, &[u8])> {
        self.events.iter().filter_map(move |e| match &e.access {
            Access::PortWrite { port: p, data } if *p == port => Some((e.at, data.as_slice())),
            _ => None,
        })
    }

    /// The MMIO writes, as (address, bytes).
    pub fn mmio_writes(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.events.iter().filter_map(|e| match &e.access {
            Access::MmioWrite { addr, data } => Some((*addr, data.as_slice())),
            _ => None,
        })
    }
}

/// A VM with `mem_size` bytes of RAM at address 0 and one vCPU.
#[derive(Debug)]
pub struct MiniVm {
    vm: VmFd,
    vcpu: VcpuFd,
    mem: GuestMemoryMmap,
}

impl MiniVm {
    /// Creates the VM and its vCPU, loads `code` at [`PAYLOAD_START`] and
    /// points the vCPU at it in `mode`.
    pub fn new(mem_size: usize, mode: CodeMode, code: &[u8]) -> Result<Self, VmError> {
        Self::build(mem_size, mode, code, false)
    }

    /// Like [`MiniVm::new`], with KVM's in-kernel PIC, IOAPIC and LAPIC
    /// (default GSI routing: GSI 0-15 on the PIC and IOAPIC).
    pub fn with_irqchip(mem_size: usize, mode: CodeMode, code: &[u8]) -> Result<Self, VmError> {
        Self::build(mem_size, mode, code, true)
    }

    fn build(mem_size: usize, mode: CodeMode, code: &[u8], irqchip: bool) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let vm = kvm.create_vm().map_err(VmError::CreateVm)?;
        if irqchip {
            vm.create_irq_chip().map_err(VmError::CreateIrqchip)?;
        }
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), mem_size)])
            .map_err(VmError::GuestMemory)?;
        // `mem` lives in the returned struct as long as the VM does.
        register_guest_memory(&vm, &mem)?;
        let vcpu = vm.create_vcpu(0).map_err(VmError::CreateVcpu)?;
        mem.write_slice(code, GuestAddress(PAYLOAD_START))
            .map_err(VmError::LoadPayload)?;
        match mode {
            CodeMode::Long => {
                setup_long_mode(&mem, &vcpu, IDENTITY_MAP_GIB)?;
                setup_regs(
                    &vcpu,
                    &BootRegs {
                        rip: PAYLOAD_START,
                        rsp: BOOT_STACK_POINTER,
                        rsi: 0,
                        rbx: 0,
                    },
                )?;
                setup_fpu(&vcpu)?;
            }
            CodeMode::Protected => {
                setup_pvh_mode(&mem, &vcpu)?;
                setup_regs(
                    &vcpu,
                    &BootRegs {
                        rip: PAYLOAD_START,
                        rsp: BOOT_STACK_POINTER,
                        rsi: 0,
                        rbx: 0,
                    },
                )?;
            }
            CodeMode::Real => {
                setup_real_mode(&vcpu, (PAYLOAD_START >> 4) as u16)?;
                setup_real_mode_regs(&vcpu, 0)?;
            }
        }
        Ok(MiniVm { vm, vcpu, mem })
    }

    /// The guest RAM, for tests that check what the payload stored.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The VM file descriptor.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm
    }

    /// Runs until `hlt`, recording every port and MMIO access; gives up
    /// after `max_exits` exits or [`DEFAULT_TIMEOUT`].
    pub fn run(&mut self, max_exits: usize) -> Result<RunLog, VmError> {
        self.run_on_bus(&mut Bus::new(), max_exits, DEFAULT_TIMEOUT, |_| false)
    }

    /// Runs until `hlt` or until `stop` holds for an access, sending port
    /// accesses to `bus`; gives up after `max_exits` exits or `timeout`.
    pub fn run_on_bus(
        &mut self,
        bus: &mut Bus,
        max_exits: usize,
        timeout: Duration,
        mut stop: impl FnMut(&Access) -> bool,
    ) -> Result<RunLog, VmError> {
        let watchdog = Watchdog::arm(timeout).map_err(VmError::Watchdog)?;
        let mut log = RunLog::default();
        for _ in 0..max_exits {
            let exit = match self.vcpu.run() {
                Ok(exit) => exit,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if watchdog.fired() {
                        return Err(VmError::Timeout(timeout));
                    }
                    continue;
                }
                Err(e) => return Err(VmError::Run(e)),
            };
            let at = Instant::now();
            let access = match exit {
                VcpuExit::Hlt => return Ok(log),
                VcpuExit::IoOut(port, data) => {
                    bus.write(u64::from(port), data);
                    Access::PortWrite {
                        port,
                        data: data.to_vec(),
                    }
                }
                VcpuExit::IoIn(port, data) => {
                    bus.read(u64::from(port), data);
                    Access::PortRead {
                        port,
                        len: data.len(),
                    }
                }
                VcpuExit::MmioWrite(addr, data) => Access::MmioWrite {
                    addr,
                    data: data.to_vec(),
                },
                VcpuExit::MmioRead(addr, data) => {
                    data.fill(0xff);
                    Access::MmioRead {
                        addr,
                        len: data.len(),
                    }
                }
                other => return Err(VmError::UnexpectedExit(format!("{other:?}"))),
            };
            let done = stop(&access);
            log.events.push(Event { at, access });
            if done {
                return Ok(log);
            }
        }
        Err(VmError::TooManyExits(max_exits))
    }
}
