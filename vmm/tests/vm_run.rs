//! The full VM (in-kernel irqchip and PIT, memfd RAM, CPUID/MSRs/LAPIC per
//! vCPU, one thread per vCPU) on the host's `/dev/kvm`, driven by tiny
//! long-mode payloads instead of a kernel: ring 0 is emulated here, so
//! booting Linux is left to the nested test bed.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cradle_vmm::arch::x86_64::acpi::ACPI_SLEEP_CONTROL_PORT;
use cradle_vmm::arch::x86_64::lapic::{delivery_mode, read_lapic_reg, APIC_LVT0, APIC_LVT1};
use cradle_vmm::arch::x86_64::layout::HIMEM_START;
use cradle_vmm::control::{
    encode_message, ControlMessage, Milestone, CONTROL_MMIO_BASE, CONTROL_PORT,
};
use cradle_vmm::devices::serial::{SerialConsole, COM1_PORT};
use cradle_vmm::exit::{ExitReason, ExitSignal};
use cradle_vmm::launch::platform_buses;
use cradle_vmm::payload::{Asm, CodeMode};
use cradle_vmm::pci::PciRoot;
use cradle_vmm::vm::{Vm, VmSpec};
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;

fn have_kvm() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("skipped: /dev/kvm is absent on this machine");
    false
}

#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `code` at 1 MiB on a fresh VM with the platform devices; a
/// 30-second guard ends a payload that never stops.
fn run_payload(cpus: u8, code: &[u8]) -> (ExitReason, Vec<u8>) {
    let vm = Vm::new(&VmSpec {
        cpus,
        memory: 64 * MIB,
        hugepages: false,
    })
    .unwrap();
    vm.memory()
        .write_slice(code, GuestAddress(HIMEM_START))
        .unwrap();
    vm.start_boot_cpu_at(HIMEM_START).unwrap();

    let exit = Arc::new(ExitSignal::new());
    let out = SharedBuf::default();
    let console = SerialConsole::new(out.clone()).unwrap();
    console.attach_irqfd(vm.fd()).unwrap();
    let pci = Arc::new(Mutex::new(PciRoot::new()));
    let buses = platform_buses(
        Arc::new(Mutex::new(console)),
        pci,
        &exit,
        std::time::Instant::now(),
    )
    .unwrap();

    let guard_exit = exit.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(30));
        guard_exit.raise(ExitReason::VcpuError(
            "test guard: payload never ended".into(),
        ));
    });
    let reason = vm.run(buses, exit, &Default::default()).unwrap();
    let output = out.0.lock().unwrap().clone();
    (reason, output)
}

fn control_out(asm: Asm, message: ControlMessage) -> Asm {
    asm.mov_dx(CONTROL_PORT)
        .mov_eax(encode_message(message))
        .out_dx_eax()
}

#[test]
fn guest_exit_status_on_the_control_port_ends_the_vm() {
    if !have_kvm() {
        return;
    }
    let asm = Asm::new(CodeMode::Long).write_port(COM1_PORT, b"hi\n");
    let asm = control_out(asm, ControlMessage::Milestone(Milestone::InitStarted));
    let code = control_out(asm, ControlMessage::Exit(7))
        .halt_loop()
        .finish();
    let (reason, output) = run_payload(1, &code);
    assert_eq!(reason, ExitReason::Status(7));
    assert_eq!(reason.exit_status(), 7);
    assert_eq!(output, b"hi\n");
}

#[test]
fn exit_status_through_the_mmio_control_register() {
    if !have_kvm() {
        return;
    }
    // What `devmem 0xfe000000 32 0x02000009` does in a guest.
    let code = Asm::new(CodeMode::Long)
        .store_dword(CONTROL_MMIO_BASE, encode_message(ControlMessage::Exit(9)))
        .halt_loop()
        .finish();
    let (reason, _) = run_payload(1, &code);
    assert_eq!(reason, ExitReason::Status(9));
}

#[test]
fn acpi_s5_power_off_ends_the_vm_with_status_0() {
    if !have_kvm() {
        return;
    }
    // SLP_EN | SLP_TYP=5 to the FADT's sleep control register.
    let code = Asm::new(CodeMode::Long)
        .out_imm8(0x08, 0) // a write to an unclaimed port is harmless
        .mov_dx(ACPI_SLEEP_CONTROL_PORT)
        .mov_al((1 << 5) | (5 << 2))
        .out_dx_al()
        .halt_loop()
        .finish();
    let (reason, _) = run_payload(1, &code);
    assert_eq!(reason, ExitReason::PowerOff);
    assert_eq!(reason.exit_status(), 0);
}

#[test]
fn guest_reads_the_host_bridge_through_config_mechanism_1() {
    if !have_kvm() {
        return;
    }
    // Select 00:00.0 register 0, read vendor/device, report it as the exit
    // status's low byte and in full on the control port.
    let code = Asm::new(CodeMode::Long)
        .mov_dx(0xcf8)
        .mov_eax(0x8000_0000)
        .out_dx_eax()
        .mov_dx(0xcfc)
        .in_eax_dx()
        .mov_dx(0x3f8)
        .out_dx_al() // 0x36: '6'
        .mov_dx(CONTROL_PORT)
        .mov_eax(encode_message(ControlMessage::Exit(0)))
        .out_dx_eax()
        .halt_loop()
        .finish();
    let (reason, output) = run_payload(1, &code);
    assert_eq!(reason, ExitReason::Status(0));
    // Vendor 0x1b36: its low byte is ASCII '6'.
    assert_eq!(output, b"6");
}

#[test]
fn i8042_reset_ends_the_vm() {
    if !have_kvm() {
        return;
    }
    let code = Asm::new(CodeMode::Long)
        .out_imm8(0x64, 0xfe)
        .halt_loop()
        .finish();
    let (reason, _) = run_payload(1, &code);
    assert_eq!(reason, ExitReason::Reset);
}

#[test]
fn triple_fault_ends_the_vm_with_an_error_status() {
    if !have_kvm() {
        return;
    }
    // Above the 4 GiB identity map: page fault, no IDT, triple fault.
    let code = Asm::new(CodeMode::Long)
        .store_dword(1 << 33, 1)
        .halt_loop()
        .finish();
    let (reason, _) = run_payload(1, &code);
    assert!(matches!(reason, ExitReason::Shutdown(_)), "{reason:?}");
    assert_eq!(reason.exit_status(), 1);
}

#[test]
fn a_halted_secondary_vcpu_is_stopped_with_the_vm() {
    if !have_kvm() {
        return;
    }
    // vCPU 1 never gets a SIPI and waits in the kernel; the VM must still
    // stop when vCPU 0 reports its status.
    let code = control_out(Asm::new(CodeMode::Long), ControlMessage::Exit(3))
        .halt_loop()
        .finish();
    let (reason, _) = run_payload(2, &code);
    assert_eq!(reason, ExitReason::Status(3));
}

#[test]
fn vcpus_get_their_apic_ids_and_pc_lapic_wiring() {
    if !have_kvm() {
        return;
    }
    let vm = Vm::new(&VmSpec {
        cpus: 2,
        memory: 16 * MIB,
        hugepages: false,
    })
    .unwrap();
    for (id, vcpu) in vm.vcpus().iter().enumerate() {
        let cpuid = vcpu
            .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .unwrap();
        let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1).unwrap();
        assert_eq!(leaf1.ebx >> 24, id as u32);
        assert_eq!((leaf1.ebx >> 16) & 0xff, 2);
        assert_eq!(delivery_mode(read_lapic_reg(vcpu, APIC_LVT0).unwrap()), 7);
        assert_eq!(delivery_mode(read_lapic_reg(vcpu, APIC_LVT1).unwrap()), 4);
    }
}

#[test]
fn bad_cpu_counts_are_refused() {
    if !have_kvm() {
        return;
    }
    for cpus in [0, 255] {
        let err = Vm::new(&VmSpec {
            cpus,
            memory: 16 * MIB,
            hugepages: false,
        })
        .unwrap_err();
        assert!(err.to_string().contains("vCPUs asked"), "{err}");
    }
}
