//! Local APIC at boot: LINT0 delivers the PIC's interrupts (ExtINT) and
//! LINT1 is the NMI line, as firmware leaves them on a PC.

use kvm_bindings::kvm_lapic_state;
use kvm_ioctls::VcpuFd;

use super::error::ArchError;

/// LVT LINT0 register offset.
pub const APIC_LVT0: usize = 0x350;
/// LVT LINT1 register offset.
pub const APIC_LVT1: usize = 0x360;
/// Delivery mode ExtINT.
pub const APIC_MODE_EXTINT: u32 = 0x7;
/// Delivery mode NMI.
pub const APIC_MODE_NMI: u32 = 0x4;

fn get_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn set_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().into_iter().enumerate() {
        lapic.regs[offset + i] = b as _;
    }
}

/// Replaces the delivery mode (bits 10:8) of an LVT entry.
pub fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// The delivery mode (bits 10:8) of an LVT entry.
pub fn delivery_mode(reg: u32) -> u32 {
    (reg >> 8) & 0x7
}

/// Sets LINT0 to ExtINT and LINT1 to NMI on `vcpu`'s in-kernel LAPIC.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), ArchError> {
    let mut lapic = vcpu.get_lapic().map_err(ArchError::GetLapic)?;
    let lvt0 = get_reg(&lapic, APIC_LVT0);
    set_reg(
        &mut lapic,
        APIC_LVT0,
        with_delivery_mode(lvt0, APIC_MODE_EXTINT),
    );
    let lvt1 = get_reg(&lapic, APIC_LVT1);
    set_reg(
        &mut lapic,
        APIC_LVT1,
        with_delivery_mode(lvt1, APIC_MODE_NMI),
    );
    vcpu.set_lapic(&lapic).map_err(ArchError::SetLapic)
}

/// Reads an LVT (or any 32-bit) register of `vcpu`'s LAPIC.
pub fn read_lapic_reg(vcpu: &VcpuFd, offset: usize) -> Result<u32, ArchError> {
    let lapic = vcpu.get_lapic().map_err(ArchError::GetLapic)?;
    Ok(get_reg(&lapic, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_mode_replaces_only_bits_8_to_10() {
        let masked_fixed = 0x0001_00ff;
        let reg = with_delivery_mode(masked_fixed, APIC_MODE_EXTINT);
        assert_eq!(reg, 0x0001_07ff);
        assert_eq!(delivery_mode(reg), APIC_MODE_EXTINT);
        assert_eq!(
            delivery_mode(with_delivery_mode(reg, APIC_MODE_NMI)),
            APIC_MODE_NMI
        );
    }

    #[test]
    fn registers_round_trip_little_endian() {
        let mut lapic = kvm_lapic_state::default();
        set_reg(&mut lapic, APIC_LVT1, 0x8765_4321);
        assert_eq!(get_reg(&lapic, APIC_LVT1), 0x8765_4321);
        assert_eq!(lapic.regs[APIC_LVT1] as u8, 0x21);
    }
}
