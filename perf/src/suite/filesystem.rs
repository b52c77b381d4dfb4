//! The fs suite: virtiofsd-gfs against the reference virtiofsd and the raw
//! host directory, for 4 KiB random I/O and file create/stat/delete rates,
//! in all three drive modes (device: [`crate::fsload`]).

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::{make_file, params, SuiteConfig, Workspace, DAEMON_CPU, LOADGEN_CPU};
use crate::backend::{Backend, Daemon};
use crate::fsload::{self, FsJob, FsLoad};
use crate::guest::{run_in_guest, GuestDevice, GuestJob};
use crate::jobs::JobFile;
use crate::procstat::ProcStat;
use crate::raw::run_fio;
use crate::record::{Measurement, Mode, Point};
use crate::report::RunLog;
use crate::PerfError;

/// Name of the data file the data jobs read and write (see the job files).
const DATA_FILE: &str = "fio-data";

/// (job, numjobs) of the fs suite.
fn fs_points(quick: bool) -> Vec<(&'static str, u32)> {
    let mut p = vec![("fs-randread-4k", 1), ("fs-randwrite-4k", 1)];
    if !quick {
        p.extend([("fs-randread-4k", 4), ("fs-randwrite-4k", 4)]);
    }
    p.extend([
        ("fs-filecreate", 1),
        ("fs-filestat", 1),
        ("fs-filedelete", 1),
    ]);
    p
}

/// (job, requests in flight, queues) of the fs suite in device mode. With
/// several in flight ours gets one request queue per request; virtiofsd
/// has a single request queue, so it gets them all there with a thread
/// pool of the same size.
fn device_points(quick: bool) -> Vec<(&'static str, u32, u32)> {
    let mut p = vec![
        ("fs-randread-4k", 1, 1),
        ("fs-randwrite-4k", 1, 1),
        ("fs-randread-4k", 1, 4),
    ];
    if !quick {
        p.push(("fs-randwrite-4k", 1, 4));
    }
    p.extend([
        ("fs-filecreate", 1, 1),
        ("fs-filestat", 1, 1),
        ("fs-filedelete", 1, 1),
    ]);
    p
}

/// A fresh shared directory holding the data file.
fn fresh_tree(dir: &Path, size: u64) -> Result<(), PerfError> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| PerfError::Setup(format!("{}: {e}", dir.display())))?;
    }
    fs::create_dir_all(dir).map_err(|e| PerfError::Setup(format!("{}: {e}", dir.display())))?;
    make_file(&dir.join(DATA_FILE), size)
}

/// Runs the fs suite and returns everything measured.
pub fn run_fs(cfg: &SuiteConfig) -> Result<RunLog, PerfError> {
    let ws = Workspace::new(cfg)?;
    let mut log = ws.log("fs");
    let points = fs_points(cfg.quick);
    // Smaller than the blk file: the guest lays nothing out, but the data
    // file is recreated for every backend run.
    let size = cfg.file_size / 4;
    // On tmpfs when there is one: a disk filesystem's journal would add
    // more (and noisier) cost per file operation than the daemons differ
    // by. Raw fio, both daemons and the guest all use this one tree.
    let shm = Path::new("/dev/shm");
    let tree_home = match shm.is_dir() {
        true => tempfile::Builder::new()
            .prefix("cradle-perf-fs-")
            .tempdir_in(shm)
            .map_err(|e| PerfError::Setup(format!("{}: {e}", shm.display())))?,
        false => tempfile::tempdir_in(ws.work.path())
            .map_err(|e| PerfError::Setup(format!("work directory: {e}")))?,
    };
    let tree = tree_home.path().join("tree");
    let socket = ws.work.path().join("fs.sock");
    let point = |job: &str, n: u32, mode: Mode| Point {
        job: job.into(),
        iodepth: 1,
        queues: n,
        mode,
    };
    let with_size = |mut p: std::collections::BTreeMap<String, String>| {
        p.insert("SIZE".into(), size.to_string());
        // Buffered I/O: what an application on the share does; the guest
        // mounts with cache=never, so every request reaches the daemon.
        p.insert("DIRECT".into(), "0".into());
        p
    };
    for rep in 0..cfg.repetitions {
        let order = if rep % 2 == 0 {
            [Backend::VirtiofsdGfs, Backend::Virtiofsd]
        } else {
            [Backend::Virtiofsd, Backend::VirtiofsdGfs]
        };
        if cfg.modes.contains(&Mode::Raw) {
            fresh_tree(&tree, size)?;
            let target = tree.to_string_lossy().into_owned();
            for &(job, n) in &points {
                let p = with_size(params(&target, 1, n, cfg, "psync"));
                let (text, report) = run_fio(&ws.job_file(job), &p, DAEMON_CPU)?;
                let rel = ws.save(&format!("raw-{job}-j{n}-r{rep}"), &text)?;
                log.measurements.push(Measurement::from_report(
                    point(job, n, Mode::Raw),
                    Backend::Raw,
                    rep,
                    &report,
                    rel,
                ));
            }
        }
        if cfg.modes.contains(&Mode::Device) {
            fresh_tree(&tree, size)?;
            for backend in order {
                for &(job, qd, q) in &device_points(cfg.quick) {
                    let m = device_run(cfg, &ws, backend, &tree, &socket, (job, qd, q), rep)?;
                    log.measurements.push(m);
                }
            }
        }
        if cfg.modes.contains(&Mode::Guest) {
            for backend in order {
                fresh_tree(&tree, size)?;
                let binary = match backend {
                    Backend::VirtiofsdGfs => &cfg.bin.virtiofsd_gfs,
                    _ => &cfg.bin.virtiofsd,
                };
                let daemon = Daemon::start_fs(backend, binary, &tree, &socket, DAEMON_CPU, &[])?;
                let jobs: Vec<GuestJob> = points
                    .iter()
                    .map(|&(job, n)| GuestJob {
                        key: format!("{job}-j{n}"),
                        job_file: ws.job_file(job),
                        params: with_size(params("/mnt", 1, n, cfg, "psync")),
                    })
                    .collect();
                let per_job = cfg.runtime + cfg.ramp + Duration::from_secs(60);
                let timeout = Duration::from_secs(60) + per_job * jobs.len() as u32;
                let results = run_in_guest(
                    GuestDevice::Fs {
                        socket: daemon.socket(),
                    },
                    2,
                    &jobs,
                    timeout,
                )?;
                let stat = ProcStat::read(daemon.pid());
                for ((key, text, report), &(job, n)) in results.iter().zip(&points) {
                    let rel = ws.save(&format!("guest-{}-{key}-r{rep}", backend.name()), text)?;
                    let mut m = Measurement::from_report(
                        point(job, n, Mode::Guest),
                        backend,
                        rep,
                        report,
                        rel,
                    );
                    m.daemon_peak_rss_kib = stat.map(|s| s.peak_rss_kib);
                    m.daemon_private_rss_kib = stat.map(|s| s.private_kib);
                    log.measurements.push(m);
                }
                drop(daemon);
            }
        }
    }
    Ok(log)
}

/// One device-mode point against `backend`, started for it alone (its
/// queue count and pool depend on the point).
fn device_run(
    cfg: &SuiteConfig,
    ws: &Workspace<'_>,
    backend: Backend,
    tree: &Path,
    socket: &Path,
    (job, qd, queues): (&str, u32, u32),
    rep: u32,
) -> Result<Measurement, PerfError> {
    let size = cfg.file_size / 4;
    let p = params(&tree.to_string_lossy(), qd, queues, cfg, "psync");
    let file = JobFile::load(&ws.job_file(job))?;
    let fs_job = FsJob::from_file(&file, &p)?;
    let inflight = qd * queues;
    let (binary, extra, load_queues, depth) = match backend {
        Backend::VirtiofsdGfs => (
            &cfg.bin.virtiofsd_gfs,
            vec!["--num-queues".to_string(), queues.to_string()],
            queues,
            qd,
        ),
        _ => (
            &cfg.bin.virtiofsd,
            vec![
                "--thread-pool-size".to_string(),
                if inflight > 1 { inflight } else { 0 }.to_string(),
            ],
            1,
            inflight,
        ),
    };
    let daemon = Daemon::start_fs(backend, binary, tree, socket, DAEMON_CPU, &extra)?;
    let load = FsLoad {
        name: job.into(),
        job: fs_job,
        queues: load_queues as u16,
        iodepth: depth,
        runtime: cfg.runtime,
        ramp: cfg.ramp,
        data_file: DATA_FILE.into(),
        size,
        nrfiles: if cfg.quick { 200 } else { 1000 },
        cpu: Some(LOADGEN_CPU),
        daemon_pid: Some(daemon.pid()),
    };
    let run = fsload::run(daemon.socket(), &load)?;
    drop(daemon);
    let rel = ws.save(
        &format!("device-{}-{job}-qd{qd}x{queues}-r{rep}", backend.name()),
        &run.text,
    )?;
    let point = Point {
        job: job.into(),
        iodepth: qd,
        queues,
        mode: Mode::Device,
    };
    let mut m = Measurement::from_report(point, backend, rep, &run.report, rel);
    if let Some((b, a)) = run.daemon {
        // Random I/O: CPU covers ramp and run, so do the I/Os it is divided
        // by. File operations: the unmeasured set-up operations count too.
        let ios = match fs_job {
            FsJob::Io { .. } => m.iops * (cfg.ramp + cfg.runtime).as_secs_f64(),
            _ => m.total_ios as f64,
        };
        m.daemon_cpu_ns_per_io = (ios > 0.0).then(|| (a.cpu_ns - b.cpu_ns) as f64 / ios);
        m.daemon_peak_rss_kib = Some(a.peak_rss_kib);
        m.daemon_private_rss_kib = Some(a.private_kib);
    }
    Ok(m)
}
