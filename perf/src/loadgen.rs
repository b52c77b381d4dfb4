//! Device mode: a load generator on cradle's userspace virtio driver. It
//! speaks vhost-user to a blk daemon exactly as a guest's virtio_blk would
//! (shared memory, split rings, eventfd kicks and calls), keeps `iodepth`
//! requests in flight on each queue from its own thread, and reports in
//! fio's JSON shape so the report treats it like fio.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cradle_devices::driver::blk::{BlkQueue, BlkRequest, S_OK};
use cradle_devices::driver::{Driver, DriverConfig};
use serde_json::{json, Map, Value};

use crate::fio::FioReport;
use crate::jobs::JobSpec;
use crate::procstat::ProcStat;
use crate::PerfError;

/// Virtqueue entries per queue: room for depth 64 with 3-descriptor chains.
const QUEUE_SIZE: u16 = 256;
/// Longest a daemon may leave a request unanswered before the run fails.
pub(crate) const STALL: Duration = Duration::from_secs(10);
/// Latency samples kept per queue (enough for percentiles, bounded memory).
pub(crate) const MAX_SAMPLES: usize = 4_000_000;
/// How long a queue thread polls the used ring before it sleeps on the
/// call eventfd: what a Linux guest vCPU does before it halts (KVM halt
/// polling, the guest's haltpoll cpuidle driver; both default to
/// 200 µs), so that the generator does not add a sleep and a wake-up per
/// completion that a guest would not.
const SPIN: Duration = Duration::from_micros(50);
/// Deepest queue that spins: deeper ones get batches per wake-up, and four
/// spinning threads on one CPU would only slow each other.
const SPIN_MAX_DEPTH: u32 = 4;
/// Percentiles reported, as fio does.
const PERCENTILES: [f64; 9] = [1.0, 5.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9, 99.99];

/// What to run.
#[derive(Debug, Clone)]
pub struct Load {
    /// The job (pattern and block size).
    pub job: JobSpec,
    /// Requests in flight per queue.
    pub iodepth: u32,
    /// Queues, one thread each.
    pub queues: u16,
    /// Measured time.
    pub runtime: Duration,
    /// Time run before measuring.
    pub ramp: Duration,
    /// Size of the device region used, bytes.
    pub size: u64,
    /// CPU the generator threads are pinned to.
    pub cpu: Option<usize>,
}

/// What one queue thread measured.
#[derive(Debug, Default)]
pub(crate) struct QueueResult {
    /// Requests (or file operations) completed while measuring.
    pub(crate) ios: u64,
    /// Of those, how many failed.
    pub(crate) errors: u64,
    /// Completion latencies, ns (at most [`MAX_SAMPLES`]).
    pub(crate) latencies_ns: Vec<u64>,
}

impl QueueResult {
    /// Counts one completed operation that took `lat`.
    pub(crate) fn record(&mut self, lat: Duration, failed: bool) {
        self.ios += 1;
        self.errors += u64::from(failed);
        if self.latencies_ns.len() < MAX_SAMPLES {
            self.latencies_ns.push(lat.as_nanos() as u64);
        }
    }

    /// Adds another thread's figures.
    pub(crate) fn merge(&mut self, other: QueueResult) {
        self.ios += other.ios;
        self.errors += other.errors;
        self.latencies_ns.extend(other.latencies_ns);
    }
}

/// A tiny xorshift generator: offsets need speed, not quality.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

pub(crate) fn pin(cpu: Option<usize>) {
    let Some(cpu) = cpu else { return };
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write only into it,
    // and sched_setaffinity(0) reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Runs `load` against the daemon at `socket`; returns the JSON text and
/// its parsed form.
pub fn run(socket: &std::path::Path, load: &Load) -> Result<(String, FioReport), PerfError> {
    let bs = u32::try_from(load.job.block_size)
        .map_err(|_| PerfError::Setup("block size too large".into()))?;
    let depth = load.iodepth.max(1);
    let slots_needed = u64::from(depth) * u64::from(bs.div_ceil(4096) + 1) * 4096;
    let cfg = DriverConfig {
        num_queues: load.queues.max(1),
        queue_size: QUEUE_SIZE,
        memory_bytes: (slots_needed * 3 + (16 << 20)) * u64::from(load.queues.max(1)),
        ..DriverConfig::default()
    };
    let mut driver = Driver::connect(socket, cfg)
        .map_err(|e| PerfError::Setup(format!("vhost-user connect: {e}")))?;
    let queues = driver.take_queues();
    let blocks = (load.size / u64::from(bs)).max(1);
    let cpu_before = ProcStat::read(std::process::id());
    let start = Instant::now();
    let ramp_end = start + load.ramp;
    let end = ramp_end + load.runtime;
    let payload: Arc<Vec<u8>> = Arc::new((0..bs).map(|i| (i % 251) as u8).collect());
    let mut handles = Vec::new();
    for (qi, q) in queues.into_iter().enumerate() {
        let job = load.job.clone();
        let payload = payload.clone();
        let cpu = load.cpu;
        let nq = u64::from(load.queues.max(1));
        handles.push(thread::spawn(move || -> Result<QueueResult, PerfError> {
            pin(cpu);
            let mut bq =
                BlkQueue::new(q, bs).map_err(|e| PerfError::Setup(format!("queue {qi}: {e}")))?;
            bq.set_copy_reads(false);
            if depth <= SPIN_MAX_DEPTH {
                bq.set_spin(SPIN);
            }
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (qi as u64 + 1));
            // Sequential jobs walk their own slice of the device per queue.
            let slice = (blocks / nq).max(1);
            let mut cursor = qi as u64 * slice;
            let mut next_block = |rng: &mut Rng| -> u64 {
                if job.pattern.random() {
                    rng.next() % blocks
                } else {
                    let b = cursor;
                    cursor = if cursor + 1 >= (qi as u64 + 1) * slice {
                        qi as u64 * slice
                    } else {
                        cursor + 1
                    };
                    b % blocks
                }
            };
            let sector_of = |block: u64| block * u64::from(bs) / 512;
            let mut submitted: Vec<Instant> = Vec::new();
            let mut res = QueueResult::default();
            let submit = |bq: &mut BlkQueue, tag: u64, block: u64| {
                let sector = sector_of(block);
                let req = if job.pattern.writes() {
                    BlkRequest::Write {
                        sector,
                        data: &payload,
                    }
                } else {
                    BlkRequest::Read { sector, len: bs }
                };
                bq.submit(req, tag)
            };
            let err = |e: cradle_devices::driver::DriverError| {
                PerfError::Setup(format!("queue {qi}: {e}"))
            };
            for tag in 0..u64::from(depth) {
                submitted.push(Instant::now());
                submit(&mut bq, tag, next_block(&mut rng)).map_err(err)?;
            }
            bq.kick().map_err(err)?;
            loop {
                let done = bq.reap(STALL).map_err(err)?;
                let now = Instant::now();
                let measuring = now >= ramp_end;
                let stop = now >= end;
                for c in &done {
                    let slot = c.tag as usize;
                    if measuring {
                        res.record(now.duration_since(submitted[slot]), c.status != S_OK);
                    }
                    if !stop {
                        submitted[slot] = Instant::now();
                        submit(&mut bq, c.tag, next_block(&mut rng)).map_err(err)?;
                    }
                }
                if stop {
                    // Drain what is still in flight so the daemon sees a clean end.
                    while bq.in_flight() > 0 {
                        bq.reap(STALL).map_err(err)?;
                    }
                    return Ok(res);
                }
                bq.kick().map_err(err)?;
            }
        }));
    }
    let total = join_all(handles)?;
    let cpu_after = ProcStat::read(std::process::id());
    drop(driver);
    let job = &load.job;
    let shape = (job.name.as_str(), job.pattern.writes(), u64::from(bs));
    finish(
        shape,
        total,
        load.runtime,
        load.ramp + load.runtime,
        cpu_before,
        cpu_after,
    )
}

/// Waits for every load thread and adds up what they measured.
pub(crate) fn join_all(
    handles: Vec<thread::JoinHandle<Result<QueueResult, PerfError>>>,
) -> Result<QueueResult, PerfError> {
    let mut total = QueueResult::default();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| PerfError::Setup("load generator thread panicked".into()))??;
        total.merge(r);
    }
    Ok(total)
}

/// Turns what the threads measured into fio's JSON shape (text and parsed)
/// for job `(name, writes, block size)`: rates over `wall`, the generator's
/// CPU over `busy`. Any failed request fails the run.
pub(crate) fn finish(
    (name, writes, bs): (&str, bool, u64),
    mut total: QueueResult,
    wall: Duration,
    busy: Duration,
    cpu_before: Option<ProcStat>,
    cpu_after: Option<ProcStat>,
) -> Result<(String, FioReport), PerfError> {
    if total.errors > 0 {
        return Err(PerfError::Fio(format!(
            "{} of {} requests failed",
            total.errors, total.ios
        )));
    }
    let cpu_pct = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => (a.cpu_ns - b.cpu_ns) as f64 / busy.as_nanos().max(1) as f64 * 100.0,
        _ => 0.0,
    };
    let value = to_fio_json(
        name,
        writes,
        bs,
        total.ios,
        wall,
        &mut total.latencies_ns,
        cpu_pct,
    );
    let text =
        serde_json::to_string_pretty(&value).map_err(|e| PerfError::Report(e.to_string()))?;
    let report = FioReport::parse(&text)?;
    Ok((text, report))
}

/// Builds fio's JSON shape for one job; `writes` puts the figures on the
/// write side (file operations count as reads, as fio's engines do).
pub(crate) fn to_fio_json(
    name: &str,
    writes: bool,
    bs: u64,
    ios: u64,
    wall: Duration,
    lat: &mut [u64],
    cpu_pct: f64,
) -> Value {
    lat.sort_unstable();
    let secs = wall.as_secs_f64().max(1e-9);
    let iops = ios as f64 / secs;
    let mut pct = Map::new();
    for p in PERCENTILES {
        if !lat.is_empty() {
            let idx = ((p / 100.0) * (lat.len() - 1) as f64).round() as usize;
            pct.insert(format!("{p:.6}"), json!(lat[idx.min(lat.len() - 1)]));
        }
    }
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().sum::<u64>() as f64 / lat.len() as f64
    };
    let busy = json!({
        "io_bytes": ios * bs,
        "bw_bytes": (iops * bs as f64) as u64,
        "iops": iops,
        "runtime": wall.as_millis() as u64,
        "total_ios": ios,
        "clat_ns": {
            "min": lat.first().copied().unwrap_or(0),
            "max": lat.last().copied().unwrap_or(0),
            "mean": mean,
            "N": lat.len(),
            "percentile": pct,
        },
    });
    let idle = json!({ "io_bytes": 0, "bw_bytes": 0, "iops": 0.0, "runtime": 0, "total_ios": 0 });
    let (read, write) = if writes { (idle, busy) } else { (busy, idle) };
    json!({
        "fio version": concat!("cradle-loadgen-", env!("CARGO_PKG_VERSION")),
        "jobs": [{
            "jobname": name,
            "error": 0,
            "read": read,
            "write": write,
            "usr_cpu": cpu_pct,
            "sys_cpu": 0.0,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_shape_round_trips() {
        let mut lat: Vec<u64> = (1..=1000).rev().collect();
        let v = to_fio_json(
            "blk-randwrite-4k",
            true,
            4096,
            2000,
            Duration::from_secs(2),
            &mut lat,
            12.5,
        );
        let r = FioReport::parse(&v.to_string()).unwrap();
        let w = &r.jobs[0].write;
        assert_eq!(r.jobs[0].read.total_ios, 0);
        assert_eq!((w.iops, w.total_ios, w.bw_bytes), (1000.0, 2000, 4_096_000));
        assert_eq!(w.clat_ns.percentile(50.0), Some(501));
        assert_eq!(w.clat_ns.percentile(99.0), Some(990));
        assert!((w.clat_ns.mean - 500.5).abs() < 1e-9);
    }

    #[test]
    fn xorshift_moves() {
        let mut r = Rng(1);
        let a = r.next();
        assert_ne!(a, r.next());
    }
}
