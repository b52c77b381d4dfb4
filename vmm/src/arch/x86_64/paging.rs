//! Identity-mapped boot page tables with 2 MiB pages.
//!
//! Long mode cannot run without paging, and the 64-bit Linux boot protocol
//! wants the kernel, the zero page and the command line identity-mapped. The
//! tables map the first `gib` GiB one to one: one PML4 entry, one PDPT entry
//! per GiB, each pointing to a full page directory of 2 MiB pages.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::error::ArchError;
use super::layout::{PDE_START, PDPTE_START, PML4_START};

/// The boot tables have room for this many page directories (0xb000..0xf000),
/// enough to reach every 32-bit address, including the PCI hole.
pub const MAX_IDENTITY_MAP_GIB: u64 = 4;

const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const PAGE_SIZE_2M: u64 = 1 << 7;
const ENTRIES_PER_TABLE: u64 = 512;

/// Writes the PML4, PDPT and `gib` page directories identity-mapping
/// `[0, gib GiB)`; returns the address to load into `cr3`.
pub fn write_identity_map(mem: &GuestMemoryMmap, gib: u64) -> Result<u64, ArchError> {
    if gib == 0 || gib > MAX_IDENTITY_MAP_GIB {
        return Err(ArchError::IdentityMapTooLarge(gib));
    }
    let write = |value: u64, addr: u64| {
        mem.write_obj(value, GuestAddress(addr))
            .map_err(ArchError::WritePageTables)
    };
    write(PDPTE_START | PRESENT | WRITABLE, PML4_START)?;
    for g in 0..gib {
        let directory = PDE_START + g * 0x1000;
        write(directory | PRESENT | WRITABLE, PDPTE_START + g * 8)?;
        for i in 0..ENTRIES_PER_TABLE {
            let frame = (g * ENTRIES_PER_TABLE + i) << 21;
            write(frame | PRESENT | WRITABLE | PAGE_SIZE_2M, directory + i * 8)?;
        }
    }
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the tables like the MMU does for a 2 MiB page.
    fn translate(mem: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let pml4e: u64 = mem
            .read_obj(GuestAddress(cr3 + ((va >> 39) & 511) * 8))
            .ok()?;
        if pml4e & PRESENT == 0 {
            return None;
        }
        let pdpte: u64 = mem
            .read_obj(GuestAddress((pml4e & !0xfff) + ((va >> 30) & 511) * 8))
            .ok()?;
        if pdpte & PRESENT == 0 {
            return None;
        }
        let pde: u64 = mem
            .read_obj(GuestAddress((pdpte & !0xfff) + ((va >> 21) & 511) * 8))
            .ok()?;
        if pde & PRESENT == 0 || pde & PAGE_SIZE_2M == 0 {
            return None;
        }
        Some((pde & !0x1f_ffff & !(1 << 63)) | (va & 0x1f_ffff))
    }

    #[test]
    fn maps_four_gib_one_to_one() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let cr3 = write_identity_map(&mem, 4).unwrap();
        assert_eq!(cr3, PML4_START);
        for va in [0, 0x1234, 0x20_0000, 0x3fff_ffff, 0xc000_1000, 0xffff_fff0] {
            assert_eq!(translate(&mem, cr3, va), Some(va), "va {va:#x}");
        }
    }

    #[test]
    fn one_gib_map_stops_at_one_gib() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let cr3 = write_identity_map(&mem, 1).unwrap();
        assert_eq!(translate(&mem, cr3, 0x3fe0_0000), Some(0x3fe0_0000));
        assert_eq!(translate(&mem, cr3, 0x4000_0000), None);
    }

    #[test]
    fn rejects_sizes_the_tables_cannot_hold() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert!(matches!(
            write_identity_map(&mem, 5),
            Err(ArchError::IdentityMapTooLarge(5))
        ));
        assert!(write_identity_map(&mem, 0).is_err());
    }
}
