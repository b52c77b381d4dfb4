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

#[test]
fn opcodes_on_passthrough() {
    let t = tempfile::tempdir().unwrap();
    let mut cfg = passthrough::Config::new(t.path());
    cfg.xattr = true;
    cfg.cache = CachePolicy::Auto;
    let s = Server::new(PassthroughFs::new(cfg).unwrap(), ServerConfig::default());
    opcodes(&s, t.path());
}

/// The native backend rooted at `/vm1` of a real cluster.
fn native(cluster: &CephCluster, root: &str) -> CephFs {
    let mut cfg = ceph::Config::new();
    cfg.conf = Some(cluster.conf());
    cfg.keyring = Some(cluster.keyring());
    cfg.id = cluster.client_id().into();
    cfg.fs_name = Some("cephfs".into());
    cfg.root = root.into();
    cfg.xattr = true;
    CephFs::new(cfg).unwrap()
}

#[test]
fn ceph_opcodes_on_native() {
    let cluster = CephCluster::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let mnt = cluster.mount_fuse(&t.path().join("mnt")).unwrap();
    std::fs::create_dir(mnt.path().join("vm1")).unwrap();
    std::fs::write(mnt.path().join("outside"), b"not for vm1").unwrap();
    let fs = native(&cluster, "/vm1");
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
}
