//! The `/init` the test bed puts in every guest, and the console protocol it
//! speaks: a begin marker, the script's output, then an exit marker with the
//! script's status, after which the guest powers off.

/// Printed on its own line right before the script starts.
pub const BEGIN_MARKER: &str = "CRADLE-TESTBED-BEGIN";
/// Printed as `CRADLE-TESTBED-EXIT=<status>` when the script ends.
pub const EXIT_MARKER: &str = "CRADLE-TESTBED-EXIT=";

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
echo CRADLE-TESTBED-BEGIN
sh /etc/testbed/script.sh </dev/null
status=$?
printf '\nCRADLE-TESTBED-EXIT=%d\n' "$status"
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
pub(crate) fn parse_console(console: &str) -> Transcript {
    let console = console.replace('\r', "");
    let Some(begin) = console.find(&format!("{BEGIN_MARKER}\n")) else {
        return Transcript {
            output: String::new(),
            status: None,
        };
    };
    let rest = &console[begin + BEGIN_MARKER.len() + 1..];
    match rest.find(&format!("\n{EXIT_MARKER}")) {
        Some(end) => {
            let tail = &rest[end + 1 + EXIT_MARKER.len()..];
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

    #[test]
    fn output_and_status_between_markers() {
        let log = "[ 0.1] boot\r\nCRADLE-TESTBED-BEGIN\r\nhello\r\nworld\r\n\r\nCRADLE-TESTBED-EXIT=3\r\n[ 2.0] reboot: Power down\r\n";
        let t = parse_console(log);
        assert_eq!(t.output, "hello\nworld\n");
        assert_eq!(t.status, Some(3));
    }

    #[test]
    fn output_without_newline() {
        let t = parse_console("CRADLE-TESTBED-BEGIN\nabc\nCRADLE-TESTBED-EXIT=0\n");
        assert_eq!(t.output, "abc");
        assert_eq!(t.status, Some(0));
    }

    #[test]
    fn missing_markers() {
        assert_eq!(parse_console("Kernel panic").status, None);
        let t = parse_console("CRADLE-TESTBED-BEGIN\npartial");
        assert_eq!((t.output.as_str(), t.status), ("partial", None));
    }
}
