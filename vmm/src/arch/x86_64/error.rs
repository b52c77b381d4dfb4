//! Errors of the x86-64 vCPU setup.

use vm_memory::GuestMemoryError;

/// A step of the vCPU setup that failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    /// Reading the special registers of the vCPU failed.
    #[error("KVM_GET_SREGS failed: {0}")]
    GetSregs(#[source] kvm_ioctls::Error),
    /// Writing the special registers of the vCPU failed.
    #[error("KVM_SET_SREGS failed: {0}")]
    SetSregs(#[source] kvm_ioctls::Error),
    /// Writing the general registers of the vCPU failed.
    #[error("KVM_SET_REGS failed: {0}")]
    SetRegs(#[source] kvm_ioctls::Error),
    /// Writing the FPU state of the vCPU failed.
    #[error("KVM_SET_FPU failed: {0}")]
    SetFpu(#[source] kvm_ioctls::Error),
    /// The GDT does not fit in guest memory.
    #[error("cannot write the GDT into guest memory: {0}")]
    WriteGdt(#[source] GuestMemoryError),
    /// The IDT does not fit in guest memory.
    #[error("cannot write the IDT into guest memory: {0}")]
    WriteIdt(#[source] GuestMemoryError),
    /// The page tables do not fit in guest memory.
    #[error("cannot write the page tables into guest memory: {0}")]
    WritePageTables(#[source] GuestMemoryError),
    /// More identity-mapped memory was asked for than the boot tables cover.
    #[error("cannot identity-map {0} GiB: the boot page tables cover at most {max} GiB", max = crate::arch::x86_64::paging::MAX_IDENTITY_MAP_GIB)]
    IdentityMapTooLarge(u64),
}
