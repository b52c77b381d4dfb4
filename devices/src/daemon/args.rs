//! Flags every daemon shares, and the conventions around them.

use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

/// Flags with the same meaning in every daemon; flatten into the daemon's
/// own clap struct with `#[command(flatten)]`.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Listen for the vhost-user frontend on this UNIX socket path.
    #[arg(long, value_name = "PATH", conflicts_with = "fd")]
    pub socket: Option<PathBuf>,
    /// Use this inherited, already listening UNIX socket fd instead of --socket.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub fd: Option<RawFd>,
    /// Number of virtqueues offered (1..=64).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub num_queues: u16,
    /// Maximum entries per virtqueue (power of two, 2..=32768).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = parse_queue_size)]
    pub queue_size: u16,
    /// Refuse writes.
    #[arg(long)]
    pub readonly: bool,
    /// Isolation of the daemon's view of the filesystem.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SandboxMode::Namespace)]
    pub sandbox: SandboxMode,
    /// What a syscall outside the allowlist does.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = SeccompMode::Kill)]
    pub seccomp: SeccompMode,
    /// Log filter: error, warn, info, debug, trace (or a tracing directive).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
    /// Print the vhost-user capabilities as JSON and exit.
    #[arg(long)]
    pub print_capabilities: bool,
}

fn parse_queue_size(s: &str) -> Result<u16, String> {
    let n: u16 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number in 2..=32768"))?;
    if n < 2 || !n.is_power_of_two() {
        return Err(format!("{n} is not a power of two in 2..=32768"));
    }
    Ok(n)
}

/// Sandbox modes (`--sandbox`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// New mount namespace and pivot_root into a root holding only what is served.
    Namespace,
    /// chroot into that root (no namespace; needs CAP_SYS_CHROOT).
    Chroot,
    /// No filesystem isolation.
    None,
}

/// seccomp modes (`--seccomp`).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeccompMode {
    /// A syscall outside the allowlist kills the process.
    Kill,
    /// A syscall outside the allowlist is logged by the kernel and allowed.
    Log,
    /// No filter.
    None,
}

/// Parses the command line; `--help`/`--version` print and exit 0, any
/// other problem prints a one-line reason and exits 2.
pub fn parse_or_exit<T: Parser>() -> T {
    parse_from_or_exit(std::env::args_os())
}

/// [`parse_or_exit`] on explicit arguments.
pub fn parse_from_or_exit<T: Parser, I, A>(args: I) -> T
where
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    match T::try_parse_from(args) {
        Ok(t) => t,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                std::process::exit(0);
            }
            let text = e.to_string();
            let line = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("{}", line.trim());
            std::process::exit(2);
        }
    }
}

/// Prints the `--print-capabilities` JSON of the vhost-user spec
/// (`{"type": "block", "features": [...]}`).
pub fn print_capabilities(device_type: &str, features: &[&str]) {
    let feats: Vec<String> = features.iter().map(|f| format!("\"{f}\"")).collect();
    println!(
        "{{\"type\": \"{device_type}\", \"features\": [{}]}}",
        feats.join(", ")
    );
}

/// Sets up `tracing` to stderr, one line per event, with `filter` as the
/// level or directive. A bad filter exits 2.
pub fn init_logging(filter: &str) {
    let env = match tracing_subscriber::EnvFilter::try_new(filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("invalid value '{filter}' for '--log-level': {e}");
            std::process::exit(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
