//! Errors of the x86-64 vCPU setup.

use vm_memory::GuestMemoryError;

/// A step of the vCPU setup that failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// Reading the special registers of the vCPU failed.
    #[error("KVM_GET_SREGS failed: {0}")]
    GetSregs(kvm_ioctls::Error),
    /// Writing the special registers of the vCPU failed.
    #[error("KVM_SET_SREGS failed: {0}")]
    SetSregs(kvm_ioctls::Error),
    /// Writing the general registers of the vCPU failed.
    #[error("KVM_SET_REGS failed: {0}")]
    SetRegs(kvm_ioctls::Error),
    /// Writing the FPU state of the vCPU failed.
    #[error("KVM_SET_FPU failed: {0}")]
    SetFpu(kvm_ioctls::Error),
    /// KVM_GET_SUPPORTED_CPUID failed.
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    GetSupportedCpuid(kvm_ioctls::Error),
    /// KVM_SET_CPUID2 failed.
    #[error("KVM_SET_CPUID2 failed: {0}")]
    SetCpuid(kvm_ioctls::Error),
    /// KVM_SET_MSRS failed.
    #[error("KVM_SET_MSRS failed: {0}")]
    SetMsrs(kvm_ioctls::Error),
    /// KVM did not accept one of the boot MSRs.
    #[error("KVM rejected MSR {0:#x}")]
    MsrRejected(u32),
    /// The MSR list does not fit KVM's limit.
    #[error("{0} MSRs exceed KVM's list size")]
    TooManyMsrs(usize),
    /// KVM_GET_LAPIC failed.
    #[error("KVM_GET_LAPIC failed: {0}")]
    GetLapic(kvm_ioctls::Error),
    /// KVM_SET_LAPIC failed.
    #[error("KVM_SET_LAPIC failed: {0}")]
    SetLapic(kvm_ioctls::Error),
    /// The GDT does not fit in guest memory.
    #[error("cannot write the GDT into guest memory: {0}")]
    WriteGdt(GuestMemoryError),
    /// The IDT does not fit in guest memory.
    #[error("cannot write the IDT into guest memory: {0}")]
    WriteIdt(GuestMemoryError),
    /// The page tables do not fit in guest memory.
    #[error("cannot write the page tables into guest memory: {0}")]
    WritePageTables(GuestMemoryError),
    /// More identity-mapped memory was asked for than the boot tables cover.
    #[error("cannot identity-map {0} GiB: the boot page tables cover at most {max} GiB", max = crate::arch::x86_64::paging::MAX_IDENTITY_MAP_GIB)]
    IdentityMapTooLarge(u64),
}
