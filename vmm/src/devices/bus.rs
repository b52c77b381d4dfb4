//! A bus routes a vCPU's port-I/O or MMIO exits to the device that owns
//! the address range; the VMM has one of each. Unclaimed addresses read as
//! all-ones and swallow writes, like an empty ISA or PCI bus.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A device reached through a bus.
pub trait BusDevice: Send {
    /// A read at `offset` from the device's base address; fill `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write at `offset` from the device's base address.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device shared by two buses (a register block reachable both by port
/// and by MMIO).
impl<D: BusDevice> BusDevice for Arc<Mutex<D>> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(offset, data)
    }
}

/// Why a device could not be put on the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    #[error("bad bus range {base:#x}+{len:#x}")]
    BadRange {
        /// First address.
        base: u64,
        /// Length.
        len: u64,
    },
    /// Another device already owns part of the range.
    #[error("range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap {
        /// First address.
        base: u64,
        /// Length.
        len: u64,
    },
}

struct Slot {
    len: u64,
    device: Box<dyn BusDevice>,
}

/// Address ranges and their devices.
#[derive(Default)]
pub struct Bus {
    // Keyed by base address; ranges never overlap.
    slots: BTreeMap<u64, Slot>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<(u64, u64)> = self.slots.iter().map(|(b, s)| (*b, s.len)).collect();
        f.debug_struct("Bus").field("ranges", &ranges).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives `[base, base + len)` to `device`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Box<dyn BusDevice>,
    ) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        // Ranges already on the bus never wrap (checked here).
        let overlaps_below = self
            .slots
            .range(..=base)
            .next_back()
            .is_some_and(|(b, s)| b + s.len > base);
        let overlaps_above = self
            .slots
            .range(base..)
            .next()
            .is_some_and(|(b, _)| *b < end);
        if overlaps_below || overlaps_above {
            return Err(BusError::Overlap { base, len });
        }
        self.slots.insert(base, Slot { len, device });
        Ok(())
    }

    fn find(&mut self, addr: u64) -> Option<(u64, &mut Slot)> {
        let (base, slot) = self.slots.range_mut(..=addr).next_back()?;
        let offset = addr - base;
        (offset < slot.len).then_some((offset, slot))
    }

    /// Dispatches a read; returns whether a device owned the address.
    pub fn read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, slot)) => {
                slot.device.read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns whether a device owned the address.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, slot)) => {
                slot.device.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Writes = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

    /// Remembers writes and answers reads with the offset.
    struct Recorder(Writes);

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, Box::new(Recorder(log.clone())))
            .unwrap();
        assert!(bus.write(0x3f8, b"a"));
        assert!(bus.write(0x3ff, &[1]));
        assert!(!bus.write(0x400, &[2]));
        assert!(!bus.write(0x3f7, &[3]));
        assert_eq!(*log.lock().unwrap(), vec![(0, vec![b'a']), (7, vec![1])]);
        let mut data = [0u8; 1];
        assert!(bus.read(0x3fd, &mut data));
        assert_eq!(data, [5]);
        let mut none = [0u8; 4];
        assert!(!bus.read(0x80, &mut none));
        assert_eq!(none, [0xff; 4]);
    }

    #[test]
    fn a_shared_device_sees_both_buses() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Mutex::new(Recorder(log.clone())));
        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        pio.insert(0x600, 4, Box::new(shared.clone())).unwrap();
        mmio.insert(0xfe00_0000, 0x1000, Box::new(shared)).unwrap();
        assert!(pio.write(0x600, &[1]));
        assert!(mmio.write(0xfe00_0004, &[2]));
        assert_eq!(*log.lock().unwrap(), vec![(0, vec![1]), (4, vec![2])]);
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, Box::new(Recorder(log.clone())))
            .unwrap();
        for (base, len) in [(0x3f0, 9), (0x3ff, 1), (0x3f8, 8), (0x3fa, 2)] {
            assert_eq!(
                bus.insert(base, len, Box::new(Recorder(log.clone()))),
                Err(BusError::Overlap { base, len })
            );
        }
        assert!(bus
            .insert(0x3f0, 8, Box::new(Recorder(log.clone())))
            .is_ok());
        assert!(bus
            .insert(0x400, 1, Box::new(Recorder(log.clone())))
            .is_ok());
        assert_eq!(
            bus.insert(u64::MAX - 8, 0x20, Box::new(Recorder(log.clone()))),
            Err(BusError::BadRange {
                base: u64::MAX - 8,
                len: 0x20
            })
        );
        assert!(bus.insert(0x500, 0, Box::new(Recorder(log))).is_err());
    }
}
