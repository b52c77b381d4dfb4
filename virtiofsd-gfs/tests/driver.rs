//! Driver level: the daemon served over a real vhost-user socket, driven by
//! the userspace driver from `cradle-devices` (memfd guest memory, split
//! virtqueues), speaking FUSE through our client. Checks host-side effects,
//! hostile chains and requests, queues in parallel and reconnects.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{client, connect, Chan, TIMEOUT};
use cradle_devices::daemon::{self, DaemonCli};
use cradle_devices::driver::fs::FsQueue;
use cradle_devices::driver::{Buffer, DriverError};
use virtiofsd_gfs::config::Cli;
use virtiofsd_gfs::fs::passthrough::PassthroughFs;
use virtiofsd_gfs::fs::{Context, FileSystem, StatFs};
use virtiofsd_gfs::fuse::abi::{self, opcode as op, Wire};
use virtiofsd_gfs::fuse::client::{body, request, Client, Reply};
use virtiofsd_gfs::fuse::Server;

/// A daemon serving `dir` in this process (tests read its counters).
fn start(dir: &Path, sock: &Path, args: &[&str]) -> Arc<Server<PassthroughFs>> {
    let mut argv = vec![
        "virtiofsd-gfs".to_string(),
        "--socket".into(),
        sock.display().to_string(),
        "--shared-dir".into(),
        dir.display().to_string(),
        "--sandbox".into(),
        "none".into(),
        "--seccomp".into(),
        "none".into(),
        "--tag".into(),
        "gfs-test".into(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let cfg = Cli::try_parse_from(argv).unwrap().into_config().unwrap();
    let server = Arc::new(Server::new(
        PassthroughFs::new(cfg.fs.clone()).unwrap(),
        cfg.server,
    ));
    let (mut listener, _) = daemon::listen(&cfg.common).unwrap();
    let s = server.clone();
    std::thread::spawn(move || virtiofsd_gfs::serve(s, cfg.device, &mut listener));
    server
}

#[test]
fn every_opcode_over_a_virtqueue_with_host_effects() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("host"), b"from the host").unwrap();
    let sock = t.path().join("fs.sock");
    let server = start(&tree, &sock, &["--xattr", "--num-queues", "2"]);
    let (mut drv, qs) = connect(&sock, 3);
    // The config space carries the tag and the request queue count.
    let cfg = drv.get_config(0, 40).unwrap();
    assert_eq!(&cfg[..8], b"gfs-test");
    assert_eq!(&cfg[8..36], &[0u8; 28][..]);
    assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 2);

    let mut qs = qs.into_iter();
    let mut hiprio = Chan::new(qs.next().unwrap());
    let mut reqq = Chan::new(qs.next().unwrap());
    let mut c = client(&mut reqq);
    let h = c.lookup(1, b"host").unwrap();
    let (fh, _) = c.open(h.nodeid, 0, false).unwrap();
    assert_eq!(c.read(h.nodeid, fh, 0, 100).unwrap(), b"from the host");
    c.release(h.nodeid, fh, false).unwrap();
    let d = c.mkdir(1, b"dir", 0o755).unwrap();
    let (f, fh) = c
        .create(d.nodeid, b"file", 0o600, libc::O_RDWR as u32)
        .unwrap();
    // A 512 KiB write spanning many pages, read back.
    let data: Vec<u8> = (0..512 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(c.write(f.nodeid, fh, 0, &data).unwrap(), data.len() as u32);
    assert_eq!(std::fs::read(tree.join("dir/file")).unwrap(), data);
    assert_eq!(
        c.read(f.nodeid, fh, 4096, 8192).unwrap(),
        &data[4096..4096 + 8192]
    );
    c.call(
        op::FSYNC,
        f.nodeid,
        &body(
            Some(abi::FsyncIn {
                fh,
                ..Default::default()
            }),
            &[],
        ),
    )
    .unwrap();
    c.release(f.nodeid, fh, false).unwrap();
    c.call(op::SYMLINK, d.nodeid, b"link\0file\0").unwrap();
    c.call(
        op::RENAME,
        d.nodeid,
        &body(Some(abi::RenameIn { newdir: 1 }), &[b"file", b"moved"]),
    )
    .unwrap();
    assert!(tree.join("moved").exists());
    let mut b = body(Some(abi::SetxattrIn { size: 2, flags: 0 }), &[b"user.x"]);
    b.extend_from_slice(b"42");
    c.call(op::SETXATTR, f.nodeid, &b).unwrap();
    let st = c.call(op::STATFS, 1, &[]).unwrap();
    assert!(abi::StatfsOut::decode(&st).blocks > 0);
    let (dh, _) = c.open(1, 0, true).unwrap();
    let names: Vec<_> = c
        .readdir(1, dh, 0, 4096, true)
        .unwrap()
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(names.contains(&b"moved".to_vec()) && names.contains(&b"dir".to_vec()));
    c.release(1, dh, true).unwrap();
    assert_eq!(c.call(9999, 1, &[]), Err(libc::ENOSYS));
    drop(c);
    let held = server.fs().inode_count();
    // FORGET on the hiprio queue: no reply, used length 0, inode gone.
    let forget = request(
        op::FORGET,
        h.nodeid,
        99,
        0,
        0,
        &body(Some(abi::ForgetIn { nlookup: 2 }), &[]),
    );
    // (one lookup by LOOKUP, one by READDIRPLUS)
    hiprio.q.write(hiprio.req, &forget).unwrap();
    assert_eq!(
        hiprio.chain(&[Buffer::readable(hiprio.req, forget.len() as u32)]),
        0
    );
    assert_eq!(server.fs().inode_count(), held - 1);
    let m = std::fs::metadata(tree.join("moved")).unwrap();
    assert_eq!(m.mode() & 0o777, 0o600);
}

#[test]
fn hostile_chains_get_error_replies_and_the_queue_keeps_working() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("fs.sock");
    let server = start(t.path(), &sock, &[]);
    let (_drv, qs) = connect(&sock, 2);
    let mut ch = Chan::new(qs.into_iter().nth(1).unwrap());
    let req = ch.req;
    let rep = ch.rep;
    let size = ch.q.memory().size();
    let parse = |ch: &Chan, n: u32| Reply::parse(&ch.q.read(rep, n as usize).unwrap()).unwrap();
    // Short header.
    ch.q.write(req, &[1, 2, 3]).unwrap();
    let n = ch.chain(&[Buffer::readable(req, 3), Buffer::writable(rep, 4096)]);
    assert_eq!(parse(&ch, n).error, -libc::EINVAL);
    // Length field larger than the descriptors.
    let mut r = request(op::LOOKUP, 1, 5, 0, 0, b"x\0");
    r[0..4].copy_from_slice(&4096u32.to_le_bytes());
    ch.q.write(req, &r).unwrap();
    let n = ch.chain(&[
        Buffer::readable(req, r.len() as u32),
        Buffer::writable(rep, 4096),
    ]);
    assert_eq!(parse(&ch, n).error, -libc::EINVAL);
    // Descriptor outside guest memory, and one crossing its end.
    for (addr, len) in [(size + 4096, 64u32), (size - 16, 64)] {
        let n = ch.chain(&[
            Buffer {
                addr,
                len,
                write: false,
            },
            Buffer::writable(rep, 4096),
        ]);
        assert_eq!(n, 16);
        assert_eq!(parse(&ch, n).error, -libc::EINVAL);
    }
    // Readable after writable.
    let n = ch.chain(&[Buffer::writable(rep, 4096), Buffer::readable(req, 64)]);
    assert_eq!(n, 16);
    // Oversized request.
    let n = ch.chain(&[Buffer::readable(req, 3 << 20), Buffer::writable(rep, 4096)]);
    assert_eq!((n, parse(&ch, n).error), (16, -libc::EINVAL));
    // Reply buffer too small for the answer; no reply buffer at all.
    Client::new(|r: &[u8]| ch.send(r)).init(37, 0).unwrap();
    let r = request(op::LOOKUP, 1, 7, 0, 0, b".\0");
    ch.q.write(req, &r).unwrap();
    assert_eq!(ch.chain(&[Buffer::readable(req, r.len() as u32)]), 0);
    let r = request(op::GETATTR, 1, 7, 0, 0, &[0; 16]);
    ch.q.write(req, &r).unwrap();
    let n = ch.chain(&[
        Buffer::readable(req, r.len() as u32),
        Buffer::writable(rep, 20),
    ]);
    assert_eq!(parse(&ch, n).error, -libc::ERANGE);
    // Names with '/', '..' at the root.
    let mut c = Client::new(|r: &[u8]| ch.send(r));
    assert_eq!(c.lookup(1, b"..").unwrap_err(), libc::EINVAL);
    assert_eq!(c.lookup(1, b"../../etc/passwd").unwrap_err(), libc::EINVAL);
    // Still serving normally.
    assert!(c.getattr(1).is_ok());
    assert!(server.counters.malformed.load(Ordering::Relaxed) >= 6);
}

/// Passthrough, except that STATFS blocks until the test opens the gate:
/// a request that holds its queue's worker.
struct Gated {
    fs: PassthroughFs,
    gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl FileSystem for Gated {
    fn init(&self, capable: u64) -> std::io::Result<u64> {
        self.fs.init(capable)
    }
    fn getattr(
        &self,
        ctx: Context,
        inode: u64,
        fh: Option<u64>,
    ) -> std::io::Result<(libc::stat64, Duration)> {
        self.fs.getattr(ctx, inode, fh)
    }
    fn statfs(&self, ctx: Context, inode: u64) -> std::io::Result<StatFs> {
        let _ = self.gate.lock().unwrap().recv_timeout(TIMEOUT);
        self.fs.statfs(ctx, inode)
    }
}

#[test]
fn request_queues_proceed_in_parallel() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("fs.sock");
    let (open, gate) = std::sync::mpsc::channel();
    let fs = Gated {
        fs: PassthroughFs::new(virtiofsd_gfs::fs::passthrough::Config::new(t.path())).unwrap(),
        gate: std::sync::Mutex::new(gate),
    };
    let server = Arc::new(Server::new(fs, Default::default()));
    let mut argv = vec!["virtiofsd-gfs", "--socket", sock.to_str().unwrap()];
    argv.extend([
        "--shared-dir",
        t.path().to_str().unwrap(),
        "--num-queues",
        "2",
    ]);
    let cfg = Cli::try_parse_from(argv).unwrap().into_config().unwrap();
    let (mut listener, _) = daemon::listen(&cfg.common).unwrap();
    let s = server.clone();
    std::thread::spawn(move || virtiofsd_gfs::serve(s, cfg.device, &mut listener));

    let (_drv, qs) = connect(&sock, 3);
    let mut qs = qs.into_iter().skip(1);
    let mut q1 = Chan::new(qs.next().unwrap());
    let mut q2 = Chan::new(qs.next().unwrap());
    Client::new(|r: &[u8]| q1.send(r)).init(37, 0).unwrap();
    // Queue 1's worker is stuck in STATFS...
    let blocked = std::thread::spawn(move || {
        let mut c = Client::new(|r: &[u8]| q1.send(r));
        let r = c.call(op::STATFS, 1, &[]);
        (r, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(200));
    // ...while queue 2 answers.
    let mut c = Client::new(|r: &[u8]| q2.send(r));
    for _ in 0..50 {
        c.getattr(1).unwrap();
    }
    let answered = Instant::now();
    assert!(!blocked.is_finished(), "STATFS was not blocked");
    open.send(()).unwrap();
    let (r, done) = blocked.join().unwrap();
    assert!(r.is_ok());
    assert!(done > answered);
    assert_eq!(server.counters.errors.load(Ordering::Relaxed), 0);
}

#[test]
fn a_new_frontend_after_disconnect_starts_a_new_session() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let sock = t.path().join("fs.sock");
    let server = start(&tree, &sock, &[]);
    for round in 0..3 {
        let (drv, qs) = connect(&sock, 2);
        let mut ch = Chan::new(qs.into_iter().nth(1).unwrap());
        let mut c = client(&mut ch);
        c.lookup(1, b"f").unwrap();
        assert_eq!(server.fs().inode_count(), 2, "round {round}");
        drop(c);
        drop(ch);
        drop(drv);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fs_queue_keeps_requests_in_flight_and_sends_forgets_without_reply() {
    let t = tempfile::tempdir().unwrap();
    let tree = t.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    let data: Vec<u8> = (0..8 * 4096u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(tree.join("data"), &data).unwrap();
    let sock = t.path().join("fs.sock");
    let server = start(&tree, &sock, &[]);
    let (_drv, qs) = connect(&sock, 2);
    let mut qs = qs.into_iter();
    let mut hiprio = FsQueue::new(qs.next().unwrap(), 4, 4096, 64).unwrap();
    let mut q = FsQueue::new(qs.next().unwrap(), 8, 8192, 8192).unwrap();
    let mut c = q.client();
    c.init(37, 0xffff_ffff).unwrap();
    let e = c.lookup(1, b"data").unwrap();
    let (fh, _) = c.open(e.nodeid, libc::O_RDONLY as u32, false).unwrap();
    drop(c);
    // Eight READs in flight at once, each with exactly header + data of
    // reply room, as the Linux driver gives.
    for tag in 0..8u64 {
        let read = abi::ReadIn {
            fh,
            offset: tag * 4096,
            size: 4096,
            ..Default::default()
        };
        let req = request(
            op::READ,
            e.nodeid,
            100 + 2 * tag,
            0,
            0,
            &body(Some(read), &[]),
        );
        let room = q.reply_room(&req);
        assert_eq!(room, 16 + 4096);
        q.submit(&req, room, tag).unwrap();
    }
    assert_eq!((q.free_slots(), q.in_flight()), (0, 8));
    assert!(matches!(
        q.submit(&[0; 40], 64, 99),
        Err(DriverError::QueueFull)
    ));
    q.kick().unwrap();
    let mut seen = [false; 8];
    while q.in_flight() > 0 {
        for done in q.reap(TIMEOUT).unwrap() {
            let tag = done.tag as usize;
            assert_eq!(done.error(), Some(0));
            let r = Reply::parse(&done.reply).unwrap();
            assert_eq!(r.body, &data[tag * 4096..(tag + 1) * 4096], "tag {tag}");
            seen[tag] = true;
        }
    }
    assert_eq!(seen, [true; 8]);
    // BATCH_FORGET on the hiprio queue: no reply room, used length 0, and
    // the inode is gone.
    let held = server.fs().inode_count();
    let mut b = Vec::new();
    abi::BatchForgetIn { count: 1, dummy: 0 }.encode(&mut b);
    abi::ForgetOne {
        nodeid: e.nodeid,
        nlookup: 1,
    }
    .encode(&mut b);
    hiprio
        .submit(&request(op::BATCH_FORGET, 0, 200, 0, 0, &b), 0, 7)
        .unwrap();
    hiprio.kick().unwrap();
    let done = hiprio.reap(TIMEOUT).unwrap();
    assert_eq!(
        (done[0].tag, done[0].used_len, done[0].error()),
        (7, 0, None)
    );
    assert_eq!(server.fs().inode_count(), held - 1);
}

#[test]
fn a_request_queued_without_a_kick_is_served_while_the_worker_polls() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("fs.sock");
    let _server = start(t.path(), &sock, &["--poll-us", "1000"]);
    let (_drv, qs) = connect(&sock, 2);
    let mut q = FsQueue::new(qs.into_iter().nth(1).unwrap(), 2, 4096, 4096).unwrap();
    q.client().init(37, 0).unwrap();
    let getattr = |unique: u64| {
        let g = abi::GetattrIn::default();
        request(op::GETATTR, 1, unique, 0, 0, &body(Some(g), &[]))
    };
    // Right after a reply the worker still watches the ring for a while,
    // so a request placed there then is served with no kick at all. This
    // host may be slow to wake us: it is enough that it happens at all.
    let mut unkicked = 0;
    for i in 0..20u64 {
        q.submit(&getattr(1000 + 4 * i), 4096, 1).unwrap();
        q.kick().unwrap();
        q.reap(TIMEOUT).unwrap();
        q.submit(&getattr(1002 + 4 * i), 4096, 2).unwrap();
        match q.reap(Duration::from_millis(200)) {
            Ok(done) => {
                assert_eq!(done[0].error(), Some(0));
                unkicked += 1;
            }
            Err(DriverError::Timeout) => {
                q.kick().unwrap();
                q.reap(TIMEOUT).unwrap();
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(unkicked > 0, "no request was served without a kick");
}
