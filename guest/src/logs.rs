//! Container logs: what a container wrote to stdout and stderr, kept with
//! timestamps in a bounded ring per stream, mirrored to the console and
//! broadcast to `docker logs -f` and `docker attach` readers.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Which output stream an entry came from (Docker's stream ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout (id 1).
    Stdout = 1,
    /// stderr (id 2).
    Stderr = 2,
}

/// One chunk of output: a line with its newline, or a trailing partial line.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Order across both streams.
    pub seq: u64,
    /// When it was read.
    pub time: DateTime<Utc>,
    /// Its stream.
    pub stream: Stream,
    /// The bytes.
    pub data: Bytes,
}

struct Ring {
    entries: VecDeque<Arc<Entry>>,
    bytes: usize,
}

struct Inner {
    rings: [Ring; 2],
    next_seq: u64,
    partial: [Vec<u8>; 2],
}

/// The logs of one container (across its restarts).
pub struct Logs {
    name: String,
    limit: usize,
    mirror: bool,
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<Entry>>,
}

/// A snapshot of the stored entries plus a receiver for everything after.
pub struct Subscription {
    /// Stored entries, oldest first.
    pub backlog: Vec<Arc<Entry>>,
    /// Entries written after the snapshot.
    pub live: broadcast::Receiver<Arc<Entry>>,
}

impl Logs {
    /// Logs keeping at most `limit` bytes per stream; with `mirror`, every
    /// line is also written to stderr (the console) prefixed by `name`.
    pub fn new(name: &str, limit: usize, mirror: bool) -> Self {
        let (tx, _) = broadcast::channel(4096);
        let ring = || Ring {
            entries: VecDeque::new(),
            bytes: 0,
        };
        Self {
            name: name.to_string(),
            limit,
            mirror,
            inner: Mutex::new(Inner {
                rings: [ring(), ring()],
                next_seq: 0,
                partial: [Vec::new(), Vec::new()],
            }),
            tx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records bytes read from a stream, one entry per line.
    pub fn write(&self, stream: Stream, data: &[u8]) {
        let mut rest = data;
        while !rest.is_empty() {
            let (line, tail) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => rest.split_at(i + 1),
                None => (rest, &[][..]),
            };
            self.push(stream, line);
            rest = tail;
        }
    }

    fn push(&self, stream: Stream, data: &[u8]) {
        let now = Utc::now();
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let entry = Arc::new(Entry {
            seq,
            time: now,
            stream,
            data: Bytes::copy_from_slice(data),
        });
        let limit = self.limit;
        let ring = &mut inner.rings[stream as usize - 1];
        ring.bytes += data.len();
        ring.entries.push_back(entry.clone());
        while ring.bytes > limit {
            match ring.entries.pop_front() {
                Some(old) => ring.bytes -= old.data.len(),
                None => break,
            }
        }
        if self.mirror {
            self.mirror_line(&mut inner, stream, data);
        }
        // Sent under the lock so a subscriber never misses or doubles one.
        let _ = self.tx.send(entry);
    }

    fn mirror_line(&self, inner: &mut Inner, stream: Stream, data: &[u8]) {
        use std::io::Write;
        let partial = &mut inner.partial[stream as usize - 1];
        partial.extend_from_slice(data);
        if partial.ends_with(b"\n") || partial.len() > 4096 {
            let tag = if stream == Stream::Stderr { "!" } else { "" };
            let mut line = format!("[{}{tag}] ", self.name).into_bytes();
            line.extend_from_slice(partial);
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            let _ = std::io::stderr().write_all(&line);
            partial.clear();
        }
    }

    /// Everything stored now, and a receiver for what comes next.
    pub fn subscribe(&self) -> Subscription {
        let inner = self.lock();
        let live = self.tx.subscribe();
        let mut backlog: Vec<Arc<Entry>> = inner
            .rings
            .iter()
            .flat_map(|r| r.entries.iter().cloned())
            .collect();
        backlog.sort_by_key(|e| e.seq);
        Subscription { backlog, live }
    }
}

/// Docker's 8-byte stream frame header followed by the payload.
pub fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.push(stream);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Docker's RFC 3339 timestamp with 9 fractional digits.
pub fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_bounds_each_stream() {
        let logs = Logs::new("t", 10, false);
        logs.write(Stream::Stdout, b"aaa\nbbb\nccc");
        logs.write(Stream::Stderr, b"err\n");
        let s = logs.subscribe();
        let texts: Vec<&[u8]> = s.backlog.iter().map(|e| &e.data[..]).collect();
        // stdout is over its 10 bytes: the oldest line went.
        assert_eq!(texts, [&b"bbb\n"[..], b"ccc", b"err\n"]);
        logs.write(Stream::Stdout, b"dddd\n");
        let s = logs.subscribe();
        let texts: Vec<&[u8]> = s.backlog.iter().map(|e| &e.data[..]).collect();
        // stdout kept its newest 10 bytes or less, stderr untouched.
        assert_eq!(texts, [&b"ccc"[..], b"err\n", b"dddd\n"]);
    }

    #[tokio::test]
    async fn subscribers_get_what_follows_the_snapshot() {
        let logs = Logs::new("t", 1000, false);
        logs.write(Stream::Stdout, b"old\n");
        let mut s = logs.subscribe();
        logs.write(Stream::Stderr, b"new\n");
        assert_eq!(s.backlog.len(), 1);
        let e = s.live.recv().await.unwrap();
        assert_eq!((&e.data[..], e.stream), (&b"new\n"[..], Stream::Stderr));
    }

    #[test]
    fn frames_and_timestamps_match_docker() {
        assert_eq!(frame(2, b"hi"), [2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
        let t = DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        assert_eq!(timestamp(&t), "2023-11-14T22:13:20.000000005Z");
    }
}
