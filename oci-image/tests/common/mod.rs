//! Test images shared by the image tests.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use cradle_image::ImageConfig;

pub const BUSYBOX: &str = "/bin/busybox";

pub fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
}

pub fn link(b: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    b.append_link(&mut h, path, target).unwrap();
}

/// Bottom layer: a busybox-static rootfs. Top layer: whiteouts and an
/// opaque /etc.
pub fn layers() -> Vec<Vec<u8>> {
    use tar::EntryType::{Directory as D, Regular as F};
    let bb = fs::read(BUSYBOX).expect("busybox-static is installed");
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "tmp/", "etc/old.d/"] {
        entry(&mut b, d, D, 0o755, b"");
    }
    entry(&mut b, "bin/busybox", F, 0o755, &bb);
    for applet in ["sh", "ls", "cat", "echo"] {
        link(&mut b, &format!("bin/{applet}"), "busybox");
    }
    entry(
        &mut b,
        "etc/passwd",
        F,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n",
    );
    entry(&mut b, "etc/old.d/x", F, 0o644, b"old");
    let l1 = b.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, "bin/.wh.ls", F, 0o644, b"");
    entry(&mut b, "etc/hostname", F, 0o644, b"bali\n");
    entry(&mut b, "etc/.wh..wh..opq", F, 0o644, b"");
    let l2 = b.into_inner().unwrap();
    vec![l1, l2]
}

pub fn config() -> ImageConfig {
    ImageConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo hello".into()]),
        env: vec!["PATH=/bin".into()],
        working_dir: "/tmp".into(),
        user: "0:0".into(),
        labels: [("org.example".to_string(), "yes".to_string())].into(),
        exposed_ports: vec!["8080/tcp".into()],
    }
}

pub fn check_rootfs(root: &Path) {
    let bb = root.join("bin/busybox");
    assert_eq!(
        fs::metadata(&bb).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert!(!root.join("bin/ls").exists(), "whiteout not applied");
    assert!(root
        .join("bin/sh")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!root.join("etc/passwd").exists(), "opaque /etc not applied");
    assert!(!root.join("etc/old.d").exists());
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "bali\n"
    );
    // The unpacked static busybox runs.
    let out = Command::new(&bb).args(["echo", "ran"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
}

/// Runs a tool that must succeed.
pub fn tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("tool installed (see ci/packages-bali.txt)");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
