//! The boot suite: kcradle and QEMU `-M microvm -accel kvm` boot the same
//! kernel and initramfs, alternately, several times; on the host if its
//! KVM runs guest kernels natively, else inside a nested L1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cradle_testbed::kvm::{detect, KvmMode};
use cradle_testbed::{Kernel, NestedHost, QemuGuest, L2_INITRAMFS, L2_KERNEL};

use super::{SuiteConfig, Workspace};
use crate::boot::probe::probe;
use crate::boot::{parse_lines, BootLog, BootMeasurement, BootVmm, LINE_MARK};
use crate::PerfError;

/// What the guest's init script prints first: the end of "time to init".
const INIT_MARK: &str = "cradle-perf-l2-init";
/// Guest command line, the same for both VMMs.
const APPEND: &str = "console=ttyS0 reboot=k panic=-1 quiet";
/// Guest RAM, MiB.
const GUEST_MIB: u32 = 256;
/// Longest one boot may take (nested boots are slow).
const BOOT_TIMEOUT_SECS: u64 = 150;
/// Where the probe lives in L1.
const L1_PROBE: &str = "/usr/bin/cradle-boot-probe";

/// The two VMM command lines for `kernel` and `initrd`. Ours is
/// `kcradle-vmm`, the VMM-only binary `kcradle run` starts (same flags as
/// `kcradle boot`, a smaller private footprint per VM).
fn commands(vmm: &str, kernel: &str, initrd: &str) -> [(BootVmm, Vec<String>); 2] {
    let mem = format!("{GUEST_MIB}M");
    let kc = vec![
        vmm.into(),
        "--kernel".into(),
        kernel.into(),
        "--initrd".into(),
        initrd.into(),
        "--cpus".into(),
        "1".into(),
        "--memory".into(),
        mem.clone(),
        "--cmdline".into(),
        APPEND.into(),
    ];
    let qemu: Vec<String> = [
        "qemu-system-x86_64",
        "-M",
        "microvm,memory-backend=mem",
        "-object",
        &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-smp",
        "1",
        "-m",
        &mem,
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        kernel,
        "-initrd",
        initrd,
        "-append",
        APPEND,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    [(BootVmm::Kcradle, kc), (BootVmm::QemuMicrovm, qemu)]
}

/// Quotes `s` for busybox sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The L1 script: every boot through the probe, alternating order,
/// printing `@@boot VMM REP JSON`.
fn l1_script(reps: u32, cmds: &[(BootVmm, Vec<String>); 2]) -> String {
    let mut s = String::new();
    for rep in 0..reps {
        let order: Vec<&(BootVmm, Vec<String>)> = if rep % 2 == 0 {
            cmds.iter().collect()
        } else {
            cmds.iter().rev().collect()
        };
        for (vmm, cmd) in order {
            let cmd: Vec<String> = cmd.iter().map(|a| sh_quote(a)).collect();
            s.push_str(&format!(
                "echo \"{LINE_MARK}{} {rep} $({L1_PROBE} --timeout {BOOT_TIMEOUT_SECS} --marker {INIT_MARK} -- {})\"\n",
                vmm.name(),
                cmd.join(" ")
            ));
        }
    }
    s
}

/// Runs the boot suite.
pub fn run_boot(cfg: &SuiteConfig) -> Result<BootLog, PerfError> {
    let ws = Workspace::new(cfg)?;
    let base = ws.log("boot");
    let reps = cfg.repetitions.max(1);
    let kernel = Kernel::debian().map_err(|e| PerfError::Setup(format!("kernel: {e}")))?;
    let initrd = QemuGuest::new()
        .standalone_initramfs(&format!("echo {INIT_MARK}\n"))
        .map_err(|e| PerfError::Setup(format!("L2 initramfs: {e}")))?;
    let mode = detect(&cfg.bin.kcradle);
    let placement = mode.describe();
    eprintln!("cradle-perf boot: {placement}");
    let measurements = if mode == KvmMode::Native {
        on_host(cfg, reps, &kernel.image, &initrd)?
    } else {
        nested(cfg, reps, &kernel, &initrd)?
    };
    Ok(BootLog {
        suite: "boot".into(),
        quick: base.quick,
        started: base.started,
        machine: base.machine,
        placement,
        measurements,
    })
}

/// `kcradle-vmm`, next to the given `kcradle` (both are built together).
fn vmm_binary(cfg: &SuiteConfig) -> Result<PathBuf, PerfError> {
    let vmm = cfg.bin.kcradle.with_file_name("kcradle-vmm");
    if vmm.exists() {
        Ok(vmm)
    } else {
        Err(PerfError::Setup(format!(
            "{} not found: build it (cargo build -p cradle-vmm)",
            vmm.display()
        )))
    }
}

fn on_host(
    cfg: &SuiteConfig,
    reps: u32,
    kernel: &Path,
    initrd: &Path,
) -> Result<Vec<BootMeasurement>, PerfError> {
    let cmds = commands(
        &vmm_binary(cfg)?.to_string_lossy(),
        &kernel.to_string_lossy(),
        &initrd.to_string_lossy(),
    );
    let mut out = Vec::new();
    for rep in 0..reps {
        let mut order: Vec<&(BootVmm, Vec<String>)> = cmds.iter().collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for (vmm, cmd) in order {
            let probe = probe(cmd, INIT_MARK, Duration::from_secs(BOOT_TIMEOUT_SECS))?;
            out.push(BootMeasurement {
                vmm: *vmm,
                repetition: rep,
                probe,
            });
        }
    }
    Ok(out)
}

fn nested(
    cfg: &SuiteConfig,
    reps: u32,
    kernel: &Kernel,
    initrd: &Path,
) -> Result<Vec<BootMeasurement>, PerfError> {
    let probe_bin: PathBuf = std::env::current_exe()
        .map_err(|e| PerfError::Setup(format!("locating cradle-perf: {e}")))?
        .with_file_name("cradle-boot-probe");
    let probe_bin = std::env::var_os("CRADLE_BOOT_PROBE")
        .map(PathBuf::from)
        .unwrap_or(probe_bin);
    if !probe_bin.exists() {
        return Err(PerfError::Setup(format!(
            "{} not found: build it (cargo build -p cradle-perf)",
            probe_bin.display()
        )));
    }
    let vmm = vmm_binary(cfg)?;
    let cmds = commands("kcradle-vmm", L2_KERNEL, L2_INITRAMFS);
    let script = l1_script(reps, &cmds);
    let timeout = Duration::from_secs(240 + u64::from(reps) * 2 * 90);
    let run = NestedHost::new()
        // Two L1 CPUs: the VMM's vCPU thread and the probe's sampling do
        // not share one.
        .configure(|l1| l1.cpus(2).timeout(timeout))
        .with_qemu()
        .binary_at(&vmm, "/usr/bin/kcradle-vmm")
        .binary_at(&probe_bin, L1_PROBE)
        .l2_kernel(kernel)
        .l2_initramfs(initrd)
        .run(&script)
        .map_err(|e| PerfError::Setup(format!("nested L1: {e}")))?;
    let ms = parse_lines(&run.output)?;
    if ms.len() != 2 * reps as usize {
        return Err(PerfError::Report(format!(
            "expected {} boots, L1 printed {}:\n{}",
            2 * reps,
            ms.len(),
            run.output
        )));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l1_script_alternates_and_quotes() {
        let cmds = commands("kcradle-vmm", "/l2/vmlinuz", "/l2/initrd");
        let s = l1_script(2, &cmds);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("echo \"@@boot kcradle 0 $("), "{s}");
        assert!(
            lines[1].starts_with("echo \"@@boot qemu-microvm 0 $("),
            "{s}"
        );
        assert!(
            lines[2].starts_with("echo \"@@boot qemu-microvm 1 $("),
            "{s}"
        );
        assert!(lines[3].starts_with("echo \"@@boot kcradle 1 $("), "{s}");
        assert!(s.contains("'console=ttyS0 reboot=k panic=-1 quiet'"), "{s}");
        assert!(s.contains("'microvm,memory-backend=mem'"), "{s}");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }
}
