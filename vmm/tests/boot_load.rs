//! Loading the installed Debian kernel (package linux-image-cloud-amd64)
//! into guest memory and checking the zero page, command line, initramfs and
//! e820 map it would boot with. Nothing is run: booting Linux on a host
//! whose `/dev/kvm` emulates ring 0 takes minutes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use cradle_vmm::arch::x86_64::layout::{CMDLINE_START, HIMEM_START, ZERO_PAGE_START};
use cradle_vmm::arch::x86_64::sregs::{EFER_LMA, EFER_LME};
use cradle_vmm::boot::{load_linux, setup_boot_vcpu, BootError, BootProtocol, LinuxBoot};
use cradle_vmm::memory::{create_guest_memory, register_guest_memory};
use linux_loader::loader::bootparam::boot_params;
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;

/// The newest /boot/vmlinuz-*; the package is a test dependency
/// (ci/packages-vmm.txt), so its absence is a failure, not a skip.
fn debian_kernel() -> (PathBuf, PathBuf) {
    let mut kernels: Vec<PathBuf> = fs::read_dir("/boot")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .collect();
    kernels.sort();
    let kernel = kernels
        .pop()
        .expect("no /boot/vmlinuz-*: apt-get install linux-image-cloud-amd64");
    let version = kernel.file_name().unwrap().to_string_lossy()["vmlinuz-".len()..].to_string();
    (kernel, PathBuf::from(format!("/boot/initrd.img-{version}")))
}

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn spec(kernel: &Path, initrd: Vec<PathBuf>, cmdline: &str) -> LinuxBoot {
    LinuxBoot {
        kernel: kernel.to_path_buf(),
        initrd,
        cmdline: cmdline.to_string(),
    }
}

#[test]
fn debian_bzimage_loads_with_boot_params_cmdline_and_initramfs() {
    let (kernel, initrd) = debian_kernel();
    let extra = temp_file(b"070701-extra-cpio-archive");
    let mem = create_guest_memory(512 * MIB, false).unwrap();
    let cmdline = "console=ttyS0 panic=-1 quiet";
    let loaded = load_linux(
        &mem,
        &spec(
            &kernel,
            vec![initrd.clone(), extra.path().to_path_buf()],
            cmdline,
        ),
        Some(0xe0000),
    )
    .unwrap();
    assert_eq!(loaded.entry, HIMEM_START + 0x200);
    assert_eq!(
        loaded.protocol,
        BootProtocol::Linux64 {
            zero_page: ZERO_PAGE_START
        }
    );

    let image = fs::read(&kernel).unwrap();
    let params: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
    let hdr = params.hdr;
    assert_eq!({ hdr.header }, 0x5372_6448);
    assert_eq!({ hdr.boot_flag }, 0xaa55);
    assert_eq!(hdr.type_of_loader, 0xff);
    assert_eq!({ hdr.code32_start }, HIMEM_START as u32);
    assert!({ hdr.version } >= 0x020c);

    // The protected-mode kernel sits at 1 MiB, byte for byte.
    let setup_size = (usize::from(image[0x1f1]).max(4) + 1) * 512;
    let mut head = vec![0u8; 4096];
    mem.read_slice(&mut head, GuestAddress(HIMEM_START))
        .unwrap();
    assert_eq!(head, image[setup_size..setup_size + 4096]);

    // Command line, NUL-terminated, where cmd_line_ptr says.
    assert_eq!({ hdr.cmd_line_ptr }, CMDLINE_START as u32);
    let mut line = vec![0u8; cmdline.len() + 1];
    mem.read_slice(&mut line, GuestAddress(CMDLINE_START))
        .unwrap();
    assert_eq!(line, [cmdline.as_bytes(), b"\0"].concat());

    // Both initramfs parts, the second 4-byte aligned after the first,
    // above the kernel's decompression area and inside RAM.
    let base = fs::read(&initrd).unwrap();
    let (addr, size) = loaded.initrd.unwrap();
    assert_eq!({ hdr.ramdisk_image } as u64, addr);
    assert_eq!({ hdr.ramdisk_size } as u64, size);
    assert_eq!(addr % 4096, 0);
    assert!(addr >= HIMEM_START + u64::from(hdr.init_size));
    assert!(addr + size <= 512 * MIB);
    let second = (base.len() as u64).next_multiple_of(4);
    assert_eq!(size, second + 25);
    let mut got = vec![0u8; base.len()];
    mem.read_slice(&mut got, GuestAddress(addr)).unwrap();
    assert!(got == base, "first initramfs part differs in guest memory");
    let mut tail = vec![0u8; 25];
    mem.read_slice(&mut tail, GuestAddress(addr + second))
        .unwrap();
    assert_eq!(tail, b"070701-extra-cpio-archive");

    // e820: low RAM below the EBDA and everything from 1 MiB.
    assert_eq!({ params.acpi_rsdp_addr }, 0xe0000);
    assert_eq!(params.e820_entries, 2);
    let e820: Vec<(u64, u64, u32)> = params.e820_table[..2]
        .iter()
        .map(|e| (e.addr, e.size, e.r#type))
        .collect();
    assert_eq!(e820, vec![(0, 0x9fc00, 1), (MIB, 511 * MIB, 1)]);
}

#[test]
fn boot_vcpu_starts_at_the_64_bit_entry() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        return;
    }
    let (kernel, _) = debian_kernel();
    let mem = create_guest_memory(256 * MIB, false).unwrap();
    let loaded = load_linux(&mem, &spec(&kernel, vec![], "console=ttyS0"), None).unwrap();
    assert_eq!(loaded.initrd, None);
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    register_guest_memory(&vm, &mem).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    setup_boot_vcpu(&mem, &vcpu, &loaded).unwrap();
    let regs = vcpu.get_regs().unwrap();
    assert_eq!((regs.rip, regs.rsi), (HIMEM_START + 0x200, ZERO_PAGE_START));
    let sregs = vcpu.get_sregs().unwrap();
    assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
    assert_eq!(sregs.cs.l, 1);
}

#[test]
fn memory_too_small_for_the_kernel_is_refused() {
    let (kernel, _) = debian_kernel();
    // 8 MiB cannot hold the image; 32 MiB holds it but not the area it
    // decompresses into (init_size, about 50 MiB for the Debian kernel).
    for size in [8 * MIB, 32 * MIB] {
        let mem = create_guest_memory(size, false).unwrap();
        match load_linux(&mem, &spec(&kernel, vec![], ""), None) {
            Err(BootError::MemoryTooSmall { needed, have }) => {
                assert!(needed > have, "{needed} {have}");
                assert_eq!(have, size);
            }
            other => panic!("{size}: expected MemoryTooSmall, got {other:?}"),
        }
    }
}

#[test]
fn a_file_that_is_not_a_kernel_is_refused() {
    let junk = temp_file(&[0x5a; 8192]);
    let mem = create_guest_memory(64 * MIB, false).unwrap();
    let err = load_linux(&mem, &spec(junk.path(), vec![], ""), None).unwrap_err();
    assert!(matches!(err, BootError::NotAKernel(_)), "{err:?}");
    assert!(err
        .to_string()
        .contains("neither a bzImage nor an ELF vmlinux"));
    // Looks like a bzImage (HdrS) but linux-loader refuses it.
    let mut fake = vec![0u8; 8192];
    fake[0x202..0x206].copy_from_slice(b"HdrS");
    let fake = temp_file(&fake);
    let err = load_linux(&mem, &spec(fake.path(), vec![], ""), None).unwrap_err();
    assert!(matches!(err, BootError::NotBzImage { .. }), "{err:?}");
}

#[test]
fn a_missing_kernel_or_initramfs_names_the_file() {
    let mem = create_guest_memory(64 * MIB, false).unwrap();
    let err = load_linux(
        &mem,
        &spec(Path::new("/nonexistent/vmlinuz"), vec![], ""),
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");

    let (kernel, _) = debian_kernel();
    let mem = create_guest_memory(512 * MIB, false).unwrap();
    let missing = PathBuf::from("/nonexistent/initrd.img");
    let err = load_linux(&mem, &spec(&kernel, vec![missing], ""), None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/initrd.img"), "{err}");
}

#[test]
fn an_initramfs_larger_than_ram_is_refused() {
    let (kernel, _) = debian_kernel();
    let big = tempfile::NamedTempFile::new().unwrap();
    big.as_file().set_len(600 * MIB).unwrap(); // sparse
    let mem = create_guest_memory(512 * MIB, false).unwrap();
    let err = load_linux(
        &mem,
        &spec(&kernel, vec![big.path().to_path_buf()], ""),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, BootError::InitrdTooLarge { .. }), "{err:?}");
}

#[test]
fn an_overlong_cmdline_is_refused() {
    let (kernel, _) = debian_kernel();
    let mem = create_guest_memory(256 * MIB, false).unwrap();
    let long = "a".repeat(70_000);
    let err = load_linux(&mem, &spec(&kernel, vec![], &long), None).unwrap_err();
    assert!(matches!(err, BootError::Cmdline(_)), "{err:?}");
    let err = load_linux(&mem, &spec(&kernel, vec![], "bad\0char"), None).unwrap_err();
    assert!(matches!(err, BootError::Cmdline(_)), "{err:?}");
}

/// The ELF vmlinux inside the Debian bzImage (extracted and cached by the
/// test bed).
fn debian_vmlinux() -> PathBuf {
    cradle_testbed::Kernel::debian().unwrap().vmlinux().unwrap()
}

#[test]
fn debian_vmlinux_loads_for_pvh_with_start_info_cmdline_and_initramfs() {
    use cradle_vmm::arch::x86_64::layout::{PVH_INFO_START, PVH_MEMMAP_START, PVH_MODLIST_START};
    use cradle_vmm::boot::pvh::XEN_HVM_START_MAGIC;
    use linux_loader::loader::elf::start_info::{
        hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
    };
    let vmlinux = debian_vmlinux();
    let (_, initrd) = debian_kernel();
    let mem = create_guest_memory(512 * MIB, false).unwrap();
    let cmdline = "console=ttyS0 pvh=yes";
    let loaded = load_linux(
        &mem,
        &spec(&vmlinux, vec![initrd.clone()], cmdline),
        Some(0xe0000),
    )
    .unwrap();
    assert_eq!(
        loaded.protocol,
        BootProtocol::Pvh {
            start_info: PVH_INFO_START
        }
    );
    // The PVH entry is a physical address inside the kernel, which Debian
    // links at 16 MiB (CONFIG_PHYSICAL_START).
    assert!(
        (16 * MIB..512 * MIB).contains(&loaded.entry),
        "{:#x}",
        loaded.entry
    );

    let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
    assert_eq!((info.magic, info.version), (XEN_HVM_START_MAGIC, 1));
    assert_eq!(info.rsdp_paddr, 0xe0000);
    let mut line = vec![0u8; cmdline.len() + 1];
    mem.read_slice(&mut line, GuestAddress(info.cmdline_paddr))
        .unwrap();
    assert_eq!(line, [cmdline.as_bytes(), b"\0"].concat());

    // The initramfs is module 0, byte for byte, above the kernel.
    assert_eq!(
        (info.nr_modules, info.modlist_paddr),
        (1, PVH_MODLIST_START)
    );
    let module: hvm_modlist_entry = mem.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
    assert_eq!(Some((module.paddr, module.size)), loaded.initrd);
    let base = fs::read(&initrd).unwrap();
    assert_eq!(module.size, base.len() as u64);
    assert!(module.paddr > loaded.entry && module.paddr + module.size <= 512 * MIB);
    let mut got = vec![0u8; base.len()];
    mem.read_slice(&mut got, GuestAddress(module.paddr))
        .unwrap();
    assert!(got == base, "the initramfs differs in guest memory");

    // The memory map: low RAM below the EBDA and everything from 1 MiB.
    assert_eq!(
        (info.memmap_paddr, info.memmap_entries),
        (PVH_MEMMAP_START, 2)
    );
    let map: Vec<(u64, u64, u32)> = (0..2)
        .map(|i| {
            let e: hvm_memmap_table_entry = mem
                .read_obj(GuestAddress(PVH_MEMMAP_START + i * 24))
                .unwrap();
            (e.addr, e.size, e.type_)
        })
        .collect();
    assert_eq!(map, vec![(0, 0x9fc00, 1), (MIB, 511 * MIB, 1)]);

    // The kernel's first segment sits at its physical address, byte for
    // byte (program header 0 of the file: offset and address from it).
    let image = fs::read(&vmlinux).unwrap();
    let phoff = u64::from_le_bytes(image[0x20..0x28].try_into().unwrap()) as usize;
    let p_offset = u64::from_le_bytes(image[phoff + 8..phoff + 16].try_into().unwrap()) as usize;
    let p_paddr = u64::from_le_bytes(image[phoff + 24..phoff + 32].try_into().unwrap());
    let mut head = vec![0u8; 4096];
    mem.read_slice(&mut head, GuestAddress(p_paddr)).unwrap();
    assert_eq!(head, image[p_offset..p_offset + 4096]);
}

#[test]
fn pvh_boot_vcpu_starts_in_32_bit_protected_mode_with_ebx_at_the_start_info() {
    use cradle_vmm::arch::x86_64::layout::PVH_INFO_START;
    use cradle_vmm::arch::x86_64::sregs::CR0_PE;
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        return;
    }
    let mem = create_guest_memory(256 * MIB, false).unwrap();
    let loaded = load_linux(&mem, &spec(&debian_vmlinux(), vec![], ""), None).unwrap();
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = kvm.create_vm().unwrap();
    register_guest_memory(&vm, &mem).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    setup_boot_vcpu(&mem, &vcpu, &loaded).unwrap();
    let regs = vcpu.get_regs().unwrap();
    assert_eq!((regs.rip, regs.rbx), (loaded.entry, PVH_INFO_START));
    let sregs = vcpu.get_sregs().unwrap();
    assert_eq!(sregs.cr0 & 0x8000_0001, CR0_PE, "protected mode, no paging");
    assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), 0);
    assert_eq!((sregs.cs.l, sregs.cs.db), (0, 1));
}

#[test]
fn an_elf_without_a_pvh_note_is_refused() {
    // A minimal ELF64 header with no program headers.
    let mut elf = vec![0u8; 4096];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little endian
    elf[6] = 1;
    elf[0x18..0x20].copy_from_slice(&0x20_0000u64.to_le_bytes()); // e_entry
    elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    let elf = temp_file(&elf);
    let mem = create_guest_memory(64 * MIB, false).unwrap();
    let err = load_linux(&mem, &spec(elf.path(), vec![], ""), None).unwrap_err();
    assert!(matches!(err, BootError::NoPvhEntry(_)), "{err:?}");
    assert!(err.to_string().contains("no PVH entry point"), "{err}");
}
