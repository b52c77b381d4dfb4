//! The `main` every daemon shares: parse flags, answer
//! `--print-capabilities`, validate (one line, exit 2), start logging, then
//! hand the configuration to the daemon's own `run`.

use std::fmt::Display;
use std::process::ExitCode;

use clap::Parser;

use super::{init_logging, parse_or_exit, CommonArgs};

/// A daemon's command line: its own flags around the [`CommonArgs`].
pub trait DaemonCli: Parser {
    /// The validated configuration `run` receives.
    type Config;
    /// The flags every daemon shares.
    fn common(&self) -> &CommonArgs;
    /// Checks what clap cannot (required combinations, files that must
    /// exist); `Err` is a one-line reason.
    fn into_config(self) -> Result<Self::Config, String>;
}

/// What a daemon's `run` returns when it ends without an error: `()` for
/// exit 0, or an explicit [`ExitCode`] (e.g. 2 for a backend that refused
/// the configuration only once it was reached).
pub trait Outcome {
    /// The process exit code.
    fn exit_code(self) -> ExitCode;
}

impl Outcome for () {
    fn exit_code(self) -> ExitCode {
        ExitCode::SUCCESS
    }
}

impl Outcome for ExitCode {
    fn exit_code(self) -> ExitCode {
        self
    }
}

/// Runs a daemon whose command line is `C`: `capabilities` prints the
/// `--print-capabilities` JSON; `run` serves until the daemon stops. A bad
/// flag or configuration exits 2 with one line, a `run` error is logged as
/// one line and exits 1.
pub fn main<C, T, E>(capabilities: fn(), run: impl FnOnce(C::Config) -> Result<T, E>) -> ExitCode
where
    C: DaemonCli,
    T: Outcome,
    E: Display,
{
    let cli: C = parse_or_exit();
    if cli.common().print_capabilities {
        capabilities();
        return ExitCode::SUCCESS;
    }
    let level = cli.common().log_level.clone();
    let cfg = match cli.into_config() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("{reason}");
            return ExitCode::from(2);
        }
    };
    init_logging(&level);
    match run(cfg) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
