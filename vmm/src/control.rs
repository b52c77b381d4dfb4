//! The control port: how the guest init tells the VMM about milestones and
//! the pod's exit status (issue #6).
//!
//! One 32-bit `out` to [`CONTROL_PORT`] per message, or four byte-wide
//! `out`s to ports 0x600..=0x603 in that order (what a write to
//! `/dev/port` does, for guests with only a shell): the byte to 0x603
//! completes the message. Bits 31:24 are the command, the rest its
//! argument:
//!
//! | value | meaning |
//! |---|---|
//! | `0x0100_0000 \| id` | milestone `id` reached (1: init started, 2: container started) |
//! | `0x0200_0000 \| status` | the pod exited with `status` (0-255); the VM stops |
//!
//! The same register is also at guest-physical [`CONTROL_MMIO_BASE`], for
//! guests that can reach neither ports nor `/dev/port` (the Debian cloud
//! kernel has no `/dev/port`): `devmem 0xfe000000 32 0x0200002a` reports
//! status 42 from a busybox shell.
//!
//! Anything else, and any access of another width, is counted and ignored:
//! the guest cannot hurt the VMM through this port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::devices::bus::BusDevice;
use crate::exit::{ExitReason, ExitSignal};

/// I/O port of the control device. 0x600 is unused by the PC platform
/// devices the VMM emulates (serial, i8042, PCI config, PIT, RTC).
pub const CONTROL_PORT: u16 = 0x600;
/// Ports used: one 32-bit register.
pub const CONTROL_PORT_LEN: u16 = 4;
/// Guest-physical address of the same register, in the platform-device
/// page at the top of the 32-bit hole (below the IOAPIC at 0xfec0_0000).
pub const CONTROL_MMIO_BASE: u64 = 0xfe00_0000;
/// One page, so `devmem` maps nothing else.
pub const CONTROL_MMIO_LEN: u64 = 0x1000;

const CMD_MILESTONE: u32 = 0x01;
const CMD_EXIT: u32 = 0x02;

/// A milestone of the guest's boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// The guest init (PID 1) started.
    InitStarted,
    /// The container's process was started.
    ContainerStarted,
    /// A milestone this VMM does not know by name.
    Other(u32),
}

impl std::fmt::Display for Milestone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Milestone::InitStarted => write!(f, "init-started"),
            Milestone::ContainerStarted => write!(f, "container-started"),
            Milestone::Other(id) => write!(f, "milestone-{id}"),
        }
    }
}

/// A decoded control-port message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMessage {
    /// A boot milestone.
    Milestone(Milestone),
    /// The pod's exit status.
    Exit(u8),
}

/// Decodes a guest write to [`CONTROL_PORT`]. Only 32-bit writes carry a
/// value; any other width is hostile or a bug and is ignored (`None`).
pub fn decode_write(data: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = data.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// The message a 32-bit value carries, if it is one.
pub fn decode_message(value: u32) -> Option<ControlMessage> {
    let arg = value & 0x00ff_ffff;
    match value >> 24 {
        CMD_MILESTONE => Some(ControlMessage::Milestone(match arg {
            1 => Milestone::InitStarted,
            2 => Milestone::ContainerStarted,
            id => Milestone::Other(id),
        })),
        CMD_EXIT if arg <= 0xff => Some(ControlMessage::Exit(arg as u8)),
        _ => None,
    }
}

/// Encodes `message` as the guest writes it (for guest-side code and tests).
pub fn encode_message(message: ControlMessage) -> u32 {
    match message {
        ControlMessage::Milestone(Milestone::InitStarted) => CMD_MILESTONE << 24 | 1,
        ControlMessage::Milestone(Milestone::ContainerStarted) => CMD_MILESTONE << 24 | 2,
        ControlMessage::Milestone(Milestone::Other(id)) => CMD_MILESTONE << 24 | (id & 0xff_ffff),
        ControlMessage::Exit(status) => CMD_EXIT << 24 | u32::from(status),
    }
}

/// The control device: logs milestones with their time since the VMM
/// started and ends the VM with the guest's exit status.
#[derive(Debug)]
pub struct ControlDevice {
    started: Instant,
    exit: Arc<ExitSignal>,
    milestones: Vec<(Milestone, Duration)>,
    ignored: u64,
    /// Bytes of a message written one port at a time.
    latch: [u8; 4],
}

impl ControlDevice {
    /// A device timing milestones from `started`.
    pub fn new(started: Instant, exit: Arc<ExitSignal>) -> Self {
        ControlDevice {
            started,
            exit,
            milestones: Vec::new(),
            ignored: 0,
            latch: [0; 4],
        }
    }

    /// Milestones seen so far, with their time since start.
    pub fn milestones(&self) -> &[(Milestone, Duration)] {
        &self.milestones
    }

    /// Accesses that were not a valid message.
    pub fn ignored(&self) -> u64 {
        self.ignored
    }
}

impl BusDevice for ControlDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let value = match (offset, data) {
            (0, [_, _, _, _]) => decode_write(data),
            (0..=2, [byte]) => {
                self.latch[offset as usize] = *byte;
                return;
            }
            (3, [byte]) => {
                self.latch[3] = *byte;
                Some(u32::from_le_bytes(std::mem::take(&mut self.latch)))
            }
            _ => None,
        };
        match value.and_then(decode_message) {
            Some(ControlMessage::Milestone(m)) => {
                let at = self.started.elapsed();
                tracing::info!(milestone = %m, ms = at.as_secs_f64() * 1e3, "guest milestone");
                self.milestones.push((m, at));
            }
            Some(ControlMessage::Exit(status)) => {
                tracing::info!(status, "guest reported its exit status");
                self.exit.raise(ExitReason::Status(status));
            }
            None => self.ignored += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dword_writes_decode() {
        assert_eq!(decode_write(&[0x78, 0x56, 0x34, 0x12]), Some(0x1234_5678));
        assert_eq!(decode_write(&[1]), None);
        assert_eq!(decode_write(&[1, 2]), None);
        assert_eq!(decode_write(&[1, 2, 3, 4, 5, 6, 7, 8]), None);
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            ControlMessage::Milestone(Milestone::InitStarted),
            ControlMessage::Milestone(Milestone::ContainerStarted),
            ControlMessage::Milestone(Milestone::Other(9)),
            ControlMessage::Exit(0),
            ControlMessage::Exit(255),
        ] {
            assert_eq!(decode_message(encode_message(m)), Some(m));
        }
        assert_eq!(encode_message(ControlMessage::Exit(3)), 0x0200_0003);
        assert_eq!(decode_message(0x0200_0100), None, "status above 255");
        assert_eq!(decode_message(0x0300_0000), None);
        assert_eq!(decode_message(0), None);
    }

    #[test]
    fn byte_writes_assemble_a_message() {
        let exit = Arc::new(ExitSignal::new());
        let mut dev = ControlDevice::new(Instant::now(), exit.clone());
        // What `printf '\001\000\000\001' | dd of=/dev/port seek=1536` does.
        for (offset, byte) in [1u8, 0, 0, 1].into_iter().enumerate() {
            dev.write(offset as u64, &[byte]);
        }
        assert_eq!(dev.milestones()[0].0, Milestone::InitStarted);
        for (offset, byte) in 0x0200_0009u32.to_le_bytes().into_iter().enumerate() {
            dev.write(offset as u64, &[byte]);
        }
        assert_eq!(exit.get(), Some(ExitReason::Status(9)));
        assert_eq!(dev.ignored(), 0);
    }

    #[test]
    fn device_records_milestones_and_raises_the_exit() {
        let exit = Arc::new(ExitSignal::new());
        let mut dev = ControlDevice::new(Instant::now(), exit.clone());
        dev.write(0, &0x0100_0001u32.to_le_bytes());
        dev.write(0, &[1, 2]);
        dev.write(2, &0x0200_0005u32.to_le_bytes());
        dev.write(0, &0x7f00_0000u32.to_le_bytes());
        assert_eq!(dev.ignored(), 3);
        assert!(!exit.is_raised());
        assert_eq!(dev.milestones().len(), 1);
        assert_eq!(dev.milestones()[0].0, Milestone::InitStarted);
        dev.write(0, &0x0200_002au32.to_le_bytes());
        assert_eq!(exit.get(), Some(ExitReason::Status(42)));
    }
}
