//! The blk suite: blk-lv against qemu-storage-daemon and the raw file.

use std::time::Duration;

use super::{make_file, params, SuiteConfig, Workspace, DAEMON_CPU, LOADGEN_CPU};
use crate::backend::{Backend, Daemon};
use crate::guest::{run_in_guest, GuestDevice, GuestJob};
use crate::jobs::JobFile;
use crate::loadgen::{self, Load};
use crate::procstat::ProcStat;
use crate::raw::run_fio;
use crate::record::{Measurement, Mode, Point};
use crate::report::RunLog;
use crate::PerfError;

/// Runs the blk suite and returns everything measured. Raw JSON goes to
/// `out/raw/`.
pub fn run_blk(cfg: &SuiteConfig) -> Result<RunLog, PerfError> {
    let ws = Workspace::new(cfg)?;
    let file = ws.work.path().join("target.img");
    make_file(&file, cfg.file_size)?;
    let socket = ws.work.path().join("blk.sock");
    let file_str = file.to_string_lossy().into_owned();
    let mut log: RunLog = ws.log("blk");
    let points = cfg.blk_points();
    let job_file = |name: &str| ws.job_file(name);
    let save = |name: &str, text: &str| ws.save(name, text);
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
                let daemon = Daemon::start(
                    backend,
                    &cfg.bin.blk_lv,
                    &file,
                    &socket,
                    max_queues,
                    DAEMON_CPU,
                )?;
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
                let daemon = Daemon::start(
                    backend,
                    &cfg.bin.blk_lv,
                    &file,
                    &socket,
                    max_queues,
                    DAEMON_CPU,
                )?;
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
                let device = GuestDevice::Blk {
                    socket: daemon.socket(),
                    queues: max_queues,
                };
                let results = run_in_guest(device, 2, &jobs, timeout)?;
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
