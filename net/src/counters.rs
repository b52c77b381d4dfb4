//! Per queue pair counters: every frame moved and every frame dropped,
//! with the reason. Logged when a frontend disconnects.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Counters of one queue pair (the control queue's live on pair 0).
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl fmt::Display for Counters {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut first = true;
                $(
                    let v = self.$name.load(Ordering::Relaxed);
                    if v != 0 || matches!(stringify!($name), "rx_packets" | "tx_packets") {
                        if !first { write!(f, " ")?; }
                        write!(f, "{}={}", stringify!($name), v)?;
                        first = false;
                    }
                )*
                let _ = first;
                Ok(())
            }
        }
    };
}

counters! {
    /// frames delivered to the guest
    rx_packets,
    /// bytes delivered to the guest (without header)
    rx_bytes,
    /// frames read from the tap that did not fit the guest's buffers
    rx_oversize,
    /// RX chains the guest gave that were unusable (readable, outside memory, too short)
    rx_bad_chain,
    /// tap read errors other than "empty"
    rx_tap_errors,
    /// times RX stopped because the guest had no buffers
    rx_no_buffers,
    /// frames sent to the tap
    tx_packets,
    /// bytes sent to the tap (without header)
    tx_bytes,
    /// TX chains that were unusable (writable, outside memory, too many segments)
    tx_bad_chain,
    /// TX chains shorter than the header
    tx_short,
    /// TX frames over the MTU (or 64 KiB for GSO)
    tx_oversize,
    /// TX headers asking for offloads that were not negotiated
    tx_bad_hdr,
    /// tap write errors
    tx_tap_errors,
    /// control commands answered OK
    ctrl_ok,
    /// control commands answered ERR (unknown, unsupported or bad values)
    ctrl_err,
    /// control chains dropped without an answer (no status byte, bad buffers)
    ctrl_malformed,
    /// TX re-checks (see `recheck`) that found chains or owed the guest a
    /// call: lost notifications when idle, under load also kicks still on their way
    recheck_found,
}

impl Counters {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_lists_nonzero_counters() {
        let c = Counters::default();
        Counters::add(&c.tx_packets, 3);
        Counters::inc(&c.ctrl_err);
        assert_eq!(c.to_string(), "rx_packets=0 tx_packets=3 ctrl_err=1");
    }
}
