//! Reads fio's JSON output (`--output-format=json`), keeping what the
//! reports compare: rates, bandwidth, completion latency and CPU use.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::PerfError;

/// One fio run: the jobs it reported (one per group with `group_reporting`).
#[derive(Debug, Clone, Deserialize)]
pub struct FioReport {
    /// fio's version string, e.g. `fio-3.33`.
    #[serde(rename = "fio version")]
    pub version: String,
    /// Per-job results.
    pub jobs: Vec<Job>,
}

/// One job's results.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    /// The job's name.
    #[serde(rename = "jobname")]
    pub name: String,
    /// fio's error code for the job (0 = fine).
    #[serde(default)]
    pub error: i32,
    /// Reads.
    pub read: Direction,
    /// Writes.
    pub write: Direction,
    /// User CPU, percent of one CPU over the run.
    #[serde(default)]
    pub usr_cpu: f64,
    /// System CPU, percent of one CPU over the run.
    #[serde(default)]
    pub sys_cpu: f64,
}

/// Results of one I/O direction.
#[derive(Debug, Clone, Deserialize)]
pub struct Direction {
    /// I/Os per second.
    #[serde(default)]
    pub iops: f64,
    /// Bytes per second.
    #[serde(default)]
    pub bw_bytes: u64,
    /// Completed I/Os.
    #[serde(default)]
    pub total_ios: u64,
    /// Run time in milliseconds.
    #[serde(default)]
    pub runtime: u64,
    /// Completion latency.
    #[serde(default)]
    pub clat_ns: Latency,
}

/// Latency distribution in nanoseconds.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Latency {
    /// Mean.
    #[serde(default)]
    pub mean: f64,
    /// Percentiles keyed by fio's strings (`"99.000000"`).
    #[serde(default)]
    pub percentile: BTreeMap<String, u64>,
}

impl Latency {
    /// The given percentile (e.g. 99.0), if fio reported it.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        self.percentile
            .iter()
            .find(|(k, _)| k.parse::<f64>().is_ok_and(|v| (v - p).abs() < 1e-9))
            .map(|(_, v)| *v)
    }
}

impl FioReport {
    /// Parses fio's JSON. fio may print warnings before the JSON object;
    /// they are skipped.
    pub fn parse(text: &str) -> Result<FioReport, PerfError> {
        let start = text
            .find('{')
            .ok_or_else(|| PerfError::Fio("no JSON object in fio output".into()))?;
        let report: FioReport = serde_json::from_str(&text[start..])
            .map_err(|e| PerfError::Fio(format!("fio JSON: {e}")))?;
        if report.jobs.is_empty() {
            return Err(PerfError::Fio("fio reported no jobs".into()));
        }
        if let Some(job) = report.jobs.iter().find(|j| j.error != 0) {
            return Err(PerfError::Fio(format!(
                "fio job {} failed with error {}",
                job.name, job.error
            )));
        }
        Ok(report)
    }

    /// Reads plus writes per second over all jobs.
    pub fn total_iops(&self) -> f64 {
        self.jobs.iter().map(|j| j.read.iops + j.write.iops).sum()
    }

    /// Reads plus writes in bytes per second over all jobs.
    pub fn total_bw_bytes(&self) -> u64 {
        self.jobs
            .iter()
            .map(|j| j.read.bw_bytes + j.write.bw_bytes)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDREAD: &str = include_str!("../tests/data/fio-randread-qd32.json");
    const RANDRW: &str = include_str!("../tests/data/fio-randrw-qd1.json");

    #[test]
    fn parses_a_recorded_randread_run() {
        let r = FioReport::parse(RANDREAD).unwrap();
        assert_eq!(r.version, "fio-3.33");
        assert_eq!(r.jobs.len(), 1);
        let job = &r.jobs[0];
        assert_eq!(job.name, "randread");
        assert!(job.read.iops > 1000.0);
        assert_eq!(job.write.iops, 0.0);
        // iops is total_ios over the run time.
        let derived = job.read.total_ios as f64 / (job.read.runtime as f64 / 1000.0);
        assert!((derived - job.read.iops).abs() / job.read.iops < 0.01);
        let p50 = job.read.clat_ns.percentile(50.0).unwrap();
        let p99 = job.read.clat_ns.percentile(99.0).unwrap();
        assert!(p50 <= p99);
        assert_eq!(r.total_iops(), job.read.iops);
    }

    #[test]
    fn mixed_runs_count_both_directions() {
        let r = FioReport::parse(RANDRW).unwrap();
        let job = &r.jobs[0];
        assert!(job.read.iops > 0.0 && job.write.iops > 0.0);
        assert!((r.total_iops() - (job.read.iops + job.write.iops)).abs() < 1e-6);
        assert_eq!(r.total_bw_bytes(), job.read.bw_bytes + job.write.bw_bytes);
    }

    #[test]
    fn leading_warnings_are_skipped_and_garbage_rejected() {
        let noisy = format!("fio: some warning\n{RANDREAD}");
        assert!(FioReport::parse(&noisy).is_ok());
        assert!(FioReport::parse("not json").is_err());
        assert!(FioReport::parse("{\"fio version\": \"x\", \"jobs\": []}").is_err());
        let failed = RANDREAD.replacen("\"error\" : 0", "\"error\" : 5", 1);
        assert!(FioReport::parse(&failed)
            .unwrap_err()
            .to_string()
            .contains("error 5"));
    }
}
