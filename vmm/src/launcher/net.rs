//! The pod's host-side network: a tap, a host address, forwarding, NAT for
//! outbound traffic and DNAT for `--publish`.
//!
//! Pod `N` gets the link-local /30 `169.254.128.0 + 4N`: the host end
//! (`.1`) sits on tap `kc-ID` (created `multi_queue vnet_hdr` so net-tap
//! attaches to it and leaves it alone), the guest is `.2`. All nftables
//! rules live in one table per pod, `ip kcradle-ID`, so teardown is one
//! `nft delete table` and can never touch anyone else's rules. Everything
//! here runs `ip` and `nft` in kcradle's own network namespace: tests run
//! kcradle inside a namespace they created.

use std::net::Ipv4Addr;
use std::process::Command;

use super::spec::PublishSpec;

/// First address of the pods' link-local range.
pub const POD_NET_BASE: Ipv4Addr = Ipv4Addr::new(169, 254, 128, 0);
/// Pods that fit in the range (a /17 of /30s).
pub const MAX_PODS: u32 = 8192;

/// A failed network command.
#[derive(Debug, thiserror::Error)]
#[error("pod network: {cmd}: {msg}")]
pub struct NetError {
    /// The command line.
    pub cmd: String,
    /// Its stderr or the spawn error.
    pub msg: String,
}

/// Addresses and names of one pod's network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNet {
    /// Allocation index.
    pub index: u32,
    /// Tap interface name (at most 15 bytes).
    pub tap: String,
    /// nftables table name.
    pub table: String,
    /// Host end of the /30.
    pub host_ip: Ipv4Addr,
    /// Guest address.
    pub guest_ip: Ipv4Addr,
    /// Guest MAC (locally administered, derived from the index).
    pub mac: String,
}

fn run(args: &[&str]) -> Result<(), NetError> {
    let cmd = args.join(" ");
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| NetError {
            cmd: cmd.clone(),
            msg: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetError {
        cmd,
        msg: String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; "),
    })
}

fn run_stdin(args: &[&str], input: &str) -> Result<(), NetError> {
    use std::io::Write;
    let cmd = args.join(" ");
    let fail = |msg: String| NetError {
        cmd: cmd.clone(),
        msg,
    };
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; "),
        ))
    }
}

impl PodNet {
    /// The network of pod `id` at allocation `index` (< [`MAX_PODS`]).
    pub fn new(id: &str, index: u32) -> Self {
        let base = u32::from(POD_NET_BASE) + 4 * (index % MAX_PODS);
        // A short, stable, name-safe suffix: the index in hex.
        let tap = format!("kc{index:x}-{}", &id[..id.len().min(8)])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(15)
            .collect();
        PodNet {
            index,
            tap,
            table: format!("kcradle-{index}"),
            host_ip: Ipv4Addr::from(base + 1),
            guest_ip: Ipv4Addr::from(base + 2),
            mac: format!("52:54:00:c7:{:02x}:{:02x}", index >> 8 & 0xff, index & 0xff),
        }
    }

    /// The nftables ruleset of the pod's table.
    pub fn ruleset(&self, publish: &[PublishSpec]) -> String {
        let mut dnat = String::new();
        for p in publish {
            dnat.push_str(&format!(
                "    fib daddr type local {} dport {} dnat to {}:{}\n",
                p.proto.as_str(),
                p.host_port,
                self.guest_ip,
                p.port
            ));
        }
        format!(
            "table ip {t} {{\n\
             \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n\
             \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat}  }}\n\
             \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n\
             \x20   ip saddr {g} oifname != \"{tap}\" masquerade\n\
             \x20   ip daddr {g} oifname \"{tap}\" fib saddr type local masquerade\n  }}\n\
             }}\n",
            t = self.table,
            g = self.guest_ip,
            tap = self.tap,
        )
    }

    /// Creates the tap, its address and the rules. On error whatever was
    /// made is removed again.
    pub fn setup(&self, publish: &[PublishSpec]) -> Result<(), NetError> {
        let res = (|| {
            run(&[
                "ip",
                "tuntap",
                "add",
                "dev",
                &self.tap,
                "mode",
                "tap",
                "multi_queue",
                "vnet_hdr",
            ])?;
            run(&[
                "ip",
                "addr",
                "add",
                &format!("{}/30", self.host_ip),
                "dev",
                &self.tap,
            ])?;
            run(&["ip", "link", "set", &self.tap, "up"])?;
            // Forwarding for the pod, and DNAT of connections made from
            // this host to its own addresses.
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| NetError {
                cmd: "sysctl net.ipv4.ip_forward=1".into(),
                msg: e.to_string(),
            })?;
            run_stdin(&["nft", "-f", "-"], &self.ruleset(publish))
        })();
        if res.is_err() {
            self.teardown();
        }
        res
    }

    /// Removes the rules and the tap; errors (already gone) are ignored.
    pub fn teardown(&self) {
        let _ = run(&["nft", "delete", "table", "ip", &self.table]);
        let _ = run(&["ip", "link", "del", &self.tap]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::spec::Proto;

    #[test]
    fn addresses_and_rules() {
        let n = PodNet::new("web.1", 3);
        assert_eq!(n.host_ip, Ipv4Addr::new(169, 254, 128, 13));
        assert_eq!(n.guest_ip, Ipv4Addr::new(169, 254, 128, 14));
        assert_eq!(n.tap, "kc3-web-1");
        assert!(PodNet::new("a-very-long-pod-name", 8191).tap.len() <= 15);
        let r = n.ruleset(&[PublishSpec {
            host_port: 8080,
            port: 80,
            proto: Proto::Tcp,
        }]);
        assert!(
            r.contains("tcp dport 8080 dnat to 169.254.128.14:80"),
            "{r}"
        );
        assert!(r.contains("masquerade"));
    }

    fn sh(args: &[&str]) -> String {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Setup then teardown in a network namespace of this test thread
    /// only (unshare affects the calling thread, and the `ip`/`nft`
    /// children it forks).
    #[test]
    fn setup_and_teardown_in_a_private_netns() {
        std::thread::spawn(|| {
            // SAFETY: unshare with CLONE_NEWNET only changes this thread's
            // network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let n = PodNet::new("t", 5);
            let publish = [PublishSpec {
                host_port: 18080,
                port: 80,
                proto: Proto::Tcp,
            }];
            n.setup(&publish).unwrap();
            let link = sh(&["ip", "-o", "addr", "show", "dev", &n.tap]);
            assert!(link.contains("169.254.128.21/30"), "{link}");
            let rules = sh(&["nft", "list", "table", "ip", &n.table]);
            assert!(rules.contains("dnat to 169.254.128.22:80"), "{rules}");
            // A second pod with the same tap name fails and leaves the
            // first one's tap alone.
            assert!(n.setup(&publish).is_err());
            n.teardown();
            assert!(sh(&["ip", "-o", "link"])
                .lines()
                .all(|l| !l.contains("kc5")));
            assert!(!sh(&["nft", "list", "tables"]).contains("kcradle"));
        })
        .join()
        .unwrap();
    }
}
