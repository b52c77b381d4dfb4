//! The ACPI sleep control register of the hardware-reduced FADT: how the
//! guest powers off (`poweroff`, `halt -p`). Writing SLP_EN with the `_S5_`
//! sleep type ends the VM; other sleep states are not offered.

use std::sync::Arc;

use super::bus::BusDevice;
use crate::arch::x86_64::acpi::S5_SLEEP_TYPE;
use crate::exit::{ExitReason, ExitSignal};

/// SLP_EN bit of the sleep control register.
const SLP_EN: u8 = 1 << 5;
/// SLP_TYP field (bits 4:2).
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;

/// The sleep control (and status) register, one byte.
#[derive(Debug)]
pub struct AcpiPm {
    exit: Arc<ExitSignal>,
}

impl AcpiPm {
    /// A register whose S5 write raises [`ExitReason::PowerOff`].
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        AcpiPm { exit }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Sleep status: nothing to report.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (0, [value]) = (offset, data) {
            let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
            if value & SLP_EN != 0 && sleep_type == S5_SLEEP_TYPE {
                self.exit.raise(ExitReason::PowerOff);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_s5_with_slp_en_powers_off() {
        let exit = Arc::new(ExitSignal::new());
        let mut pm = AcpiPm::new(exit.clone());
        pm.write(0, &[5 << 2]); // no SLP_EN
        pm.write(0, &[SLP_EN | (3 << 2)]); // S3
        pm.write(0, &[SLP_EN | (5 << 2), 0]); // wrong width
        pm.write(1, &[SLP_EN | (5 << 2)]); // wrong offset
        assert!(!exit.is_raised());
        pm.write(0, &[SLP_EN | (5 << 2)]);
        assert_eq!(exit.get(), Some(ExitReason::PowerOff));
    }
}
