//! Bus 0 and configuration mechanism #1: the guest writes the function and
//! register to the address port 0xcf8, then reads or writes 0xcfc-0xcff.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::devices::bus::BusDevice;

/// The address port; the data port is 4 bytes above it.
pub const PCI_CONFIG_IO_PORT: u16 = 0xcf8;
/// Address (4) and data (4) ports.
pub const PCI_CONFIG_IO_LEN: u16 = 8;
/// Devices per bus.
pub const DEVICES_PER_BUS: u8 = 32;

const ENABLE: u32 = 1 << 31;

/// A PCI function as the root bus sees it.
pub trait PciDevice: Send {
    /// Reads configuration dword `reg` (0..64).
    fn read_config(&mut self, reg: usize) -> u32;
    /// Writes `data` (1, 2 or 4 bytes) at byte `offset` of dword `reg`.
    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]);
}

/// Why a device could not be added.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// All 32 device numbers are taken.
    #[error("PCI bus 0 is full")]
    BusFull,
}

/// Bus 0: device number to function 0 of that device.
#[derive(Default)]
pub struct PciRoot {
    devices: BTreeMap<u8, Box<dyn PciDevice>>,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PciRoot")
            .field("devices", &self.devices.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl PciRoot {
    /// Bus 0 with the host bridge at device 0.
    pub fn new() -> Self {
        let mut root = PciRoot::default();
        root.devices
            .insert(0, Box::new(super::host_bridge::HostBridge::new()));
        root
    }

    /// Puts `device` at the lowest free device number and returns it.
    pub fn add(&mut self, device: Box<dyn PciDevice>) -> Result<u8, PciError> {
        let slot = (0..DEVICES_PER_BUS)
            .find(|d| !self.devices.contains_key(d))
            .ok_or(PciError::BusFull)?;
        self.devices.insert(slot, device);
        Ok(slot)
    }

    /// Reads a configuration dword; absent functions read all-ones.
    pub fn read(&mut self, bus: u8, device: u8, function: u8, reg: usize) -> u32 {
        match (bus, function, self.devices.get_mut(&device)) {
            (0, 0, Some(dev)) => dev.read_config(reg),
            _ => u32::MAX,
        }
    }

    /// Writes configuration bytes; writes to absent functions vanish.
    pub fn write(
        &mut self,
        bus: u8,
        device: u8,
        function: u8,
        reg: usize,
        offset: usize,
        data: &[u8],
    ) {
        if let (0, 0, Some(dev)) = (bus, function, self.devices.get_mut(&device)) {
            dev.write_config(reg, offset, data);
        }
    }
}

/// Ports 0xcf8-0xcff on the port bus.
#[derive(Debug)]
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

impl PciConfigIo {
    /// Configuration access to `root`.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        PciConfigIo { root, address: 0 }
    }

    /// (bus, device, function, dword) the address register selects, if
    /// enabled.
    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        (self.address & ENABLE != 0).then_some((
            (self.address >> 16) as u8,
            ((self.address >> 11) & 0x1f) as u8,
            ((self.address >> 8) & 0x7) as u8,
            ((self.address >> 2) & 0x3f) as usize,
        ))
    }

    fn root(&self) -> std::sync::MutexGuard<'_, PciRoot> {
        self.root.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            0 if data.len() == 4 => self.address,
            4..=7 => match self.target() {
                Some((b, d, f, reg)) => self.root().read(b, d, f, reg) >> ((offset - 4) * 8),
                None => u32::MAX,
            },
            _ => u32::MAX,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 if data.len() == 4 => {
                // Length checked on the line above.
                self.address = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            }
            4..=7 => {
                if let Some((b, d, f, reg)) = self.target() {
                    self.root().write(b, d, f, reg, (offset - 4) as usize, data);
                }
            }
            // Narrow writes to the address port (the old mechanism #2
            // probe) are ignored.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::host_bridge::{HOST_BRIDGE_DEVICE, HOST_BRIDGE_VENDOR};

    fn io() -> PciConfigIo {
        PciConfigIo::new(Arc::new(Mutex::new(PciRoot::new())))
    }

    fn select(io: &mut PciConfigIo, bus: u8, dev: u8, func: u8, reg: u32) {
        let addr = ENABLE
            | (u32::from(bus) << 16)
            | (u32::from(dev) << 11)
            | (u32::from(func) << 8)
            | (reg << 2);
        io.write(0, &addr.to_le_bytes());
    }

    fn read32(io: &mut PciConfigIo) -> u32 {
        let mut d = [0u8; 4];
        io.read(4, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn host_bridge_answers_at_00_00_0() {
        let mut io = io();
        select(&mut io, 0, 0, 0, 0);
        assert_eq!(
            read32(&mut io),
            u32::from(HOST_BRIDGE_VENDOR) | (u32::from(HOST_BRIDGE_DEVICE) << 16)
        );
        // Byte read of the class code's top byte (offset 0x0b).
        select(&mut io, 0, 0, 0, 2);
        let mut b = [0u8; 1];
        io.read(7, &mut b);
        assert_eq!(b, [0x06]);
        // The address register reads back (Linux's type-1 probe).
        let mut a = [0u8; 4];
        io.read(0, &mut a);
        assert_eq!(u32::from_le_bytes(a), ENABLE | (2 << 2));
    }

    #[test]
    fn absent_functions_and_disabled_access_read_all_ones() {
        let mut io = io();
        select(&mut io, 0, 5, 0, 0);
        assert_eq!(read32(&mut io), u32::MAX);
        select(&mut io, 0, 0, 1, 0);
        assert_eq!(read32(&mut io), u32::MAX);
        select(&mut io, 1, 0, 0, 0);
        assert_eq!(read32(&mut io), u32::MAX);
        io.write(0, &0u32.to_le_bytes());
        assert_eq!(read32(&mut io), u32::MAX);
    }

    #[test]
    fn writes_reach_the_function_and_respect_masks() {
        let mut io = io();
        select(&mut io, 0, 0, 0, 1);
        io.write(4, &[0x06]);
        assert_eq!(read32(&mut io) & 0xffff, 0x0006);
        select(&mut io, 0, 0, 0, 0);
        io.write(4, &[0, 0, 0, 0]);
        assert_eq!(read32(&mut io) & 0xffff, u32::from(HOST_BRIDGE_VENDOR));
    }

    #[test]
    fn devices_fill_free_slots_until_the_bus_is_full() {
        let mut root = PciRoot::new();
        for expected in 1..DEVICES_PER_BUS {
            assert_eq!(
                root.add(Box::new(crate::pci::HostBridge::new())),
                Ok(expected)
            );
        }
        assert_eq!(
            root.add(Box::new(crate::pci::HostBridge::new())),
            Err(PciError::BusFull)
        );
    }
}
