//! The MSI-X vectors of one virtio-pci function: the table the guest
//! programs, the pending bit array, and one irqfd per vector.
//!
//! Completions reach the guest without kcradle: the daemon writes a vector's
//! eventfd and KVM, through an irqfd, raises the MSI the table entry holds.
//! Masking therefore works on the irqfd: while a vector is masked (its own
//! mask bit, the function mask, or MSI-X disabled) its irqfd is detached
//! from KVM, so the daemon's signals pile up in the eventfd; that counter is
//! the vector's pending bit. Unmasking re-attaches the irqfd, and KVM
//! injects at once if the eventfd is already signalled: the pending
//! message is delivered on unmask, as the PCI spec asks.

use std::sync::{Arc, Mutex, PoisonError};

use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use super::pci::TransportError;
use crate::irq::{GsiRouter, MsiMessage};

/// Bytes per MSI-X table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// Vector control: the per-vector mask bit.
pub const MSIX_ENTRY_MASKED: u32 = 1;

#[derive(Debug, Clone, Copy, Default)]
struct MsixEntry {
    address: u64,
    data: u32,
    control: u32,
}

/// The vectors, their eventfds and their routes.
pub struct MsixVectors {
    vm: Arc<VmFd>,
    router: Arc<Mutex<GsiRouter>>,
    entries: Vec<MsixEntry>,
    /// One per vector, each routed to `gsis[i]` while attached.
    calls: Vec<EventFd>,
    gsis: Vec<u32>,
    /// Whether vector i's irqfd is attached to KVM.
    attached: Vec<bool>,
    /// Message control: MSI-X enable.
    enabled: bool,
    /// Message control: function mask.
    function_masked: bool,
}

impl std::fmt::Debug for MsixVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixVectors")
            .field("vectors", &self.entries.len())
            .field("enabled", &self.enabled)
            .field("function_masked", &self.function_masked)
            .finish_non_exhaustive()
    }
}

impl MsixVectors {
    /// `count` vectors, all masked, MSI-X disabled; each gets a GSI and an
    /// eventfd, attached to KVM only once the guest unmasks it.
    pub fn new(
        vm: Arc<VmFd>,
        router: Arc<Mutex<GsiRouter>>,
        count: usize,
    ) -> Result<Self, TransportError> {
        let mut calls = Vec::with_capacity(count);
        let mut gsis = Vec::with_capacity(count);
        for _ in 0..count {
            gsis.push(
                router
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .allocate()?,
            );
            calls.push(EventFd::new(libc::EFD_NONBLOCK).map_err(TransportError::EventFd)?);
        }
        Ok(MsixVectors {
            vm,
            router,
            entries: vec![
                MsixEntry {
                    control: MSIX_ENTRY_MASKED,
                    ..Default::default()
                };
                count
            ],
            calls,
            gsis,
            attached: vec![false; count],
            enabled: false,
            function_masked: false,
        })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Vector `i`'s eventfd (what a daemon signals).
    pub fn call(&self, i: usize) -> Option<&EventFd> {
        self.calls.get(i)
    }

    /// Whether vector `i` may not send its message now.
    pub fn masked(&self, i: usize) -> bool {
        !self.enabled
            || self.function_masked
            || self
                .entries
                .get(i)
                .is_none_or(|e| e.control & MSIX_ENTRY_MASKED != 0)
    }

    /// Whether vector `i` has a message waiting: it was signalled while
    /// masked. (An unmasked vector's signals go straight to KVM.)
    pub fn pending(&self, i: usize) -> bool {
        self.masked(i) && self.calls.get(i).is_some_and(readable)
    }

    /// A 32-bit read at `offset` in the table.
    pub fn read_table(&self, offset: u64) -> u32 {
        let (index, field) = (
            (offset / MSIX_ENTRY_SIZE) as usize,
            offset % MSIX_ENTRY_SIZE,
        );
        self.entries.get(index).map_or(0, |e| match field {
            0 => e.address as u32,
            4 => (e.address >> 32) as u32,
            8 => e.data,
            _ => e.control,
        })
    }

    /// A 32-bit write at `offset` in the table.
    pub fn write_table(&mut self, offset: u64, value: u32) {
        let (index, field) = (
            (offset / MSIX_ENTRY_SIZE) as usize,
            offset % MSIX_ENTRY_SIZE,
        );
        let Some(entry) = self.entries.get_mut(index) else {
            return;
        };
        match field {
            0 => entry.address = (entry.address & !0xffff_ffff) | u64::from(value),
            4 => entry.address = (entry.address & 0xffff_ffff) | (u64::from(value) << 32),
            8 => entry.data = value,
            _ => entry.control = value & MSIX_ENTRY_MASKED,
        }
        // A masked vector keeps its last route: the guest masks while it
        // reprograms and unmasks after, which commits the new message.
        self.sync(index, true);
    }

    /// A 32-bit read at `offset` in the pending bit array.
    pub fn read_pba(&self, offset: u64) -> u32 {
        let first = (offset / 4 * 32) as usize;
        (0..32)
            .filter(|bit| self.pending(first + bit))
            .fold(0, |acc, bit| acc | (1 << bit))
    }

    /// The guest wrote the message control register.
    pub fn set_control(&mut self, enabled: bool, function_masked: bool) {
        if (enabled, function_masked) == (self.enabled, self.function_masked) {
            return;
        }
        self.enabled = enabled;
        self.function_masked = function_masked;
        for i in 0..self.entries.len() {
            self.sync(i, false);
        }
    }

    /// Attaches or detaches vector `i`'s irqfd to match its mask; with
    /// `reroute`, an unmasked vector's route is rewritten first.
    fn sync(&mut self, i: usize, reroute: bool) {
        let want = !self.masked(i);
        let (Some(&gsi), Some(call), Some(entry)) =
            (self.gsis.get(i), self.calls.get(i), self.entries.get(i))
        else {
            return;
        };
        if want && (reroute || !self.attached[i]) {
            let mut router = self.router.lock().unwrap_or_else(PoisonError::into_inner);
            router.set_msi(
                gsi,
                MsiMessage {
                    address: entry.address,
                    data: entry.data,
                },
            );
            if let Err(e) = router.commit(&self.vm) {
                tracing::error!(error = %e, "MSI-X route update failed");
            }
        }
        if want && !self.attached[i] {
            // KVM injects at once if the eventfd was signalled meanwhile.
            match self.vm.register_irqfd(call, gsi) {
                Ok(()) => self.attached[i] = true,
                Err(e) => tracing::error!(error = %e, vector = i, "KVM_IRQFD attach failed"),
            }
        } else if !want && self.attached[i] {
            match self.vm.unregister_irqfd(call, gsi) {
                Ok(()) => self.attached[i] = false,
                Err(e) => tracing::error!(error = %e, vector = i, "KVM_IRQFD detach failed"),
            }
        }
    }
}

/// Whether `fd` has a nonzero count, without consuming it.
fn readable(fd: &EventFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; the eventfd outlives the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n == 1 && pfd.revents & libc::POLLIN != 0
}
