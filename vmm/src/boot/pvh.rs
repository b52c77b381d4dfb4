//! ELF `vmlinux` boot through the PVH entry point.
//!
//! A kernel built with `CONFIG_PVH` carries an ELF note
//! (`XEN_ELFNOTE_PHYS32_ENTRY`) naming a 32-bit entry point. The VMM loads
//! the ELF segments at their physical addresses, writes an
//! `hvm_start_info` (command line, initramfs as module 0, memory map, ACPI
//! RSDP) and starts the boot vCPU there in 32-bit protected mode with `ebx`
//! pointing at the start info. No zero page and no decompressor: the
//! kernel runs in place.

use std::path::Path;

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::{open, BootError};
use crate::arch::x86_64::layout::{
    CMDLINE_START, HIMEM_START, PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START,
};
use linux_loader::loader::bootparam::boot_e820_entry;

/// `hvm_start_info.magic`: "xEn3" with bit 7 of the "E" set.
pub const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// `hvm_start_info` version with the memory map fields.
pub const HVM_START_INFO_VERSION: u32 = 1;
/// Longest command line a PVH kernel reads (x86 `COMMAND_LINE_SIZE` less
/// the NUL); there is no setup header to say otherwise.
pub const PVH_CMDLINE_MAX: u32 = 2047;

/// An ELF kernel in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedElf {
    /// The PVH entry point (32-bit, paging off).
    pub entry: u64,
    /// End of the highest segment, bss included.
    pub kernel_end: u64,
}

/// Loads the ELF kernel at `path` at its segments' physical addresses; it
/// must have a PVH entry note and fit below `low_ram_end`.
pub fn load_elf(
    mem: &GuestMemoryMmap,
    path: &Path,
    low_ram_end: u64,
) -> Result<LoadedElf, BootError> {
    use linux_loader::loader::elf::Error as ElfError;
    use linux_loader::loader::Error as LoaderError;
    let mut file = open(path)?;
    let loaded = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START))).map_err(
        |err| match err {
            // A segment past the end of guest memory.
            LoaderError::Elf(ElfError::ReadKernelImage) => BootError::ElfTooLarge {
                path: path.to_path_buf(),
                have: low_ram_end,
            },
            err => BootError::NotElf {
                path: path.to_path_buf(),
                err,
            },
        },
    )?;
    let entry = match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => addr.0,
        _ => return Err(BootError::NoPvhEntry(path.to_path_buf())),
    };
    if loaded.kernel_end > low_ram_end {
        return Err(BootError::ElfTooLarge {
            path: path.to_path_buf(),
            have: low_ram_end,
        });
    }
    Ok(LoadedElf {
        entry,
        kernel_end: loaded.kernel_end,
    })
}

/// The start info and its tables, ready to be written.
#[derive(Debug, Clone)]
pub struct PvhStartInfo {
    /// The `hvm_start_info` itself.
    pub info: hvm_start_info,
    /// Module 0 is the initramfs, if there is one.
    pub modules: Vec<hvm_modlist_entry>,
    /// The memory map (the same RAM spans as the e820 map).
    pub memmap: Vec<hvm_memmap_table_entry>,
}

/// Builds the start info for a kernel whose command line is at
/// [`CMDLINE_START`], with `initrd` as its only module and `e820` as its
/// memory map.
pub fn build_start_info(
    initrd: Option<(u64, u64)>,
    e820: &[boot_e820_entry],
    acpi_rsdp: Option<u64>,
) -> PvhStartInfo {
    let modules: Vec<hvm_modlist_entry> = initrd
        .map(|(paddr, size)| hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        })
        .into_iter()
        .collect();
    let memmap: Vec<hvm_memmap_table_entry> = e820
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.r#type,
            reserved: 0,
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: HVM_START_INFO_VERSION,
        // At most one module and 128 RAM spans: both fit a u32.
        nr_modules: modules.len() as u32,
        modlist_paddr: if modules.is_empty() {
            0
        } else {
            PVH_MODLIST_START
        },
        cmdline_paddr: CMDLINE_START,
        rsdp_paddr: acpi_rsdp.unwrap_or(0),
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    PvhStartInfo {
        info,
        modules,
        memmap,
    }
}

/// Writes the start info at [`PVH_INFO_START`], its module list at
/// [`PVH_MODLIST_START`] and its memory map at [`PVH_MEMMAP_START`].
pub fn write_start_info(mem: &GuestMemoryMmap, start: &PvhStartInfo) -> Result<(), BootError> {
    let mut params = BootParams::new(&start.info, GuestAddress(PVH_INFO_START));
    params.set_sections(&start.memmap, GuestAddress(PVH_MEMMAP_START));
    if !start.modules.is_empty() {
        params.set_modules(&start.modules, GuestAddress(PVH_MODLIST_START));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(BootError::StartInfo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::e820::e820_entries;
    use crate::memory::create_guest_memory;
    use vm_memory::Bytes;

    #[test]
    fn start_info_points_at_cmdline_initrd_memmap_and_rsdp() {
        let mem = create_guest_memory(256 << 20, false).unwrap();
        let e820 = e820_entries(&mem);
        let start = build_start_info(Some((0x0f00_0000, 0x1234)), &e820, Some(0xe0000));
        write_start_info(&mem, &start).unwrap();

        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!((info.magic, info.version), (XEN_HVM_START_MAGIC, 1));
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.rsdp_paddr, 0xe0000);
        assert_eq!(
            (info.nr_modules, info.modlist_paddr),
            (1, PVH_MODLIST_START)
        );
        assert_eq!(
            (info.memmap_paddr, info.memmap_entries),
            (PVH_MEMMAP_START, 2)
        );

        let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        assert_eq!((module.paddr, module.size), (0x0f00_0000, 0x1234));
        let spans: Vec<(u64, u64, u32)> = (0..2)
            .map(|i| {
                let e: hvm_memmap_table_entry = mem
                    .read_obj(GuestAddress(PVH_MEMMAP_START + i * 24))
                    .unwrap();
                (e.addr, e.size, e.type_)
            })
            .collect();
        assert_eq!(
            spans,
            [(0, 0x9fc00, 1), (HIMEM_START, (256 << 20) - HIMEM_START, 1)]
        );
    }

    #[test]
    fn no_initrd_means_no_module_list() {
        let mem = create_guest_memory(64 << 20, false).unwrap();
        let start = build_start_info(None, &e820_entries(&mem), None);
        assert_eq!((start.info.nr_modules, start.info.modlist_paddr), (0, 0));
        assert_eq!(start.info.rsdp_paddr, 0);
        write_start_info(&mem, &start).unwrap();
    }

    #[test]
    fn big_guest_memmap_skips_the_pci_hole() {
        let mem = create_guest_memory((3 << 30) + (64 << 20), false).unwrap();
        let start = build_start_info(None, &e820_entries(&mem), None);
        let spans: Vec<(u64, u64)> = start.memmap.iter().map(|e| (e.addr, e.size)).collect();
        assert_eq!(
            spans,
            [
                (0, 0x9fc00),
                (HIMEM_START, (3 << 30) - HIMEM_START),
                (4 << 30, 64 << 20)
            ]
        );
    }
}
