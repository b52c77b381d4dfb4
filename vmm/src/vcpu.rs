//! The vCPU loop: one thread per vCPU, running `KVM_RUN` and handing port
//! and MMIO accesses to the shared buses until the VM is told to stop.

use std::sync::{Mutex, PoisonError};

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::bus::Bus;
use crate::exit::{ExitReason, ExitSignal};

/// The port-I/O and MMIO buses every vCPU shares.
#[derive(Debug, Default)]
pub struct Buses {
    /// I/O ports.
    pub pio: Mutex<Bus>,
    /// Guest-physical addresses outside RAM.
    pub mmio: Mutex<Bus>,
}

fn lock(bus: &Mutex<Bus>) -> std::sync::MutexGuard<'_, Bus> {
    // A device that panicked left the bus map itself intact.
    bus.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `vcpu` until `exit` is raised (by this vCPU, another one, a device
/// or the VMM, which then kicks this thread out of `KVM_RUN`).
pub fn run_vcpu(id: usize, vcpu: &mut VcpuFd, buses: &Buses, exit: &ExitSignal) {
    while !exit.is_raised() {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                lock(&buses.pio).write(u64::from(port), data);
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                lock(&buses.pio).read(u64::from(port), data);
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                lock(&buses.mmio).read(addr, data);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                lock(&buses.mmio).write(addr, data);
            }
            Ok(VcpuExit::Shutdown) => exit.raise(ExitReason::Shutdown(format!(
                "vCPU {id}: shutdown (triple fault)"
            ))),
            Ok(VcpuExit::SystemEvent(kind, _)) => exit.raise(match kind {
                KVM_SYSTEM_EVENT_RESET => ExitReason::Reset,
                KVM_SYSTEM_EVENT_SHUTDOWN => ExitReason::PowerOff,
                KVM_SYSTEM_EVENT_CRASH => {
                    ExitReason::Shutdown(format!("vCPU {id}: guest crash event"))
                }
                other => ExitReason::Shutdown(format!("vCPU {id}: system event {other}")),
            }),
            Ok(VcpuExit::Hlt) => exit.raise(ExitReason::Shutdown(format!(
                "vCPU {id}: halted without an in-kernel irqchip"
            ))),
            Ok(other) => exit.raise(ExitReason::VcpuError(format!(
                "vCPU {id}: unexpected exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => exit.raise(ExitReason::VcpuError(format!("vCPU {id}: KVM_RUN: {e}"))),
        }
    }
}
