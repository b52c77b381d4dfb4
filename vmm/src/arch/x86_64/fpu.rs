//! Initial x87/SSE state.

use kvm_bindings::kvm_fpu;
use kvm_ioctls::VcpuFd;

use super::error::ArchError;

/// x87 control word after `FNINIT`: all exceptions masked, 64-bit precision.
pub const FCW_DEFAULT: u16 = 0x37f;
/// MXCSR at reset: all SSE exceptions masked.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// Puts the FPU in its post-`FNINIT` state so a kernel that uses SSE before
/// initialising the FPU itself does not take a spurious exception.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let fpu = kvm_fpu {
        fcw: FCW_DEFAULT,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(ArchError::SetFpu)
}
