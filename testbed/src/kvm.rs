//! Decides whether this host's `/dev/kvm` runs guest kernel code natively,
//! so VMM tests can boot directly instead of going through [`NestedHost`].
//!
//! [`NestedHost`]: crate::NestedHost

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::console::run_with_console;

/// Ring-0 loop iterations the probe runs. Native KVM does this in a few
/// milliseconds; an instruction-emulating KVM (~1 M instr/s) needs tens of
/// seconds and is stopped by [`PROBE_BOUND`].
pub const PROBE_ITERATIONS: u64 = 10_000_000;
/// Longest a native probe may take, process start included.
pub const PROBE_BOUND: Duration = Duration::from_secs(3);

/// What `/dev/kvm` on this host can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmMode {
    /// Guest kernels run at hardware speed: boot guests directly.
    Native,
    /// `/dev/kvm` works but runs guest ring 0 too slowly for a kernel (or
    /// the probe failed, with the reason); use the nested test bed.
    Emulated(String),
    /// No usable `/dev/kvm`.
    Absent,
}

impl KvmMode {
    /// A one-line description for test logs.
    pub fn describe(&self) -> String {
        match self {
            KvmMode::Native => {
                "host KVM runs guest kernels natively: booting guests directly".into()
            }
            KvmMode::Emulated(why) => {
                format!("host KVM unusable for guest kernels ({why}): using the nested test bed")
            }
            KvmMode::Absent => "no /dev/kvm on this host: using the nested test bed".into(),
        }
    }
}

/// Probes `/dev/kvm` with `probe` (the `kcradle` binary: `kcradle probe-kvm
/// --iterations N` runs a long-mode ring-0 loop and prints
/// `ring0-loop: N iterations in T us`).
pub fn detect(probe: &Path) -> KvmMode {
    if !Path::new("/dev/kvm").exists() {
        return KvmMode::Absent;
    }
    let mut cmd = Command::new(probe);
    cmd.args(["probe-kvm", "--iterations", &PROBE_ITERATIONS.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match run_with_console(&mut cmd, PROBE_BOUND, None) {
        Err(e) => KvmMode::Emulated(format!("probe did not start: {e}")),
        Ok(c) if c.timed_out => KvmMode::Emulated(format!(
            "{PROBE_ITERATIONS} ring-0 iterations did not finish within {PROBE_BOUND:?}"
        )),
        Ok(c) if !c.console.contains("serial: cradle-kvm-ok") => {
            KvmMode::Emulated(format!("probe failed: {}", c.stderr.trim()))
        }
        Ok(_) => KvmMode::Native,
    }
}
