//! `kcradle`: the cradle launcher and VMM.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("kcradle: no subcommand given; try 'kcradle --help'");
            return ExitCode::from(2);
        }
        Err(e) if e.use_stderr() => {
            // One line: clap's first line already names the bad flag or value.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("bad arguments");
            eprintln!("kcradle: {}", first.trim_start_matches("error: "));
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
    }
}
