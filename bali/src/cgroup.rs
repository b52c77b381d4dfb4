//! `bali run -m`: a memory limit through cgroup v2 on bali's own cgroup.
//!
//! bali creates no cgroup (it becomes the service, so the service stays in
//! the caller's cgroup, e.g. its systemd unit). It writes `memory.max` of
//! that cgroup, which works where the cgroup is delegated to the caller
//! (the memory controller is enabled for it and the file is writable);
//! otherwise it says why and exits before starting anything.

use std::fs;
use std::io;
use std::path::PathBuf;

/// Why `-m` cannot be applied. The doc comment is the message.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// the size does not parse
    #[error("-m {0:?}: expected a size of at least 1M such as 64M or 1G")]
    BadSize(String),
    /// not in a cgroup v2 hierarchy
    #[error("cannot apply -m: this process is not in a cgroup v2 hierarchy")]
    NotV2,
    /// cgroup2 not mounted
    #[error("cannot apply -m: cgroup v2 is not mounted")]
    NotMounted,
    /// memory controller not enabled for our cgroup
    #[error(
        "cannot apply -m: the memory controller is not enabled for cgroup {0} \
         (not delegated; e.g. run under a systemd unit with Delegate=yes or use MemoryMax=)"
    )]
    NotDelegated(PathBuf),
    /// memory.max not writable
    #[error("cannot apply -m: {0} is not writable (cgroup not delegated to this user)")]
    NotWritable(PathBuf),
    /// reading /proc or writing the limit failed
    #[error("cannot apply -m: {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// A checked, not yet applied, limit.
#[derive(Debug)]
pub struct Limit {
    file: PathBuf,
    bytes: u64,
}

/// Parses `64M`, `1g`, `512k`, `1048576` (binary units).
pub fn parse_size(s: &str) -> Result<u64, CgroupError> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n >= 1 << 20)
        .ok_or_else(|| CgroupError::BadSize(s.to_string()))
}

/// The cgroup v2 directory of this process, if cgroup v2 is mounted.
fn own_cgroup() -> Result<PathBuf, CgroupError> {
    let read = |p: &str| fs::read_to_string(p).map_err(|e| CgroupError::Io(p.into(), e));
    let cg = read("/proc/self/cgroup")?;
    let rel = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(CgroupError::NotV2)?;
    let mi = read("/proc/self/mountinfo")?;
    let mnt = mi
        .lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            (post.split_whitespace().next()? == "cgroup2")
                .then(|| pre.split(' ').nth(4).map(str::to_string))?
        })
        .ok_or(CgroupError::NotMounted)?;
    Ok(PathBuf::from(mnt).join(rel.trim_start_matches('/')))
}

/// Checks that `memory.max` of bali's cgroup can be written.
pub fn prepare(bytes: u64) -> Result<Limit, CgroupError> {
    let dir = own_cgroup()?;
    let file = dir.join("memory.max");
    if !file.exists() {
        return Err(CgroupError::NotDelegated(dir));
    }
    let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
        .map_err(|_| CgroupError::NotWritable(file.clone()))?;
    // SAFETY: `c` is a valid NUL-terminated path; access only reads it.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(CgroupError::NotWritable(file));
    }
    Ok(Limit { file, bytes })
}

impl Limit {
    /// Writes the limit.
    pub fn apply(&self) -> Result<(), CgroupError> {
        fs::write(&self.file, self.bytes.to_string())
            .map_err(|e| CgroupError::Io(self.file.clone(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert!(parse_size("12").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999999T").is_err());
    }
}
