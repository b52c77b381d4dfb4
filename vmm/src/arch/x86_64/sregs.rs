//! Special registers: the control registers, EFER and segment state that put
//! a vCPU straight into 64-bit long mode (or keep it in real mode for tests).

use kvm_bindings::kvm_sregs;
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::error::ArchError;
use super::gdt::{
    segment_from_gdt, write_gdt_and_idt, BOOT_GDT, CODE_INDEX, DATA_INDEX, PVH_GDT, TSS_INDEX,
};
use super::layout::{BOOT_GDT_START, BOOT_IDT_START};
use super::paging::write_identity_map;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension, required by long mode.
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active (set by the CPU on a real transition; KVM
/// wants it set explicitly when it loads long-mode state directly).
pub const EFER_LMA: u64 = 1 << 10;

/// Returns `sregs` changed to 64-bit long mode with the boot GDT and paging
/// rooted at `cr3`. Other fields (APIC base, ...) are kept as KVM reported
/// them.
pub fn long_mode_sregs(mut sregs: kvm_sregs, cr3: u64) -> kvm_sregs {
    let code = segment_from_gdt(BOOT_GDT[usize::from(CODE_INDEX)], CODE_INDEX);
    let data = segment_from_gdt(BOOT_GDT[usize::from(DATA_INDEX)], DATA_INDEX);
    let tss = segment_from_gdt(BOOT_GDT[usize::from(TSS_INDEX)], TSS_INDEX);

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;

    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr3 = cr3;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    sregs
}

/// Writes the boot GDT, IDT and an identity map of the first
/// `identity_map_gib` GiB into `mem`, then switches `vcpu` to long mode.
pub fn setup_long_mode(
    mem: &GuestMemoryMmap,
    vcpu: &VcpuFd,
    identity_map_gib: u64,
) -> Result<(), ArchError> {
    write_gdt_and_idt(mem, &BOOT_GDT)?;
    let cr3 = write_identity_map(mem, identity_map_gib)?;
    let sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
    vcpu.set_sregs(&long_mode_sregs(sregs, cr3))
        .map_err(ArchError::SetSregs)
}

/// Returns `sregs` in 32-bit protected mode without paging, with the
/// [`PVH_GDT`] segments loaded: the state the PVH boot ABI starts a kernel in.
pub fn pvh_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&PVH_GDT) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    let data = segment_from_gdt(PVH_GDT[usize::from(DATA_INDEX)], DATA_INDEX);
    sregs.cs = segment_from_gdt(PVH_GDT[usize::from(CODE_INDEX)], CODE_INDEX);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(PVH_GDT[usize::from(TSS_INDEX)], TSS_INDEX);
    // Protected mode, no paging, no PAE, no long mode; caches on.
    sregs.cr0 = CR0_PE;
    sregs.cr3 = 0;
    sregs.cr4 = 0;
    sregs.efer = 0;
    sregs
}

/// Writes the [`PVH_GDT`] and an empty IDT into `mem` and puts `vcpu` in
/// 32-bit protected mode for a PVH entry point.
pub fn setup_pvh_mode(mem: &GuestMemoryMmap, vcpu: &VcpuFd) -> Result<(), ArchError> {
    write_gdt_and_idt(mem, &PVH_GDT)?;
    let sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
    vcpu.set_sregs(&pvh_sregs(sregs))
        .map_err(ArchError::SetSregs)
}

/// Returns `sregs` in real mode with every segment register at `segment`
/// (linear base `segment * 16`), instead of the reset vector's `f000:fff0`.
pub fn real_mode_sregs(mut sregs: kvm_sregs, segment: u16) -> kvm_sregs {
    sregs.cr0 &= !(CR0_PE | CR0_PG);
    sregs.efer &= !(EFER_LME | EFER_LMA);
    for seg in [
        &mut sregs.cs,
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.fs,
        &mut sregs.gs,
        &mut sregs.ss,
    ] {
        seg.selector = segment;
        seg.base = u64::from(segment) << 4;
    }
    sregs
}

/// Keeps `vcpu` in real mode with every segment at `segment`.
pub fn setup_real_mode(vcpu: &VcpuFd, segment: u16) -> Result<(), ArchError> {
    let sregs = vcpu.get_sregs().map_err(ArchError::GetSregs)?;
    vcpu.set_sregs(&real_mode_sregs(sregs, segment))
        .map_err(ArchError::SetSregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_bits_and_selectors() {
        let s = long_mode_sregs(kvm_sregs::default(), 0x9000);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.cr4 & CR4_PAE, CR4_PAE);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!(s.cr3, 0x9000);
        assert_eq!((s.cs.selector, s.cs.l), (0x08, 1));
        assert_eq!(
            (s.ss.selector, s.ds.selector, s.tr.selector),
            (0x10, 0x10, 0x18)
        );
        assert_eq!((s.gdt.base, s.gdt.limit), (BOOT_GDT_START, 31));
        assert_eq!((s.idt.base, s.idt.limit), (BOOT_IDT_START, 7));
    }

    #[test]
    fn pvh_state_is_flat_32_bit_protected_mode_without_paging() {
        let lm = long_mode_sregs(kvm_sregs::default(), 0x9000);
        let s = pvh_sregs(lm);
        assert_eq!((s.cr0, s.cr3, s.cr4, s.efer), (CR0_PE, 0, 0, 0));
        assert_eq!((s.cs.selector, s.cs.l, s.cs.db), (0x08, 0, 1));
        assert_eq!((s.cs.base, s.cs.limit, s.cs.type_), (0, 0xffff_ffff, 0xb));
        assert_eq!((s.ds.selector, s.ss.db, s.ss.limit), (0x10, 1, 0xffff_ffff));
        assert_eq!((s.tr.selector, s.tr.type_, s.tr.limit), (0x18, 0xb, 0x67));
        assert_eq!((s.gdt.base, s.gdt.limit), (BOOT_GDT_START, 31));
    }

    #[test]
    fn real_mode_clears_long_mode_and_sets_bases() {
        let lm = long_mode_sregs(kvm_sregs::default(), 0x9000);
        let s = real_mode_sregs(lm, 0x100);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), 0);
        assert_eq!((s.cs.selector, s.cs.base), (0x100, 0x1000));
        assert_eq!(s.ss.base, 0x1000);
    }
}
