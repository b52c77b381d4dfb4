//! ACPI tables: how a guest finds its CPUs and interrupt controllers (the
//! Debian cloud kernel has no MP-table support, so without these it sees
//! one CPU) and how it powers off and resets.
//!
//! Hardware-reduced ACPI, as Firecracker and Cloud Hypervisor do it: RSDP
//! -> XSDT -> FADT (with the DSDT) and MADT. Power-off is the FADT's sleep
//! control register on an I/O port ([`ACPI_SLEEP_CONTROL_PORT`]); reset is
//! the FADT reset register pointed at the i8042 command port with 0xfe.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{
    EnabledStatus, IoApic, LocalInterruptController, ProcessorLocalApic, MADT,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::pci::{PCI_MMIO_END, PCI_MMIO_START};

/// Where the RSDP goes: the BIOS area Linux scans, outside the e820 RAM.
pub const RSDP_START: u64 = 0x000e_0000;
/// End of the area for all tables.
pub const ACPI_AREA_END: u64 = 0x0010_0000;
/// The FADT sleep control register: SLP_EN with SLP_TYP 5 powers off.
pub const ACPI_SLEEP_CONTROL_PORT: u16 = 0x608;
/// LAPIC MMIO base every vCPU sees.
pub const LAPIC_START: u32 = 0xfee0_0000;
/// The in-kernel IOAPIC's MMIO base.
pub const IOAPIC_START: u32 = 0xfec0_0000;
/// `_S5_` sleep type the DSDT advertises for power-off.
pub const S5_SLEEP_TYPE: u8 = 5;

const OEM_ID: [u8; 6] = *b"CRADLE";
const OEM_TABLE_ID: [u8; 8] = *b"KCRADLE ";
const OEM_REVISION: u32 = 1;
/// i8042 command port and its CPU-reset command.
const RESET_PORT: u64 = 0x64;
const RESET_VALUE: u8 = 0xfe;
/// IA-PC boot architecture flag: no VGA.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;

/// Why the tables could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// The tables do not fit below 1 MiB or outside guest RAM.
    #[error("cannot write ACPI table {table}: {err}")]
    Write {
        /// Table signature.
        table: &'static str,
        /// The memory error.
        err: GuestMemoryError,
    },
    /// The tables outgrew their area.
    #[error("ACPI tables need {0} bytes, more than the BIOS area holds")]
    TooLarge(u64),
    /// More CPUs than an 8-bit APIC ID can name.
    #[error("{0} vCPUs do not fit 8-bit APIC IDs")]
    TooManyCpus(usize),
}

fn bytes(table: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    table.to_aml_bytes(&mut out);
    out
}

/// Configuration mechanism #1 ports the host bridge claims.
const PCI_CONFIG_PORT: u16 = 0xcf8;
/// COM1's port and interrupt as the DSDT describes them.
const COM1_PORT: u16 = 0x3f8;
const COM1_GSI: u32 = 4;

/// The DSDT: `_S5_`, so the kernel knows which sleep type powers off;
/// COM1 as a PNP0501 device (a hardware-reduced guest has no legacy PIC
/// and so no ISA IRQ mapping: the serial driver finds GSI 4 only here);
/// and the PCI host bridge with its bus, I/O and 32-bit MMIO windows.
pub fn dsdt() -> Vec<u8> {
    let mut dsdt = Sdt::new(*b"DSDT", 36, 6, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&S5_SLEEP_TYPE, &0u8, &0u8, &0u8]),
    );
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &0u8);
    let crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![
            &aml::Interrupt::new(true, true, false, false, COM1_GSI),
            &aml::IO::new(COM1_PORT, COM1_PORT, 0, 8),
        ]),
    );
    let com1 = aml::Device::new("COM1".into(), vec![&hid, &uid, &crs]);
    let pci_hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A03"));
    let pci_adr = aml::Name::new("_ADR".into(), &0u8);
    let pci_seg = aml::Name::new("_SEG".into(), &0u8);
    let pci_uid = aml::Name::new("_UID".into(), &0u8);
    let pci_bbn = aml::Name::new("_BBN".into(), &0u8);
    let pci_crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![
            &aml::AddressSpace::new_bus_number(0u16, 0u16),
            &aml::IO::new(PCI_CONFIG_PORT, PCI_CONFIG_PORT, 1, 8),
            &aml::AddressSpace::new_io(0u16, PCI_CONFIG_PORT - 1, None),
            &aml::AddressSpace::new_io(PCI_CONFIG_PORT + 8, 0xffffu16, None),
            &aml::AddressSpace::new_memory(
                aml::AddressSpaceCacheable::NotCacheable,
                true,
                PCI_MMIO_START as u32,
                (PCI_MMIO_END - 1) as u32,
                None,
            ),
        ]),
    );
    let pci0 = aml::Device::new(
        "PCI0".into(),
        vec![&pci_hid, &pci_adr, &pci_seg, &pci_uid, &pci_bbn, &pci_crs],
    );
    let sb = aml::Scope::new("_SB_".into(), vec![&com1, &pci0]);
    let mut body = Vec::new();
    s5.to_aml_bytes(&mut body);
    sb.to_aml_bytes(&mut body);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}

/// The FADT: hardware-reduced, DSDT at `dsdt_addr`, sleep control and
/// reset registers on I/O ports.
pub fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let io = |port: u64| GAS::new(AddressSpace::SystemIo, 8, 0, AccessSize::ByteAccess, port);
    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    fadt.reset_reg = io(RESET_PORT);
    fadt.reset_value = RESET_VALUE;
    fadt.sleep_control_reg = io(u64::from(ACPI_SLEEP_CONTROL_PORT));
    fadt.sleep_status_reg = io(u64::from(ACPI_SLEEP_CONTROL_PORT));
    fadt.iapc_boot_arch = IAPC_VGA_NOT_PRESENT.into();
    fadt.hypervisor_vendor_identity = u64::from_le_bytes(*b"KCRADLE\0").into();
    bytes(&fadt.finalize())
}

/// The MADT: one enabled local APIC per vCPU (APIC ID = vCPU index) and
/// the in-kernel IOAPIC with GSIs from 0.
pub fn madt(cpus: usize) -> Result<Vec<u8>, AcpiError> {
    let ioapic_id = u8::try_from(cpus).map_err(|_| AcpiError::TooManyCpus(cpus))?;
    let mut madt = MADT::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        LocalInterruptController::Address(LAPIC_START),
    );
    for id in 0..ioapic_id {
        madt.add_structure(ProcessorLocalApic::new(id, id, EnabledStatus::Enabled));
    }
    madt.add_structure(IoApic::new(ioapic_id, IOAPIC_START, 0));
    Ok(bytes(&madt))
}

/// Writes RSDP, XSDT, FADT, DSDT and MADT for `cpus` vCPUs from
/// [`RSDP_START`]; returns the RSDP address for the zero page.
pub fn write_acpi_tables(mem: &GuestMemoryMmap, cpus: usize) -> Result<u64, AcpiError> {
    let align = |addr: u64| addr.next_multiple_of(16);
    let xsdt_addr = align(RSDP_START + Rsdp::len() as u64);
    // XSDT with two entries.
    let dsdt_addr = align(xsdt_addr + 36 + 2 * 8);
    let dsdt = dsdt();
    let fadt_addr = align(dsdt_addr + dsdt.len() as u64);
    let fadt = fadt(dsdt_addr);
    let madt_addr = align(fadt_addr + fadt.len() as u64);
    let madt = madt(cpus)?;
    let end = madt_addr + madt.len() as u64;
    if end > ACPI_AREA_END {
        return Err(AcpiError::TooLarge(end - RSDP_START));
    }
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let rsdp = Rsdp::new(OEM_ID, xsdt_addr);

    for (table, addr, data) in [
        ("RSDP", RSDP_START, bytes(&rsdp)),
        ("XSDT", xsdt_addr, bytes(&xsdt)),
        ("DSDT", dsdt_addr, dsdt),
        ("FACP", fadt_addr, fadt),
        ("APIC", madt_addr, madt),
    ] {
        mem.write_slice(&data, GuestAddress(addr))
            .map_err(|err| AcpiError::Write { table, err })?;
    }
    Ok(RSDP_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum_ok(table: &[u8]) -> bool {
        table.iter().fold(0u8, |a, b| a.wrapping_add(*b)) == 0
    }

    fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    /// Reads a whole table at `addr` using its header length.
    fn table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let head = read(mem, addr, 8);
        read(mem, addr, u32_at(&head, 4) as usize)
    }

    #[test]
    fn tables_chain_from_the_rsdp_with_valid_checksums() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap();
        let rsdp_addr = write_acpi_tables(&mem, 2).unwrap();
        let rsdp = read(&mem, rsdp_addr, 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(checksum_ok(&rsdp[..20]) && checksum_ok(&rsdp));
        let xsdt = table(&mem, u64_at(&rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        assert!(checksum_ok(&xsdt));
        let entries: Vec<u64> = (36..xsdt.len())
            .step_by(8)
            .map(|o| u64_at(&xsdt, o))
            .collect();
        let sigs: Vec<Vec<u8>> = entries
            .iter()
            .map(|&a| table(&mem, a)[..4].to_vec())
            .collect();
        assert_eq!(sigs, [b"FACP".to_vec(), b"APIC".to_vec()]);

        let fadt = table(&mem, entries[0]);
        assert!(checksum_ok(&fadt));
        assert_ne!(u32_at(&fadt, 112) & (1 << 20), 0, "HW_REDUCED_ACPI");
        let dsdt = table(&mem, u64_at(&fadt, 140));
        assert_eq!(&dsdt[..4], b"DSDT");
        assert!(checksum_ok(&dsdt));
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        assert!(dsdt.windows(4).any(|w| w == b"COM1"));
        assert!(dsdt.windows(4).any(|w| w == b"PCI0"));

        let madt = table(&mem, entries[1]);
        assert!(checksum_ok(&madt));
        assert_eq!(u32_at(&madt, 36), LAPIC_START);
        // Two local APICs (type 0) then the IOAPIC (type 1) with id 2.
        let structs = &madt[44..];
        assert_eq!(&structs[..8], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&structs[8..16], &[0, 8, 1, 1, 1, 0, 0, 0]);
        assert_eq!(&structs[16..20], &[1, 12, 2, 0]);
        assert_eq!(u32_at(structs, 20), IOAPIC_START);
    }

    #[test]
    fn fadt_power_off_and_reset_registers() {
        let fadt = fadt(0x1234);
        // Reset register GAS at 116: system I/O, 8 bits, port 0x64, value 0xfe.
        assert_eq!(fadt[116], 1);
        assert_eq!(u64_at(&fadt, 120), 0x64);
        assert_eq!(fadt[128], 0xfe);
        // Sleep control register GAS at 244.
        assert_eq!(fadt[244], 1);
        assert_eq!(u64_at(&fadt, 248), u64::from(ACPI_SLEEP_CONTROL_PORT));
    }

    #[test]
    fn too_many_cpus_is_an_error() {
        assert!(matches!(madt(256), Err(AcpiError::TooManyCpus(256))));
    }
}
