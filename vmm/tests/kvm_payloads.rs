//! Hand-written payloads on the host's real `/dev/kvm`: vCPU setup in real
//! and long mode, port I/O, MMIO exits and the control port. Iteration
//! counts stay tiny because some hosts emulate guest ring 0.

use std::path::Path;

use cradle_vmm::arch::x86_64::layout::MEM_32BIT_GAP_START;
use cradle_vmm::control::{decode_write, CONTROL_PORT};
use cradle_vmm::minivm::{Access, MiniVm, VmError};
use cradle_vmm::payload::{Asm, CodeMode};
use cradle_vmm::probe::{probe_payload, run_probe, BANNER, SERIAL_PORT, TRAILER};

const MEM: usize = 2 << 20;

fn have_kvm() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    eprintln!("skipped: /dev/kvm is absent on this machine");
    false
}

#[test]
fn real_mode_payload_writes_serial() {
    if !have_kvm() {
        return;
    }
    let code = Asm::new(CodeMode::Real)
        .write_port(SERIAL_PORT, b"real\n")
        .countdown(3)
        .hlt()
        .finish();
    let mut vm = MiniVm::new(MEM, CodeMode::Real, &code).unwrap();
    let log = vm.run(100).unwrap();
    assert_eq!(log.port_bytes(SERIAL_PORT), b"real\n");
    assert_eq!(log.port_writes(SERIAL_PORT).count(), 5);
    assert!(log.events.iter().all(|e| matches!(&e.access,
        Access::PortWrite { port, data } if *port == SERIAL_PORT && data.len() == 1)));
}

#[test]
fn long_mode_probe_payload_serial_bytes() {
    if !have_kvm() {
        return;
    }
    let mut vm = MiniVm::new(MEM, CodeMode::Long, &probe_payload(1000)).unwrap();
    let log = vm.run(100).unwrap();
    assert_eq!(log.port_bytes(SERIAL_PORT), [BANNER, TRAILER].concat());

    let report = run_probe(1000).unwrap();
    assert_eq!(report.serial, b"cradle-kvm-ok\ndone\n");
    assert_eq!(report.iterations, 1000);
    assert!(report.ring0_loop.as_nanos() > 0);
}

#[test]
fn mmio_write_outside_ram_exits_with_value() {
    if !have_kvm() {
        return;
    }
    // Where the first 32-bit PCI BAR will sit: well past the 2 MiB of RAM.
    let bar = MEM_32BIT_GAP_START + 0x1000;
    let code = Asm::new(CodeMode::Long)
        .store_dword(bar, 0xdead_beef)
        .store_dword(bar + 4, 0x0bad_f00d)
        .hlt()
        .finish();
    let mut vm = MiniVm::new(MEM, CodeMode::Long, &code).unwrap();
    let log = vm.run(100).unwrap();
    let writes: Vec<(u64, Vec<u8>)> = log.mmio_writes().map(|(a, d)| (a, d.to_vec())).collect();
    assert_eq!(
        writes,
        vec![
            (bar, 0xdead_beefu32.to_le_bytes().to_vec()),
            (bar + 4, 0x0bad_f00du32.to_le_bytes().to_vec()),
        ]
    );
}

#[test]
fn control_port_receives_32bit_value() {
    if !have_kvm() {
        return;
    }
    for mode in [CodeMode::Long, CodeMode::Real] {
        let code = Asm::new(mode)
            .mov_dx(CONTROL_PORT)
            .mov_eax(0x8000_002a)
            .out_dx_eax()
            .hlt()
            .finish();
        let mut vm = MiniVm::new(MEM, mode, &code).unwrap();
        let log = vm.run(100).unwrap();
        let writes: Vec<&[u8]> = log.port_writes(CONTROL_PORT).map(|(_, d)| d).collect();
        assert_eq!(writes.len(), 1, "{mode:?}");
        assert_eq!(decode_write(writes[0]), Some(0x8000_002a), "{mode:?}");
    }
}

#[test]
fn payload_that_never_halts_hits_the_exit_budget() {
    if !have_kvm() {
        return;
    }
    // Twenty serial writes but a budget of five exits.
    let code = Asm::new(CodeMode::Long)
        .write_port(SERIAL_PORT, &[b'x'; 20])
        .hlt()
        .finish();
    let mut vm = MiniVm::new(MEM, CodeMode::Long, &code).unwrap();
    assert!(matches!(vm.run(5), Err(VmError::TooManyExits(5))));
}

#[test]
fn triple_fault_is_an_unexpected_exit() {
    if !have_kvm() {
        return;
    }
    // A store above the 4 GiB identity map page-faults; with an empty IDT
    // that becomes a triple fault (shutdown), which must be an error.
    let code = Asm::new(CodeMode::Long)
        .store_dword(1 << 33, 1)
        .hlt()
        .finish();
    let mut vm = MiniVm::new(MEM, CodeMode::Long, &code).unwrap();
    match vm.run(10) {
        Err(VmError::UnexpectedExit(reason)) => assert!(reason.contains("Shutdown"), "{reason}"),
        other => panic!("expected a shutdown exit, got {other:?}"),
    }
}
