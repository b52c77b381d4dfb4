//! The virtio-pci modern transport (virtio 1.x, section 4.1): a PCI
//! function whose BAR 0 holds the common configuration, ISR, device
//! configuration, notification area and the MSI-X table.
//!
//! Kicks never reach this code once set up: every queue's notification
//! address is an ioeventfd the backend daemon polls. MSI-X vectors are
//! irqfds on GSIs routed to the messages the guest programs, so the daemon
//! interrupts the guest directly.

use std::sync::{Arc, Mutex, PoisonError};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::msix::MsixVectors;
use super::{
    ActiveQueue, QueueState, VirtioBackend, NO_VECTOR, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
    STATUS_NEEDS_RESET, VIRTIO_F_VERSION_1,
};
use crate::devices::bus::BusDevice;
use crate::irq::{GsiRouter, IrqError};
use crate::pci::config::{ConfigSpace, PciIds, REG_BAR0, REG_CAP_PTR, REG_COMMAND};
use crate::pci::PciDevice;

/// Red Hat / virtio vendor ID.
pub const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Modern device IDs are 0x1040 + device type.
pub const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// Size of BAR 0.
pub const BAR0_SIZE: u32 = 0x8000;
/// Common configuration in BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// Common configuration length.
pub const COMMON_LEN: u64 = 0x38;
/// ISR status byte in BAR 0.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration in BAR 0.
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
/// Notification area in BAR 0: queue `i` at `NOTIFY_OFFSET + 4 * i`.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between queue notification addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// MSI-X table in BAR 0.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X pending-bit array in BAR 0.
pub const MSIX_PBA_OFFSET: u64 = 0x6000;

/// Capability positions (byte offsets in config space).
const CAP_COMMON: usize = 0x40;
const CAP_ISR: usize = 0x50;
const CAP_DEVICE: usize = 0x60;
const CAP_NOTIFY: usize = 0x70;
const CAP_MSIX: usize = 0x88;
const PCI_CAP_ID_VENDOR: u32 = 0x09;
const PCI_CAP_ID_MSIX: u32 = 0x11;
/// Status register bit 4 (in the command dword): capability list present.
const STATUS_CAP_LIST: u32 = 1 << 20;
/// MSI-X message control: enable and function mask.
const MSIX_ENABLE: u32 = 1 << 31;
const MSIX_FUNCTION_MASK: u32 = 1 << 30;

/// Why the transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// An eventfd could not be created.
    #[error("eventfd: {0}")]
    EventFd(std::io::Error),
    /// KVM refused an ioeventfd or irqfd.
    #[error("{what} failed: {err}")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The KVM error.
        err: kvm_ioctls::Error,
    },
    /// GSI routing failed.
    #[error(transparent)]
    Irq(#[from] IrqError),
}

/// One virtio device on the PCI bus.
pub struct VirtioPciDevice {
    config: ConfigSpace,
    backend: Box<dyn VirtioBackend>,
    bar: u64,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    msix_config: u16,
    status: u8,
    config_generation: u8,
    queue_select: u16,
    queues: Vec<QueueState>,
    kicks: Vec<EventFd>,
    /// The MSI-X table, pending bits and one irqfd per vector.
    msix: MsixVectors,
    /// Handed to queues without a vector: signalled into the void.
    no_interrupt: EventFd,
}

impl std::fmt::Debug for VirtioPciDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtioPciDevice")
            .field("type", &self.backend.device_type())
            .field("bar", &format_args!("{:#x}", self.bar))
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn vendor_cap(
    cfg: &mut ConfigSpace,
    at: usize,
    next: usize,
    len: u32,
    kind: u32,
    offset: u64,
    length: u32,
) {
    let reg = at / 4;
    cfg.set(
        reg,
        PCI_CAP_ID_VENDOR | ((next as u32) << 8) | (len << 16) | (kind << 24),
    );
    cfg.set(reg + 1, 0); // BAR 0
    cfg.set(reg + 2, offset as u32);
    cfg.set(reg + 3, length);
}

impl VirtioPciDevice {
    /// Puts `backend` behind a transport whose BAR 0 is at `bar` (assigned
    /// by the VMM, as firmware would). Registers one ioeventfd per queue
    /// and one irqfd per MSI-X vector with `vm`.
    pub fn new(
        backend: Box<dyn VirtioBackend>,
        bar: u64,
        vm: Arc<VmFd>,
        router: Arc<Mutex<GsiRouter>>,
    ) -> Result<Self, TransportError> {
        let device_type = backend.device_type();
        let num_queues = usize::from(backend.num_queues());
        let mut config = ConfigSpace::new(PciIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: VIRTIO_PCI_DEVICE_BASE + device_type,
            class: match device_type {
                1 => [0x02, 0x00, 0x00], // network
                2 => [0x01, 0x80, 0x00], // other mass storage
                _ => [0xff, 0x00, 0x00],
            },
            revision: 1,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x40,
        });
        config.add_mem32_bar(0, BAR0_SIZE);
        config.set(REG_BAR0, bar as u32);
        config.set(REG_COMMAND, STATUS_CAP_LIST);
        config.set(REG_CAP_PTR, CAP_COMMON as u32);
        vendor_cap(
            &mut config,
            CAP_COMMON,
            CAP_ISR,
            16,
            1,
            COMMON_OFFSET,
            COMMON_LEN as u32,
        );
        vendor_cap(&mut config, CAP_ISR, CAP_DEVICE, 16, 3, ISR_OFFSET, 1);
        vendor_cap(
            &mut config,
            CAP_DEVICE,
            CAP_NOTIFY,
            16,
            4,
            DEVICE_CFG_OFFSET,
            backend.config_len().max(1),
        );
        vendor_cap(
            &mut config,
            CAP_NOTIFY,
            CAP_MSIX,
            20,
            2,
            NOTIFY_OFFSET,
            (num_queues as u32) * NOTIFY_MULTIPLIER,
        );
        config.set(CAP_NOTIFY / 4 + 4, NOTIFY_MULTIPLIER);
        let vectors = num_queues + 1;
        let msix = CAP_MSIX / 4;
        config.set(msix, PCI_CAP_ID_MSIX | (((vectors - 1) as u32) << 16));
        config.set_writable(msix, MSIX_ENABLE | MSIX_FUNCTION_MASK);
        config.set(msix + 1, MSIX_TABLE_OFFSET as u32);
        config.set(msix + 2, MSIX_PBA_OFFSET as u32);

        let evt = || EventFd::new(libc::EFD_NONBLOCK).map_err(TransportError::EventFd);
        let mut kicks = Vec::with_capacity(num_queues);
        for i in 0..num_queues {
            let kick = evt()?;
            let addr = bar + NOTIFY_OFFSET + (i as u64) * u64::from(NOTIFY_MULTIPLIER);
            vm.register_ioevent(&kick, &IoEventAddress::Mmio(addr), NoDatamatch)
                .map_err(|err| TransportError::Kvm {
                    what: "KVM_IOEVENTFD",
                    err,
                })?;
            kicks.push(kick);
        }
        let msix = MsixVectors::new(vm.clone(), router, vectors)?;
        let max = backend.max_queue_size();
        Ok(VirtioPciDevice {
            config,
            backend,
            bar,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            msix_config: NO_VECTOR,
            status: 0,
            config_generation: 0,
            queue_select: 0,
            queues: vec![QueueState::new(max); num_queues],
            kicks,
            msix,
            no_interrupt: evt()?,
        })
    }

    /// BAR 0's guest-physical address.
    pub fn bar(&self) -> u64 {
        self.bar
    }

    /// The device status the guest last wrote (plus NEEDS_RESET).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Marks the device failed (NEEDS_RESET) and tells the guest with a
    /// configuration-change interrupt, as when its daemon disconnects.
    pub fn mark_needs_reset(&mut self) {
        self.status |= STATUS_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Some(call) = self.msix.call(usize::from(self.msix_config)) {
            let _ = call.write(1);
        }
    }

    /// The backend's hang-up socket, if it has one.
    pub fn hangup_fd(&self) -> Option<std::os::fd::RawFd> {
        self.backend.hangup_fd()
    }

    fn reset(&mut self) {
        self.backend.reset();
        let max = self.backend.max_queue_size();
        self.queues
            .iter_mut()
            .for_each(|q| *q = QueueState::new(max));
        self.driver_features = 0;
        self.msix_config = NO_VECTOR;
        self.queue_select = 0;
        self.status = 0;
    }

    fn activate(&mut self) {
        let queues: Vec<ActiveQueue<'_>> = self
            .queues
            .iter()
            .enumerate()
            .filter(|(_, q)| q.ready)
            .map(|(index, q)| ActiveQueue {
                index,
                state: *q,
                kick: &self.kicks[index],
                call: self
                    .msix
                    .call(usize::from(q.msix_vector))
                    .unwrap_or(&self.no_interrupt),
            })
            .collect();
        if let Err(e) = self.backend.activate(self.driver_features, &queues) {
            tracing::error!(device = self.backend.device_type(), error = %e, "device activation failed");
            self.status |= STATUS_NEEDS_RESET;
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        let mut value = value;
        if value & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0 {
            let offered = self.backend.features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                value &= !STATUS_FEATURES_OK;
            }
        }
        self.status = value | (old & STATUS_NEEDS_RESET);
        if value & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            self.activate();
        }
    }

    fn selected(&mut self) -> Option<&mut QueueState> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn read_common(&mut self, offset: u64) -> u64 {
        let q = self.queues.get(usize::from(self.queue_select)).copied();
        let qf = |f: fn(&QueueState) -> u64| q.as_ref().map_or(0, f);
        match offset {
            0 => u64::from(self.device_feature_select),
            4 => match self.device_feature_select {
                0 => self.backend.features() & 0xffff_ffff,
                1 => self.backend.features() >> 32,
                _ => 0,
            },
            8 => u64::from(self.driver_feature_select),
            12 => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            16 => u64::from(self.msix_config),
            18 => self.queues.len() as u64,
            20 => u64::from(self.status),
            21 => u64::from(self.config_generation),
            22 => u64::from(self.queue_select),
            24 => qf(|q| u64::from(q.size)),
            26 => q
                .as_ref()
                .map_or(u64::from(NO_VECTOR), |q| u64::from(q.msix_vector)),
            28 => qf(|q| u64::from(q.ready)),
            30 => u64::from(self.queue_select), // queue_notify_off
            32 => qf(|q| q.desc),
            36 => qf(|q| q.desc >> 32),
            40 => qf(|q| q.avail),
            44 => qf(|q| q.avail >> 32),
            48 => qf(|q| q.used),
            52 => qf(|q| q.used >> 32),
            _ => 0,
        }
    }

    fn write_common(&mut self, offset: u64, value: u64) {
        let set_lo = |old: u64, v: u64| (old & !0xffff_ffff) | (v & 0xffff_ffff);
        let set_hi = |old: u64, v: u64| (old & 0xffff_ffff) | (v << 32);
        let vectors = self.msix.len();
        let before_driver_ok = self.status & STATUS_DRIVER_OK == 0;
        match offset {
            0 => self.device_feature_select = value as u32,
            8 => self.driver_feature_select = value as u32,
            12 if before_driver_ok => match self.driver_feature_select {
                0 => self.driver_features = set_lo(self.driver_features, value),
                1 => self.driver_features = set_hi(self.driver_features, value),
                _ => {}
            },
            16 => {
                let v = value as u16;
                self.msix_config = if usize::from(v) < vectors {
                    v
                } else {
                    NO_VECTOR
                };
            }
            20 => self.write_status(value as u8),
            22 => self.queue_select = value as u16,
            // Queue registers are frozen once the driver is running.
            24 | 26 | 28 | 32 | 36 | 40 | 44 | 48 | 52 if before_driver_ok => {
                if let Some(q) = self.selected() {
                    match offset {
                        24 => {
                            let size = value as u16;
                            if size.is_power_of_two() && size <= q.max_size {
                                q.size = size;
                            }
                        }
                        26 => {
                            let v = value as u16;
                            q.msix_vector = if usize::from(v) < vectors {
                                v
                            } else {
                                NO_VECTOR
                            };
                        }
                        28 => q.ready = value & 1 == 1,
                        32 => q.desc = set_lo(q.desc, value),
                        36 => q.desc = set_hi(q.desc, value),
                        40 => q.avail = set_lo(q.avail, value),
                        44 => q.avail = set_hi(q.avail, value),
                        48 => q.used = set_lo(q.used, value),
                        _ => q.used = set_hi(q.used, value),
                    }
                }
            }
            _ => {}
        }
    }
}

fn le_value(data: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    let n = data.len().min(8);
    bytes[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(bytes)
}

fn put_le(data: &mut [u8], value: u64) {
    let bytes = value.to_le_bytes();
    let n = data.len().min(8);
    data[..n].copy_from_slice(&bytes[..n]);
}

impl BusDevice for VirtioPciDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if o < COMMON_LEN => {
                let v = self.read_common(o);
                put_le(data, v);
            }
            // ISR: MSI-X is always used, so nothing is ever pending here.
            ISR_OFFSET => {}
            o if (DEVICE_CFG_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                self.backend.read_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) && data.len() == 4 => {
                let v = self.msix.read_table(o - MSIX_TABLE_OFFSET);
                put_le(data, u64::from(v));
            }
            // The PBA, read as dwords or qwords.
            o if (MSIX_PBA_OFFSET..u64::from(BAR0_SIZE)).contains(&o) && o % 4 == 0 => {
                let lo = self.msix.read_pba(o - MSIX_PBA_OFFSET);
                let hi = self.msix.read_pba(o + 4 - MSIX_PBA_OFFSET);
                put_le(data, u64::from(lo) | (u64::from(hi) << 32));
            }
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_LEN => self.write_common(o, le_value(data)),
            o if (DEVICE_CFG_OFFSET..NOTIFY_OFFSET).contains(&o) => {
                self.backend.write_config(o - DEVICE_CFG_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                // Only reached if KVM did not take it as an ioeventfd.
                let q = ((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if let Some(kick) = self.kicks.get(q) {
                    let _ = kick.write(1);
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) && data.len() == 4 => self
                .msix
                .write_table(o - MSIX_TABLE_OFFSET, le_value(data) as u32),
            _ => {}
        }
    }
}

impl PciDevice for VirtioPciDevice {
    fn read_config(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
        if reg == CAP_MSIX / 4 {
            let control = self.config.read(reg);
            self.msix.set_control(
                control & MSIX_ENABLE != 0,
                control & MSIX_FUNCTION_MASK != 0,
            );
        }
        // The BAR is placed by the VMM; a sizing probe (all-ones) is
        // answered by the mask, anything else puts the VMM's address back.
        if reg == REG_BAR0 && self.config.read(REG_BAR0) != !(BAR0_SIZE - 1) {
            self.config.set(REG_BAR0, self.bar as u32);
        }
    }
}

impl<D: PciDevice> PciDevice for Arc<Mutex<D>> {
    fn read_config(&mut self, reg: usize) -> u32 {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read_config(reg)
    }

    fn write_config(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_config(reg, offset, data)
    }
}

#[cfg(test)]
#[path = "pci_tests.rs"]
mod tests;
