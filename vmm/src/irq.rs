//! KVM GSI routing: the in-kernel PIC/IOAPIC pins every VM has, plus one
//! MSI route per MSI-X vector a device uses. KVM_SET_GSI_ROUTING replaces
//! the whole table, so the default irqchip routes are always rewritten
//! with it (dropping them would silence the serial port).

use std::collections::BTreeMap;

use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

/// IOAPIC pins (GSIs 0-23).
pub const IOAPIC_PINS: u32 = 24;
/// PIC lines (GSIs 0-15).
pub const PIC_LINES: u32 = 16;
/// First GSI handed to MSI routes.
pub const FIRST_MSI_GSI: u32 = IOAPIC_PINS;
/// Most GSIs KVM accepts in one table here.
pub const MAX_GSI: u32 = 1024;

/// Why routing could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    /// No GSI left.
    #[error("out of GSIs for MSI routes")]
    Exhausted,
    /// The routing table could not be built.
    #[error("GSI routing table too large")]
    TableTooLarge,
    /// KVM_SET_GSI_ROUTING failed.
    #[error("KVM_SET_GSI_ROUTING failed: {0}")]
    SetRouting(kvm_ioctls::Error),
}

/// An MSI message: what the guest wrote into an MSI-X table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    /// Message address.
    pub address: u64,
    /// Message data.
    pub data: u32,
}

/// The VM's routing table.
#[derive(Debug, Default)]
pub struct GsiRouter {
    msi: BTreeMap<u32, MsiMessage>,
    next: u32,
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

impl GsiRouter {
    /// A router with only the default irqchip routes.
    pub fn new() -> Self {
        GsiRouter {
            msi: BTreeMap::new(),
            next: FIRST_MSI_GSI,
        }
    }

    /// A fresh GSI for an MSI route.
    pub fn allocate(&mut self) -> Result<u32, IrqError> {
        if self.next >= MAX_GSI {
            return Err(IrqError::Exhausted);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Routes `gsi` to `msg` (takes effect on [`GsiRouter::commit`]).
    pub fn set_msi(&mut self, gsi: u32, msg: MsiMessage) {
        self.msi.insert(gsi, msg);
    }

    /// The whole table: PIC and IOAPIC pins, then the MSI routes.
    pub fn entries(&self) -> Vec<kvm_irq_routing_entry> {
        let mut entries = Vec::new();
        for gsi in 0..IOAPIC_PINS {
            if gsi < PIC_LINES {
                let chip = if gsi < 8 {
                    KVM_IRQCHIP_PIC_MASTER
                } else {
                    KVM_IRQCHIP_PIC_SLAVE
                };
                entries.push(irqchip(gsi, chip, gsi % 8));
            }
            entries.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        }
        for (&gsi, msg) in &self.msi {
            let mut e = kvm_irq_routing_entry {
                gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = msg.address as u32;
            e.u.msi.address_hi = (msg.address >> 32) as u32;
            e.u.msi.data = msg.data;
            entries.push(e);
        }
        entries
    }

    /// Installs the table in `vm`.
    pub fn commit(&self, vm: &VmFd) -> Result<(), IrqError> {
        let table =
            KvmIrqRouting::from_entries(&self.entries()).map_err(|_| IrqError::TableTooLarge)?;
        vm.set_gsi_routing(&table).map_err(IrqError::SetRouting)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_keeps_irqchip_pins_and_adds_msi_routes() {
        let mut router = GsiRouter::new();
        let gsi = router.allocate().unwrap();
        assert_eq!(gsi, 24);
        router.set_msi(
            gsi,
            MsiMessage {
                address: 0xfee0_1000,
                data: 0x4031,
            },
        );
        let entries = router.entries();
        // 16 PIC + 24 IOAPIC + 1 MSI.
        assert_eq!(entries.len(), 41);
        let serial: Vec<_> = entries.iter().filter(|e| e.gsi == 4).collect();
        assert_eq!(serial.len(), 2);
        let msi = entries.last().unwrap();
        assert_eq!((msi.gsi, msi.type_), (24, KVM_IRQ_ROUTING_MSI));
        // SAFETY: the entry was written as MSI.
        let (lo, data) = unsafe { (msi.u.msi.address_lo, msi.u.msi.data) };
        assert_eq!((lo, data), (0xfee0_1000, 0x4031));
    }

    #[test]
    fn routing_is_accepted_by_kvm() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: /dev/kvm is absent on this machine");
            return;
        }
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        vm.create_irq_chip().unwrap();
        let mut router = GsiRouter::new();
        for _ in 0..4 {
            let gsi = router.allocate().unwrap();
            router.set_msi(
                gsi,
                MsiMessage {
                    address: 0xfee0_0000,
                    data: 0x30 + gsi,
                },
            );
        }
        router.commit(&vm).unwrap();
    }
}
