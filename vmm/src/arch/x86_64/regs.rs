//! General-purpose registers at the first instruction.

use kvm_bindings::kvm_regs;
use kvm_ioctls::VcpuFd;

use super::error::ArchError;

/// RFLAGS bit 1 is reserved and always set; everything else starts clear
/// (interrupts off).
pub const RFLAGS_RESERVED: u64 = 0x2;

/// Where a 64-bit vCPU starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootRegs {
    /// First instruction (the kernel's 64-bit entry point).
    pub rip: u64,
    /// Initial stack pointer (also loaded into `rbp`).
    pub rsp: u64,
    /// Address of the Linux zero page, as the 64-bit boot protocol wants.
    pub rsi: u64,
    /// Address of the PVH start info, as the PVH boot ABI wants.
    pub rbx: u64,
}

impl BootRegs {
    /// The `kvm_regs` KVM loads for this start state.
    pub fn to_kvm(&self) -> kvm_regs {
        kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: self.rip,
            rsp: self.rsp,
            rbp: self.rsp,
            rsi: self.rsi,
            rbx: self.rbx,
            ..Default::default()
        }
    }
}

/// Loads `regs` into the vCPU.
pub fn setup_regs(vcpu: &VcpuFd, regs: &BootRegs) -> Result<(), ArchError> {
    vcpu.set_regs(&regs.to_kvm()).map_err(ArchError::SetRegs)
}

/// Starts a real-mode vCPU at offset `ip` of its code segment.
pub fn setup_real_mode_regs(vcpu: &VcpuFd, ip: u16) -> Result<(), ArchError> {
    let regs = kvm_regs {
        rflags: RFLAGS_RESERVED,
        rip: u64::from(ip),
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(ArchError::SetRegs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_regs_follow_the_boot_protocol() {
        let regs = BootRegs {
            rip: 0x100_0200,
            rsp: 0x8ff0,
            rsi: 0x7000,
            rbx: 0,
        }
        .to_kvm();
        assert_eq!(
            (regs.rip, regs.rsp, regs.rbp, regs.rsi),
            (0x100_0200, 0x8ff0, 0x8ff0, 0x7000)
        );
        assert_eq!(regs.rflags, 0x2);
        assert_eq!(regs.rax, 0);
    }
}
