//! The guest console: a 16550A UART (vm-superio) on COM1, raising IRQ 4
//! through an eventfd that KVM turns into an interrupt (irqfd), so raising
//! it needs no ioctl from the vCPU thread.

use std::io::{self, Write};

use kvm_ioctls::VmFd;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::bus::BusDevice;

/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// Number of UART registers.
pub const COM1_PORT_LEN: u16 = 8;
/// COM1's ISA interrupt line (GSI 4 on the in-kernel PIC and IOAPIC).
pub const COM1_GSI: u32 = 4;

/// Raises the UART's interrupt by signalling an eventfd.
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

/// Why the console could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// eventfd creation failed.
    #[error("cannot create the serial interrupt eventfd: {0}")]
    EventFd(io::Error),
    /// KVM_IRQFD failed (no in-kernel irqchip?).
    #[error("cannot attach the serial eventfd to GSI {gsi}: {err}")]
    Irqfd {
        /// The interrupt line.
        gsi: u32,
        /// The KVM error.
        err: kvm_ioctls::Error,
    },
}

/// COM1, writing what the guest transmits to `W`.
pub struct SerialConsole<W: Write + Send> {
    uart: Serial<EventFdTrigger, NoEvents, W>,
    /// Failed register writes and dropped input; never fatal to the guest.
    errors: u64,
}

impl<W: Write + Send> std::fmt::Debug for SerialConsole<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialConsole")
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl<W: Write + Send> SerialConsole<W> {
    /// A UART whose transmit side goes to `out`.
    pub fn new(out: W) -> Result<Self, SerialError> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(SerialError::EventFd)?;
        Ok(SerialConsole {
            uart: Serial::new(EventFdTrigger(evt), out),
            errors: 0,
        })
    }

    /// The eventfd the UART signals on an interrupt.
    pub fn interrupt_evt(&self) -> &EventFd {
        &self.uart.interrupt_evt().0
    }

    /// Wires the interrupt eventfd to COM1's GSI in `vm`'s in-kernel irqchip.
    pub fn attach_irqfd(&self, vm: &VmFd) -> Result<(), SerialError> {
        vm.register_irqfd(self.interrupt_evt(), COM1_GSI)
            .map_err(|err| SerialError::Irqfd { gsi: COM1_GSI, err })
    }

    /// Queues host input for the guest to read; returns how many bytes fit
    /// in the receive FIFO (0 when it is full: the caller retries later).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        match self.uart.enqueue_raw_bytes(bytes) {
            Ok(n) => n,
            Err(vm_superio::serial::Error::FullFifo) => 0,
            Err(_) => {
                self.errors += 1;
                0
            }
        }
    }

    /// The writer the guest's output goes to.
    pub fn output(&self) -> &W {
        self.uart.writer()
    }

    /// How many register writes failed or input bytes were dropped.
    pub fn errors(&self) -> u64 {
        self.errors
    }
}

impl<W: Write + Send> BusDevice for SerialConsole<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // The UART has byte-wide registers; wider reads get all-ones.
        match (data, u8::try_from(offset)) {
            ([byte], Ok(offset)) => *byte = self.uart.read(offset),
            (data, _) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let ([value], Ok(offset)) = (data, u8::try_from(offset)) {
            if self.uart.write(offset, *value).is_err() {
                self.errors += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;
    const IER_RDA: u8 = 0x01;
    const IER_THRE: u8 = 0x02;

    fn read(console: &mut SerialConsole<Vec<u8>>, offset: u64) -> u8 {
        let mut b = [0u8];
        console.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn transmitted_bytes_reach_the_writer() {
        let mut console = SerialConsole::new(Vec::new()).unwrap();
        for b in b"hello\n" {
            console.write(THR, &[*b]);
        }
        assert_eq!(console.output(), b"hello\n");
        // Transmitter empty and holding register empty.
        assert_eq!(read(&mut console, LSR) & 0x60, 0x60);
        // No interrupt while IER is clear.
        assert!(console.interrupt_evt().read().is_err());
    }

    #[test]
    fn thr_empty_interrupt_signals_the_eventfd() {
        let mut console = SerialConsole::new(Vec::new()).unwrap();
        console.write(IER, &[IER_THRE]);
        console.write(THR, b"x");
        assert_eq!(console.interrupt_evt().read().unwrap(), 1);
    }

    #[test]
    fn input_is_readable_and_raises_rda() {
        let mut console = SerialConsole::new(Vec::new()).unwrap();
        console.write(IER, &[IER_RDA]);
        assert_eq!(console.enqueue_input(b"ok"), 2);
        assert_eq!(console.interrupt_evt().read().unwrap(), 1);
        assert_eq!(read(&mut console, LSR) & 0x01, 0x01);
        assert_eq!(read(&mut console, THR), b'o');
        assert_eq!(read(&mut console, THR), b'k');
        assert_eq!(read(&mut console, LSR) & 0x01, 0);
    }

    #[test]
    fn a_full_fifo_takes_what_fits_and_is_not_an_error() {
        let mut console = SerialConsole::new(Vec::new()).unwrap();
        let big = [b'x'; 100];
        let first = console.enqueue_input(&big);
        assert!(first > 0 && first < 100);
        assert_eq!(console.enqueue_input(&big), 0);
        assert_eq!(console.errors(), 0);
        assert_eq!(read(&mut console, THR), b'x');
        assert_eq!(console.enqueue_input(&big), 1);
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_harmless() {
        let mut console = SerialConsole::new(Vec::new()).unwrap();
        console.write(THR, &[1, 2, 3, 4]);
        console.write(0x100, b"z");
        assert!(console.output().is_empty());
        let mut wide = [0u8; 4];
        console.read(THR, &mut wide);
        assert_eq!(wide, [0xff; 4]);
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("closed"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn errors_are_counted_not_fatal() {
        let mut console = SerialConsole::new(Broken).unwrap();
        console.write(THR, b"a");
        console.write(THR, b"b");
        assert_eq!(console.errors(), 2);
    }
}
