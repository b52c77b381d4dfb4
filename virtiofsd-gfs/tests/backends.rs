//! One opcode test body, run in process (FUSE requests straight into the
//! server) against both backends: passthrough on a temp dir, and the
//! native CephFS backend on a real cluster with the host-side view read
//! through a ceph-fuse mount of the same filesystem.

mod opcodes;

use cradle_testbed::ceph::CephCluster;
use virtiofsd_gfs::fs::ceph::{self, CephFs};
use virtiofsd_gfs::fs::passthrough::{self, PassthroughFs};
use virtiofsd_gfs::fs::{CachePolicy, FileSystem};
use virtiofsd_gfs::fuse::client::Client;
use virtiofsd_gfs::fuse::{Server, ServerConfig};

/// The shared body, in process.
fn opcodes<F: FileSystem>(s: &Server<F>, host: &std::path::Path) {
    let mut c = Client::new(|r: &[u8]| s.handle(r));
    c.init(37, 0xffff_ffff).unwrap();
    opcodes::opcodes(&mut c, host);
}

const POLICIES: [CachePolicy; 4] = [
    CachePolicy::Never,
    CachePolicy::Metadata,
    CachePolicy::Auto,
    CachePolicy::Always,
];

/// The cache mode as the guest sees it: entry/attribute timeouts and the
/// open flags of files and directories; the same for both backends.
fn cache_mode<F: FileSystem>(s: &Server<F>, host: &std::path::Path, policy: CachePolicy) {
    use virtiofsd_gfs::fuse::abi::{fopen, EntryOutHead, Wire};
    let mut c = Client::new(|r: &[u8]| s.handle(r));
    c.init(37, 0).unwrap();
    std::fs::write(host.join("cached"), b"x").unwrap();
    let e = c
        .call(virtiofsd_gfs::fuse::abi::opcode::LOOKUP, 1, b"cached\0")
        .unwrap();
    let head = EntryOutHead::decode(&e);
    let t = policy.timeout().as_secs();
    assert_eq!((head.entry_valid, head.attr_valid), (t, t), "{policy:?}");
    let (fh, flags) = c.open(head.nodeid, 0, false).unwrap();
    let want = match policy {
        CachePolicy::Never | CachePolicy::Metadata => fopen::DIRECT_IO,
        CachePolicy::Auto => 0,
        CachePolicy::Always => fopen::KEEP_CACHE,
    };
    assert_eq!(flags, want, "{policy:?}");
    c.release(head.nodeid, fh, false).unwrap();
    let (dh, dflags) = c.open(1, 0, true).unwrap();
    let want = if policy == CachePolicy::Always {
        fopen::CACHE_DIR | fopen::KEEP_CACHE
    } else {
        0
    };
    assert_eq!(dflags, want, "{policy:?}");
    c.release(1, dh, true).unwrap();
}

#[test]
fn cache_modes_on_passthrough() {
    let t = tempfile::tempdir().unwrap();
    for policy in POLICIES {
        let mut cfg = passthrough::Config::new(t.path());
        cfg.cache = policy;
        let s = Server::new(PassthroughFs::new(cfg).unwrap(), ServerConfig::default());
        cache_mode(&s, t.path(), policy);
    }
}

#[test]
fn opcodes_on_passthrough() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = passthrough::Config::new(t.path());
    cfg.xattr = true;
    cfg.cache = CachePolicy::Auto;
    let s = Server::new(PassthroughFs::new(cfg).unwrap(), ServerConfig::default());
    opcodes(&s, t.path());
}

/// The native backend rooted at `root` of a real cluster.
fn native(cluster: &CephCluster, root: &str, cache: CachePolicy) -> CephFs {
    let mut cfg = ceph::Config::new();
    cfg.conf = Some(cluster.conf());
    cfg.keyring = Some(cluster.keyring());
    cfg.id = cluster.client_id().into();
    cfg.fs_name = Some("cephfs".into());
    cfg.root = root.into();
    cfg.xattr = true;
    cfg.cache = cache;
    CephFs::new(cfg).unwrap()
}

#[test]
fn ceph_opcodes_on_native() {
    let cluster = CephCluster::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mnt = cluster.mount_fuse(&t.path().join("mnt")).unwrap();
    std::fs::create_dir(mnt.path().join("vm1")).unwrap();
    std::fs::write(mnt.path().join("outside"), b"not for vm1").unwrap();
    let fs = native(&cluster, "/vm1", CachePolicy::Auto);
    let s = Server::new(fs, ServerConfig::default());
    opcodes(&s, &mnt.path().join("vm1"));
    // --ceph-root: nothing above the subtree is reachable.
    let mut c = Client::new(|r: &[u8]| s.handle(r));
    c.init(37, 0).unwrap();
    assert_eq!(c.lookup(1, b"outside").unwrap_err(), libc::ENOENT);
    assert_eq!(c.lookup(1, b"..").unwrap_err(), libc::EINVAL);
    assert_eq!(s.fs().handle_count(), 0);
    // A new INIT dropped every inode but the root.
    assert_eq!(s.fs().inode_count(), 1);
    // The cache modes, each a client of its own.
    for policy in POLICIES {
        let s = Server::new(native(&cluster, "/vm1", policy), ServerConfig::default());
        cache_mode(&s, &mnt.path().join("vm1"), policy);
    }
}
