//! A VM ready to boot: a KVM VM with the in-kernel irqchip and PIT, RAM in
//! a memfd, and vCPUs with CPUID, MSRs, LAPIC and FPU set up; then the
//! threads that run it until it ends.

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::{kvm_pit_config, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::arch::x86_64::acpi::{write_acpi_tables, AcpiError};
use crate::arch::x86_64::cpuid::{setup_cpuid, supported_cpuid};
use crate::arch::x86_64::lapic::setup_lapic;
use crate::arch::x86_64::layout::BOOT_STACK_POINTER;
use crate::arch::x86_64::msr::setup_msrs;
use crate::arch::x86_64::{setup_fpu, setup_long_mode, setup_regs, ArchError, BootRegs};
use crate::boot::{load_linux, setup_boot_vcpu, BootError, LinuxBoot, LoadedLinux};
use crate::exit::{ExitReason, ExitSignal};
use crate::kick::{install_kick_handler, kick_signal};
use crate::memory::{create_guest_memory, register_guest_memory, MemoryError};
use crate::seccomp::{self, Filters};
use crate::vcpu::{run_vcpu, Buses};

/// Three pages KVM needs for its real-mode TSS on Intel, at the top of the
/// 32-bit device hole where no BAR goes.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// The page KVM uses for its identity-mapped page table on Intel.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
/// How often stopped vCPU threads are kicked until they leave `KVM_RUN`.
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// What to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSpec {
    /// Number of vCPUs.
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Back RAM with 2 MiB hugetlb pages.
    pub hugepages: bool,
}

/// Why the VM could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// `/dev/kvm` is missing or not accessible.
    #[error("cannot open /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// More (or fewer) vCPUs than KVM allows.
    #[error("{asked} vCPUs asked; this host's KVM allows 1 to {max}")]
    BadCpuCount {
        /// Requested.
        asked: u8,
        /// KVM's recommended maximum.
        max: usize,
    },
    /// A KVM VM-level ioctl failed.
    #[error("{what} failed: {err}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The KVM error.
        err: kvm_ioctls::Error,
    },
    /// Guest RAM could not be created or registered.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// A vCPU could not be set up.
    #[error(transparent)]
    Arch(#[from] ArchError),
    /// The kernel could not be loaded.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The ACPI tables could not be written.
    #[error(transparent)]
    Acpi(#[from] AcpiError),
    /// A vCPU thread could not be started.
    #[error("cannot start a vCPU thread: {0}")]
    Thread(std::io::Error),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |err| VmError::Kvm { what, err }
}

/// A built, not yet running VM.
#[derive(Debug)]
pub struct Vm {
    _kvm: Kvm,
    fd: Arc<VmFd>,
    vcpus: Vec<VcpuFd>,
    // Declared last: dropped after the vCPUs and the VM that map it.
    mem: GuestMemoryMmap,
}

impl Vm {
    /// Creates the VM, its RAM and its vCPUs.
    pub fn new(spec: &VmSpec) -> Result<Self, VmError> {
        let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
        let max = kvm.get_nr_vcpus();
        if spec.cpus == 0 || usize::from(spec.cpus) > max {
            return Err(VmError::BadCpuCount {
                asked: spec.cpus,
                max,
            });
        }
        let fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
        fd.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;

        let mem = create_guest_memory(spec.memory, spec.hugepages)?;
        register_guest_memory(&fd, &mem)?;

        let cpuid = supported_cpuid(&kvm)?;
        let mut vcpus = Vec::with_capacity(usize::from(spec.cpus));
        for id in 0..spec.cpus {
            let vcpu = fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            setup_cpuid(&vcpu, &cpuid, id, spec.cpus)?;
            setup_msrs(&vcpu)?;
            setup_lapic(&vcpu)?;
            setup_fpu(&vcpu)?;
            vcpus.push(vcpu);
        }
        Ok(Vm {
            _kvm: kvm,
            fd: Arc::new(fd),
            vcpus,
            mem,
        })
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// The KVM VM.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The KVM VM, shared with devices that add ioeventfds, irqfds and
    /// routes while the guest runs.
    pub fn shared_fd(&self) -> Arc<VmFd> {
        self.fd.clone()
    }

    /// The vCPUs, boot CPU first.
    pub fn vcpus(&self) -> &[VcpuFd] {
        &self.vcpus
    }

    /// Writes the ACPI tables, loads a kernel and points the boot CPU at
    /// it. The other vCPUs wait for the guest's INIT/SIPI in the in-kernel
    /// LAPIC.
    pub fn load_linux(&self, spec: &LinuxBoot) -> Result<LoadedLinux, VmError> {
        let rsdp = write_acpi_tables(&self.mem, self.vcpus.len())?;
        let loaded = load_linux(&self.mem, spec, Some(rsdp))?;
        setup_boot_vcpu(&self.mem, &self.vcpus[0], &loaded)?;
        Ok(loaded)
    }

    /// Starts the boot CPU in long mode at `rip` (payload tests).
    pub fn start_boot_cpu_at(&self, rip: u64) -> Result<(), VmError> {
        setup_long_mode(&self.mem, &self.vcpus[0], 4)?;
        setup_regs(
            &self.vcpus[0],
            &BootRegs {
                rip,
                rsp: BOOT_STACK_POINTER,
                rsi: 0,
                rbx: 0,
            },
        )?;
        Ok(())
    }

    /// Runs every vCPU on its own thread until `exit` is raised, then
    /// stops them all and returns why the VM ended.
    /// Each vCPU thread installs `filters.vcpu` first; the calling thread
    /// installs `filters.vmm` once the vCPUs are started.
    pub fn run(
        self,
        buses: Buses,
        exit: Arc<ExitSignal>,
        filters: &Filters,
    ) -> Result<ExitReason, VmError> {
        install_kick_handler().map_err(|e| VmError::Thread(e.into()))?;
        let bus = Arc::new(buses);
        let mut threads = Vec::with_capacity(self.vcpus.len());
        let mut spawn_error = None;
        for (id, mut vcpu) in self.vcpus.into_iter().enumerate() {
            let (bus, thread_exit) = (bus.clone(), exit.clone());
            let filter = filters.vcpu.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    if let Err(e) = seccomp::install(&filter) {
                        thread_exit.raise(ExitReason::VcpuError(format!("vCPU {id}: {e}")));
                        return;
                    }
                    run_vcpu(id, &mut vcpu, &bus, &thread_exit)
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    exit.raise(ExitReason::VcpuError(format!("vCPU {id} thread: {e}")));
                    spawn_error = Some(e);
                    break;
                }
            }
        }
        if let Err(e) = seccomp::install(&filters.vmm) {
            exit.raise(ExitReason::VcpuError(format!("VMM thread: {e}")));
        }
        let reason = exit.wait();
        // A kick that lands between two KVM_RUNs is lost; repeat until every
        // thread has seen the exit flag.
        while threads.iter().any(|t| !t.is_finished()) {
            for t in threads.iter().filter(|t| !t.is_finished()) {
                // SAFETY: the thread is not joined yet, so its pthread_t is
                // valid; the kick handler is installed and does nothing.
                unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
            }
            std::thread::sleep(KICK_INTERVAL);
        }
        for t in threads {
            let _ = t.join();
        }
        match spawn_error {
            Some(e) => Err(VmError::Thread(e)),
            None => Ok(reason),
        }
    }
}
