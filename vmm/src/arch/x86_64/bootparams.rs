//! The Linux zero page (`struct boot_params`) for the 64-bit boot protocol.
//! The command line itself is written at [`CMDLINE_START`] by the loader.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::layout::{CMDLINE_START, ZERO_PAGE_START};

/// `type_of_loader` for a boot loader without an assigned id.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Magic at the end of the boot sector.
pub const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "HdrS": the setup header is present.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// `xloadflags` bit: the kernel has a 64-bit entry point at load + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;

/// Why the zero page could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// More e820 entries than the zero page holds.
    #[error("{0} e820 entries do not fit in the zero page")]
    TooManyE820Entries(usize),
    /// Writing the zero page into guest memory failed.
    #[error("cannot write the zero page: {0}")]
    Write(linux_loader::configurator::Error),
}

/// What goes into the zero page besides the kernel's own setup header.
#[derive(Debug, Clone, Copy)]
pub struct ZeroPageInputs<'a> {
    /// Guest address and size of the initramfs, if any.
    pub initrd: Option<(u64, u64)>,
    /// The memory map.
    pub e820: &'a [boot_e820_entry],
    /// Where the ACPI RSDP is, if the VM has ACPI tables.
    pub acpi_rsdp: Option<u64>,
}

/// Builds the zero page from the kernel's setup header (as loaded, with
/// `code32_start` already pointing at the load address).
pub fn build_boot_params(
    hdr: setup_header,
    inputs: &ZeroPageInputs<'_>,
) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.ext_cmd_line_ptr = (CMDLINE_START >> 32) as u32;
    if let Some((addr, size)) = inputs.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.ext_ramdisk_image = (addr >> 32) as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    if inputs.e820.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820Entries(inputs.e820.len()));
    }
    params.e820_table[..inputs.e820.len()].copy_from_slice(inputs.e820);
    params.acpi_rsdp_addr = inputs.acpi_rsdp.unwrap_or(0);
    // At most 128 entries, checked above.
    params.e820_entries = inputs.e820.len() as u8;
    Ok(params)
}

/// Writes `params` at [`ZERO_PAGE_START`].
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    params: &boot_params,
) -> Result<(), BootParamsError> {
    let bp = BootParams::new(params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&bp, mem).map_err(BootParamsError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn e820() -> Vec<boot_e820_entry> {
        vec![boot_e820_entry {
            addr: 0,
            size: 0x9fc00,
            r#type: 1,
        }]
    }

    #[test]
    fn fills_loader_fields_initrd_and_e820() {
        let hdr = setup_header {
            cmdline_size: 2048,
            ..Default::default()
        };
        let map = e820();
        let params = build_boot_params(
            hdr,
            &ZeroPageInputs {
                initrd: Some((0x1f00_0000, 0x12345)),
                e820: &map,
                acpi_rsdp: Some(0xe0000),
            },
        )
        .unwrap();
        assert_eq!({ params.hdr.type_of_loader }, 0xff);
        assert_eq!({ params.hdr.boot_flag }, 0xaa55);
        assert_eq!({ params.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!(
            { params.hdr.cmdline_size },
            2048,
            "the kernel's limit is kept"
        );
        assert_eq!({ params.hdr.ramdisk_image }, 0x1f00_0000);
        assert_eq!({ params.hdr.ramdisk_size }, 0x12345);
        assert_eq!(params.e820_entries, 1);
        assert_eq!({ params.e820_table[0].size }, 0x9fc00);
        assert_eq!({ params.acpi_rsdp_addr }, 0xe0000);
    }

    #[test]
    fn too_many_e820_entries_is_an_error() {
        let map = vec![boot_e820_entry::default(); 129];
        let inputs = ZeroPageInputs {
            initrd: None,
            e820: &map,
            acpi_rsdp: None,
        };
        assert!(matches!(
            build_boot_params(setup_header::default(), &inputs),
            Err(BootParamsError::TooManyE820Entries(129))
        ));
    }

    #[test]
    fn zero_page_lands_at_0x7000() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let map = e820();
        let inputs = ZeroPageInputs {
            initrd: None,
            e820: &map,
            acpi_rsdp: None,
        };
        let params = build_boot_params(setup_header::default(), &inputs).unwrap();
        write_boot_params(&mem, &params).unwrap();
        let back: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!({ back.hdr.header }, HDRS_MAGIC);
        assert_eq!(back.e820_entries, 1);
    }
}
