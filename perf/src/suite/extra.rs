//! The net and boot suites write their own logs and reports (their figures
//! are packet rates and boot times, not fio IOPS); this is their entry for
//! the binary.

use std::path::Path;

use super::{run_boot, run_net, SuiteConfig};
use crate::PerfError;

/// Runs suite `name` (`net` or `boot`) and writes `measurements.json`,
/// `summary.json`, `report.md` and charts into `cfg.out`.
pub fn run_other(name: &str, cfg: &SuiteConfig) -> Result<(), PerfError> {
    let json = |r: serde_json::Result<String>| r.map_err(|e| PerfError::Report(e.to_string()));
    let text = match name {
        "net" => {
            let log = run_net(cfg)?;
            crate::net::report::write(&cfg.out, &log)?;
            json(serde_json::to_string_pretty(&log))?
        }
        "boot" => {
            let log = run_boot(cfg)?;
            crate::boot::write(&cfg.out, &log)?;
            json(serde_json::to_string_pretty(&log))?
        }
        other => return Err(PerfError::Setup(format!("no suite {other}"))),
    };
    std::fs::write(cfg.out.join("measurements.json"), text)
        .map_err(|e| PerfError::Report(format!("measurements.json: {e}")))
}

/// Re-renders the report of a net or boot run from its `measurements.json`
/// text; `false` if the run was of another suite.
pub fn rerender_other(dir: &Path, text: &str) -> Result<bool, PerfError> {
    #[derive(serde::Deserialize)]
    struct Head {
        suite: String,
    }
    let bad = |e: serde_json::Error| PerfError::Report(format!("measurements.json: {e}"));
    let head: Head = serde_json::from_str(text).map_err(bad)?;
    match head.suite.as_str() {
        "net" => {
            crate::net::report::write(dir, &serde_json::from_str(text).map_err(bad)?)?;
        }
        "boot" => {
            crate::boot::write(dir, &serde_json::from_str(text).map_err(bad)?)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}
