//! Times one VMM boot from the outside: starts the VMM, notes when the
//! guest's init prints a marker on the serial console (time to init) and
//! when the VMM exits after the guest powers off (boot to power-off), and
//! samples the VMM's memory meanwhile. Runs wherever the VMM runs (on the
//! host, or in the nested L1 as `cradle-boot-probe`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::PerfError;

/// How often the VMM's `/proc/PID/status` is sampled.
const SAMPLE: Duration = Duration::from_millis(10);

/// What one boot measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// VMM start to the marker on its console, ms (`None`: never seen).
    pub init_ms: Option<f64>,
    /// VMM start to its exit, ms.
    pub exit_ms: f64,
    /// The VMM's exit status (`None`: killed by a signal or the timeout).
    pub status: Option<i32>,
    /// Peak resident set (`VmHWM`, guest RAM it touched included), KiB.
    pub peak_rss_kib: u64,
    /// Largest resident memory outside the guest RAM seen: the resident
    /// pages of every mapping but the VMM's `/memfd:` ones (guest RAM is a
    /// memfd for both VMMs), KiB. Binaries and libraries count, wherever
    /// they live (on an initramfs they are shmem pages, not RssFile).
    pub own_peak_kib: u64,
    /// Largest resident guest RAM (`/memfd:` mappings) seen, KiB.
    pub shmem_peak_kib: u64,
}

/// (VmHWM, VmRSS) from `/proc/PID/status` text, KiB.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let kib = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((kib("VmHWM:")?, kib("VmRSS:")?))
}

/// Resident KiB of (the `/memfd:` mappings, every other mapping) in
/// `/proc/PID/smaps` text: (guest RAM, the VMM's own memory). Both come from
/// one read, so a VMM unmapping its guest RAM while it exits cannot make
/// the second look larger than it is (VmRSS read apart from smaps could).
pub fn split_rss_kib(smaps: &str) -> (u64, u64) {
    let mut in_memfd = false;
    let (mut guest, mut own) = (0, 0);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            // A mapping header: "start-end perms offset dev inode [path]".
            Some(range) if range.contains('-') && !range.ends_with(':') => {
                in_memfd = f.nth(4).is_some_and(|p| p.starts_with("/memfd:"));
            }
            Some("Rss:") => {
                let kib = f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                if in_memfd {
                    guest += kib;
                } else {
                    own += kib;
                }
            }
            _ => {}
        }
    }
    (guest, own)
}

/// Runs `cmd` (program and arguments) until it exits or `timeout` passes
/// (then it is killed), watching its stdout for `marker`.
pub fn probe(cmd: &[String], marker: &str, timeout: Duration) -> Result<ProbeResult, PerfError> {
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| PerfError::Setup("probe: no command".into()))?;
    let start = Instant::now();
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| PerfError::Setup(format!("{prog}: {e}")))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| PerfError::Setup("probe: no stdout pipe".into()))?;
    let (tx, rx) = mpsc::channel();
    let needle = marker.as_bytes().to_vec();
    let reader = std::thread::spawn(move || {
        let mut seen: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        let mut sent = false;
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            if sent {
                continue;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(needle.len()).any(|w| w == needle.as_slice()) {
                let _ = tx.send(Instant::now());
                sent = true;
            } else if seen.len() > needle.len() {
                // Keep only a tail that could start the marker.
                seen.drain(..seen.len() - needle.len());
            }
        }
    });
    let pid = child.id();
    let (mut peak, mut own, mut shmem) = (0u64, 0u64, 0u64);
    let status = loop {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        if let Some((hwm, _)) = status.ok().and_then(|t| parse_status(&t)) {
            peak = peak.max(hwm);
        }
        if let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) {
            let (guest, mine) = split_rss_kib(&smaps);
            own = own.max(mine);
            shmem = shmem.max(guest);
        }
        match child.try_wait() {
            Ok(Some(st)) => break st.code(),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(SAMPLE),
            Err(e) => return Err(PerfError::Setup(format!("waiting for {prog}: {e}"))),
        }
    };
    let exit = start.elapsed();
    let _ = reader.join();
    let init_ms = rx
        .try_recv()
        .ok()
        .map(|t| t.duration_since(start).as_secs_f64() * 1e3);
    Ok(ProbeResult {
        init_ms,
        exit_ms: exit.as_secs_f64() * 1e3,
        status,
        peak_rss_kib: peak,
        own_peak_kib: own,
        shmem_peak_kib: shmem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_memory_lines() {
        let status =
            "Name:\tqemu\nVmHWM:\t  300000 kB\nVmRSS:\t 290000 kB\nRssAnon:\t   20000 kB\n";
        assert_eq!(parse_status(status), Some((300_000, 290_000)));
        assert_eq!(parse_status("VmHWM: 1 kB\n"), None);
        let smaps = "\
7f0000000000-7f0010000000 rw-s 00000000 00:01 1234                       /memfd:mem (deleted)
Size:             262144 kB
Rss:              118000 kB
Pss:              118000 kB
55d000000000-55d000100000 r-xp 00000000 00:02 99                         /usr/bin/kcradle
Size:               1024 kB
Rss:                 700 kB
7f0020000000-7f0020200000 rw-s 00000000 00:01 1235                       /memfd:virtio (deleted)
Rss:                  12 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  40 kB
";
        assert_eq!(split_rss_kib(smaps), (118_012, 740));
        assert_eq!(split_rss_kib(""), (0, 0));
    }

    #[test]
    fn times_a_marker_and_an_exit() {
        let cmd: Vec<String> = ["sh", "-c", "sleep 0.2; echo x-marker-x; sleep 0.3; exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let r = probe(&cmd, "marker", Duration::from_secs(10)).unwrap();
        let init = r.init_ms.unwrap();
        // Loose bounds: these machines are busy.
        assert!((150.0..3000.0).contains(&init), "{r:?}");
        assert!(r.exit_ms >= init + 100.0, "{r:?}");
        assert_eq!(r.status, Some(3));
        assert!(r.peak_rss_kib > 0 && r.own_peak_kib > 0, "{r:?}");
    }

    #[test]
    fn a_hung_command_is_killed_at_the_timeout() {
        let cmd: Vec<String> = ["sleep", "30"].iter().map(|s| s.to_string()).collect();
        let r = probe(&cmd, "never", Duration::from_millis(300)).unwrap();
        assert_eq!((r.status, r.init_ms), (None, None));
        assert!(r.exit_ms < 5000.0, "{r:?}");
        assert!(probe(&[], "m", Duration::from_secs(1)).is_err());
    }
}
