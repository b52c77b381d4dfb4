//! Guest mode: fio inside a Linux guest (QEMU TCG here) against the virtio
//! disk a daemon serves. Every job of a suite runs in one boot per backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cradle_testbed::QemuGuest;

use crate::fio::FioReport;
use crate::PerfError;

/// virtiofs tag of the filesystem under test.
const FS_TAG: &str = "perf";
/// Marks the start of one job's JSON in the guest's output.
const JOB_MARK: &str = "@@cradle-perf-job ";
/// Marks its end.
const END_MARK: &str = "@@cradle-perf-end";

/// One job to run in the guest.
#[derive(Debug, Clone)]
pub struct GuestJob {
    /// A key the caller uses to match results.
    pub key: String,
    /// The job file on the host.
    pub job_file: PathBuf,
    /// fio's environment (TARGET is set by the device).
    pub params: BTreeMap<String, String>,
}

/// The device the jobs run against.
#[derive(Debug, Clone, Copy)]
pub enum GuestDevice<'a> {
    /// A vhost-user-blk disk; jobs get `TARGET=/dev/vda`.
    Blk {
        /// The daemon's socket.
        socket: &'a Path,
        /// Request queues.
        queues: u32,
    },
    /// A vhost-user-fs share mounted at `/mnt`; jobs get `TARGET=/mnt`.
    Fs {
        /// The daemon's socket.
        socket: &'a Path,
    },
}

/// Boots a guest with `device` (`cpus` vCPUs) and runs every job in
/// order; returns each job's key, JSON text and parsed report.
pub fn run_in_guest(
    device: GuestDevice<'_>,
    cpus: u32,
    jobs: &[GuestJob],
    timeout: Duration,
) -> Result<Vec<(String, String, FioReport)>, PerfError> {
    let mut guest = QemuGuest::new()
        .cpus(cpus)
        .memory_mib(768)
        .binary("/usr/bin/fio")
        .timeout(timeout);
    let mut script = String::from("set -e\n");
    let target = match device {
        GuestDevice::Blk { socket, queues } => {
            guest = guest.vhost_user_blk(socket, queues);
            "/dev/vda"
        }
        GuestDevice::Fs { socket } => {
            guest = guest.vhost_user_fs(socket, FS_TAG);
            script.push_str(&format!("mount -t virtiofs {FS_TAG} /mnt\n"));
            "/mnt"
        }
    };
    for (i, job) in jobs.iter().enumerate() {
        let guest_path = format!("/perf/job{i}.fio");
        guest = guest.file(&job.job_file, &guest_path);
        let mut env: Vec<String> = job
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != "TARGET")
            .map(|(k, v)| format!("{k}='{v}'"))
            .collect();
        env.push(format!("TARGET={target}"));
        script.push_str(&format!(
            "echo '{JOB_MARK}{i}'\n{} fio --output-format=json {guest_path}\necho '{END_MARK}'\n",
            env.join(" ")
        ));
    }
    let run = guest
        .run(&script)
        .map_err(|e| PerfError::Setup(format!("guest: {e}")))?;
    let mut results = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let text =
            between(&run.output, &format!("{JOB_MARK}{i}\n"), END_MARK).ok_or_else(|| {
                PerfError::Fio(format!("guest printed no result for job {}", job.key))
            })?;
        let report = FioReport::parse(text)?;
        results.push((job.key.clone(), text.to_string(), report));
    }
    Ok(results)
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let len = s[from..].find(end)?;
    Some(&s[from..from + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_job_outputs() {
        let out = "@@cradle-perf-job 0\n{\"a\":1}\n@@cradle-perf-end\n@@cradle-perf-job 1\n{}\n@@cradle-perf-end\n";
        assert_eq!(
            between(out, "@@cradle-perf-job 0\n", END_MARK),
            Some("{\"a\":1}\n")
        );
        assert_eq!(
            between(out, "@@cradle-perf-job 1\n", END_MARK),
            Some("{}\n")
        );
        assert_eq!(between(out, "@@cradle-perf-job 2\n", END_MARK), None);
    }
}
