//! Closed-loop random-read load through a vhost-user-blk daemon, using the
//! userspace driver: `blk-load SOCKET [SECONDS] [QUEUES] [DEPTH] [BS]`.
//! Prints the IOPS and bandwidth reached. Bounded in time; stops by itself.

use std::time::{Duration, Instant};

use cradle_devices::driver::blk::{BlkQueue, BlkRequest, S_OK};
use cradle_devices::driver::{Driver, DriverConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(sock) = args.get(1) else {
        eprintln!("usage: blk-load SOCKET [SECONDS] [QUEUES] [DEPTH] [BS]");
        std::process::exit(2);
    };
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let secs = num(2, 10).min(600);
    let queues = num(3, 1) as u16;
    let depth = num(4, 32) as usize;
    let bs = num(5, 4096) as u32;
    let size = (depth as u16 * 3 + 2).next_power_of_two().max(64);
    let mut drv = match Driver::connect(
        sock,
        DriverConfig {
            num_queues: queues,
            queue_size: size,
            memory_bytes: (16 << 20) + u64::from(queues) * u64::from(size) * (u64::from(bs) + 4096),
            ..Default::default()
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("connect {sock}: {e}");
            std::process::exit(1);
        }
    };
    let cfg = drv.get_config(0, 8).unwrap_or_else(|e| {
        eprintln!("config: {e}");
        std::process::exit(1)
    });
    let sectors = u64::from_le_bytes(cfg.try_into().unwrap_or([0; 8]));
    let blocks = (sectors * 512 / u64::from(bs)).max(1);
    let window = Duration::from_secs(secs);
    let start = Instant::now();
    let threads: Vec<_> = drv
        .take_queues()
        .into_iter()
        .enumerate()
        .map(|(qi, q)| {
            std::thread::spawn(move || -> Result<u64, String> {
                let mut q = BlkQueue::new(q, bs).map_err(|e| e.to_string())?;
                q.set_copy_reads(false);
                let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (qi as u64 + 1);
                let mut done = 0u64;
                loop {
                    while q.in_flight() < depth && q.free_slots() > 0 && start.elapsed() < window {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let sector = (x % blocks) * u64::from(bs) / 512;
                        q.submit(BlkRequest::Read { sector, len: bs }, 0)
                            .map_err(|e| e.to_string())?;
                    }
                    q.kick().map_err(|e| e.to_string())?;
                    if q.in_flight() == 0 {
                        return Ok(done);
                    }
                    for c in q.reap(Duration::from_secs(10)).map_err(|e| e.to_string())? {
                        if c.status != S_OK {
                            return Err(format!("status {}", c.status));
                        }
                        done += 1;
                    }
                }
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        match t.join() {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                eprintln!("load: {e}");
                std::process::exit(1);
            }
            Err(_) => std::process::exit(1),
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "iops={:.0} bw_mib_s={:.1} requests={total} seconds={el:.2} queues={queues} depth={depth} bs={bs}",
        total as f64 / el,
        total as f64 * f64::from(bs) / el / 1048576.0
    );
}
