//! Token buckets for IOPS and bytes/s, one pair per daemon (= per volume).
//! Only built when a limit is set, so an unlimited daemon pays nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// QoS limits; zero means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosConfig {
    /// Requests per second.
    pub iops: u64,
    /// Bytes per second.
    pub bps: u64,
    /// Request burst (bucket size); 0 = a tenth of a second of `iops`.
    pub iops_burst: u64,
    /// Byte burst (bucket size); 0 = a tenth of a second of `bps`.
    pub bps_burst: u64,
}

/// One bucket: `rate` tokens per second, holding at most `size`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    size: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: u64, burst: u64) -> Option<Bucket> {
        if rate == 0 {
            return None;
        }
        let rate = rate as f64;
        let size = if burst == 0 {
            rate / 10.0
        } else {
            burst as f64
        }
        .max(1.0);
        Some(Bucket {
            rate,
            size,
            tokens: size,
        })
    }

    fn refill(&mut self, dt: f64) {
        self.tokens = (self.tokens + dt * self.rate).min(self.size);
    }

    /// Time until `cost` can be taken. A cost above the bucket size is
    /// allowed once the bucket is full and leaves it in debt, so large
    /// requests are delayed, never starved.
    fn wait_for(&self, cost: f64) -> Duration {
        let need = cost.min(self.size);
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.tokens) / self.rate)
        }
    }
}

#[derive(Debug)]
struct Buckets {
    ops: Option<Bucket>,
    bytes: Option<Bucket>,
    last: Instant,
}

/// The daemon's buckets. The mutex is only taken when a limit is set.
#[derive(Debug)]
pub struct Qos {
    inner: Mutex<Buckets>,
}

impl Qos {
    /// Buckets for `cfg`, or `None` when nothing is limited.
    pub fn new(cfg: QosConfig) -> Option<Qos> {
        let ops = Bucket::new(cfg.iops, cfg.iops_burst);
        let bytes = Bucket::new(cfg.bps, cfg.bps_burst);
        if ops.is_none() && bytes.is_none() {
            return None;
        }
        Some(Qos {
            inner: Mutex::new(Buckets {
                ops,
                bytes,
                last: Instant::now(),
            }),
        })
    }

    /// Takes one request of `bytes` bytes, or says how long to wait.
    pub fn try_take(&self, bytes: u64) -> Result<(), Duration> {
        let mut b = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        let dt = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        let bytes = bytes as f64;
        let mut wait = Duration::ZERO;
        if let Some(o) = b.ops.as_mut() {
            o.refill(dt);
            wait = wait.max(o.wait_for(1.0));
        }
        if let Some(y) = b.bytes.as_mut() {
            y.refill(dt);
            wait = wait.max(y.wait_for(bytes));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(o) = b.ops.as_mut() {
            o.tokens -= 1.0;
        }
        if let Some(y) = b.bytes.as_mut() {
            y.tokens -= bytes;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_builds_nothing() {
        assert!(Qos::new(QosConfig::default()).is_none());
    }

    #[test]
    fn burst_then_wait() {
        let q = Qos::new(QosConfig {
            iops: 100,
            iops_burst: 5,
            ..Default::default()
        })
        .unwrap();
        for _ in 0..5 {
            q.try_take(0).unwrap();
        }
        let wait = q.try_take(0).unwrap_err();
        assert!(
            wait > Duration::from_millis(5) && wait <= Duration::from_millis(11),
            "{wait:?}"
        );
    }

    #[test]
    fn large_request_goes_into_debt() {
        let q = Qos::new(QosConfig {
            bps: 1000,
            bps_burst: 100,
            ..Default::default()
        })
        .unwrap();
        q.try_take(10_000).unwrap();
        let wait = q.try_take(1).unwrap_err();
        assert!(wait >= Duration::from_secs(9), "{wait:?}");
    }
}
