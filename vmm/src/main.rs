//! `kcradle`: the cradle launcher and VMM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};
use cradle_vmm::config::{
    DiskConfig, FsConfig, MemorySize, NetConfig, SerialConfig, VmConfig, DEFAULT_CMDLINE,
};
use cradle_vmm::launch::boot;
use cradle_vmm::probe::{run_probe, DEFAULT_ITERATIONS};
use cradle_vmm::seccomp::SeccompMode;

/// Runs containers in KVM microVMs.
#[derive(Debug, Parser)]
#[command(name = "kcradle", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a tiny long-mode payload on /dev/kvm: serial output and a timed ring-0 loop.
    ProbeKvm {
        /// Iterations of the ring-0 `dec ecx; jnz` loop.
        #[arg(long, default_value_t = DEFAULT_ITERATIONS,
              value_parser = clap::value_parser!(u32).range(1..))]
        iterations: u32,
    },
    /// Boot a Linux kernel in a microVM; exits with the guest's status.
    Boot(Box<BootArgs>),
    /// Make a bundle directory from a container image.
    Summon(Box<cradle_vmm::launcher::cli::SummonArgs>),
    /// Run a bundle: device daemons, pod network, docker.sock and the VM.
    Run(cradle_vmm::launcher::cli::RunArgs),
    /// List running pods.
    Ps(cradle_vmm::launcher::cli::StateArgs),
    /// Stop a running pod gracefully.
    Stop(cradle_vmm::launcher::cli::DirArgs),
    /// Delete a bundle that is not running.
    Rm(cradle_vmm::launcher::cli::DirArgs),
}

#[derive(Debug, Args)]
struct BootArgs {
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
    fn into_config(self) -> Result<VmConfig, cradle_vmm::config::ConfigError> {
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

fn run_boot(args: BootArgs, started: Instant) -> ExitCode {
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

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("kcradle: no subcommand given; try 'kcradle --help'");
            return ExitCode::from(2);
        }
        Err(e) if e.use_stderr() => {
            // One line: clap's message without the usage and help hints.
            let rendered = e.to_string();
            let reason: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            let reason = reason.join(" ");
            eprintln!("kcradle: {}", reason.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Command::ProbeKvm { iterations } => match run_probe(iterations) {
            Ok(report) => {
                for line in report.lines() {
                    println!("{line}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kcradle: probe-kvm: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Boot(args) => run_boot(*args, started),
        Command::Summon(args) => cradle_vmm::launcher::cli::run_summon(*args),
        Command::Run(args) => cradle_vmm::launcher::cli::run_run(args),
        Command::Ps(args) => cradle_vmm::launcher::cli::run_ps(args),
        Command::Stop(args) => cradle_vmm::launcher::cli::run_stop(args),
        Command::Rm(args) => cradle_vmm::launcher::cli::run_rm(args),
    }
}
