//! cradle's performance harness: the same fio jobs against our daemons, the
//! peers and the raw device, reduced to medians, spreads and ratios.
//!
//! This first part reads fio's JSON output ([`fio`]) and does the report
//! maths ([`stats`]); the runner and the `cradle-perf` binary build on them.
#![deny(missing_docs)]

pub mod backend;
pub mod boot;
pub mod chart;
pub mod fio;
pub mod fsload;
pub mod guest;
pub mod jobs;
pub mod loadgen;
pub mod net;
pub mod procstat;
pub mod raw;
pub mod record;
pub mod report;
pub mod stats;
pub mod suite;

/// Why a measurement could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// fio's output was missing, malformed or reported a failed job.
    #[error("{0}")]
    Fio(String),
    /// A job file is missing, malformed or uses something unsupported.
    #[error("job file {0}")]
    Job(String),
    /// A backend, peer or guest could not be set up.
    #[error("{0}")]
    Setup(String),
    /// A report could not be written or read.
    #[error("{0}")]
    Report(String),
    /// A figure had no usable sample.
    #[error("no usable samples")]
    NoSamples,
}
