//! The `/init` the test bed puts in every guest, and the console protocol it
//! speaks: a begin marker, the script's output, then an exit marker with the
//! script's status, after which the guest powers off.

/// Guest path of the per-run nonce that makes this run's markers unique, so
/// the console of a guest nested inside (whose own init prints markers too)
/// is never taken for this guest's result.
pub const NONCE: &str = "/etc/testbed/nonce";

/// The two console lines that frame a script's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Markers {
    /// Printed on its own line right before the script starts.
    pub begin: String,
    /// Printed as `<exit><status>` when the script ends.
    pub exit: String,
}

impl Markers {
    /// Markers for `nonce` (what `/init` prints when the nonce file holds it).
    pub fn new(nonce: &str) -> Self {
        Markers {
            begin: format!("CRADLE-TESTBED-BEGIN-{nonce}"),
            exit: format!("CRADLE-TESTBED-EXIT-{nonce}="),
        }
    }

    /// A nonce no other run of this machine uses at the same time.
    pub fn fresh_nonce() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::{SystemTime, UNIX_EPOCH};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!(
            "{:x}-{:x}-{}",
            std::process::id(),
            nanos,
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Guest path of the file listing modules to insmod, one per line, in order.
pub const MODULES_LIST: &str = "/etc/testbed/modules";
/// Guest path of the per-run script.
pub const SCRIPT: &str = "/etc/testbed/script.sh";
/// Guest path of the MAC of the user-mode NIC; present only when there is one.
pub const USER_NET_MAC: &str = "/etc/testbed/user-net-mac";
/// Guest path holding "ADDRESS/PREFIX GATEWAY" for the user-mode NIC.
pub const USER_NET_ADDR: &str = "/etc/testbed/user-net-addr";

/// The generated `/init` (busybox sh). It prepares a usual Linux
/// environment, loads the listed modules, configures the user-mode NIC if
/// any, runs the script with stdin from /dev/null, reports its status and
/// powers the machine off, so QEMU exits by itself.
pub const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run /root /mnt
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Keep kernel messages off the console so the script's output stays clean.
dmesg -n 1
ip link set lo up 2>/dev/null
if [ -f /etc/testbed/modules ]; then
    for m in $(cat /etc/testbed/modules); do
        insmod "$m" || echo "testbed: insmod $m failed"
    done
fi
if [ -f /etc/testbed/user-net-mac ]; then
    mac=$(cat /etc/testbed/user-net-mac)
    set -- $(cat /etc/testbed/user-net-addr)
    for dev in /sys/class/net/*; do
        if [ "$(cat $dev/address)" = "$mac" ]; then
            ifname=${dev##*/}
            ip link set "$ifname" up
            ip addr add "$1" dev "$ifname"
            ip route add default via "$2"
        fi
    done
fi
cd /root
nonce=$(cat /etc/testbed/nonce)
echo "CRADLE-TESTBED-BEGIN-$nonce"
sh /etc/testbed/script.sh </dev/null
status=$?
printf '\nCRADLE-TESTBED-EXIT-%s=%d\n' "$nonce" "$status"
sync
poweroff -f
"#;

/// What the console said about the script.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Transcript {
    /// The script's output, `\r` removed.
    pub output: String,
    /// Its exit status, if the exit marker was seen.
    pub status: Option<i32>,
}

/// Extracts the script's output and status from a serial console log.
pub(crate) fn parse_console(console: &str, markers: &Markers) -> Transcript {
    let console = console.replace('\r', "");
    let Some(begin) = console.find(&format!("{}\n", markers.begin)) else {
        return Transcript {
            output: String::new(),
            status: None,
        };
    };
    let rest = &console[begin + markers.begin.len() + 1..];
    match rest.find(&format!("\n{}", markers.exit)) {
        Some(end) => {
            let tail = &rest[end + 1 + markers.exit.len()..];
            let status = tail.lines().next().and_then(|s| s.trim().parse().ok());
            Transcript {
                output: rest[..end].to_string(),
                status,
            }
        }
        None => Transcript {
            output: rest.to_string(),
            status: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Markers {
        Markers::new("n1")
    }

    #[test]
    fn output_and_status_between_markers() {
        let log = "[ 0.1] boot\r\nCRADLE-TESTBED-BEGIN-n1\r\nhello\r\nworld\r\n\r\nCRADLE-TESTBED-EXIT-n1=3\r\n[ 2.0] reboot: Power down\r\n";
        let t = parse_console(log, &m());
        assert_eq!(t.output, "hello\nworld\n");
        assert_eq!(t.status, Some(3));
    }

    #[test]
    fn output_without_newline() {
        let t = parse_console(
            "CRADLE-TESTBED-BEGIN-n1\nabc\nCRADLE-TESTBED-EXIT-n1=0\n",
            &m(),
        );
        assert_eq!(t.output, "abc");
        assert_eq!(t.status, Some(0));
    }

    #[test]
    fn markers_of_a_nested_guest_are_ignored() {
        let log = "CRADLE-TESTBED-BEGIN-n1\nl2: CRADLE-TESTBED-BEGIN-n2\n\nCRADLE-TESTBED-EXIT-n2=0\nmore\n\nCRADLE-TESTBED-EXIT-n1=4\n";
        let t = parse_console(log, &m());
        assert_eq!(t.status, Some(4));
        assert!(t.output.ends_with("more\n"), "{:?}", t.output);
        assert_ne!(Markers::fresh_nonce(), Markers::fresh_nonce());
    }

    #[test]
    fn missing_markers() {
        assert_eq!(parse_console("Kernel panic", &m()).status, None);
        let t = parse_console("CRADLE-TESTBED-BEGIN-n1\npartial", &m());
        assert_eq!((t.output.as_str(), t.status), ("partial", None));
    }
}
