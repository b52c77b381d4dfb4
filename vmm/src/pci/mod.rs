//! PCI: the root bus the guest scans through configuration mechanism #1
//! (ports 0xcf8/0xcfc) and the host bridge at 00:00.0. Virtio devices will
//! sit on this bus as further functions.

pub mod config;
pub mod host_bridge;
pub mod root;

pub use config::ConfigSpace;
pub use host_bridge::HostBridge;
pub use root::{PciConfigIo, PciDevice, PciRoot, PCI_CONFIG_IO_LEN, PCI_CONFIG_IO_PORT};

/// Start of the 32-bit MMIO window handed to PCI BARs (the DSDT's `_CRS`).
pub const PCI_MMIO_START: u64 = 0xc000_0000;
/// End (exclusive) of the 32-bit BAR window: the platform devices, IOAPIC
/// and LAPIC live above it.
pub const PCI_MMIO_END: u64 = 0xfc00_0000;
