//! A network namespace the suite makes for itself (all test traffic stays
//! in it), and the per-interface counters read from inside it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::PerfError;

/// A named network namespace (`ip netns add`), deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Makes a fresh namespace with `lo` up and IPv6 off (no autoconf
    /// chatter on the taps).
    pub fn new() -> Result<NetNs, PerfError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "cperf-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        Ok(ns)
    }

    /// Its name (for `ip netns exec`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace; its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String, PerfError> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Moves the calling thread into the namespace: sockets and taps it
    /// creates afterwards live there. Use on a thread made for it.
    pub fn enter(&self) -> Result<(), PerfError> {
        let path = format!("/run/netns/{}", self.name);
        let f = File::open(&path).map_err(|e| PerfError::Setup(format!("{path}: {e}")))?;
        // SAFETY: setns on a netns fd only changes this thread's namespace.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(PerfError::Setup(format!(
                "setns {path}: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside the namespace and waits for it.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, PerfError> + Send + 'static,
    ) -> Result<T, PerfError> {
        let path = format!("/run/netns/{}", self.name);
        let me = NetNs {
            name: self.name.clone(),
        };
        let h = std::thread::spawn(move || {
            let r = me.enter().and_then(|()| f());
            // The clone must not delete the namespace when it drops.
            std::mem::forget(me);
            r
        });
        h.join()
            .map_err(|_| PerfError::Setup(format!("thread in {path} panicked")))?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

fn run(cmd: &mut Command) -> Result<String, PerfError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| PerfError::Setup(format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(PerfError::Setup(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packet and byte counters of one interface, as the kernel counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfCounters {
    /// Frames the interface received (for a tap: written into it by its
    /// owner, i.e. the frames the "wire" delivered to the host stack).
    pub rx_packets: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames the interface sent (for a tap: handed to its owner to read).
    pub tx_packets: u64,
}

/// Finds `ifname`'s counters in `/proc/net/dev` text.
pub fn parse_net_dev(text: &str, ifname: &str) -> Option<IfCounters> {
    text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        if name.trim() != ifname {
            return None;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        // Receive: bytes packets errs drop fifo frame compressed multicast;
        // transmit: bytes packets ...
        Some(IfCounters {
            rx_bytes: *f.first()?,
            rx_packets: *f.get(1)?,
            tx_packets: *f.get(9)?,
        })
    })
}

/// `ifname`'s counters in the calling thread's namespace.
pub fn counters(ifname: &str) -> Result<IfCounters, PerfError> {
    // thread-self: /proc/self/net would show the thread group leader's
    // namespace, not this thread's.
    let text = std::fs::read_to_string("/proc/thread-self/net/dev")
        .map_err(|e| PerfError::Setup(format!("/proc/thread-self/net/dev: {e}")))?;
    parse_net_dev(&text, ifname)
        .ok_or_else(|| PerfError::Setup(format!("no interface {ifname} in /proc/net/dev")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
 ptap0: 6000000  100000    0    0    0     0          0         0      140       2    0    5    0     0       0          0
";

    #[test]
    fn reads_one_interface() {
        let c = parse_net_dev(NET_DEV, "ptap0").unwrap();
        assert_eq!(
            c,
            IfCounters {
                rx_bytes: 6_000_000,
                rx_packets: 100_000,
                tx_packets: 2
            }
        );
        assert_eq!(
            parse_net_dev(NET_DEV, "ptap")
                .unwrap_or_default()
                .rx_packets,
            0
        );
        assert!(parse_net_dev(NET_DEV, "eth0").is_none());
        assert!(parse_net_dev("x: 1 2", "x").is_none());
    }

    #[test]
    fn a_namespace_has_its_own_loopback() {
        let ns = NetNs::new().unwrap();
        let name = ns.name().to_string();
        let (before, after) = ns
            .run(|| {
                let before = counters("lo")?;
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                for _ in 0..5 {
                    s.send_to(b"x", "127.0.0.1:9").unwrap();
                }
                Ok((before, counters("lo")?))
            })
            .unwrap();
        assert!(
            after.rx_packets >= before.rx_packets + 5,
            "{before:?} {after:?}"
        );
        // The host's own loopback did not see them: it is another device.
        assert!(ns
            .exec(&["ip", "link", "show", "lo"])
            .unwrap()
            .contains("UP"));
        drop(ns);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }
}
