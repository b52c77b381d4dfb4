//! Milestones for the cradle VMM's control register.
//!
//! The VMM's protocol (`docs/vmm.md`, *Control register*): one 32-bit
//! `outl` to I/O port [`PORT`] per message; bits 31:24 are the command.
//!
//! | value | meaning |
//! |---|---|
//! | `0x0100_0001` | milestone: init started (PID 1 running) |
//! | `0x0100_0002` | milestone: a container's command was exec'd |
//! | `0x0100_0003` | milestone 3: network configured |
//! | `0x0100_0004` | milestone 4: vdocker listening |
//! | `0x0200_00SS` | the pod exited with status `SS` (0..=255); the VM stops and kcradle exits with it |
//!
//! Only written when the pod config sets `control_port` (the launcher does
//! so for cradle VMs): on other machines port 0x600 may belong to a real
//! device (on QEMU's q35 it is the ACPI PM block).

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
        const MILESTONE: u32 = 0x0100_0000;
        const EXIT: u32 = 0x0200_0000;
        match self {
            Milestone::InitStarted => MILESTONE | 1,
            Milestone::ContainerStarted => MILESTONE | 2,
            Milestone::NetworkUp => MILESTONE | 3,
            Milestone::VdockerListening => MILESTONE | 4,
            Milestone::Exit(s) => EXIT | u32::from(s),
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
        assert_eq!(Milestone::ContainerStarted.value(), 0x0100_0002);
        assert_eq!(Milestone::Exit(42).value(), 0x0200_002a);
        assert_eq!(Milestone::Exit(0).value(), 0x0200_0000);
        // A disabled port never touches the hardware.
        ControlPort::new(false).report(Milestone::InitStarted);
        assert!(!ControlPort::new(false).enabled());
    }
}
