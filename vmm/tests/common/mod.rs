//! Image fixtures shared by the launcher tests: a busybox web layer and
//! an OCI layout made by `umoci` (the real `docker-registry` is the test
//! bed's `registry::DockerRegistry`).

// Each test binary uses a different subset.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

/// The busybox the images carry (static, from `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Runs a tool that must succeed.
pub fn tool(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn entry(b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, mode: u32, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    if kind == tar::EntryType::Symlink {
        h.set_link_name("busybox").unwrap();
    }
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append_data(&mut h, path, data).unwrap();
}

/// One layer: `/bin/busybox` (and `/bin/sh`), `/www/index.html` holding
/// `index`, and an `/etc/passwd` with root.
pub fn web_layer(index: &str) -> Vec<u8> {
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin/", "etc/", "www/"] {
        entry(&mut b, d, D, 0o755, b"");
    }
    entry(&mut b, "bin/busybox", F, 0o755, &fs::read(BUSYBOX).unwrap());
    entry(&mut b, "bin/sh", L, 0o777, b"");
    entry(&mut b, "www/index.html", F, 0o644, index.as_bytes());
    entry(
        &mut b,
        "etc/passwd",
        F,
        0o644,
        b"root:x:0:0:root:/:/bin/sh\n",
    );
    b.into_inner().unwrap()
}

/// The config of an image with [`web_layer`]: busybox httpd serving
/// `/www` on port 80 in the foreground.
pub fn httpd_config() -> cradle_image::ImageConfig {
    cradle_image::ImageConfig {
        entrypoint: Some(vec![BUSYBOX.into()]),
        cmd: Some(
            ["httpd", "-f", "-p", "80", "-h", "/www"]
                .map(String::from)
                .to_vec(),
        ),
        ..Default::default()
    }
}

/// An OCI layout `dir/NAME` with tag `TAG`, made by umoci: busybox and
/// `/www/index.html` holding `index`, entrypoint `/bin/busybox`, cmd
/// `cmd`.
pub fn umoci_layout(dir: &Path, name: &str, tag: &str, index: &str, cmd: &[&str]) -> PathBuf {
    let umoci = |args: &[&str]| tool(Command::new("umoci").current_dir(dir).args(args));
    let image = format!("{name}:{tag}");
    let unpacked = format!("{name}.unpacked");
    umoci(&["init", "--layout", name]);
    umoci(&["new", "--image", &image]);
    umoci(&["unpack", "--rootless", "--image", &image, &unpacked]);
    let rootfs = dir.join(&unpacked).join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("www")).unwrap();
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    fs::write(rootfs.join("www/index.html"), index).unwrap();
    umoci(&["repack", "--image", &image, &unpacked]);
    let mut args = vec![
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/bin/busybox",
    ];
    for a in cmd {
        args.extend(["--config.cmd", a]);
    }
    umoci(&args);
    fs::remove_dir_all(dir.join(&unpacked)).unwrap();
    dir.join(name)
}

/// Where cargo put kcradle (and, after [`build_binaries`], the daemons).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_kcradle"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The daemons and cradle-init, built into the same target directory.
pub fn build_binaries() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let target = bin_dir().parent().unwrap().to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "--bins", "-p", "blk-lv", "-p", "virtiofsd-gfs"])
            .args(["-p", "net-tap", "-p", "cradle-guest"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(st.success(), "building the daemons failed");
    });
}

/// A network namespace made by the test, deleted on drop.
pub struct Netns(pub String);

impl Netns {
    /// `ip netns add kcr-PID-TAG`.
    pub fn new(tag: &str) -> Self {
        let name = format!("kcr-{}-{tag}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success());
        Netns(name)
    }

    /// stdout of `args` run inside it.
    pub fn sh(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
