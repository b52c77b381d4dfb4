//! The port-I/O bus: routes a vCPU's `in`/`out` exits to the device that
//! owns the port range. Unclaimed ports read as all-ones and swallow
//! writes, like an empty ISA bus.

use std::collections::BTreeMap;

/// A device reached through I/O ports.
pub trait PioDevice: Send {
    /// `in` at `offset` from the device's base port; fill `data`.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// `out` at `offset` from the device's base port.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// Why a device could not be put on the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or runs past port 0xffff.
    #[error("bad port range {base:#x}+{len}")]
    BadRange {
        /// First port.
        base: u16,
        /// Number of ports.
        len: u16,
    },
    /// Another device already owns part of the range.
    #[error("ports {base:#x}+{len} overlap a device already on the bus")]
    Overlap {
        /// First port.
        base: u16,
        /// Number of ports.
        len: u16,
    },
}

struct Slot {
    len: u16,
    device: Box<dyn PioDevice>,
}

/// Port ranges and their devices.
#[derive(Default)]
pub struct PioBus {
    // Keyed by base port; ranges never overlap.
    slots: BTreeMap<u16, Slot>,
}

impl std::fmt::Debug for PioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges: Vec<(u16, u16)> = self.slots.iter().map(|(b, s)| (*b, s.len)).collect();
        f.debug_struct("PioBus").field("ranges", &ranges).finish()
    }
}

impl PioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives ports `[base, base + len)` to `device`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Box<dyn PioDevice>,
    ) -> Result<(), BusError> {
        let end = u32::from(base) + u32::from(len);
        if len == 0 || end > 0x1_0000 {
            return Err(BusError::BadRange { base, len });
        }
        let overlaps_below = self
            .slots
            .range(..=base)
            .next_back()
            .is_some_and(|(b, s)| u32::from(*b) + u32::from(s.len) > u32::from(base));
        let overlaps_above = self
            .slots
            .range(base..)
            .next()
            .is_some_and(|(b, _)| u32::from(*b) < end);
        if overlaps_below || overlaps_above {
            return Err(BusError::Overlap { base, len });
        }
        self.slots.insert(base, Slot { len, device });
        Ok(())
    }

    fn find(&mut self, port: u16) -> Option<(u16, &mut Slot)> {
        let (base, slot) = self.slots.range_mut(..=port).next_back()?;
        let offset = port - base;
        (offset < slot.len).then_some((offset, slot))
    }

    /// Dispatches an `in`; returns whether a device owned the port.
    pub fn read(&mut self, port: u16, data: &mut [u8]) -> bool {
        match self.find(port) {
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

    /// Dispatches an `out`; returns whether a device owned the port.
    pub fn write(&mut self, port: u16, data: &[u8]) -> bool {
        match self.find(port) {
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

    type Writes = Arc<Mutex<Vec<(u16, Vec<u8>)>>>;

    /// Remembers writes and answers reads with the offset.
    struct Recorder(Writes);

    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut bus = PioBus::new();
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
    fn overlaps_and_bad_ranges_are_refused() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut bus = PioBus::new();
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
            bus.insert(0xfff0, 0x20, Box::new(Recorder(log.clone()))),
            Err(BusError::BadRange {
                base: 0xfff0,
                len: 0x20
            })
        );
        assert!(bus.insert(0x500, 0, Box::new(Recorder(log))).is_err());
    }
}
