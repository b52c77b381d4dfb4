//! Helpers shared by bali's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bali binary under test, with `BALI_KEY` pointing into `dir`.
pub fn bali(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bali"));
    c.env("BALI_KEY", dir.join("key"));
    c
}

/// Runs and returns output, printing stderr on failure for diagnosis.
pub fn run(mut c: Command) -> Output {
    let out = c.output().expect("spawn bali");
    if !out.status.success() {
        eprintln!("stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

/// The key id of the key in `dir` (created if needed).
pub fn key_id(dir: &Path) -> String {
    let mut c = bali(dir);
    c.arg("key");
    let out = run(c);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Asserts a one-line error and exit status 2.
pub fn assert_bad(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}",
        out.status
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.starts_with("bali: "), "{err:?}");
}

/// Writes a small tar holding a few files, returns its path.
pub fn small_tar(dir: &Path) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..20u32 {
        let data = format!("file {i}\n").repeat(100 + i as usize * 37);
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("d/f{i}"), data.as_bytes())
            .unwrap();
    }
    let p = dir.join("in.tar");
    std::fs::write(&p, b.into_inner().unwrap()).unwrap();
    p
}

/// A busybox-static rootfs layer with an `app` user (uid 1000).
pub fn busybox_layer() -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("busybox-static installed");
    let mut b = tar::Builder::new(Vec::new());
    let mut put = |path: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        match link {
            Some(t) => b.append_link(&mut h, path, t).unwrap(),
            None => {
                h.set_cksum();
                b.append_data(&mut h, path, data).unwrap()
            }
        }
    };
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    for d in ["bin/", "etc/", "home/", "srv/", "usr/", "usr/bin/"] {
        put(d, D, 0o755, b"", None);
    }
    put("tmp/", D, 0o1777, b"", None);
    put("bin/busybox", F, 0o755, &bb, None);
    put("bin/sh", L, 0o777, b"", Some("busybox"));
    put(
        "etc/passwd",
        F,
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        None,
    );
    put("etc/group", F, 0o644, b"root:x:0:\napp:x:1000:\n", None);
    b.into_inner().unwrap()
}

/// Writes the busybox base as a docker-archive at `path`.
pub fn busybox_docker_archive(path: &Path) {
    let cfg = cradle_image::ImageConfig {
        env: vec!["PATH=/bin".into(), "BASE_VAR=base".into()],
        cmd: Some(vec!["/bin/sh".into()]),
        ..Default::default()
    };
    cradle_image::write::write_docker_archive(path, &cfg, &[busybox_layer()], "busybox:test")
        .unwrap();
}

/// Reads every entry of a .tar.gz image: path → (uid, gid, mode, data).
pub fn read_image(path: &Path) -> std::collections::BTreeMap<String, (u64, u64, u32, Vec<u8>)> {
    use std::io::Read;
    let f = std::fs::File::open(path).unwrap();
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut out = std::collections::BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(
            p,
            (h.uid().unwrap(), h.gid().unwrap(), h.mode().unwrap(), data),
        );
    }
    out
}

/// Busybox applets the run tests use, as symlinks in /bin.
const APPLETS: &[&str] = &[
    "echo", "id", "pwd", "cat", "sleep", "ls", "test", "env", "touch", "grep", "stat", "true",
];

/// A signed runnable image: the busybox rootfs plus applet links and a
/// config (`ENTRYPOINT ["/bin/sh","-c"]`, `CMD ["echo default"]`,
/// `IMGVAR=img`, workdir `/srv`). Returns its path.
pub fn runnable_image(keydir: &Path, dir: &Path) -> PathBuf {
    let mut bytes = busybox_layer();
    // Drop the end-of-archive blocks so more entries can follow.
    bytes.truncate(bytes.len() - 1024);
    let mut b = tar::Builder::new(bytes);
    for a in APPLETS {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, "srv/", &b""[..]).unwrap();
    let cfg = cradle_image::ImageConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["echo default".into()]),
        env: vec!["PATH=/bin".into(), "IMGVAR=img".into()],
        working_dir: "/srv".into(),
        ..Default::default()
    };
    let json = cfg.to_json();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(json.len() as u64);
    h.set_cksum();
    b.append_data(&mut h, ".bali/config.json", &json[..])
        .unwrap();
    let tar_path = dir.join("run.tar");
    std::fs::write(&tar_path, b.into_inner().unwrap()).unwrap();
    let img = dir.join("run.tar.gz");
    key_id(keydir);
    let mut c = bali(keydir);
    c.arg("sign").arg(&tar_path).arg(&img);
    assert!(run(c).status.success());
    std::fs::remove_file(tar_path).unwrap();
    img
}
