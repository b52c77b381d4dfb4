//! Direct kernel boot: load a kernel, its command line and initramfs into
//! guest memory and put the boot vCPU at its entry point. A bzImage boots
//! through the Linux x86 64-bit boot protocol (zero page, long mode); an
//! ELF `vmlinux` through its PVH entry point (start info, 32-bit protected
//! mode). Which one a file is comes from its magic bytes.

pub mod initrd;
pub mod kernel;
pub mod pvh;

use std::io;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::load_cmdline;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::bootparams::{
    build_boot_params, write_boot_params, BootParamsError, ZeroPageInputs,
};
use crate::arch::x86_64::e820::e820_entries;
use crate::arch::x86_64::layout::PVH_INFO_START;
use crate::arch::x86_64::layout::{
    BOOT_STACK_POINTER, CMDLINE_MAX_SIZE, CMDLINE_START, MEM_32BIT_GAP_START, ZERO_PAGE_START,
};
use crate::arch::x86_64::{
    setup_fpu, setup_long_mode, setup_pvh_mode, setup_regs, ArchError, BootRegs,
};

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
    /// The file is neither a bzImage nor an ELF file.
    #[error("{0} is not a kernel: neither a bzImage nor an ELF vmlinux")]
    NotAKernel(PathBuf),
    /// linux-loader rejected the ELF kernel.
    #[error("{path} is not a loadable ELF vmlinux: {err}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// The loader's reason.
        err: linux_loader::loader::Error,
    },
    /// The ELF kernel has no PVH entry note (`CONFIG_PVH` off).
    #[error("{0} has no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY); boot its bzImage instead")]
    NoPvhEntry(PathBuf),
    /// An ELF segment lies past the end of low guest RAM.
    #[error("{path} does not fit in guest memory below {have:#x}")]
    ElfTooLarge {
        /// The file.
        path: PathBuf,
        /// End of low RAM.
        have: u64,
    },
    /// The PVH start info could not be written.
    #[error("cannot write the PVH start info: {0}")]
    StartInfo(linux_loader::configurator::Error),
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
    /// bzImage or ELF vmlinux (with a PVH entry note) to load.
    pub kernel: PathBuf,
    /// Initramfs parts, concatenated in order (a base image plus extra cpio
    /// archives injected by the launcher).
    pub initrd: Vec<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

/// What a kernel file is, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// "HdrS" at 0x202: a bzImage with a setup header.
    BzImage,
    /// "\x7fELF" at 0: an ELF vmlinux.
    Elf,
}

/// Offset of the setup header magic in a bzImage.
const HDRS_OFFSET: usize = 0x202;

/// Tells a bzImage from an ELF file by magic; `None` for anything else.
pub fn kernel_format(head: &[u8]) -> Option<KernelFormat> {
    if head.starts_with(b"\x7fELF") {
        Some(KernelFormat::Elf)
    } else if head.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(b"HdrS") {
        Some(KernelFormat::BzImage)
    } else {
        None
    }
}

/// Reads the first bytes of `path` and says what kernel it is.
fn detect(path: &Path) -> Result<KernelFormat, BootError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(HDRS_OFFSET + 4);
    open(path)?
        .take((HDRS_OFFSET + 4) as u64)
        .read_to_end(&mut head)
        .map_err(|err| BootError::Read {
            path: path.to_path_buf(),
            err,
        })?;
    kernel_format(&head).ok_or_else(|| BootError::NotAKernel(path.to_path_buf()))
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// 64-bit boot protocol: long mode, the zero page's address in `rsi`.
    Linux64 {
        /// The zero page.
        zero_page: u64,
    },
    /// PVH: 32-bit protected mode, the start info's address in `ebx`.
    Pvh {
        /// The `hvm_start_info`.
        start_info: u64,
    },
}

/// Where things ended up in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedLinux {
    /// The entry point (64-bit for a bzImage, 32-bit PVH for an ELF).
    pub entry: u64,
    /// How to enter it.
    pub protocol: BootProtocol,
    /// Guest address and size of the initramfs.
    pub initrd: Option<(u64, u64)>,
}

/// Loads `spec` into `mem` and writes the zero page (bzImage) or the PVH
/// start info (ELF), pointing the kernel at the ACPI tables at `acpi_rsdp`
/// if the VM has them.
pub fn load_linux(
    mem: &GuestMemoryMmap,
    spec: &LinuxBoot,
    acpi_rsdp: Option<u64>,
) -> Result<LoadedLinux, BootError> {
    match detect(&spec.kernel)? {
        KernelFormat::BzImage => load_bzimage_linux(mem, spec, acpi_rsdp),
        KernelFormat::Elf => load_pvh_linux(mem, spec, acpi_rsdp),
    }
}

/// ELF vmlinux through its PVH entry point.
fn load_pvh_linux(
    mem: &GuestMemoryMmap,
    spec: &LinuxBoot,
    acpi_rsdp: Option<u64>,
) -> Result<LoadedLinux, BootError> {
    let low_ram_end = low_ram_end(mem);
    let kernel = pvh::load_elf(mem, &spec.kernel, low_ram_end)?;
    write_cmdline(mem, &spec.cmdline, pvh::PVH_CMDLINE_MAX)?;
    let initrd = initrd::load_initrd(mem, &spec.initrd, kernel.kernel_end, low_ram_end)?;
    let start = pvh::build_start_info(initrd, &e820_entries(mem), acpi_rsdp);
    pvh::write_start_info(mem, &start)?;
    Ok(LoadedLinux {
        entry: kernel.entry,
        protocol: BootProtocol::Pvh {
            start_info: PVH_INFO_START,
        },
        initrd,
    })
}

/// bzImage through the 64-bit boot protocol.
fn load_bzimage_linux(
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
        protocol: BootProtocol::Linux64 {
            zero_page: ZERO_PAGE_START,
        },
        initrd,
    })
}

/// Puts `vcpu` (the boot CPU) at the kernel's entry point in the mode its
/// protocol wants: long mode for a bzImage, 32-bit protected mode for PVH.
pub fn setup_boot_vcpu(
    mem: &GuestMemoryMmap,
    vcpu: &kvm_ioctls::VcpuFd,
    loaded: &LoadedLinux,
) -> Result<(), BootError> {
    let (rsi, rbx) = match loaded.protocol {
        BootProtocol::Linux64 { zero_page } => {
            // 4 GiB: the kernel, zero page, command line and initramfs all
            // sit below the 32-bit hole.
            setup_long_mode(mem, vcpu, 4)?;
            (zero_page, 0)
        }
        BootProtocol::Pvh { start_info } => {
            setup_pvh_mode(mem, vcpu)?;
            (0, start_info)
        }
    };
    setup_regs(
        vcpu,
        &BootRegs {
            rip: loaded.entry,
            rsp: BOOT_STACK_POINTER,
            rsi,
            rbx,
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
