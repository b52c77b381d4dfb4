//! Device mode for the fs suite: a FUSE load generator on cradle's
//! userspace virtio driver. It speaks vhost-user-fs to a daemon the way a
//! guest's virtiofs driver does with `cache=never` (every operation reaches
//! the daemon; forgets go batched on the hiprio queue) and reports in fio's
//! JSON shape, like [`crate::loadgen`] does for blk.
//!
//! What one file operation sends, as the Linux driver would:
//! `filecreate` CREATE + FLUSH + RELEASE, `filestat` LOOKUP + GETATTR,
//! `filedelete` LOOKUP + UNLINK.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use cradle_devices::driver::fs::{FsCompletion, FsQueue};
use cradle_devices::driver::{Driver, DriverConfig, DriverError};
use cradle_devices::fuse::abi::{self, opcode as op, Wire};
use cradle_devices::fuse::client::{body, request, EntryOut};

use crate::fio::FioReport;
use crate::jobs::{JobFile, Pattern};
use crate::loadgen::{finish, join_all, pin, QueueResult, Rng, STALL};
use crate::procstat::ProcStat;
use crate::PerfError;

/// Virtqueue entries per queue (two descriptors per request).
const QUEUE_SIZE: u16 = 128;
/// Request buffer bytes: a 4 KiB WRITE with its headers, or a name.
const MAX_REQUEST: u32 = 8192;
/// Reply buffer bytes: a 4 KiB READ or an entry + open reply.
const MAX_REPLY: u32 = 8192;
/// Forgets collected before one BATCH_FORGET goes out.
const FORGET_BATCH: usize = 32;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsJob {
    /// READ or WRITE of `bs` bytes at random offsets of the data file.
    Io {
        /// Whether the job writes.
        write: bool,
        /// Bytes per request.
        bs: u32,
    },
    /// fio's `filecreate`.
    Create,
    /// fio's `filestat`.
    Stat,
    /// fio's `filedelete`.
    Delete,
}

impl FsJob {
    /// Reads the job from its fio job file: the `ioengine` names a file
    /// operation, or `rw`/`bs` a random-I/O pattern.
    pub fn from_file(
        file: &JobFile,
        params: &BTreeMap<String, String>,
    ) -> Result<FsJob, PerfError> {
        match file.options.get("ioengine").map(String::as_str) {
            Some("filecreate") => return Ok(FsJob::Create),
            Some("filestat") => return Ok(FsJob::Stat),
            Some("filedelete") => return Ok(FsJob::Delete),
            _ => {}
        }
        let spec = file.spec(params)?;
        let bs = u32::try_from(spec.block_size)
            .ok()
            .filter(|b| (1..=4096).contains(b))
            .ok_or_else(|| PerfError::Job(format!("{}: bs above 4k", file.path.display())))?;
        match spec.pattern {
            Pattern::RandRead | Pattern::RandWrite => Ok(FsJob::Io {
                write: spec.pattern.writes(),
                bs,
            }),
            _ => Err(PerfError::Job(format!(
                "{}: only random I/O in device mode",
                file.path.display()
            ))),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct FsLoad {
    /// Job name for the report.
    pub name: String,
    /// The job.
    pub job: FsJob,
    /// Request queues, one thread each (file operations use one).
    pub queues: u16,
    /// Requests in flight per queue (random I/O).
    pub iodepth: u32,
    /// Measured time.
    pub runtime: Duration,
    /// Time run before measuring (random I/O).
    pub ramp: Duration,
    /// Name of the data file in the shared directory.
    pub data_file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Files per batch of file operations.
    pub nrfiles: u32,
    /// CPU the generator threads are pinned to.
    pub cpu: Option<usize>,
    /// The daemon's pid, to sample its CPU and memory while connected
    /// (virtiofsd exits when its frontend goes).
    pub daemon_pid: Option<u32>,
}

/// What one run produced.
#[derive(Debug)]
pub struct FsRun {
    /// fio-shaped JSON as written.
    pub text: String,
    /// The same, parsed.
    pub report: FioReport,
    /// The daemon before and after the load, when it could be read.
    pub daemon: Option<(ProcStat, ProcStat)>,
}

fn err(what: &str) -> impl Fn(DriverError) -> PerfError + '_ {
    move |e| PerfError::Setup(format!("{what}: {e}"))
}

fn fuse_err(what: &str, errno: i32) -> PerfError {
    PerfError::Fio(format!("{what}: errno {errno}"))
}

fn fail(what: &'static str) -> impl Fn(i32) -> PerfError {
    move |e| fuse_err(what, e)
}

/// Runs `load` against the vhost-user-fs daemon at `socket`.
pub fn run(socket: &Path, load: &FsLoad) -> Result<FsRun, PerfError> {
    let io = matches!(load.job, FsJob::Io { .. });
    let queues = if io { load.queues.max(1) } else { 1 };
    let depth = if io { load.iodepth.clamp(1, 32) } else { 1 };
    let cfg = DriverConfig {
        num_queues: queues + 1,
        queue_size: QUEUE_SIZE,
        memory_bytes: 16 << 20,
        ..DriverConfig::default()
    };
    let mut driver = Driver::connect(socket, cfg).map_err(err("vhost-user connect"))?;
    let mut qs = driver.take_queues().into_iter();
    let hiprio = qs
        .next()
        .ok_or(PerfError::Setup("no hiprio queue".into()))?;
    let mut hiprio = Forgets::new(FsQueue::new(hiprio, 8, MAX_REQUEST, 16).map_err(err("hiprio"))?);
    let mut reqs = Vec::new();
    for q in qs {
        reqs.push(FsQueue::new(q, depth as usize, MAX_REQUEST, MAX_REPLY).map_err(err("queue"))?);
    }
    let first = reqs
        .first_mut()
        .ok_or(PerfError::Setup("no request queue".into()))?;
    first
        .client()
        .init(abi::KERNEL_MINOR_VERSION, 0xffff_ffff)
        .map_err(|e| fuse_err("INIT", e))?;
    let sample = || load.daemon_pid.and_then(ProcStat::read);
    let daemon_before = sample();
    let cpu_before = ProcStat::read(std::process::id());
    let (total, wall, busy) = match load.job {
        FsJob::Io { write, bs } => {
            let total = random_io(reqs, &mut hiprio, load, write, bs)?;
            (total, load.runtime, load.ramp + load.runtime)
        }
        op => {
            let q = reqs
                .first_mut()
                .ok_or(PerfError::Setup("no queue".into()))?;
            pin(load.cpu);
            let (total, wall) = file_ops(q, &mut hiprio, load, op)?;
            (total, wall, wall)
        }
    };
    hiprio.flush()?;
    hiprio.drain()?;
    let cpu_after = ProcStat::read(std::process::id());
    let daemon = daemon_before.zip(sample());
    drop(driver);
    let (writes, bs) = match load.job {
        FsJob::Io { write, bs } => (write, u64::from(bs)),
        _ => (false, 0),
    };
    let (text, report) = finish(
        (&load.name, writes, bs),
        total,
        wall,
        busy,
        cpu_before,
        cpu_after,
    )?;
    Ok(FsRun {
        text,
        report,
        daemon,
    })
}

/// Looks the data file up and opens it read-write on `q`: (nodeid, fh).
fn open_data(q: &mut FsQueue, name: &str) -> Result<(u64, u64), PerfError> {
    let mut c = q.client();
    let e = c
        .lookup(abi::ROOT_ID, name.as_bytes())
        .map_err(|e| fuse_err(name, e))?;
    let (fh, _) = c
        .open(e.nodeid, libc::O_RDWR as u32, false)
        .map_err(|e| fuse_err(name, e))?;
    Ok((e.nodeid, fh))
}

/// `depth` random READs or WRITEs in flight on every request queue, each
/// from its own thread, until the run ends.
fn random_io(
    reqs: Vec<FsQueue>,
    hiprio: &mut Forgets,
    load: &FsLoad,
    write: bool,
    bs: u32,
) -> Result<QueueResult, PerfError> {
    let blocks = (load.size / u64::from(bs)).max(1);
    let ramp_end = Instant::now() + load.ramp;
    let end = ramp_end + load.runtime;
    let mut handles = Vec::new();
    let mut opened = Vec::new();
    for (qi, mut q) in reqs.into_iter().enumerate() {
        let (node, fh) = open_data(&mut q, &load.data_file)?;
        opened.push(node);
        let cpu = load.cpu;
        let depth = q.free_slots();
        handles.push(thread::spawn(move || -> Result<QueueResult, PerfError> {
            pin(cpu);
            q.set_copy_replies(false);
            let e = err("random I/O");
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (qi as u64 + 1));
            let payload = vec![0x5au8; bs as usize];
            let mut unique = (qi as u64 + 1) << 40;
            let mut submit = |q: &mut FsQueue, tag: u64, rng: &mut Rng| {
                unique += 2;
                let offset = (rng.next() % blocks) * u64::from(bs);
                let (opcode, mut b) = if write {
                    let w = abi::WriteIn {
                        fh,
                        offset,
                        size: bs,
                        ..Default::default()
                    };
                    (op::WRITE, body(Some(w), &[]))
                } else {
                    let r = abi::ReadIn {
                        fh,
                        offset,
                        size: bs,
                        ..Default::default()
                    };
                    (op::READ, body(Some(r), &[]))
                };
                if write {
                    b.extend_from_slice(&payload);
                }
                let req = request(opcode, node, unique, 0, 0, &b);
                let room = q.reply_room(&req);
                q.submit(&req, room, tag)
            };
            let mut started = Vec::with_capacity(depth);
            for tag in 0..depth {
                started.push(Instant::now());
                submit(&mut q, tag as u64, &mut rng).map_err(&e)?;
            }
            q.kick().map_err(&e)?;
            let mut res = QueueResult::default();
            loop {
                let done = q.reap(STALL).map_err(&e)?;
                let now = Instant::now();
                for c in &done {
                    let slot = c.tag as usize;
                    if now >= ramp_end {
                        res.record(now.duration_since(started[slot]), failed(c));
                    }
                    if now < end {
                        started[slot] = Instant::now();
                        submit(&mut q, c.tag, &mut rng).map_err(&e)?;
                    }
                }
                if now >= end {
                    while q.in_flight() > 0 {
                        q.reap(STALL).map_err(&e)?;
                    }
                    return Ok(res);
                }
                q.kick().map_err(&e)?;
            }
        }));
    }
    let total = join_all(handles);
    for node in opened {
        hiprio.forget(node, 1)?;
    }
    total
}

fn failed(c: &FsCompletion) -> bool {
    c.error().is_none_or(|e| e != 0)
}

/// One request on `q`, waited for; its reply body.
fn call(
    q: &mut FsQueue,
    opcode: u32,
    node: u64,
    unique: &mut u64,
    b: &[u8],
) -> Result<Vec<u8>, i32> {
    *unique += 2;
    let req = request(opcode, node, *unique, 0, 0, b);
    let room = q.reply_room(&req);
    let rep = q.send(&req, room).map_err(|_| libc::EPROTO)?;
    let r = cradle_devices::fuse::client::Reply::parse(&rep.ok_or(libc::EPROTO)?)
        .ok_or(libc::EPROTO)?;
    r.ok()
}

/// File operations on one queue, measured per operation; returns the
/// figures and the measured time.
fn file_ops(
    q: &mut FsQueue,
    hiprio: &mut Forgets,
    load: &FsLoad,
    job: FsJob,
) -> Result<(QueueResult, Duration), PerfError> {
    let n = load.nrfiles.max(1);
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("cradle-perf-{i}").into_bytes())
        .collect();
    let mut unique = 1u64 << 32;
    let mut res = QueueResult::default();
    let mut measured = Duration::ZERO;
    let mut created: Vec<u64> = Vec::new();
    let create = |q: &mut FsQueue, name: &[u8], unique: &mut u64| -> Result<u64, i32> {
        let ci = abi::CreateIn {
            flags: libc::O_RDWR as u32,
            mode: 0o644,
            umask: 0,
            open_flags: 0,
        };
        let r = call(
            q,
            op::CREATE,
            abi::ROOT_ID,
            unique,
            &body(Some(ci), &[name]),
        )?;
        let node = EntryOut::parse(&r)?.nodeid;
        let fh = abi::OpenOut::decode(r.get(128..144).ok_or(libc::EPROTO)?).fh;
        let fl = abi::FlushIn {
            fh,
            ..Default::default()
        };
        call(q, op::FLUSH, node, unique, &body(Some(fl), &[]))?;
        let rl = abi::ReleaseIn {
            fh,
            ..Default::default()
        };
        call(q, op::RELEASE, node, unique, &body(Some(rl), &[]))?;
        Ok(node)
    };
    let unlink = |q: &mut FsQueue, name: &[u8], unique: &mut u64| -> Result<(), i32> {
        call(
            q,
            op::UNLINK,
            abi::ROOT_ID,
            unique,
            &body::<abi::ForgetIn>(None, &[name]),
        )
        .map(drop)
    };
    let lookup = |q: &mut FsQueue, name: &[u8], unique: &mut u64| -> Result<u64, i32> {
        let r = call(
            q,
            op::LOOKUP,
            abi::ROOT_ID,
            unique,
            &body::<abi::ForgetIn>(None, &[name]),
        )?;
        Ok(EntryOut::parse(&r)?.nodeid)
    };
    while measured < load.runtime {
        // Create a batch (measured for filecreate), use it, remove it.
        for name in &names {
            let t = Instant::now();
            let node = create(q, name, &mut unique).map_err(fail("CREATE"))?;
            if job == FsJob::Create {
                let lat = t.elapsed();
                res.record(lat, false);
                measured += lat;
            }
            created.push(node);
        }
        if job == FsJob::Stat {
            // stat() of every file, round after round, for the whole run.
            while measured < load.runtime {
                for name in &names {
                    let t = Instant::now();
                    let node = lookup(q, name, &mut unique).map_err(fail("LOOKUP"))?;
                    let g = abi::GetattrIn::default();
                    call(q, op::GETATTR, node, &mut unique, &body(Some(g), &[]))
                        .map_err(fail("GETATTR"))?;
                    let lat = t.elapsed();
                    res.record(lat, false);
                    measured += lat;
                    hiprio.forget(node, 1)?;
                }
            }
        }
        for (name, node) in names.iter().zip(created.drain(..)) {
            let t = Instant::now();
            if job == FsJob::Delete {
                let again = lookup(q, name, &mut unique).map_err(fail("LOOKUP"))?;
                hiprio.forget(again, 1)?;
            }
            unlink(q, name, &mut unique).map_err(fail("UNLINK"))?;
            if job == FsJob::Delete {
                let lat = t.elapsed();
                res.record(lat, false);
                measured += lat;
            }
            hiprio.forget(node, 1)?;
        }
    }
    Ok((res, measured))
}

/// The hiprio queue: forgets collected and sent as BATCH_FORGET, without
/// waiting for the device, as the Linux driver does.
struct Forgets {
    q: FsQueue,
    pending: Vec<abi::ForgetOne>,
    unique: u64,
}

impl Forgets {
    fn new(q: FsQueue) -> Self {
        Forgets {
            q,
            pending: Vec::new(),
            unique: 1 << 56,
        }
    }

    fn forget(&mut self, nodeid: u64, nlookup: u64) -> Result<(), PerfError> {
        self.pending.push(abi::ForgetOne { nodeid, nlookup });
        if self.pending.len() >= FORGET_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends what is pending as one BATCH_FORGET.
    fn flush(&mut self) -> Result<(), PerfError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let e = err("hiprio");
        if self.q.free_slots() == 0 {
            self.q.reap(STALL).map_err(&e)?;
        }
        let mut b = Vec::new();
        abi::BatchForgetIn {
            count: self.pending.len() as u32,
            dummy: 0,
        }
        .encode(&mut b);
        for f in self.pending.drain(..) {
            f.encode(&mut b);
        }
        self.unique += 2;
        let req = request(op::BATCH_FORGET, 0, self.unique, 0, 0, &b);
        self.q.submit(&req, 0, 0).map_err(&e)?;
        self.q.kick().map_err(&e)
    }

    /// Waits until the device has taken every forget sent.
    fn drain(&mut self) -> Result<(), PerfError> {
        while self.q.in_flight() > 0 {
            self.q.reap(STALL).map_err(err("hiprio"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> Result<FsJob, PerfError> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs");
        let file = JobFile::load(&dir.join(format!("{name}.fio")))?;
        let params = [("TARGET", "/t"), ("IOENGINE", "psync"), ("IODEPTH", "1")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FsJob::from_file(&file, &params)
    }

    #[test]
    fn the_fs_job_files_map_to_device_jobs() {
        assert_eq!(job("fs-filecreate").unwrap(), FsJob::Create);
        assert_eq!(job("fs-filestat").unwrap(), FsJob::Stat);
        assert_eq!(job("fs-filedelete").unwrap(), FsJob::Delete);
        assert_eq!(
            job("fs-randread-4k").unwrap(),
            FsJob::Io {
                write: false,
                bs: 4096
            }
        );
        assert_eq!(
            job("fs-randwrite-4k").unwrap(),
            FsJob::Io {
                write: true,
                bs: 4096
            }
        );
        // 128 KiB does not fit the generator's 4 KiB buffers.
        assert!(matches!(job("blk-read-128k"), Err(PerfError::Job(_))));
    }
}
