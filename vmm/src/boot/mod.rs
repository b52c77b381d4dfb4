//! Direct kernel boot: load a bzImage, its command line and initramfs into
//! guest memory, write the zero page, and put the boot vCPU at the kernel's
//! 64-bit entry point, as the Linux x86 boot protocol describes.

pub mod initrd;
pub mod kernel;

use std::io;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::load_cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::bootparams::{
    build_boot_params, write_boot_params, BootParamsError, ZeroPageInputs,
};
use crate::arch::x86_64::e820::e820_entries;
use crate::arch::x86_64::layout::{
    BOOT_STACK_POINTER, CMDLINE_MAX_SIZE, CMDLINE_START, MEM_32BIT_GAP_START, ZERO_PAGE_START,
};
use crate::arch::x86_64::{setup_fpu, setup_long_mode, setup_regs, ArchError, BootRegs};

/// Why the kernel could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A kernel or initramfs file could not be opened or read.
    #[error("cannot read {path}: {err}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        err: io::Error,
    },
    /// linux-loader rejected the kernel image.
    #[error("{path} is not a loadable bzImage: {err}")]
    NotBzImage {
        /// The file.
        path: PathBuf,
        /// The loader's reason.
        err: linux_loader::loader::Error,
    },
    /// The kernel's boot protocol predates `xloadflags` (2.12).
    #[error("{path} uses boot protocol {version:#06x}; at least 0x020c is needed")]
    OldBootProtocol {
        /// The file.
        path: PathBuf,
        /// Its boot protocol version.
        version: u16,
    },
    /// The kernel has no 64-bit entry point.
    #[error("{0} has no 64-bit entry point (XLF_KERNEL_64 not set)")]
    Not64Bit(PathBuf),
    /// The kernel cannot decompress itself in the RAM it has.
    #[error("{needed} bytes of low memory are needed to boot this kernel, the guest has {have}")]
    MemoryTooSmall {
        /// Bytes needed below the 32-bit hole.
        needed: u64,
        /// Bytes available there.
        have: u64,
    },
    /// The command line is invalid or longer than the kernel accepts.
    #[error("bad kernel command line: {0}")]
    Cmdline(String),
    /// The initramfs does not fit between the kernel and the top of low RAM.
    #[error("the initramfs ({size} bytes) does not fit in guest memory below {limit:#x}")]
    InitrdTooLarge {
        /// Total initramfs size.
        size: u64,
        /// Highest address it may end at.
        limit: u64,
    },
    /// Writing into guest memory failed.
    #[error("cannot write {what} into guest memory: {err}")]
    GuestMemory {
        /// What was being written.
        what: &'static str,
        /// The memory error.
        err: vm_memory::GuestMemoryError,
    },
    /// The zero page could not be built or written.
    #[error(transparent)]
    BootParams(#[from] BootParamsError),
    /// Setting up the boot vCPU failed.
    #[error(transparent)]
    Arch(#[from] ArchError),
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct LinuxBoot {
    /// bzImage to load.
    pub kernel: PathBuf,
    /// Initramfs parts, concatenated in order (a base image plus extra cpio
    /// archives injected by the launcher).
    pub initrd: Vec<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

/// Where things ended up in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedLinux {
    /// The 64-bit entry point.
    pub entry: u64,
    /// The zero page, passed in `rsi`.
    pub zero_page: u64,
    /// Guest address and size of the initramfs.
    pub initrd: Option<(u64, u64)>,
}

/// Loads `spec` into `mem` and writes the zero page, pointing the kernel
/// at the ACPI tables at `acpi_rsdp` if the VM has them.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    spec: &LinuxBoot,
    acpi_rsdp: Option<u64>,
) -> Result<LoadedLinux, BootError> {
    let low_ram_end = low_ram_end(mem);
    let kernel = kernel::load_bzimage(mem, &spec.kernel, low_ram_end)?;
    write_cmdline(mem, &spec.cmdline, kernel.header.cmdline_size)?;
    // The initramfs goes as high as allowed, clear of the kernel's
    // decompression area.
    let initrd_limit = low_ram_end.min(u64::from(kernel.header.initrd_addr_max) + 1);
    let initrd = initrd::load_initrd(mem, &spec.initrd, kernel.decompress_end, initrd_limit)?;
    let e820 = e820_entries(mem);
    let params = build_boot_params(
        kernel.header,
        &ZeroPageInputs {
            initrd,
            e820: &e820,
            acpi_rsdp,
        },
    )?;
    write_boot_params(mem, &params)?;
    Ok(LoadedLinux {
        entry: kernel.entry,
        zero_page: ZERO_PAGE_START,
        initrd,
    })
}

/// Puts `vcpu` (the boot CPU) in long mode at the kernel's entry point.
pub fn setup_boot_vcpu(
    mem: &GuestMemoryMmap,
    vcpu: &kvm_ioctls::VcpuFd,
    loaded: &LoadedLinux,
) -> Result<(), BootError> {
    // 4 GiB: the kernel, zero page, command line and initramfs all sit below
    // the 32-bit hole.
    setup_long_mode(mem, vcpu, 4)?;
    setup_regs(
        vcpu,
        &BootRegs {
            rip: loaded.entry,
            rsp: BOOT_STACK_POINTER,
            rsi: loaded.zero_page,
        },
    )?;
    setup_fpu(vcpu)?;
    Ok(())
}

/// End of the RAM region that starts at 0 (never past the 32-bit hole).
fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    mem.find_region(GuestAddress(0))
        .map(|r| r.len().min(MEM_32BIT_GAP_START))
        .unwrap_or(0)
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, kernel_max: u32) -> Result<(), BootError> {
    // The kernel's limit excludes the NUL; our buffer's includes it.
    let max = (kernel_max as usize).min(CMDLINE_MAX_SIZE - 1);
    if cmdline.len() > max {
        return Err(BootError::Cmdline(format!(
            "{} bytes, the kernel accepts at most {max}",
            cmdline.len()
        )));
    }
    let parsed =
        Cmdline::try_from(cmdline, max + 1).map_err(|e| BootError::Cmdline(e.to_string()))?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), &parsed)
        .map_err(|e| BootError::Cmdline(e.to_string()))
}

/// Opens `path` for reading, naming it in the error.
fn open(path: &Path) -> Result<std::fs::File, BootError> {
    std::fs::File::open(path).map_err(|err| BootError::Read {
        path: path.to_path_buf(),
        err,
    })
}
