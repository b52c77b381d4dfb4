//! The boot GDT: the descriptors a 64-bit vCPU needs before the guest loads
//! its own, and their translation into the `kvm_segment`s KVM takes.

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::error::ArchError;
use super::layout::{BOOT_GDT_START, BOOT_IDT_START};

/// Index of the 64-bit code segment in [`BOOT_GDT`] (selector 0x08).
pub const CODE_INDEX: u8 = 1;
/// Index of the flat data segment in [`BOOT_GDT`] (selector 0x10).
pub const DATA_INDEX: u8 = 2;
/// Index of the TSS descriptor in [`BOOT_GDT`] (selector 0x18).
pub const TSS_INDEX: u8 = 3;

/// Packs a segment descriptor. `flags` holds the access byte in its low 8
/// bits and the G/DB/L/AVL nibble in bits 12..16, as in the SDM figure.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, 64-bit code (L=1, execute/read, accessed), flat data
/// (read/write, accessed, 4 KiB granularity) and a busy 64-bit TSS so `tr`
/// holds something the CPU accepts.
pub const BOOT_GDT: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x808b, 0, 0xfffff),
];

/// The GDT for a PVH start: null, flat 32-bit code (D=1, execute/read),
/// flat data and a 32-bit TSS, as the PVH ABI wants the segments loaded.
pub const PVH_GDT: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0x67),
];

fn bits(entry: u64, shift: u32, width: u32) -> u64 {
    (entry >> shift) & ((1 << width) - 1)
}

/// Unpacks descriptor `entry`, found at `table_index` of the GDT, into the
/// hidden-part form KVM loads into a segment register.
pub fn segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let base = bits(entry, 16, 24) | (bits(entry, 56, 8) << 24);
    let raw_limit = (bits(entry, 0, 16) | (bits(entry, 48, 4) << 16)) as u32;
    let g = bits(entry, 55, 1) as u8;
    // With G set the limit counts 4 KiB pages; KVM wants it in bytes.
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = bits(entry, 47, 1) as u8;
    kvm_segment {
        base,
        limit,
        selector: u16::from(table_index) * 8,
        type_: bits(entry, 40, 4) as u8,
        present,
        dpl: bits(entry, 45, 2) as u8,
        db: bits(entry, 54, 1) as u8,
        s: bits(entry, 44, 1) as u8,
        l: bits(entry, 53, 1) as u8,
        g,
        avl: bits(entry, 52, 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Writes `table` at [`BOOT_GDT_START`] and an empty IDT at
/// [`BOOT_IDT_START`]. Any exception before the guest installs its own IDT
/// then becomes a triple fault, which KVM reports as a shutdown exit.
pub fn write_gdt_and_idt(mem: &GuestMemoryMmap, table: &[u64]) -> Result<(), ArchError> {
    for (index, entry) in table.iter().enumerate() {
        let addr = GuestAddress(BOOT_GDT_START + (index as u64) * 8);
        mem.write_obj(*entry, addr).map_err(ArchError::WriteGdt)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(ArchError::WriteIdt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_descriptor_is_64_bit_ring0_execute_read() {
        let seg = segment_from_gdt(BOOT_GDT[usize::from(CODE_INDEX)], CODE_INDEX);
        assert_eq!(seg.selector, 0x08);
        assert_eq!(seg.type_, 0xb);
        assert_eq!(
            (seg.l, seg.db, seg.s, seg.dpl, seg.present),
            (1, 0, 1, 0, 1)
        );
        assert_eq!(seg.base, 0);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.unusable, 0);
    }

    #[test]
    fn data_and_tss_descriptors_unpack() {
        let data = segment_from_gdt(BOOT_GDT[usize::from(DATA_INDEX)], DATA_INDEX);
        assert_eq!(
            (data.selector, data.type_, data.db, data.l),
            (0x10, 0x3, 1, 0)
        );
        let tss = segment_from_gdt(BOOT_GDT[usize::from(TSS_INDEX)], TSS_INDEX);
        assert_eq!((tss.selector, tss.type_, tss.s, tss.g), (0x18, 0xb, 0, 1));
    }

    #[test]
    fn entry_round_trips_base_and_byte_limit() {
        let entry = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let seg = segment_from_gdt(entry, 5);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.selector, 40);
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn tables_land_in_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        write_gdt_and_idt(&mem, &BOOT_GDT).unwrap();
        let code: u64 = mem.read_obj(GuestAddress(BOOT_GDT_START + 8)).unwrap();
        assert_eq!(code, 0x00af_9b00_0000_ffff);
        let idt: u64 = mem.read_obj(GuestAddress(BOOT_IDT_START)).unwrap();
        assert_eq!(idt, 0);
    }

    #[test]
    fn gdt_outside_memory_is_an_error() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();
        assert!(matches!(
            write_gdt_and_idt(&mem, &BOOT_GDT),
            Err(ArchError::WriteGdt(_))
        ));
    }
}
