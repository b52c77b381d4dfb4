//! A type-0 PCI configuration header: 64 dwords with per-bit write masks,
//! so guest writes to read-only fields (IDs, class, BAR size bits) are
//! dropped the way hardware drops them.

/// Vendor/device ID register.
pub const REG_ID: usize = 0;
/// Command/status register.
pub const REG_COMMAND: usize = 1;
/// Class code / revision register.
pub const REG_CLASS: usize = 2;
/// Header type (in bits 23:16 of dword 3).
pub const REG_HEADER: usize = 3;
/// First BAR register.
pub const REG_BAR0: usize = 4;
/// Subsystem vendor/ID register.
pub const REG_SUBSYSTEM: usize = 11;
/// Capabilities pointer register.
pub const REG_CAP_PTR: usize = 13;
/// Interrupt line/pin register.
pub const REG_INTERRUPT: usize = 15;
/// Number of BARs in a type-0 header.
pub const NUM_BARS: usize = 6;
/// Dwords in the (non-extended) configuration space.
pub const CONFIG_DWORDS: usize = 64;

/// Command register bits a guest may set: I/O space, memory space, bus
/// master, INTx disable.
const COMMAND_WRITABLE: u32 = 0x0000_0407;
/// A 32-bit memory BAR's low bits: type and prefetchable flags.
const BAR_FLAG_BITS: u32 = 0xf;

/// One function's configuration space.
#[derive(Debug, Clone)]
pub struct ConfigSpace {
    regs: [u32; CONFIG_DWORDS],
    writable: [u32; CONFIG_DWORDS],
    bar_sizes: [u32; NUM_BARS],
}

/// What identifies a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIds {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class, subclass and programming interface.
    pub class: [u8; 3],
    /// Revision.
    pub revision: u8,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

impl ConfigSpace {
    /// A header with `ids`, everything else zero and read-only except the
    /// command register and the interrupt line.
    pub fn new(ids: PciIds) -> Self {
        let mut regs = [0u32; CONFIG_DWORDS];
        let mut writable = [0u32; CONFIG_DWORDS];
        regs[REG_ID] = u32::from(ids.vendor) | (u32::from(ids.device) << 16);
        regs[REG_CLASS] = u32::from(ids.revision)
            | (u32::from(ids.class[2]) << 8)
            | (u32::from(ids.class[1]) << 16)
            | (u32::from(ids.class[0]) << 24);
        regs[REG_SUBSYSTEM] = u32::from(ids.subsystem_vendor) | (u32::from(ids.subsystem) << 16);
        writable[REG_COMMAND] = COMMAND_WRITABLE;
        writable[REG_INTERRUPT] = 0xff;
        ConfigSpace {
            regs,
            writable,
            bar_sizes: [0; NUM_BARS],
        }
    }

    /// Declares BAR `index` as 32-bit, non-prefetchable memory of `size`
    /// bytes (a power of two, at least 16).
    pub fn add_mem32_bar(&mut self, index: usize, size: u32) {
        debug_assert!(index < NUM_BARS && size.is_power_of_two() && size >= 16);
        self.bar_sizes[index] = size;
        self.writable[REG_BAR0 + index] = !(size - 1) & !BAR_FLAG_BITS;
    }

    /// Where the guest put BAR `index` (0 until it programs it).
    pub fn bar_address(&self, index: usize) -> u64 {
        u64::from(self.regs[REG_BAR0 + index] & !BAR_FLAG_BITS)
    }

    /// Size of BAR `index` (0 if it has none).
    pub fn bar_size(&self, index: usize) -> u32 {
        self.bar_sizes[index]
    }

    /// Whether the guest enabled memory decoding.
    pub fn memory_enabled(&self) -> bool {
        self.regs[REG_COMMAND] & 0x2 != 0
    }

    /// Reads dword `reg`; out-of-range reads see all-ones.
    pub fn read(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(u32::MAX)
    }

    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` of dword `reg`,
    /// keeping read-only bits. Malformed accesses are ignored.
    pub fn write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if reg >= CONFIG_DWORDS || !matches!(data.len(), 1 | 2 | 4) || offset + data.len() > 4 {
            return;
        }
        let mut value = [0u8; 4];
        let mut mask = [0u8; 4];
        value[offset..offset + data.len()].copy_from_slice(data);
        mask[offset..offset + data.len()].fill(0xff);
        let mask = u32::from_le_bytes(mask) & self.writable[reg];
        self.regs[reg] = (self.regs[reg] & !mask) | (u32::from_le_bytes(value) & mask);
    }

    /// Writes dword `reg` as the device (not the guest): capabilities,
    /// header type, pointers.
    pub fn set(&mut self, reg: usize, value: u32) {
        self.regs[reg] = value;
    }

    /// Makes bits of dword `reg` guest-writable.
    pub fn set_writable(&mut self, reg: usize, mask: u32) {
        self.writable[reg] = mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> PciIds {
        PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            class: [0x01, 0x00, 0x00],
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x0040,
        }
    }

    #[test]
    fn ids_are_read_only() {
        let mut cfg = ConfigSpace::new(ids());
        assert_eq!(cfg.read(REG_ID), 0x1042_1af4);
        assert_eq!(cfg.read(REG_CLASS), 0x0100_0001);
        cfg.write(REG_ID, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(cfg.read(REG_ID), 0x1042_1af4);
        assert_eq!(cfg.read(200), u32::MAX);
    }

    #[test]
    fn bar_sizing_and_placement() {
        let mut cfg = ConfigSpace::new(ids());
        cfg.add_mem32_bar(0, 0x4000);
        // The guest's sizing probe: all-ones in, size mask out.
        cfg.write(REG_BAR0, 0, &u32::MAX.to_le_bytes());
        assert_eq!(cfg.read(REG_BAR0), 0xffff_c000);
        cfg.write(REG_BAR0, 0, &0xc000_1234u32.to_le_bytes());
        assert_eq!(cfg.bar_address(0), 0xc000_0000);
        assert_eq!(cfg.bar_size(0), 0x4000);
        // A BAR the device does not have stays zero.
        cfg.write(REG_BAR0 + 1, 0, &u32::MAX.to_le_bytes());
        assert_eq!(cfg.read(REG_BAR0 + 1), 0);
    }

    #[test]
    fn partial_writes_touch_only_their_bytes() {
        let mut cfg = ConfigSpace::new(ids());
        cfg.write(REG_COMMAND, 0, &[0x06]);
        assert!(cfg.memory_enabled());
        cfg.write(REG_COMMAND, 2, &[0xff, 0xff]); // status: read-only here
        assert_eq!(cfg.read(REG_COMMAND), 0x0000_0006);
        cfg.write(REG_INTERRUPT, 0, &[0x0b]);
        assert_eq!(cfg.read(REG_INTERRUPT) & 0xff, 0x0b);
        cfg.write(REG_COMMAND, 3, &[1, 2]); // runs past the dword: ignored
        cfg.write(REG_COMMAND, 0, &[1, 2, 3]); // 3 bytes: ignored
        assert_eq!(cfg.read(REG_COMMAND), 0x0000_0006);
    }
}
