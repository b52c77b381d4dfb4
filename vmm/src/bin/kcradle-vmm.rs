//! `kcradle-vmm`: `kcradle boot` in a binary of its own, without the
//! launcher (image pulls, HTTP, tar). Same flags, same behaviour, same
//! exit status. Every VM holds a private copy of its binary's relocated
//! read-only data (`.data.rel.ro`, `.got`, written by the dynamic loader),
//! so the smaller binary is the smaller VMM; `kcradle run` starts this one
//! when it sits next to `kcradle`.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use cradle_vmm::boot_cli::{cli_error, run_boot, BootArgs};

/// Boot a Linux kernel in a microVM; exits with the guest's status.
#[derive(Debug, Parser)]
#[command(name = "kcradle-vmm", version)]
struct Cli {
    #[command(flatten)]
    boot: BootArgs,
}

fn main() -> ExitCode {
    let started = Instant::now();
    match Cli::try_parse() {
        Ok(cli) => run_boot(cli.boot, started),
        Err(e) => cli_error(&e, "kcradle-vmm"),
    }
}
