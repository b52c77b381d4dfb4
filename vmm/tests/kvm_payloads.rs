//! Hand-written payloads on the host's real `/dev/kvm`: vCPU setup in real
//! and long mode, port I/O, MMIO exits and the control port. Iteration
//! counts stay tiny because some hosts emulate guest ring 0.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cradle_vmm::arch::x86_64::layout::MEM_32BIT_GAP_START;
use cradle_vmm::control::{decode_write, CONTROL_PORT};
use cradle_vmm::devices::bus::Bus;
use cradle_vmm::devices::serial::{SerialConsole, COM1_PORT, COM1_PORT_LEN};
use cradle_vmm::minivm::{Access, MiniVm, VmError, PAYLOAD_START};
use cradle_vmm::payload::{Asm, CodeMode};
use cradle_vmm::probe::{probe_payload, run_probe, BANNER, SERIAL_PORT, TRAILER};
use vm_memory::{Bytes, GuestAddress};

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

/// A console writer the test can read after the bus took the device.
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

#[test]
fn serial_console_on_the_bus_gets_payload_output() {
    if !have_kvm() {
        return;
    }
    let out = SharedBuf::default();
    let mut bus = Bus::new();
    let console = SerialConsole::new(out.clone()).unwrap();
    bus.insert(
        u64::from(COM1_PORT),
        u64::from(COM1_PORT_LEN),
        Box::new(console),
    )
    .unwrap();
    // Write, then read the line status register like a polling driver and
    // echo it to the control port.
    let code = Asm::new(CodeMode::Long)
        .write_port(COM1_PORT, b"console\n")
        .mov_dx(COM1_PORT + 5)
        .in_al_dx()
        .mov_dx(CONTROL_PORT)
        .out_dx_al()
        .hlt()
        .finish();
    let mut vm = MiniVm::new(MEM, CodeMode::Long, &code).unwrap();
    let log = vm
        .run_on_bus(&mut bus, 100, Duration::from_secs(10), |_| false)
        .unwrap();
    assert_eq!(*out.0.lock().unwrap(), b"console\n");
    // THR empty and transmitter idle, as the UART model reports it.
    assert_eq!(log.port_bytes(CONTROL_PORT), [0x60]);
}

/// The guest enables COM1's transmit interrupt and sends a byte; the UART
/// signals its eventfd, KVM injects IRQ 4 through the irqfd and the in-kernel
/// PIC, and the guest's handler reports on the control port.
#[test]
fn serial_interrupt_reaches_the_guest_through_irqfd() {
    if !have_kvm() {
        return;
    }
    const MARKER: u32 = 0x1b0_c0de;
    const PIC_VECTOR_BASE: u8 = 0x20;
    let main = Asm::new(CodeMode::Real)
        // 8259 master: ICW1 (edge, ICW4), ICW2 (vector base), ICW3, ICW4
        // (8086 mode), then mask everything but IRQ 4.
        .out_imm8(0x20, 0x11)
        .out_imm8(0x21, PIC_VECTOR_BASE)
        .out_imm8(0x21, 0x04)
        .out_imm8(0x21, 0x01)
        .out_imm8(0x21, !(1 << 4))
        // IER = transmitter holding register empty, then transmit.
        .mov_dx(COM1_PORT + 1)
        .mov_al(0x02)
        .out_dx_al()
        .mov_dx(COM1_PORT)
        .mov_al(b'i')
        .out_dx_al()
        .sti()
        .halt_loop();
    let handler_offset = main.offset() as u16;
    let code = [
        main.finish(),
        Asm::new(CodeMode::Real)
            .mov_dx(CONTROL_PORT)
            .mov_eax(MARKER)
            .out_dx_eax()
            .cli()
            .halt_loop()
            .finish(),
    ]
    .concat();

    let mut vm = MiniVm::with_irqchip(MEM, CodeMode::Real, &code).unwrap();
    // Real-mode IVT entry for IRQ 4: offset, then segment of the handler.
    let ivt_entry = GuestAddress(u64::from(PIC_VECTOR_BASE + 4) * 4);
    let segment = (PAYLOAD_START >> 4) as u16;
    vm.memory().write_obj(handler_offset, ivt_entry).unwrap();
    vm.memory()
        .write_obj(segment, GuestAddress(ivt_entry.0 + 2))
        .unwrap();

    let out = SharedBuf::default();
    let console = SerialConsole::new(out.clone()).unwrap();
    console.attach_irqfd(vm.vm_fd()).unwrap();
    let mut bus = Bus::new();
    bus.insert(
        u64::from(COM1_PORT),
        u64::from(COM1_PORT_LEN),
        Box::new(console),
    )
    .unwrap();

    let log = vm
        .run_on_bus(
            &mut bus,
            100,
            Duration::from_secs(10),
            |a| matches!(a, Access::PortWrite { port, .. } if *port == CONTROL_PORT),
        )
        .unwrap();
    assert_eq!(*out.0.lock().unwrap(), b"i");
    let control: Vec<&[u8]> = log.port_writes(CONTROL_PORT).map(|(_, d)| d).collect();
    assert_eq!(control.len(), 1);
    assert_eq!(decode_write(control[0]), Some(MARKER));
}

#[test]
fn a_guest_waiting_for_an_interrupt_that_never_comes_times_out() {
    if !have_kvm() {
        return;
    }
    // With an in-kernel irqchip, hlt does not exit: only the watchdog ends this.
    let code = Asm::new(CodeMode::Real).cli().halt_loop().finish();
    let mut vm = MiniVm::with_irqchip(MEM, CodeMode::Real, &code).unwrap();
    let started = std::time::Instant::now();
    let err = vm
        .run_on_bus(&mut Bus::new(), 100, Duration::from_millis(300), |_| false)
        .unwrap_err();
    assert!(matches!(err, VmError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
