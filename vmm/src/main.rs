//! `kcradle`: the cradle launcher and VMM.

use std::process::ExitCode;
use std::time::Instant;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
use cradle_vmm::boot_cli::{cli_error, run_boot, BootArgs};
use cradle_vmm::probe::{run_probe, DEFAULT_ITERATIONS};

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

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("kcradle: no subcommand given; try 'kcradle --help'");
            return ExitCode::from(2);
        }
        Err(e) => return cli_error(&e, "kcradle"),
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
