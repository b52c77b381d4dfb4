//! The i8042 keyboard controller, reduced to what a VM needs: its CPU reset
//! command (0xfe to port 0x64), which is how Linux reboots without ACPI.
//! vm-superio models the device; the reset ends the VM.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// First i8042 port (data); the command/status port is 0x64.
pub const I8042_PORT: u16 = 0x60;
/// Ports 0x60..=0x64.
pub const I8042_PORT_LEN: u16 = 5;

/// Raises [`ExitReason::Reset`].
#[derive(Debug)]
pub struct ResetTrigger(Arc<ExitSignal>);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.raise(ExitReason::Reset);
        Ok(())
    }
}

/// The i8042 on the port bus.
pub struct I8042 {
    device: I8042Device<ResetTrigger>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042").finish_non_exhaustive()
    }
}

impl I8042 {
    /// An i8042 whose reset raises `exit`.
    pub fn new(exit: Arc<ExitSignal>) -> Self {
        I8042 {
            device: I8042Device::new(ResetTrigger(exit)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (data, u8::try_from(offset)) {
            ([byte], Ok(offset)) => *byte = self.device.read(offset),
            (data, _) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let ([value], Ok(offset)) = (data, u8::try_from(offset)) {
            // The trigger cannot fail.
            let _ = self.device.write(offset, *value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_ends_the_vm_and_nothing_else_does() {
        let exit = Arc::new(ExitSignal::new());
        let mut dev = I8042::new(exit.clone());
        dev.write(0, &[0xfe]); // data port: ignored
        dev.write(4, &[0xd1]); // another command
        dev.write(4, &[0xfe, 0]); // wrong width
        assert!(!exit.is_raised());
        dev.write(4, &[0xfe]);
        assert_eq!(exit.get(), Some(ExitReason::Reset));
    }
}
