//! fio job files (`perf/jobs/*.fio`) are the single definition of each
//! workload: fio runs them as they are, and the device-mode load generator
//! reads the same files to issue the same pattern over vhost-user.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::PerfError;

/// The access pattern of a job (`rw=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// `randread`
    RandRead,
    /// `randwrite`
    RandWrite,
    /// `read` (sequential)
    Read,
    /// `write` (sequential)
    Write,
}

impl Pattern {
    fn parse(s: &str) -> Option<Pattern> {
        Some(match s {
            "randread" => Pattern::RandRead,
            "randwrite" => Pattern::RandWrite,
            "read" => Pattern::Read,
            "write" => Pattern::Write,
            _ => return None,
        })
    }

    /// Whether the job writes.
    pub fn writes(self) -> bool {
        matches!(self, Pattern::RandWrite | Pattern::Write)
    }

    /// Whether offsets are random.
    pub fn random(self) -> bool {
        matches!(self, Pattern::RandRead | Pattern::RandWrite)
    }
}

/// One job file, with `[global]` merged into its job section.
#[derive(Debug, Clone)]
pub struct JobFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The job section's name.
    pub name: String,
    /// Every option, job section over global, unexpanded.
    pub options: BTreeMap<String, String>,
}

/// A job with its parameters filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The job's name.
    pub name: String,
    /// Access pattern.
    pub pattern: Pattern,
    /// Block size in bytes.
    pub block_size: u64,
}

impl JobFile {
    /// Reads and parses a job file.
    pub fn load(path: &Path) -> Result<JobFile, PerfError> {
        let text = fs::read_to_string(path)
            .map_err(|e| PerfError::Job(format!("{}: {e}", path.display())))?;
        Self::parse(path, &text)
    }

    /// Parses fio's ini format: `[section]` headers, `key=value` or bare
    /// `key` lines, `#`/`;` comments. Exactly one job section is expected.
    pub fn parse(path: &Path, text: &str) -> Result<JobFile, PerfError> {
        let bad =
            |line: usize, why: &str| PerfError::Job(format!("{}:{line}: {why}", path.display()));
        let mut sections: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[') {
                let name = name
                    .strip_suffix(']')
                    .ok_or_else(|| bad(n + 1, "unterminated section"))?;
                sections.push((name.trim().to_string(), BTreeMap::new()));
                continue;
            }
            let (_, opts) = sections
                .last_mut()
                .ok_or_else(|| bad(n + 1, "option before any section"))?;
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            opts.insert(k.trim().to_string(), v.trim().to_string());
        }
        let mut global = BTreeMap::new();
        let mut jobs = Vec::new();
        for (name, opts) in sections {
            if name == "global" {
                global.extend(opts);
            } else {
                jobs.push((name, opts));
            }
        }
        let [(name, opts)]: [(String, BTreeMap<String, String>); 1] =
            jobs.try_into().map_err(|_| {
                PerfError::Job(format!(
                    "{}: expected exactly one job section",
                    path.display()
                ))
            })?;
        let mut options = global;
        options.extend(opts);
        Ok(JobFile {
            path: path.to_path_buf(),
            name,
            options,
        })
    }

    /// Expands `${VAR}` from `params` and reads the pattern and block size.
    pub fn spec(&self, params: &BTreeMap<String, String>) -> Result<JobSpec, PerfError> {
        let get = |key: &str| -> Result<String, PerfError> {
            let raw = self
                .options
                .get(key)
                .ok_or_else(|| PerfError::Job(format!("{}: no {key}=", self.path.display())))?;
            expand(raw, params).map_err(|v| {
                PerfError::Job(format!(
                    "{}: {key} uses unset ${{{v}}}",
                    self.path.display()
                ))
            })
        };
        let rw = get("rw")?;
        let pattern = Pattern::parse(&rw).ok_or_else(|| {
            PerfError::Job(format!("{}: unsupported rw={rw}", self.path.display()))
        })?;
        let bs = get("bs")?;
        let block_size = parse_size(&bs)
            .ok_or_else(|| PerfError::Job(format!("{}: bad bs={bs}", self.path.display())))?;
        Ok(JobSpec {
            name: self.name.clone(),
            pattern,
            block_size,
        })
    }
}

/// Replaces `${NAME}` with `params[NAME]`; `Err(NAME)` for an unset one.
pub fn expand(value: &str, params: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(params.get(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// fio sizes: `4k`, `128K`, `1m`, `2g`, plain bytes (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s
        .strip_suffix("ib")
        .or_else(|| s.strip_suffix('b'))
        .unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> BTreeMap<String, String> {
        [("TARGET", "/dev/vda"), ("IODEPTH", "32")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shipped_job_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let (mut data, mut meta) = (0, 0);
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let job = JobFile::load(&path).unwrap();
            assert_eq!(
                Some(job.name.as_str()),
                path.file_stem().and_then(|s| s.to_str())
            );
            if job.options.contains_key("rw") {
                let spec = job.spec(&params()).unwrap();
                assert!(spec.block_size >= 4096);
                assert!(job.options.contains_key("direct"));
                data += 1;
            } else {
                // Metadata jobs: one of fio's file-operation engines.
                let engine = job.options.get("ioengine").map(String::as_str);
                assert!(
                    matches!(engine, Some("filecreate" | "filestat" | "filedelete")),
                    "{path:?}"
                );
                meta += 1;
            }
        }
        assert!(
            data >= 6 && meta >= 3,
            "{data} data and {meta} metadata jobs"
        );
    }

    #[test]
    fn job_section_overrides_global() {
        let text = "[global]\nbs=4k\nrw=read\n; comment\n[j]\nbs=${BS}\nnorandommap\n";
        let job = JobFile::parse(Path::new("x.fio"), text).unwrap();
        assert_eq!(job.name, "j");
        assert_eq!(job.options["norandommap"], "");
        let mut p = params();
        p.insert("BS".into(), "128k".into());
        let spec = job.spec(&p).unwrap();
        assert_eq!((spec.pattern, spec.block_size), (Pattern::Read, 128 << 10));
        let err = job.spec(&params()).unwrap_err().to_string();
        assert!(err.contains("${BS}"), "{err}");
    }

    #[test]
    fn malformed_files_are_rejected() {
        assert!(JobFile::parse(Path::new("a"), "bs=4k\n").is_err());
        assert!(JobFile::parse(Path::new("a"), "[global]\nbs=4k\n").is_err());
        assert!(JobFile::parse(Path::new("a"), "[a]\n[b]\n").is_err());
        assert!(JobFile::parse(Path::new("a"), "[a\n").is_err());
        let job = JobFile::parse(Path::new("a"), "[a]\nrw=trim\nbs=4k\n").unwrap();
        assert!(job.spec(&params()).is_err());
    }

    #[test]
    fn sizes_and_expansion() {
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("128K"), Some(131072));
        assert_eq!(parse_size("1MiB"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(expand("a${TARGET}b", &params()).unwrap(), "a/dev/vdab");
        assert_eq!(expand("${NOPE}", &params()).unwrap_err(), "NOPE");
    }
}
