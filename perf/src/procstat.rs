//! Resource figures of a daemon read from `/proc`: peak resident memory and
//! CPU time, the two costs the targets bound besides speed.

use std::fs;

/// A snapshot of one process (all its threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Peak resident set size (`VmHWM`), KiB.
    pub peak_rss_kib: u64,
    /// Current resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Resident memory that is the process's own (`RssAnon + RssFile`),
    /// KiB: without `RssShmem`, i.e. without the guest RAM a vhost-user
    /// daemon maps from the VM's memfd.
    pub private_kib: u64,
    /// User plus system CPU time, nanoseconds.
    pub cpu_ns: u64,
}

impl ProcStat {
    /// Reads `/proc/PID/status` and `/proc/PID/stat`; `None` if the process
    /// is gone.
    pub fn read(pid: u32) -> Option<ProcStat> {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        };
        Some(ProcStat {
            peak_rss_kib: kib("VmHWM:")?,
            rss_kib: kib("VmRSS:")?,
            private_kib: kib("RssAnon:")? + kib("RssFile:")?,
            cpu_ns: cpu_ns_from_stat(&stat)?,
        })
    }
}

/// utime + stime (fields 14 and 15 of `/proc/PID/stat`, after the
/// parenthesised command name, which may contain spaces) in nanoseconds.
fn cpu_ns_from_stat(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects; it only returns a value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some((utime + stime) * 1_000_000_000 / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (a b) c) S 1 2 3 4 5 6 7 8 9 10 200 100 0 0 20 0 1 0";
        // SAFETY: as above.
        let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(cpu_ns_from_stat(stat), Some(300 * 1_000_000_000 / tck));
        assert_eq!(cpu_ns_from_stat("garbage"), None);
    }

    #[test]
    fn reads_this_process() {
        let before = ProcStat::read(std::process::id()).unwrap();
        assert!(before.peak_rss_kib >= before.rss_kib && before.rss_kib > 0);
        assert!(before.private_kib <= before.rss_kib && before.private_kib > 0);
        // Burn a little CPU; CPU time never goes down.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        let after = ProcStat::read(std::process::id()).unwrap();
        assert!(after.cpu_ns >= before.cpu_ns);
        assert_eq!(ProcStat::read(u32::MAX), None);
    }
}
