//! The fs suite: virtiofsd-gfs against the reference virtiofsd and the raw
//! host directory, for 4 KiB random I/O and file create/stat/delete rates.
//! Drive modes: raw and guest (a device-mode FUSE load generator does not
//! exist yet).

use std::fs;
use std::path::Path;
use std::time::Duration;

use super::{make_file, params, SuiteConfig, Workspace, DAEMON_CPU};
use crate::backend::{Backend, Daemon};
use crate::guest::{run_in_guest, GuestDevice, GuestJob};
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
    let tree = ws.work.path().join("tree");
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
        if cfg.modes.contains(&Mode::Guest) {
            for backend in order {
                fresh_tree(&tree, size)?;
                let binary = match backend {
                    Backend::VirtiofsdGfs => &cfg.bin.virtiofsd_gfs,
                    _ => &cfg.bin.virtiofsd,
                };
                let daemon = Daemon::start_fs(backend, binary, &tree, &socket, DAEMON_CPU)?;
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
                    log.measurements.push(m);
                }
                drop(daemon);
            }
        }
    }
    Ok(log)
}
