//! The host bridge at 00:00.0: what tells the guest (and Linux's
//! configuration-mechanism sanity check) that bus 0 exists.

use super::config::{ConfigSpace, PciIds};
use super::root::PciDevice;

/// Red Hat, Inc.: the vendor of QEMU's generic host bridge.
pub const HOST_BRIDGE_VENDOR: u16 = 0x1b36;
/// QEMU PCIe host bridge.
pub const HOST_BRIDGE_DEVICE: u16 = 0x0008;

/// The host bridge function.
#[derive(Debug)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBridge {
    /// A host bridge (class 06.00.00).
    pub fn new() -> Self {
        HostBridge {
            config: ConfigSpace::new(PciIds {
                vendor: HOST_BRIDGE_VENDOR,
                device: HOST_BRIDGE_DEVICE,
                class: [0x06, 0x00, 0x00],
                revision: 0,
                subsystem_vendor: 0,
                subsystem: 0,
            }),
        }
    }
}

impl PciDevice for HostBridge {
    fn read_config(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data)
    }
}
