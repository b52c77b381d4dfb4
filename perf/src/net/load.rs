//! The two host-side packet sources of the net suite: the *raw* one writes
//! frames with `writev` (virtio-net header + frame) straight into a tap,
//! the *device* one hands the same frames to net-tap through cradle's
//! userspace virtio driver. Both are counted at the other end, by the
//! kernel's receive counter of the tap.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cradle_devices::driver::{Buffer, Driver, DriverConfig, VirtQueue};

use super::netns::{counters, IfCounters};
use crate::PerfError;

/// Size of the virtio-net header (VERSION_1 / MRG_RXBUF layout), which is
/// also what net-tap sets with `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN: usize = 12;
/// Ethertype of the test frames (IEEE local experimental): the host stack
/// has no handler for it and drops each frame right after counting it.
pub const ETH_TEST: u16 = 0x88b5;
/// Entries of the device-mode TX queue.
const QUEUE_SIZE: u16 = 256;

/// What one run of a packet source measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacketRun {
    /// Frames the tap received during the measured window.
    pub packets: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Length of the measured window, seconds.
    pub seconds: f64,
    /// Frames the source submitted in that window.
    pub submitted: u64,
    /// CPU time the source spent sending over the window (raw mode: its
    /// thread's CPU time, i.e. the `writev` syscalls the daemon's tap
    /// writes stand for; device mode: the driver's work of posting,
    /// kicking and reclaiming, without the busy-wait for completions).
    pub source_cpu_ns: u64,
}

/// An Ethernet frame of `len` bytes (at least 14) to a locally
/// administered unicast address, carrying [`ETH_TEST`].
pub fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[..6].copy_from_slice(&[0x02, 0xcf, 0x00, 0x00, 0x00, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0xcf, 0x00, 0x00, 0x00, 0x01]);
    f[12..14].copy_from_slice(&ETH_TEST.to_be_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(14) {
        *b = (i as u8).wrapping_mul(31);
    }
    f
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write only into it,
    // and sched_setaffinity(0) reads it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time of the calling thread, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates (or attaches to) tap `ifname` in the calling thread's network
/// namespace with the flags net-tap uses (`IFF_TAP | IFF_NO_PI |
/// IFF_VNET_HDR | IFF_MULTI_QUEUE`) and a 12-byte virtio-net header.
pub fn open_tap(ifname: &str) -> Result<std::fs::File, PerfError> {
    let err = |what: &str| {
        PerfError::Setup(format!(
            "tap {ifname}: {what}: {}",
            std::io::Error::last_os_error()
        ))
    };
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(PerfError::Setup(format!("bad tap name {ifname:?}")));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| PerfError::Setup(format!("/dev/net/tun: {e}")))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE)
            as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `req` is laid out as.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(err("TUNSETIFF"));
    }
    let size: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int.
    if unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } < 0 {
        return Err(err("TUNSETVNETHDRSZ"));
    }
    Ok(f)
}

/// Runs `step` (which sends a batch and returns how many frames it sent)
/// for `ramp`, then measures `runtime` by the tap's counters; `cost` reads
/// the source's cumulative sending cost in ns. Call on a thread inside the
/// tap's namespace.
fn measure(
    ifname: &str,
    ramp: Duration,
    runtime: Duration,
    mut step: impl FnMut() -> Result<u64, PerfError>,
    cost: impl Fn() -> u64,
) -> Result<PacketRun, PerfError> {
    let start = Instant::now();
    while start.elapsed() < ramp {
        step()?;
    }
    let before: IfCounters = counters(ifname)?;
    let cpu0 = cost();
    let t0 = Instant::now();
    let mut submitted = 0;
    while t0.elapsed() < runtime {
        submitted += step()?;
    }
    let after = counters(ifname)?;
    let seconds = t0.elapsed().as_secs_f64();
    Ok(PacketRun {
        packets: after.rx_packets.saturating_sub(before.rx_packets),
        bytes: after.rx_bytes.saturating_sub(before.rx_bytes),
        seconds,
        submitted,
        source_cpu_ns: cost().saturating_sub(cpu0),
    })
}

/// Raw mode: writes `frame_len`-byte frames with `writev` into tap
/// `ifname` (created here, brought up by `up`), pinned to `cpu`. Call on a
/// thread inside the namespace.
pub fn raw_tx(
    ifname: &str,
    up: impl FnOnce() -> Result<(), PerfError>,
    frame_len: usize,
    ramp: Duration,
    runtime: Duration,
    cpu: usize,
) -> Result<PacketRun, PerfError> {
    pin(cpu);
    let tap = open_tap(ifname)?;
    up()?;
    let hdr = [0u8; VNET_HDR_LEN];
    let f = frame(frame_len);
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut libc::c_void,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        },
    ];
    let fd = tap.as_raw_fd();
    let step = || {
        let mut sent = 0;
        for _ in 0..64 {
            // SAFETY: both iovecs point at live buffers of their lengths;
            // writev only reads them.
            let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
            if n < 0 {
                return Err(PerfError::Setup(format!(
                    "writev to tap {ifname}: {}",
                    std::io::Error::last_os_error()
                )));
            }
            sent += 1;
        }
        Ok(sent)
    };
    measure(ifname, ramp, runtime, step, thread_cpu_ns)
}

/// Device mode: connects to net-tap at `socket` with cradle's userspace
/// virtio driver (one queue pair plus control), keeps its TX queue at least
/// half full (refilled in batches of at least half the queue) of
/// `frame_len`-byte frames (header and frame in one descriptor, as Linux's
/// virtio_net sends small packets), and counts them at tap `ifname`.
/// Pinned to `cpu`; call on a thread inside the tap's namespace.
pub fn device_tx(
    socket: &std::path::Path,
    ifname: &str,
    frame_len: usize,
    ramp: Duration,
    runtime: Duration,
    cpu: usize,
) -> Result<PacketRun, PerfError> {
    pin(cpu);
    let drv_err = |e: cradle_devices::driver::DriverError| {
        PerfError::Setup(format!("virtio driver on {}: {e}", socket.display()))
    };
    let mut drv = Driver::connect(
        socket,
        DriverConfig {
            num_queues: 3,
            queue_size: QUEUE_SIZE,
            memory_bytes: 16 << 20,
            features: u64::MAX,
        },
    )
    .map_err(drv_err)?;
    let mut qs = drv.take_queues();
    if qs.len() < 2 {
        return Err(PerfError::Setup("net-tap offered no TX queue".into()));
    }
    let len = VNET_HDR_LEN + frame_len.max(14);
    let mut packet = vec![0u8; VNET_HDR_LEN];
    packet.extend(frame(frame_len));
    // Every frame is built once, in its own buffer: re-posting a buffer
    // costs a descriptor store and an avail entry, no copy.
    let mut bufs = Vec::with_capacity(usize::from(QUEUE_SIZE));
    for _ in 0..QUEUE_SIZE {
        let a = drv.memory().alloc(len as u64, 64).map_err(drv_err)?;
        qs[1].write(a, &packet).map_err(drv_err)?;
        bufs.push(Buffer::readable(a, len as u32));
    }
    let tx = &mut qs[1];
    let mut source = TxSource::new(bufs);
    let work = std::cell::Cell::new(0u64);
    let step = || {
        let sent = source.step(tx).map_err(|e| match e {
            StepError::Driver(e) => drv_err(e),
            StepError::Stalled => PerfError::Setup("net-tap completed nothing for 5 s".into()),
        })?;
        work.set(source.work_ns);
        Ok(sent)
    };
    measure(ifname, ramp, runtime, step, || work.get())
}

/// Why a [`TxSource`] step failed.
#[derive(Debug)]
enum StepError {
    Driver(cradle_devices::driver::DriverError),
    Stalled,
}

/// The device-mode packet source's loop state: pre-built frame buffers,
/// re-posted in batches.
struct TxSource {
    bufs: Vec<Buffer>,
    next: usize,
    used: Vec<cradle_devices::driver::Used>,
    /// Wall time spent posting, kicking and reclaiming (not waiting), ns.
    work_ns: u64,
}

impl TxSource {
    fn new(bufs: Vec<Buffer>) -> Self {
        TxSource {
            used: Vec::with_capacity(bufs.len()),
            bufs,
            next: 0,
            work_ns: 0,
        }
    }

    /// Refills the queue once at least half of it is free, publishing the
    /// whole batch with one avail-index store and one kick (which
    /// EVENT_IDX or NO_NOTIFY may suppress while net-tap is still
    /// working), then busy-polls the used ring until something completes
    /// and reclaims everything completed so far. Returns frames posted.
    fn step(&mut self, tx: &mut VirtQueue) -> Result<u64, StepError> {
        let t0 = Instant::now();
        let mut added = 0;
        if tx.free_descriptors() >= self.bufs.len() / 2 || tx.in_flight() == 0 {
            while tx.free_descriptors() > 0 {
                let b = self.bufs[self.next];
                self.next = (self.next + 1) % self.bufs.len();
                tx.stage_chain(&[b]).map_err(StepError::Driver)?;
                added += 1;
            }
            tx.kick().map_err(StepError::Driver)?;
        }
        self.work_ns += t0.elapsed().as_nanos() as u64;
        // Busy-poll for completions, as a guest vCPU with packets to send
        // does: sleeping on the call eventfd here would time the
        // scheduler's wake-up latency (milliseconds on a loaded machine),
        // not the daemon.
        let mut spins = 0u32;
        let mut deadline = None;
        loop {
            self.used.clear();
            let t = Instant::now();
            if tx
                .poll_used_into(&mut self.used)
                .map_err(StepError::Driver)?
                > 0
            {
                self.work_ns += t.elapsed().as_nanos() as u64;
                return Ok(added);
            }
            spins = spins.wrapping_add(1);
            if spins % 1024 == 0 {
                let d = *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(5));
                if Instant::now() > d {
                    return Err(StepError::Stalled);
                }
            }
            // Leave the used ring's cache line to net-tap for a moment.
            for _ in 0..32 {
                std::hint::spin_loop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_test_ethertype_and_length() {
        let f = frame(60);
        assert_eq!(f.len(), 60);
        assert_eq!(u16::from_be_bytes([f[12], f[13]]), ETH_TEST);
        // Locally administered, unicast destination.
        assert_eq!(f[0] & 0x03, 0x02);
        assert_eq!(frame(3).len(), 14);
    }

    #[test]
    fn raw_writes_are_counted_by_the_tap() {
        let ns = super::super::netns::NetNs::new().unwrap();
        let name = ns.name().to_string();
        let run = ns
            .run(move || {
                let up = || {
                    std::process::Command::new("ip")
                        .args(["netns", "exec", &name, "ip", "link", "set", "rt0", "up"])
                        .status()
                        .map(|_| ())
                        .map_err(|e| PerfError::Setup(e.to_string()))
                };
                raw_tx(
                    "rt0",
                    up,
                    60,
                    Duration::from_millis(100),
                    Duration::from_millis(300),
                    0,
                )
            })
            .unwrap();
        assert!(run.packets > 100, "{run:?}");
        // Every frame written in the window is counted (a few may straddle
        // the window's edges).
        let diff = run.packets.abs_diff(run.submitted);
        assert!(diff <= 128, "{run:?}");
        assert_eq!(run.bytes, run.packets * 60);
    }
}
