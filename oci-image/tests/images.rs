//! Images made here (busybox-static rootfs) written as a docker-archive and
//! as OCI layouts (by this crate, by skopeo and by umoci), then opened and
//! unpacked with digests checked.

use std::fs;
use std::path::Path;
use std::process::Command;

mod common;
use common::*;

use cradle_image::write::{write_docker_archive, write_oci_layout};
use cradle_image::{ImageConfig, ImageError, ImageRef, UnpackOptions};

fn unpack(r: &str, base: &Path) -> cradle_image::Result<(ImageConfig, tempfile::TempDir)> {
    let img = ImageRef::parse(r, base)?.open()?;
    let root = tempfile::tempdir().unwrap();
    img.unpack(root.path(), &UnpackOptions::default())?;
    Ok((img.config, root))
}

#[test]
fn docker_archive_round_trip_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bb.tar");
    write_docker_archive(&p, &config(), &layers(), "busybox:test").unwrap();
    let (cfg, root) = unpack("docker-archive:bb.tar", dir.path()).unwrap();
    assert_eq!(cfg, config());
    check_rootfs(root.path());
    unpack("docker-archive:bb.tar:busybox:test", dir.path()).unwrap();
    assert!(matches!(
        unpack("docker-archive:bb.tar:other:tag", dir.path()),
        Err(ImageError::NotFound(_))
    ));
    // Flip a byte inside the busybox binary of the first layer.
    let mut data = fs::read(&p).unwrap();
    let at = data.windows(4).position(|w| w == b"\x7fELF").unwrap() + 4096;
    data[at] ^= 0x55;
    fs::write(&p, &data).unwrap();
    let err = unpack("docker-archive:bb.tar", dir.path()).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

#[test]
fn oci_layout_round_trip_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    let l = dir.path().join("layout");
    write_oci_layout(&l, &config(), &layers(), "v1", true).unwrap();
    let (cfg, root) = unpack("oci:layout:v1", dir.path()).unwrap();
    assert_eq!(cfg, config());
    check_rootfs(root.path());
    unpack("oci:layout", dir.path()).unwrap();
    assert!(unpack("oci:layout:v2", dir.path()).is_err());
    // Corrupt each kind of blob in turn.
    for blob in fs::read_dir(l.join("blobs/sha256")).unwrap() {
        let p = blob.unwrap().path();
        let good = fs::read(&p).unwrap();
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        fs::write(&p, &bad).unwrap();
        let err = unpack("oci:layout:v1", dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("digest mismatch") || msg.contains("gzip") || msg.contains("corrupt"),
            "{msg}"
        );
        fs::write(&p, &good).unwrap();
    }
    unpack("oci:layout:v1", dir.path()).unwrap();
}

#[test]
fn skopeo_made_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bb.tar");
    write_docker_archive(&p, &config(), &layers(), "busybox:test").unwrap();
    tool(Command::new("skopeo").current_dir(dir.path()).args([
        "copy",
        "--quiet",
        "docker-archive:bb.tar",
        "oci:sk:latest",
    ]));
    let (cfg, root) = unpack("oci:sk:latest", dir.path()).unwrap();
    assert_eq!(cfg.argv(), config().argv());
    assert_eq!(cfg.exposed_ports, ["8080/tcp"]);
    check_rootfs(root.path());
    // And back to a docker-archive written by skopeo.
    tool(Command::new("skopeo").current_dir(dir.path()).args([
        "copy",
        "--quiet",
        "oci:sk:latest",
        "docker-archive:sk.tar:busybox:sk",
    ]));
    let (_, root) = unpack("docker-archive:sk.tar", dir.path()).unwrap();
    check_rootfs(root.path());
}

#[test]
fn umoci_made_layers_with_real_whiteouts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let umoci = |args: &[&str]| tool(Command::new("umoci").current_dir(d).args(args));
    umoci(&["init", "--layout", "u"]);
    umoci(&["new", "--image", "u:t"]);
    umoci(&["unpack", "--rootless", "--image", "u:t", "b"]);
    let rootfs = d.join("b/rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::create_dir_all(rootfs.join("data/sub")).unwrap();
    fs::write(rootfs.join("data/a"), "a").unwrap();
    fs::write(rootfs.join("data/sub/b"), "b").unwrap();
    umoci(&["repack", "--image", "u:t", "b"]);
    // Second layer: umoci writes a whiteout for the deleted file.
    fs::remove_file(rootfs.join("data/a")).unwrap();
    fs::write(rootfs.join("data/c"), "c").unwrap();
    umoci(&["repack", "--image", "u:t", "b"]);
    umoci(&[
        "config",
        "--image",
        "u:t",
        "--config.cmd",
        "/bin/sh",
        "--config.workingdir",
        "/data",
    ]);
    let (cfg, root) = unpack("oci:u:t", d).unwrap();
    assert_eq!(cfg.cmd.as_deref(), Some(&["/bin/sh".to_string()][..]));
    assert_eq!(cfg.working_dir, "/data");
    let r = root.path();
    assert!(!r.join("data/a").exists());
    assert_eq!(fs::read_to_string(r.join("data/c")).unwrap(), "c");
    assert_eq!(fs::read_to_string(r.join("data/sub/b")).unwrap(), "b");
    let out = Command::new(r.join("bin/busybox"))
        .args(["echo", "ok"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"ok\n");
}
