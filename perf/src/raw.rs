//! Raw mode: fio's io_uring engine on the host file, the limit the daemons
//! are measured against.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::fio::FioReport;
use crate::PerfError;

/// Runs `job_file` with `params` as fio's environment, pinned to `cpus`;
/// returns fio's JSON text and its parsed form.
pub fn run_fio(
    job_file: &Path,
    params: &BTreeMap<String, String>,
    cpus: &str,
) -> Result<(String, FioReport), PerfError> {
    let out = Command::new("taskset")
        .args(["-c", cpus, "fio", "--output-format=json"])
        .arg(job_file)
        .envs(params)
        .output()
        .map_err(|e| PerfError::Setup(format!("fio: {e} (package fio)")))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(PerfError::Fio(format!(
            "fio {} failed: {}",
            job_file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let report = FioReport::parse(&text)?;
    Ok((text, report))
}
