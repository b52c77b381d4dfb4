//! The single-node Ceph fixture serves a CephFS that two clients share.

use std::fs;
use std::time::Instant;

use cradle_testbed::ceph::CephCluster;

#[test]
fn ceph_cluster_serves_a_shared_filesystem() {
    let t = Instant::now();
    let cluster = CephCluster::start().unwrap();
    eprintln!("cluster up in {:?}", t.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let a = cluster.mount_fuse(&dir.path().join("a")).unwrap();
    let b = cluster.mount_fuse(&dir.path().join("b")).unwrap();
    fs::create_dir(a.path().join("shared")).unwrap();
    fs::write(a.path().join("shared/hello"), b"written by client a").unwrap();
    assert_eq!(
        fs::read(b.path().join("shared/hello")).unwrap(),
        b"written by client a"
    );
    let status = cluster.ceph(&["fs", "ls"]).unwrap();
    assert!(status.contains("cephfs"), "{status}");
    drop((a, b));
    let conf = cluster.conf();
    drop(cluster);
    assert!(!conf.exists(), "the cluster directory is removed on drop");
}
