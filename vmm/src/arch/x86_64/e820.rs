//! The e820 memory map the kernel reads from the zero page.
//!
//! RAM is reported as usable except the legacy hole between the EBDA and
//! 1 MiB (where a PC has its BIOS ROM and VGA window) and, for big guests,
//! the 32-bit device hole, which simply has no entry.

use linux_loader::loader::bootparam::boot_e820_entry;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::layout::{EBDA_START, HIMEM_START};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;

/// One e820 entry per usable RAM span of `mem`; the low region is split
/// around `[EBDA_START, HIMEM_START)`.
pub fn e820_entries(mem: &GuestMemoryMmap) -> Vec<boot_e820_entry> {
    let mut entries = Vec::new();
    for region in mem.iter() {
        let start = region.start_addr().0;
        let end = start + region.len();
        if start < HIMEM_START {
            let low_end = end.min(EBDA_START);
            if low_end > start {
                entries.push(ram(start, low_end - start));
            }
            if end > HIMEM_START {
                entries.push(ram(HIMEM_START, end - HIMEM_START));
            }
        } else {
            entries.push(ram(start, end - start));
        }
    }
    entries
}

fn ram(addr: u64, size: u64) -> boot_e820_entry {
    boot_e820_entry {
        addr,
        size,
        r#type: E820_RAM,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    fn spans(entries: &[boot_e820_entry]) -> Vec<(u64, u64, u32)> {
        entries.iter().map(|e| (e.addr, e.size, e.r#type)).collect()
    }

    #[test]
    fn small_guest_has_low_and_high_ram() {
        let mem = create_guest_memory(512 << 20, false).unwrap();
        assert_eq!(
            spans(&e820_entries(&mem)),
            vec![
                (0, EBDA_START, E820_RAM),
                (HIMEM_START, (512 << 20) - HIMEM_START, E820_RAM)
            ]
        );
    }

    #[test]
    fn big_guest_skips_the_pci_hole() {
        let mem = create_guest_memory((3 << 30) + (64 << 20), false).unwrap();
        assert_eq!(
            spans(&e820_entries(&mem)),
            vec![
                (0, EBDA_START, E820_RAM),
                (HIMEM_START, (3 << 30) - HIMEM_START, E820_RAM),
                (4 << 30, 64 << 20, E820_RAM),
            ]
        );
    }
}
