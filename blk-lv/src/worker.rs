//! One queue's worker: pops chains, validates them, hands I/O to its own
//! engine and returns completions to the used ring in batches. Nothing
//! here is written by other queues except, when QoS is on, the token
//! buckets.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cradle_devices::daemon::GuestMemory;
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::QueueT;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemory as _, GuestMemoryMmap, Permissions,
};
use vmm_sys_util::timerfd::TimerFd;

use crate::device::Device;
use crate::engine::{Done, Engine, Op};
use crate::metrics::{add, bump};
use crate::request::{self, status, Kind, Request, ID_LEN};
use crate::zeroes::{Plan, Step};

/// Longest a worker polls without going back to its event loop (which
/// also serves the exit event and the QoS timer).
const POLL_SLICE: Duration = Duration::from_millis(1);

/// Most requests in flight on a queue for its worker to busy-poll (see
/// [`Worker::should_poll`]).
const POLL_MAX_DEPTH: usize = 1;

/// How often a polling worker yields the CPU. Between yields it spins
/// without syscalls: a yield costs a syscall and may hand the CPU to
/// another task for its slice, while the kernel posts completions
/// meanwhile through io_uring's task-work interrupt (the ring is not
/// COOP_TASKRUN). Measurements: see [`Worker::poll`].
const YIELD_EVERY: Duration = Duration::from_micros(10);

/// Most iovecs one host request may carry (`IOV_MAX`).
const IOV_MAX: usize = 1024;

type Vring = VringRwLock<GuestMemory>;
type Mem = Arc<GuestMemoryMmap<()>>;

#[derive(Debug, Clone, Copy)]
enum Class {
    Read(u64),
    Write(u64),
    Flush,
    Discard,
    WriteZeroes,
}

/// A request handed to the engine.
struct InFlight {
    head: u16,
    status: GuestAddress,
    used_len: u32,
    /// Result that means success (`None`: any non-negative result).
    expect: Option<i32>,
    class: Class,
    /// Referenced by the engine until completion; never touched meanwhile.
    _iov: Vec<libc::iovec>,
    /// Keeps the guest memory mapping alive until completion.
    mem: Mem,
    /// Write-zeroes: the fallocate steps (see [`crate::zeroes`]).
    zero: Option<Plan>,
}

/// Per-queue worker state.
pub struct Worker {
    queue: usize,
    device: Arc<Device>,
    mem: GuestMemory,
    engine: Box<dyn Engine>,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    done: Vec<Done>,
    throttled: VecDeque<(u16, Request, Mem)>,
    timer: TimerFd,
    /// Requests in flight other than reads (see [`Worker::should_poll`]).
    others_in_flight: usize,
    /// The filesystem answered ZERO_RANGE with EOPNOTSUPP.
    no_zero_range: bool,
    /// EVENT_IDX negotiated on this connection.
    pub event_idx: bool,
    /// The frontend has gone: take no new chains.
    pub closed: bool,
}

// SAFETY: the raw iovec pointers in `slots` point into guest memory kept
// alive by `mem`; a Worker is only ever used by one thread at a time
// (behind its own Mutex).
unsafe impl Send for Worker {}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("queue", &self.queue)
            .finish()
    }
}

impl Worker {
    /// A worker for queue `queue` with `engine`.
    pub fn new(
        queue: usize,
        device: Arc<Device>,
        mem: GuestMemory,
        engine: Box<dyn Engine>,
    ) -> std::io::Result<Self> {
        let n = usize::from(device.queue_size);
        Ok(Worker {
            queue,
            device,
            mem,
            engine,
            slots: (0..n).map(|_| None).collect(),
            free: (0..n).rev().collect(),
            done: Vec::with_capacity(n),
            throttled: VecDeque::new(),
            timer: TimerFd::new()?,
            others_in_flight: 0,
            no_zero_range: false,
            event_idx: false,
            closed: false,
        })
    }

    /// The engine's completion eventfd.
    pub fn engine_fd(&self) -> std::os::fd::RawFd {
        self.engine.event_fd()
    }

    /// The QoS timer fd.
    pub fn timer_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.timer.as_raw_fd()
    }

    /// Kick: take every available chain (as long as slots, QoS and drain
    /// allow) and start it, then poll, then re-arm notifications.
    pub fn on_kick(&mut self, vring: &Vring) {
        self.work(vring);
    }

    /// Completion eventfd fired: return finished requests to the guest,
    /// start what the freed slots allow, poll, re-arm.
    pub fn on_completion(&mut self, vring: &Vring) {
        self.engine.clear_event();
        self.work(vring);
    }

    /// One round of both directions with driver notifications off, then,
    /// if the queue is busy, busy-polling (see [`Worker::poll`]), then
    /// notifications back on.
    fn work(&mut self, vring: &Vring) {
        let mem = self.mem.memory().into_inner();
        let mut used = false;
        let done = self.complete(vring, &mut used);
        if self.event_idx {
            let _ = vring.disable_notification();
        }
        let (_, popped) = self.pop_all(vring, &mem, &mut used);
        self.submit();
        if used {
            signal(vring);
        }
        let busy = done + popped > 0 || self.in_flight() > 0;
        if busy && self.should_poll() {
            self.poll(vring, &mem);
        }
        self.process(vring);
    }

    /// Polling pays at queue depth 1 only: at depth each wake-up returns a
    /// batch, and spinning workers would take CPU from each other
    /// (measured: polling at up to 4 in flight cost 128k reads at depth
    /// 8 on 4 queues ~7 %; at up to 1, nothing measurable). Nor
    /// while a write, flush or fallocate is in flight: on a file the
    /// kernel often cannot issue those without blocking (timestamps,
    /// allocation) and hands them to an io_uring worker thread, which the
    /// poller would compete with for the CPU (measured: polling made QD1
    /// randwrite p50 latency 1.3-1.7x worse on one CPU). O_DIRECT reads
    /// complete from the device's interrupt, so waiting for them is what
    /// polling is for.
    fn should_poll(&self) -> bool {
        !self.device.poll.is_zero()
            && !self.closed
            && self.others_in_flight == 0
            && self.in_flight() <= POLL_MAX_DEPTH
    }

    /// Busy-polls the completion queue and the available ring until
    /// nothing happened for the device's poll window (or [`POLL_SLICE`]
    /// passed): a loaded queue then costs no wake-ups and no driver
    /// kicks (EVENT_IDX: `avail_event` stays behind while we poll), an
    /// idle one sleeps again after one window. Turns spin without
    /// syscalls and yield the CPU every [`YIELD_EVERY`], so that other
    /// queues' workers sharing it keep running (measured, QD1 4k
    /// randread, 6 alternating pairs: a yield on every turn added
    /// 16.0 µs p50 over raw, this 6.8 µs). Also measured and rejected:
    /// a COOP_TASKRUN ring (completions then wait for the next syscall:
    /// p50 6 µs worse, 4 pairs) and sleeping in `io_uring_enter` on the
    /// request in flight (a wake-up per request: p50 2 µs worse over 12
    /// pairs, and 5 ms in one run on a contended CPU).
    fn poll(&mut self, vring: &Vring, mem: &Mem) {
        let start = Instant::now();
        let mut last = start;
        let mut yielded = start;
        loop {
            if yielded.elapsed() >= YIELD_EVERY {
                std::thread::yield_now();
                yielded = Instant::now();
            } else {
                std::hint::spin_loop();
            }
            let mut used = false;
            let done = if self.engine.ready() {
                self.complete(vring, &mut used)
            } else {
                0
            };
            let (_, popped) = self.pop_all(vring, mem, &mut used);
            // Also hands the kernel the next step of a write-zeroes.
            self.submit();
            if used {
                signal(vring);
            }
            let now = Instant::now();
            if done + popped > 0 {
                last = now;
            } else if now.duration_since(last) >= self.device.poll {
                break;
            }
            if !self.should_poll() {
                break;
            }
            if now.duration_since(start) >= POLL_SLICE {
                break;
            }
        }
    }

    /// Requests handed to the engine and not completed.
    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Takes every available chain and starts it, then re-enables driver
    /// notifications (and goes again if chains arrived meanwhile).
    pub fn process(&mut self, vring: &Vring) {
        let mem = self.mem.memory().into_inner();
        let mut used = false;
        loop {
            if self.event_idx {
                let _ = vring.disable_notification();
            }
            let (blocked, popped) = self.pop_all(vring, &mem, &mut used);
            if blocked || !self.event_idx {
                break;
            }
            // Re-enable, and go again if the driver added chains meanwhile.
            // A stopped queue pops nothing while chains stay available: do
            // not spin on it.
            match vring.enable_notification() {
                Ok(true) if popped == 0 => break,
                Ok(true) => continue,
                _ => break,
            }
        }
        self.submit();
        if used {
            signal(vring);
        }
    }

    /// Pops and starts chains. Returns whether it stopped for lack of
    /// slots, QoS tokens or because of draining, and how many it popped.
    fn pop_all(&mut self, vring: &Vring, mem: &Mem, used: &mut bool) -> (bool, usize) {
        let mut popped = 0;
        loop {
            if self.closed
                || self.device.draining.load(Ordering::Acquire)
                || !self.throttled.is_empty()
                || self.free.is_empty()
            {
                return (true, popped);
            }
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(&**mem);
            let Some(chain) = chain else {
                return (false, popped);
            };
            popped += 1;
            let head = chain.head_index();
            let descs: Vec<Descriptor> = chain.collect();
            match request::parse(&descs, &**mem, &self.device.limits) {
                Ok(req) => self.admit(vring, head, req, mem.clone(), used),
                Err((e, status_at)) => {
                    self.device.counters[self.queue].parse_error(&e);
                    tracing::debug!(queue = self.queue, head, error = %e, "refused request");
                    bump(&self.device.counters[self.queue].requests);
                    let len = match status_at {
                        Some(at) => {
                            request::write_status(&**mem, at, e.status());
                            1
                        }
                        None => 0,
                    };
                    let _ = vring.add_used(head, len);
                    *used = true;
                }
            }
        }
    }

    /// QoS gate in front of [`Worker::start`].
    fn admit(&mut self, vring: &Vring, head: u16, req: Request, mem: Mem, used: &mut bool) {
        if let Some(qos) = &self.device.qos {
            if let Some(cost) = qos_cost(&req.kind) {
                if let Err(wait) = qos.try_take(cost) {
                    bump(&self.device.counters[self.queue].throttled);
                    // Counted as in flight so GET_VRING_BASE and drains wait for it.
                    self.device.in_flight[self.queue].fetch_add(1, Ordering::AcqRel);
                    self.throttled.push_back((head, req, mem));
                    self.arm_timer(wait);
                    return;
                }
            }
        }
        self.start(vring, head, req, mem, used);
    }

    fn arm_timer(&mut self, wait: Duration) {
        let _ = self.timer.reset(wait.max(Duration::from_micros(100)), None);
    }

    /// Starts a validated request: answers GET_ID at once, queues the rest
    /// on the engine.
    fn start(&mut self, vring: &Vring, head: u16, req: Request, mem: Mem, used: &mut bool) {
        // A borrow, not an Arc clone: no shared refcount traffic per request.
        let dev: &Device = &self.device;
        let mut zero = None;
        let (op, class, used_len, expect, iov) = match req.kind {
            Kind::GetId { buf, len } => {
                let mut id = [0u8; ID_LEN];
                let n = dev.serial.len().min(ID_LEN);
                id[..n].copy_from_slice(&dev.serial[..n]);
                let ok = mem.write_slice(&id[..len as usize], buf).is_ok();
                bump(&dev.counters[self.queue].requests);
                bump(&dev.counters[self.queue].get_ids);
                request::write_status(
                    &*mem,
                    req.status,
                    if ok { status::OK } else { status::IOERR },
                );
                let _ = vring.add_used(head, len + 1);
                *used = true;
                return;
            }
            Kind::Read {
                offset,
                ref bufs,
                len,
            }
            | Kind::Write {
                offset,
                ref bufs,
                len,
            } => {
                let write = matches!(req.kind, Kind::Write { .. });
                let Some(iov) = iovecs(&mem, bufs, write) else {
                    // Unreachable after parse() checked the ranges, but never trust it blindly.
                    dev.counters[self.queue].parse_error(&request::ParseError::BadBuffer);
                    self.finish_now(vring, head, &mem, req.status, status::IOERR, used);
                    return;
                };
                let iovcnt = iov.len() as u32; // <= IOV_MAX
                let op = if write {
                    let dsync = !dev.writeback.load(Ordering::Relaxed);
                    Op::Write {
                        iov: iov.as_ptr(),
                        iovcnt,
                        offset,
                        dsync,
                    }
                } else {
                    Op::Read {
                        iov: iov.as_ptr(),
                        iovcnt,
                        offset,
                    }
                };
                let (class, used_len) = if write {
                    (Class::Write(u64::from(len)), 1)
                } else {
                    (Class::Read(u64::from(len)), len.saturating_add(1))
                };
                (op, class, used_len, i32::try_from(len).ok(), iov)
            }
            Kind::Flush => (Op::Flush, Class::Flush, 1, None, Vec::new()),
            Kind::Discard { offset, len } => (
                Op::Discard { offset, len },
                Class::Discard,
                1,
                None,
                Vec::new(),
            ),
            Kind::WriteZeroes { offset, len, unmap } => {
                let plan = Plan::new(
                    offset,
                    len,
                    unmap,
                    !dev.disk.is_block_device,
                    self.no_zero_range,
                );
                zero = Some(plan);
                (zero_op(&plan), Class::WriteZeroes, 1, None, Vec::new())
            }
        };
        let Some(slot) = self.free.pop() else {
            // pop_all() checked for a free slot; answer rather than lose the chain.
            self.finish_now(vring, head, &mem, req.status, status::IOERR, used);
            return;
        };
        self.slots[slot] = Some(InFlight {
            head,
            status: req.status,
            used_len,
            expect,
            class,
            _iov: iov,
            mem,
            zero,
        });
        self.device.in_flight[self.queue].fetch_add(1, Ordering::AcqRel);
        if !matches!(class, Class::Read(_)) {
            self.others_in_flight += 1;
        }
        // SAFETY: the iovecs and the guest memory they point into are owned
        // by `self.slots[slot]` and stay untouched until the engine returns
        // this tag in `reap()`, which is the only place the slot is cleared.
        let pushed = unsafe { self.engine.push(op, slot as u64) };
        if let Err(e) = pushed {
            tracing::warn!(queue = self.queue, error = %e, "io_uring push failed");
            self.done.push(Done {
                tag: slot as u64,
                result: -libc::EIO,
            });
        }
    }

    fn finish_now(
        &mut self,
        vring: &Vring,
        head: u16,
        mem: &Mem,
        at: GuestAddress,
        st: u8,
        used: &mut bool,
    ) {
        bump(&self.device.counters[self.queue].requests);
        if st != status::OK {
            bump(&self.device.counters[self.queue].io_errors);
        }
        request::write_status(&**mem, at, st);
        let _ = vring.add_used(head, 1);
        *used = true;
    }

    fn submit(&mut self) {
        if let Err(e) = self.engine.submit() {
            tracing::warn!(queue = self.queue, error = %e, "io_uring submit failed");
        }
    }

    /// Returns finished requests to the used ring (the caller signals);
    /// how many.
    fn complete(&mut self, vring: &Vring, used: &mut bool) -> usize {
        let mut done = std::mem::take(&mut self.done);
        self.engine.complete(&mut done);
        let n = done.len();
        *used |= n > 0;
        let dev = self.device.clone();
        let c = &dev.counters[self.queue];
        for d in done.drain(..) {
            let Some(mut f) = usize::try_from(d.tag)
                .ok()
                .and_then(|t| self.slots.get_mut(t))
                .and_then(Option::take)
            else {
                continue;
            };
            let mut result = d.result;
            if let Some(plan) = f.zero.as_mut() {
                if let Some(step) = plan.next(result) {
                    if plan.step == Step::ZeroRange {
                        self.no_zero_range = true;
                    }
                    plan.step = step;
                    let op = zero_op(plan);
                    self.slots[d.tag as usize] = Some(f);
                    // SAFETY: a fallocate references no memory.
                    if unsafe { self.engine.push(op, d.tag) }.is_ok() {
                        continue;
                    }
                    let Some(back) = self.slots[d.tag as usize].take() else {
                        continue;
                    };
                    f = back;
                    result = -libc::EIO;
                }
            }
            let ok = match f.expect {
                Some(n) => result == n,
                None => result >= 0,
            };
            bump(&c.requests);
            if !matches!(f.class, Class::Read(_)) {
                self.others_in_flight = self.others_in_flight.saturating_sub(1);
            }
            if ok {
                match f.class {
                    Class::Read(n) => {
                        bump(&c.reads);
                        add(&c.bytes_read, n);
                    }
                    Class::Write(n) => {
                        bump(&c.writes);
                        add(&c.bytes_written, n);
                    }
                    Class::Flush => bump(&c.flushes),
                    Class::Discard => bump(&c.discards),
                    Class::WriteZeroes => bump(&c.write_zeroes),
                }
            } else {
                bump(&c.io_errors);
                tracing::debug!(queue = self.queue, result, class = ?f.class, "host I/O error");
            }
            request::write_status(
                &*f.mem,
                f.status,
                if ok { status::OK } else { status::IOERR },
            );
            let _ = vring.add_used(f.head, f.used_len);
            self.free.push(d.tag as usize);
            dev.in_flight[self.queue].fetch_sub(1, Ordering::AcqRel);
        }
        self.done = done;
        n
    }

    /// QoS timer fired: start throttled requests that now have tokens.
    pub fn on_timer(&mut self, vring: &Vring) {
        let _ = self.timer.wait();
        let mut used = false;
        while let Some((head, req, mem)) = self.throttled.pop_front() {
            if let (Some(qos), Some(cost)) = (&self.device.qos, qos_cost(&req.kind)) {
                if let Err(wait) = qos.try_take(cost) {
                    self.throttled.push_front((head, req, mem));
                    self.arm_timer(wait);
                    break;
                }
            }
            self.device.in_flight[self.queue].fetch_sub(1, Ordering::AcqRel);
            self.start(vring, head, req, mem, &mut used);
        }
        self.submit();
        if used {
            signal(vring);
        }
        if self.throttled.is_empty() {
            self.process(vring);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Requests abandoned after a stop timeout: keep the books straight.
        let left = self.slots.iter().filter(|s| s.is_some()).count() + self.throttled.len();
        if left > 0 {
            tracing::warn!(
                queue = self.queue,
                left,
                "worker dropped with requests in flight"
            );
            self.device.in_flight[self.queue].fetch_sub(left, Ordering::AcqRel);
        }
    }
}

/// The fallocate of a write-zeroes plan's current step.
fn zero_op(plan: &Plan) -> Op {
    Op::Fallocate {
        offset: plan.offset,
        len: plan.len,
        mode: plan.step.mode(),
    }
}

/// Bytes a request costs against the byte bucket, or `None` if QoS does
/// not apply to it (GET_ID, FLUSH).
fn qos_cost(kind: &Kind) -> Option<u64> {
    match kind {
        Kind::Read { len, .. } | Kind::Write { len, .. } => Some(u64::from(*len)),
        Kind::Discard { .. } | Kind::WriteZeroes { .. } => Some(0),
        Kind::Flush | Kind::GetId { .. } => None,
    }
}

fn signal(vring: &Vring) {
    if vring.needs_notification().unwrap_or(true) {
        let _ = vring.signal_used_queue();
    }
}

/// Host iovecs for guest buffers (split where guest memory regions split).
fn iovecs(mem: &Mem, bufs: &[(GuestAddress, u32)], device_reads: bool) -> Option<Vec<libc::iovec>> {
    let access = if device_reads {
        Permissions::Read
    } else {
        Permissions::Write
    };
    let mut iov = Vec::with_capacity(bufs.len());
    for (addr, len) in bufs {
        for s in mem.get_slices(*addr, *len as usize, access).ok()? {
            let s = s.ok()?;
            iov.push(libc::iovec {
                iov_base: s.ptr_guard_mut().as_ptr().cast(),
                iov_len: s.len(),
            });
        }
    }
    (iov.len() <= IOV_MAX).then_some(iov)
}
