//! Suites: every job at its depths, in every drive mode, against ours,
//! the peer and the raw target, with runs alternating between backends so
//! noise hits both alike. `blk` and `fs` are defined in their own modules.

mod blk;
mod boot;
mod extra;
mod filesystem;
mod net;

pub use blk::run_blk;
pub use boot::run_boot;
pub use extra::{rerender_other, run_other};
pub use filesystem::run_fs;
pub use net::run_net;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::record::Mode;
use crate::report::RunLog;
use crate::PerfError;

/// CPU the daemons (and raw fio) run on; the load generator gets the other.
const DAEMON_CPU: &str = "1";
/// CPU of the load generator.
const LOADGEN_CPU: usize = 0;

/// The programs a suite starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// blk-lv.
    pub blk_lv: PathBuf,
    /// virtiofsd-gfs.
    pub virtiofsd_gfs: PathBuf,
    /// The reference virtiofsd.
    pub virtiofsd: PathBuf,
    /// net-tap (net suite).
    pub net_tap: PathBuf,
    /// kcradle (boot suite).
    pub kcradle: PathBuf,
}

/// How a suite runs.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Short runs, one repetition, fewer points.
    pub quick: bool,
    /// Output directory.
    pub out: PathBuf,
    /// The fio job files directory.
    pub jobs_dir: PathBuf,
    /// Daemons to start.
    pub bin: Binaries,
    /// Drive modes to run.
    pub modes: Vec<Mode>,
    /// Repetitions per measurement.
    pub repetitions: u32,
    /// Measured seconds per run.
    pub runtime: Duration,
    /// Warm-up seconds per run.
    pub ramp: Duration,
    /// Size of the test file.
    pub file_size: u64,
}

impl SuiteConfig {
    /// Defaults for the blk and fs suites; `quick` is what CI runs.
    pub fn new(quick: bool, out: PathBuf, jobs_dir: PathBuf, bin: Binaries) -> Self {
        SuiteConfig {
            quick,
            out,
            jobs_dir,
            bin,
            modes: vec![Mode::Raw, Mode::Device, Mode::Guest],
            repetitions: if quick { 1 } else { 3 },
            runtime: Duration::from_secs(if quick { 2 } else { 10 }),
            ramp: Duration::from_millis(if quick { 500 } else { 2000 }),
            file_size: if quick { 256 << 20 } else { 1 << 30 },
        }
    }

    /// (job, iodepth, queues) of the blk suite.
    fn blk_points(&self) -> Vec<(&'static str, u32, u32)> {
        if self.quick {
            vec![
                ("blk-randread-4k", 32, 4),
                ("blk-randread-4k", 1, 1),
                ("blk-randwrite-4k", 32, 4),
            ]
        } else {
            vec![
                ("blk-randread-4k", 1, 1),
                ("blk-randread-4k", 32, 4),
                ("blk-randwrite-4k", 1, 1),
                ("blk-randwrite-4k", 32, 4),
                ("blk-read-128k", 8, 4),
                ("blk-write-128k", 8, 4),
            ]
        }
    }
}

/// fio's environment for one point.
fn params(
    target: &str,
    iodepth: u32,
    queues: u32,
    cfg: &SuiteConfig,
    engine: &str,
) -> BTreeMap<String, String> {
    let nrfiles = if cfg.quick { 200 } else { 2000 };
    [
        ("DIRECT", "1".to_string()),
        ("NRFILES", nrfiles.to_string()),
        ("TARGET", target.to_string()),
        ("IOENGINE", engine.to_string()),
        ("IODEPTH", iodepth.to_string()),
        ("NUMJOBS", queues.to_string()),
        ("RUNTIME", cfg.runtime.as_secs().max(1).to_string()),
        ("RAMP", format!("{}ms", cfg.ramp.as_millis())),
        ("SIZE", cfg.file_size.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Fills the test file with non-zero data so reads hit real extents.
pub(crate) fn make_file(path: &Path, size: u64) -> Result<(), PerfError> {
    let err = |e: std::io::Error| PerfError::Setup(format!("{}: {e}", path.display()));
    let mut f = fs::File::create(path).map_err(err)?;
    let chunk: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n]).map_err(err)?;
        left -= n as u64;
    }
    f.sync_all().map_err(err)
}

/// The machine, one line: kernel, CPU model and count, memory.
pub fn machine() -> String {
    let uname = Command::new("uname")
        .arg("-sr")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| format!("{} GiB", kib >> 20))
        .unwrap_or_default();
    format!("{uname}; {cpus} x {model}; {mem}")
}

pub(crate) fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Where one suite run keeps its files, and how it saves raw JSON.
pub(crate) struct Workspace<'a> {
    cfg: &'a SuiteConfig,
    /// Temporary directory for test files and sockets, removed at the end.
    pub work: tempfile::TempDir,
}

impl<'a> Workspace<'a> {
    pub(crate) fn new(cfg: &'a SuiteConfig) -> Result<Self, PerfError> {
        let raw_dir = cfg.out.join("raw");
        fs::create_dir_all(&raw_dir)
            .map_err(|e| PerfError::Setup(format!("{}: {e}", raw_dir.display())))?;
        let work = tempfile::Builder::new()
            .prefix("cradle-perf-")
            .tempdir_in(&cfg.out)
            .map_err(|e| PerfError::Setup(format!("work directory: {e}")))?;
        Ok(Workspace { cfg, work })
    }

    /// A new, empty run log for `suite`.
    pub(crate) fn log(&self, suite: &str) -> RunLog {
        RunLog {
            suite: suite.into(),
            quick: self.cfg.quick,
            started: now_utc(),
            machine: machine(),
            measurements: Vec::new(),
        }
    }

    /// The job file of `name`.
    pub(crate) fn job_file(&self, name: &str) -> PathBuf {
        self.cfg.jobs_dir.join(format!("{name}.fio"))
    }

    /// Keeps one measurement's JSON as `raw/NAME.json`; returns that path.
    pub(crate) fn save(&self, name: &str, text: &str) -> Result<String, PerfError> {
        let rel = format!("raw/{name}.json");
        fs::write(self.cfg.out.join(&rel), text)
            .map_err(|e| PerfError::Report(format!("{rel}: {e}")))?;
        Ok(rel)
    }
}
