//! The blk suite: every job at its depths, in every drive mode, against
//! blk-lv, the qemu-storage-daemon peer and the raw file, with runs
//! alternating between backends so noise hits both alike.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::backend::{Backend, Daemon};
use crate::guest::{run_in_guest, GuestJob};
use crate::jobs::JobFile;
use crate::loadgen::{self, Load};
use crate::procstat::ProcStat;
use crate::raw::run_fio;
use crate::record::{Measurement, Mode, Point};
use crate::report::RunLog;
use crate::PerfError;

/// CPU the daemons (and raw fio) run on; the load generator gets the other.
const DAEMON_CPU: &str = "1";
/// CPU of the load generator.
const LOADGEN_CPU: usize = 0;

/// How a suite runs.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Short runs, one repetition, fewer points.
    pub quick: bool,
    /// Output directory.
    pub out: PathBuf,
    /// The fio job files directory.
    pub jobs_dir: PathBuf,
    /// The blk-lv binary.
    pub blk_lv: PathBuf,
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
    /// Defaults for the blk suite; `quick` is what CI runs.
    pub fn blk(quick: bool, out: PathBuf, jobs_dir: PathBuf, blk_lv: PathBuf) -> Self {
        SuiteConfig {
            quick,
            out,
            jobs_dir,
            blk_lv,
            modes: vec![Mode::Raw, Mode::Device, Mode::Guest],
            repetitions: if quick { 1 } else { 3 },
            runtime: Duration::from_secs(if quick { 2 } else { 10 }),
            ramp: Duration::from_millis(if quick { 500 } else { 2000 }),
            file_size: if quick { 256 << 20 } else { 1 << 30 },
        }
    }

    /// (job, iodepth, queues) of the suite.
    fn points(&self) -> Vec<(&'static str, u32, u32)> {
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
    [
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
fn make_file(path: &Path, size: u64) -> Result<(), PerfError> {
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

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Runs the blk suite and returns everything measured. Raw JSON goes to
/// `out/raw/`.
pub fn run_blk(cfg: &SuiteConfig) -> Result<RunLog, PerfError> {
    let raw_dir = cfg.out.join("raw");
    fs::create_dir_all(&raw_dir)
        .map_err(|e| PerfError::Setup(format!("{}: {e}", raw_dir.display())))?;
    let work = tempfile::Builder::new()
        .prefix("cradle-perf-")
        .tempdir_in(&cfg.out)
        .map_err(|e| PerfError::Setup(format!("work directory: {e}")))?;
    let file = work.path().join("target.img");
    make_file(&file, cfg.file_size)?;
    let socket = work.path().join("blk.sock");
    let file_str = file.to_string_lossy().into_owned();
    let mut log = RunLog {
        suite: "blk".into(),
        quick: cfg.quick,
        started: now_utc(),
        machine: machine(),
        measurements: Vec::new(),
    };
    let points = cfg.points();
    let job_file = |name: &str| cfg.jobs_dir.join(format!("{name}.fio"));
    let save = |name: &str, text: &str| -> Result<String, PerfError> {
        let rel = format!("raw/{name}.json");
        fs::write(cfg.out.join(&rel), text)
            .map_err(|e| PerfError::Report(format!("{rel}: {e}")))?;
        Ok(rel)
    };
    let max_queues = points.iter().map(|p| p.2).max().unwrap_or(1);

    for rep in 0..cfg.repetitions {
        // A/B/A/B: the backend that goes first alternates per repetition.
        let order = if rep % 2 == 0 {
            [Backend::BlkLv, Backend::QemuStorageDaemon]
        } else {
            [Backend::QemuStorageDaemon, Backend::BlkLv]
        };
        if cfg.modes.contains(&Mode::Raw) {
            for &(job, qd, q) in &points {
                let p = params(&file_str, qd, q, cfg, "io_uring");
                let (text, report) = run_fio(&job_file(job), &p, DAEMON_CPU)?;
                let rel = save(&format!("raw-{job}-qd{qd}x{q}-r{rep}"), &text)?;
                let point = Point {
                    job: job.into(),
                    iodepth: qd,
                    queues: q,
                    mode: Mode::Raw,
                };
                log.measurements.push(Measurement::from_report(
                    point,
                    Backend::Raw,
                    rep,
                    &report,
                    rel,
                ));
            }
        }
        if cfg.modes.contains(&Mode::Device) {
            for backend in order {
                let daemon =
                    Daemon::start(backend, &cfg.blk_lv, &file, &socket, max_queues, DAEMON_CPU)?;
                for &(job, qd, q) in &points {
                    let spec = JobFile::load(&job_file(job))?
                        .spec(&params(&file_str, qd, q, cfg, "io_uring"))?;
                    let load = Load {
                        job: spec,
                        iodepth: qd,
                        queues: q as u16,
                        runtime: cfg.runtime,
                        ramp: cfg.ramp,
                        size: cfg.file_size,
                        cpu: Some(LOADGEN_CPU),
                    };
                    let before = ProcStat::read(daemon.pid());
                    let (text, report) = loadgen::run(daemon.socket(), &load)?;
                    let after = ProcStat::read(daemon.pid());
                    let rel = save(
                        &format!("device-{}-{job}-qd{qd}x{q}-r{rep}", backend.name()),
                        &text,
                    )?;
                    let point = Point {
                        job: job.into(),
                        iodepth: qd,
                        queues: q,
                        mode: Mode::Device,
                    };
                    let mut m = Measurement::from_report(point, backend, rep, &report, rel);
                    if let (Some(b), Some(a)) = (before, after) {
                        // CPU covers ramp and run; so do the I/Os it is divided by.
                        let ios = m.iops * (cfg.ramp + cfg.runtime).as_secs_f64();
                        m.daemon_cpu_ns_per_io =
                            (ios > 0.0).then(|| (a.cpu_ns - b.cpu_ns) as f64 / ios);
                        m.daemon_peak_rss_kib = Some(a.peak_rss_kib);
                    }
                    log.measurements.push(m);
                }
                drop(daemon);
            }
        }
        if cfg.modes.contains(&Mode::Guest) {
            for backend in order {
                let daemon =
                    Daemon::start(backend, &cfg.blk_lv, &file, &socket, max_queues, DAEMON_CPU)?;
                let jobs: Vec<GuestJob> = points
                    .iter()
                    .map(|&(job, qd, q)| GuestJob {
                        key: format!("{job}-qd{qd}x{q}"),
                        job_file: job_file(job),
                        params: params("/dev/vda", qd, q, cfg, "io_uring"),
                    })
                    .collect();
                let per_job = cfg.runtime + cfg.ramp + Duration::from_secs(30);
                let timeout = Duration::from_secs(60) + per_job * jobs.len() as u32;
                let results = run_in_guest(daemon.socket(), max_queues, 2, &jobs, timeout)?;
                let peak = ProcStat::read(daemon.pid()).map(|s| s.peak_rss_kib);
                for ((key, text, report), &(job, qd, q)) in results.iter().zip(&points) {
                    let rel = save(&format!("guest-{}-{key}-r{rep}", backend.name()), text)?;
                    let point = Point {
                        job: job.into(),
                        iodepth: qd,
                        queues: q,
                        mode: Mode::Guest,
                    };
                    let mut m = Measurement::from_report(point, backend, rep, report, rel);
                    m.daemon_peak_rss_kib = peak;
                    log.measurements.push(m);
                }
                drop(daemon);
            }
        }
    }
    Ok(log)
}
