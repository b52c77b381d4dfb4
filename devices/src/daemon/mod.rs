//! The daemon skeleton every cradle vhost-user daemon shares.
//!
//! A daemon's `main` is: parse flags with [`parse_or_exit`] (its own clap
//! struct flattening [`CommonArgs`]), [`init_logging`], open what it serves,
//! [`listen`], [`sandbox::enter`] and [`sandbox::drop_capabilities`],
//! [`seccomp::apply`], [`signals::on_terminate`]
//! with its drain hook, [`notify::ready`], then [`serve`] forever.

mod args;
pub mod notify;
pub mod sandbox;
pub mod seccomp;

mod entry;
mod serve;
pub mod signals;

pub use args::{
    init_logging, parse_from_or_exit, parse_or_exit, print_capabilities, CommonArgs, SandboxMode,
    SeccompMode,
};
pub use entry::{main, DaemonCli, Outcome};
pub use serve::{listen, serve, DaemonBackend, ExitEvents, GuestMemory};

/// Errors of the daemon skeleton.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// binding or inheriting the listening socket failed
    #[error("socket {path}: {cause}")]
    Socket {
        /// socket path, or `fd N`
        path: String,
        /// cause
        cause: std::io::Error,
    },
    /// neither `--socket` nor `--fd` was given
    #[error("one of --socket or --fd is required")]
    NoSocket,
    /// the vhost-user-backend library failed
    #[error("vhost-user: {0}")]
    VhostUser(String),
    /// the backend could not be built for a new connection
    #[error("backend: {0}")]
    Backend(std::io::Error),
    /// sandbox setup failed
    #[error("sandbox: {what}: {cause}")]
    Sandbox {
        /// step that failed
        what: String,
        /// cause
        cause: std::io::Error,
    },
    /// seccomp filter setup failed
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// signal handling setup failed
    #[error("signals: {0}")]
    Signals(std::io::Error),
}
