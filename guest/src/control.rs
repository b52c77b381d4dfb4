//! Milestones for the cradle VMM's control port.
//!
//! Encoding (one 32-bit `outl` to I/O port [`PORT`]):
//!
//! | value | meaning |
//! |---|---|
//! | `0x0100_0001` | cradle-init started (PID 1 running) |
//! | `0x0100_0002` | a container's command was exec'd |
//! | `0x0100_0003` | network configured |
//! | `0x0100_0004` | vdocker listening |
//! | `0x0200_0000 \| status` | the pod ended with exit status `status` (0..=255), power-off follows |
//!
//! This is the VMM's encoding (`vmm/src/control.rs`): command in the top
//! byte (1 milestone, 2 exit), argument below.
//!
//! Only written when the pod config sets `control_port` (the launcher does
//! so for cradle VMs): on any other machine port 0x600 may belong to a real
//! device.

/// The control port.
pub const PORT: u16 = 0x600;

/// A milestone value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// PID 1 is running.
    InitStarted,
    /// A container's command was exec'd.
    ContainerStarted,
    /// Network configured.
    NetworkUp,
    /// vdocker is listening.
    VdockerListening,
    /// The pod ended with this status.
    Exit(u8),
}

impl Milestone {
    /// The 32-bit value written to the port.
    pub fn value(self) -> u32 {
        match self {
            Milestone::InitStarted => 0x0100_0001,
            Milestone::ContainerStarted => 0x0100_0002,
            Milestone::NetworkUp => 0x0100_0003,
            Milestone::VdockerListening => 0x0100_0004,
            Milestone::Exit(s) => 0x0200_0000 | u32::from(s),
        }
    }
}

/// Writes milestones when enabled.
#[derive(Debug, Clone, Copy)]
pub struct ControlPort {
    enabled: bool,
}

impl ControlPort {
    /// A port that writes only when `enabled` and I/O permission was
    /// granted (x86 only).
    pub fn new(enabled: bool) -> Self {
        #[cfg(target_arch = "x86_64")]
        let enabled = enabled && {
            // SAFETY: ioperm only changes this process's I/O bitmap.
            unsafe { libc::ioperm(u64::from(PORT), 4, 1) == 0 }
        };
        #[cfg(not(target_arch = "x86_64"))]
        let enabled = false;
        Self { enabled }
    }

    /// Whether writes reach the port.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Reports a milestone (no-op when disabled).
    pub fn report(&self, m: Milestone) {
        if !self.enabled {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            let v = m.value();
            // SAFETY: ioperm granted access to PORT..PORT+4 in new(); an
            // outl there has no effect on this process's memory.
            unsafe {
                std::arch::asm!("out dx, eax", in("dx") PORT, in("eax") v, options(nomem, nostack, preserves_flags));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(Milestone::InitStarted.value(), 0x0100_0001);
        assert_eq!(Milestone::Exit(3).value(), 0x0200_0003);
        assert_eq!(Milestone::Exit(0).value(), 0x0200_0000);
        // A disabled port never touches the hardware.
        ControlPort::new(false).report(Milestone::InitStarted);
        assert!(!ControlPort::new(false).enabled());
    }
}
