//! `kcradle boot`'s flags and the way it reports, shared by `kcradle` and
//! `kcradle-vmm` (the same VMM in a binary without the launcher, so its
//! relocated read-only data, a private copy in every VM, stays small).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use crate::config::{
    DiskConfig, FsConfig, MemorySize, NetConfig, SerialConfig, VmConfig, DEFAULT_CMDLINE,
};
use crate::launch::boot;
use crate::seccomp::SeccompMode;

/// The flags of `kcradle boot`.
#[derive(Debug, Args)]
pub struct BootArgs {
    /// JSON file describing the whole VM (instead of the other flags).
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline", "cpus", "memory",
        "hugepages", "disk", "fs", "net", "serial", "seccomp", "jail"])]
    config: Option<PathBuf>,
    /// bzImage or ELF vmlinux (PVH) to boot.
    #[arg(long, required_unless_present = "config")]
    kernel: Option<PathBuf>,
    /// Initramfs; repeat to append more cpio archives.
    #[arg(long)]
    initrd: Vec<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u8,
    /// Guest RAM: 512M, 2G, or a number of MiB.
    #[arg(long, default_value = "512M")]
    memory: MemorySize,
    /// Back guest RAM with 2 MiB hugepages.
    #[arg(long)]
    hugepages: bool,
    /// vhost-user-blk disk: socket=PATH[,num_queues=N,queue_size=N].
    #[arg(long)]
    disk: Vec<DiskConfig>,
    /// vhost-user-fs share: tag=TAG,socket=PATH[,num_queues=N].
    #[arg(long)]
    fs: Vec<FsConfig>,
    /// vhost-user-net interface: socket=PATH,mac=MAC[,num_queue_pairs=N].
    #[arg(long)]
    net: Vec<NetConfig>,
    /// Guest console: stdio, file=PATH or none.
    #[arg(long, default_value = "stdio")]
    serial: SerialConfig,
    /// seccomp filters per thread kind: kill, log or none.
    #[arg(long, value_enum, default_value_t = SeccompMode::Kill)]
    seccomp: SeccompMode,
    /// Before the vCPUs start, pivot into DIR in a private mount namespace
    /// and drop every capability.
    #[arg(long, value_name = "DIR")]
    jail: Option<PathBuf>,
}

impl BootArgs {
    fn into_config(self) -> Result<VmConfig, crate::config::ConfigError> {
        if let Some(path) = self.config {
            return VmConfig::from_json_file(&path);
        }
        Ok(VmConfig {
            // clap requires --kernel when --config is absent.
            kernel: self.kernel.unwrap_or_default(),
            initrd: self.initrd,
            cmdline: self.cmdline,
            cpus: self.cpus,
            memory: self.memory,
            hugepages: self.hugepages,
            disks: self.disk,
            fs: self.fs,
            nets: self.net,
            serial: self.serial,
            seccomp: self.seccomp,
            jail: self.jail,
        })
    }
}

/// Boots the VM `args` describe; the exit code is the guest's (see
/// docs/vmm.md). `started` is when the process started.
pub fn run_boot(args: BootArgs, started: Instant) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KCRADLE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kcradle: boot: {e}");
            return ExitCode::from(2);
        }
    };
    match boot(&config, started) {
        Ok(reason) => ExitCode::from(reason.exit_status()),
        Err(e) => {
            eprintln!("kcradle: boot: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints a clap error as one line (no usage, no hints) and returns 2;
/// prints `--help` and `--version` and returns 0.
pub fn cli_error(e: &clap::Error, program: &str) -> ExitCode {
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let rendered = e.to_string();
    let reason: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let reason = reason.join(" ");
    eprintln!("{program}: {}", reason.trim_start_matches("error: "));
    ExitCode::from(2)
}
