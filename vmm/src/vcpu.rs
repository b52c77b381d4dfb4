//! The vCPU loop: one thread per vCPU, running `KVM_RUN` and handing port
//! accesses to the shared bus until the VM is told to stop.

use std::sync::{Mutex, PoisonError};

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::bus::PioBus;
use crate::exit::{ExitReason, ExitSignal};

/// Runs `vcpu` until `exit` is raised (by this vCPU, another one, a device
/// or the VMM, which then kicks this thread out of `KVM_RUN`).
pub fn run_vcpu(id: usize, vcpu: &mut VcpuFd, bus: &Mutex<PioBus>, exit: &ExitSignal) {
    while !exit.is_raised() {
        let result = vcpu.run();
        let lock = || bus.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(VcpuExit::IoOut(port, data)) => {
                lock().write(port, data);
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                lock().read(port, data);
            }
            // No MMIO devices yet: reads see an empty bus, writes vanish.
            Ok(VcpuExit::MmioRead(_, data)) => data.fill(0xff),
            Ok(VcpuExit::MmioWrite(..)) => {}
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
