//! Where the boot structures live in guest-physical memory.
//!
//! The low addresses follow the layout Firecracker and Cloud Hypervisor use
//! for the 64-bit boot protocol: everything the vCPU needs before the kernel
//! runs sits below 1 MiB, the kernel is loaded at 1 MiB.

/// Guest-physical address of the boot GDT.
pub const BOOT_GDT_START: u64 = 0x500;
/// Guest-physical address of the (empty) boot IDT, right after the GDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, passed to the kernel in `ebx`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (the initramfs), right after the start info.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map. It shares the zero page's spot: a kernel boots with one
/// protocol or the other, never both.
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux zero page (`struct boot_params`), passed to the kernel in `rsi`.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer: grows down from just below the page tables.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Top-level page table (PML4).
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table: one entry per GiB.
pub const PDPTE_START: u64 = 0xa000;
/// First page directory; one 4 KiB directory per identity-mapped GiB follows.
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line we hand to the kernel, including the NUL.
pub const CMDLINE_MAX_SIZE: usize = 0x10000;
/// Start of the Extended BIOS Data Area: RAM below it is usable.
pub const EBDA_START: u64 = 0x9fc00;
/// Where high memory starts and where the kernel is loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit device hole (PCI BARs, ECAM, LAPIC, IOAPIC).
pub const MEM_32BIT_GAP_START: u64 = 0xc000_0000;
/// Size of the 32-bit device hole: RAM resumes at 4 GiB.
pub const MEM_32BIT_GAP_SIZE: u64 = 0x4000_0000;
/// First address above the 32-bit space, where RAM past the hole goes.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;
