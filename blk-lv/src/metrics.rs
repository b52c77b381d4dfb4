//! Counters for every request outcome. One set per queue, each on its own
//! cache lines, so queues never write to shared memory on the data path;
//! readers sum them (relaxed atomics: statistics, not synchronisation).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::request::ParseError;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Request counters of one queue.
        #[derive(Debug, Default)]
        #[repr(align(128))]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        impl Counters {
            /// Every counter as `(name, value)`.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Requests completed (any status).
    requests,
    /// Reads completed OK.
    reads,
    /// Writes completed OK.
    writes,
    /// Flushes completed OK.
    flushes,
    /// GET_ID answered.
    get_ids,
    /// Discards completed OK.
    discards,
    /// Write-zeroes completed OK.
    write_zeroes,
    /// Bytes read for the guest.
    bytes_read,
    /// Bytes written for the guest.
    bytes_written,
    /// Chains dropped without a usable status byte.
    no_status,
    /// Bad or short headers.
    bad_header,
    /// Data buffers outside guest memory.
    bad_buffer,
    /// Data buffers in the wrong direction.
    bad_direction,
    /// More segments than seg_max.
    too_many_segments,
    /// Data lengths not a multiple of 512 (or zero).
    bad_length,
    /// Sectors beyond the end of the disk.
    out_of_range,
    /// Modifications refused on a read-only disk.
    read_only,
    /// Malformed discard/write-zeroes payloads.
    bad_segment,
    /// Unsupported request types.
    unsupported,
    /// Host I/O errors (and short transfers).
    io_errors,
    /// Requests delayed by QoS.
    throttled,
}

impl Counters {
    /// Bumps the counter of a refused request.
    pub fn parse_error(&self, e: &ParseError) {
        let c = match e {
            ParseError::NoStatus => &self.no_status,
            ParseError::BadHeader => &self.bad_header,
            ParseError::BadBuffer => &self.bad_buffer,
            ParseError::BadDirection => &self.bad_direction,
            ParseError::TooManySegments => &self.too_many_segments,
            ParseError::BadLength => &self.bad_length,
            ParseError::OutOfRange => &self.out_of_range,
            ParseError::ReadOnly => &self.read_only,
            ParseError::BadSegment => &self.bad_segment,
            ParseError::Unsupported(_) => &self.unsupported,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads one counter by name (0 if unknown).
    pub fn get(&self, name: &str) -> u64 {
        self.snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| v)
    }
}

/// Sums of every queue's counters, as `(name, value)`.
pub fn total(sets: &[Counters]) -> Vec<(&'static str, u64)> {
    let mut sum = Counters::default().snapshot();
    for c in sets {
        for (acc, (_, v)) in sum.iter_mut().zip(c.snapshot()) {
            acc.1 += v;
        }
    }
    sum
}

/// One line `name=value ...` of the non-zero totals, for the log.
pub fn line(sets: &[Counters]) -> String {
    total(sets)
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Adds 1 to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Adds `n` to a counter.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
