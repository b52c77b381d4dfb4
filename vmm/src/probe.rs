//! `kcradle probe-kvm`: does this `/dev/kvm` run guest ring 0 natively?
//!
//! A 2 MiB VM with one long-mode vCPU runs a hand-assembled payload: it
//! writes [`BANNER`] to the serial port one `out` per byte, counts a ring-0
//! `dec ecx; jnz` loop down from N, writes [`TRAILER`] and halts. The serial
//! bytes prove vCPU setup and port I/O work; the time between the last banner
//! byte and the first trailer byte is the loop's wall time, which tells
//! hardware virtualisation (~1 ns per iteration) from emulation (~1 us).

use std::time::Duration;

use crate::minivm::{MiniVm, VmError};
use crate::payload::{Asm, CodeMode};

/// Iterations of the ring-0 loop unless told otherwise.
pub const DEFAULT_ITERATIONS: u32 = 10_000_000;
/// What the payload writes before the loop; tests look for it.
pub const BANNER: &[u8] = b"cradle-kvm-ok\n";
/// What the payload writes after the loop.
pub const TRAILER: &[u8] = b"done\n";
/// COM1, where the payload writes.
pub const SERIAL_PORT: u16 = 0x3f8;
/// RAM of the probe VM.
pub const PROBE_MEM_SIZE: usize = 2 << 20;

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A loop of zero iterations would wrap `ecx` and run 2^32 times.
    #[error("iterations must be at least 1")]
    ZeroIterations,
    /// Building or running the VM failed.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The payload halted without writing both markers, one byte per exit.
    #[error("the payload wrote {0:?} instead of the banner and trailer")]
    BadOutput(String),
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Every byte the payload wrote to the serial port.
    pub serial: Vec<u8>,
    /// Iterations of the ring-0 loop.
    pub iterations: u32,
    /// Wall time of the loop, measured between the two port exits around it.
    pub ring0_loop: Duration,
}

impl ProbeReport {
    /// The two lines `kcradle probe-kvm` prints, without newlines.
    pub fn lines(&self) -> [String; 2] {
        [
            format!("serial: {}", escape(&self.serial)),
            format!(
                "ring0-loop: {} iterations in {} us",
                self.iterations,
                self.ring0_loop.as_micros()
            ),
        ]
    }
}

/// Escapes bytes the way Rust escapes a byte string (`\n`, `\x07`, ...), so
/// the serial output stays on one line.
pub fn escape(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// The probe payload for `iterations` loop iterations.
pub fn probe_payload(iterations: u32) -> Vec<u8> {
    Asm::new(CodeMode::Long)
        .write_port(SERIAL_PORT, BANNER)
        .countdown(iterations)
        .write_port(SERIAL_PORT, TRAILER)
        .hlt()
        .finish()
}

/// Runs the probe on `/dev/kvm`.
pub fn run_probe(iterations: u32) -> Result<ProbeReport, ProbeError> {
    if iterations == 0 {
        return Err(ProbeError::ZeroIterations);
    }
    let mut vm = MiniVm::new(PROBE_MEM_SIZE, CodeMode::Long, &probe_payload(iterations))?;
    // One exit per serial byte plus slack for anything unexpected.
    let log = vm.run(BANNER.len() + TRAILER.len() + 16)?;
    let serial = log.port_bytes(SERIAL_PORT);
    let writes: Vec<_> = log.port_writes(SERIAL_PORT).collect();
    let expected = [BANNER, TRAILER].concat();
    if serial != expected || writes.len() != expected.len() {
        return Err(ProbeError::BadOutput(escape(&serial)));
    }
    let before = writes[BANNER.len() - 1].0;
    let after = writes[BANNER.len()].0;
    Ok(ProbeReport {
        serial,
        iterations,
        ring0_loop: after.saturating_duration_since(before),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_have_the_documented_format() {
        let report = ProbeReport {
            serial: b"cradle-kvm-ok\ndone\n".to_vec(),
            iterations: 1000,
            ring0_loop: Duration::from_micros(1234),
        };
        assert_eq!(
            report.lines(),
            [
                "serial: cradle-kvm-ok\\ndone\\n".to_string(),
                "ring0-loop: 1000 iterations in 1234 us".to_string()
            ]
        );
    }

    #[test]
    fn escape_keeps_output_on_one_line() {
        assert_eq!(escape(b"a\x07\xff\r\n"), "a\\x07\\xff\\r\\n");
    }

    #[test]
    fn payload_has_one_out_per_byte_and_ends_in_hlt() {
        let code = probe_payload(5);
        assert_eq!(
            code.iter().filter(|&&b| b == 0xee).count(),
            BANNER.len() + TRAILER.len()
        );
        assert_eq!(code.last(), Some(&0xf4));
    }

    #[test]
    fn zero_iterations_is_refused() {
        assert!(matches!(run_probe(0), Err(ProbeError::ZeroIterations)));
    }
}
