//! `kcradle summon` as a user runs it: from a docker-archive, from an OCI
//! layout made by umoci, and from a real `docker-registry` on loopback
//! holding an image pushed by skopeo; bad input gives one line, exit 2,
//! and leaves nothing behind.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cradle_image::write::write_docker_archive;
use cradle_image::ImageConfig;

mod common;

use common::web_layer;
use cradle_testbed::registry::DockerRegistry;

fn kcradle() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kcradle"))
}

fn web_config() -> ImageConfig {
    ImageConfig {
        env: vec!["PATH=/bin".into(), "GREETING=hi".into()],
        working_dir: "/www".into(),
        exposed_ports: vec!["80/tcp".into()],
        ..common::httpd_config()
    }
}

fn make_archive(dir: &Path) -> PathBuf {
    let p = dir.join("web.tar");
    write_docker_archive(
        &p,
        &web_config(),
        &[web_layer("hello from cradle\n")],
        "demo/web:v1",
    )
    .unwrap();
    p
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn summon(args: &[&str], state: &Path) -> Output {
    kcradle()
        .arg("summon")
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .arg("-q")
        .output()
        .unwrap()
}

/// A failure: exit 2, one line on stderr, and `parent` unchanged.
fn assert_refused(out: &Output, parent: &Path, before: &[String], needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert_eq!(listing(parent), before, "summon left something behind");
}

fn check_bundle(dir: &Path, volumes: usize) -> serde_json::Value {
    assert!(dir.join("rootfs/bin/busybox").is_file());
    assert_eq!(
        fs::read_to_string(dir.join("rootfs/www/index.html")).unwrap(),
        "hello from cradle\n"
    );
    for d in ["run", "logs"] {
        assert!(dir.join(d).is_dir());
    }
    let pod = fs::read(dir.join("pod.json")).unwrap();
    // cradle-init's own parser accepts it.
    let parsed = cradle_guest::config::PodConfig::parse(&pod).unwrap();
    assert_eq!(parsed.volumes.len(), volumes);
    serde_json::from_slice(&fs::read(dir.join("bundle.json")).unwrap()).unwrap()
}

#[test]
fn from_docker_archive_with_options() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let lv = t.path().join("lv");
    fs::create_dir(&lv).unwrap();
    make_archive(t.path());
    let b = t.path().join("b1");
    let out = kcradle()
        .current_dir(t.path())
        .args(["summon", "b1", "docker-archive:web.tar", "--cpus", "2"])
        .args(["--memory", "256M", "-e", "GREETING=hello", "-e", "X=1"])
        .args(["-v", "gfs:shared:/shared:ro", "-v", "lv:data:64M:/data"])
        .args(["-v", "lv:scratch:32M:/scratch", "-p", "18080:80"])
        .arg("--lv-root")
        .arg(&lv)
        .arg("--state-dir")
        .arg(&state)
        .args(["--entrypoint", "/bin/sh", "--cmd", "-c", "echo $GREETING"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = check_bundle(&b, 3);
    assert_eq!(bundle["cpus"], 2);
    assert_eq!(bundle["memory_mib"], 256);
    assert_eq!(bundle["publish"][0]["host_port"], 18080);
    assert!(state.join("gfs/shared").is_dir());
    let data = fs::metadata(lv.join("data.img")).unwrap();
    assert_eq!(data.len(), 64 << 20);
    let pod: serde_json::Value =
        serde_json::from_slice(&fs::read(b.join("pod.json")).unwrap()).unwrap();
    let p = &pod["containers"][0]["process"];
    assert_eq!(p["entrypoint"], serde_json::json!(["/bin/sh"]));
    assert_eq!(p["cmd"], serde_json::json!(["-c", "echo $GREETING"]));
    let env: Vec<&str> = p["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(env, ["PATH=/bin", "GREETING=hello", "X=1"]);
    assert_eq!(p["workdir"], "/www");
    assert_eq!(pod["volumes"][0]["read_only"], true);

    // The same directory again: refused, and the bundle is untouched.
    let before = listing(t.path());
    let out = summon(&[b.to_str().unwrap(), "docker-archive:web.tar"], &state);
    assert_refused(&out, t.path(), &before, "already exists");
    assert!(b.join("bundle.json").is_file());
}

#[test]
fn from_umoci_layout() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    common::umoci_layout(d, "lay", "v1", "hello from cradle\n", &["httpd"]);
    let state = d.join("state");
    let out = summon(&[d.join("b").to_str().unwrap(), "oci:lay:v1"], &state);
    // A relative oci: path is taken from the working directory.
    assert!(!out.status.success());
    let out = kcradle()
        .current_dir(d)
        .args(["summon", "b", "oci:lay:v1", "-q", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_bundle(&d.join("b"), 0);
    let pod: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("b/pod.json")).unwrap()).unwrap();
    let p = &pod["containers"][0]["process"];
    assert_eq!(p["entrypoint"], serde_json::json!(["/bin/busybox"]));
    assert_eq!(p["cmd"], serde_json::json!(["httpd"]));

    // An unknown tag, then a corrupt layer blob: one line, exit 2, nothing
    // made.
    let before = listing(d);
    let lay = format!("oci:{}", d.join("lay").display());
    let b2 = d.join("b2");
    let out = summon(&[b2.to_str().unwrap(), &format!("{lay}:v9")], &state);
    assert_refused(&out, d, &before, "not found: tag v9");
    let blobs = d.join("lay/blobs/sha256");
    let layer = fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut data = fs::read(&layer).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x20;
    fs::write(&layer, &data).unwrap();
    let out = summon(&[b2.to_str().unwrap(), &format!("{lay}:v1")], &state);
    assert_refused(&out, d, &before, "digest mismatch");
}

/// The biggest blob the registry stores: the busybox layer.
fn biggest_blob(root: &Path) -> PathBuf {
    let mut best = (0, PathBuf::new());
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "data") {
                let len = fs::metadata(&p).unwrap().len();
                if len > best.0 {
                    best = (len, p);
                }
            }
        }
    }
    best.1
}

#[test]
fn from_registry_pushed_by_skopeo() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let reg = DockerRegistry::start().unwrap();
    let archive = make_archive(d);
    reg.push(
        &format!("docker-archive:{}", archive.display()),
        "demo/web:v1",
    )
    .unwrap();
    let state = d.join("state");
    let r = reg.reference("demo/web:v1");
    let out = summon(&[d.join("b1").to_str().unwrap(), &r], &state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_bundle(&d.join("b1"), 0);
    let cached = listing(&state.join("blobs/sha256"));
    assert_eq!(cached.len(), 1, "one layer cached: {cached:?}");

    // A plain reference on a configured default registry; the layer comes
    // from the cache (the second bundle shares it).
    let out = kcradle()
        .args([
            "summon",
            d.join("b2").to_str().unwrap(),
            "demo/web:v1",
            "-q",
        ])
        .arg("--state-dir")
        .arg(&state)
        .env("KCRADLE_REGISTRY", reg.addr())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_bundle(&d.join("b2"), 0);
    assert_eq!(listing(&state.join("blobs/sha256")), cached);

    // Unknown image and unknown tag.
    let before = listing(d);
    for missing in ["demo/nothere:v1", "demo/web:v2"] {
        let r = format!("{}/{missing}", reg.addr());
        let out = summon(&[d.join("b3").to_str().unwrap(), &r], &state);
        assert_refused(&out, d, &before, "not found");
    }

    // A corrupt layer in the registry: refused by digest, nothing cached.
    let blob = biggest_blob(reg.storage());
    let mut data = fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x40;
    fs::write(&blob, &data).unwrap();
    let state2 = d.join("state2");
    fs::create_dir(&state2).unwrap();
    let before = listing(d);
    let out = summon(&[d.join("b3").to_str().unwrap(), &r_of(&reg)], &state2);
    assert_refused(&out, d, &before, "digest mismatch");
    // Nothing entered the layer cache, not even a partial download.
    assert_eq!(files_under(&state2.join("blobs")), 0);
}

/// Number of files under `root` (0 when it does not exist).
fn files_under(root: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                n += 1;
            }
        }
    }
    n
}

fn r_of(reg: &DockerRegistry) -> String {
    reg.reference("demo/web:v1")
}

/// A registry that answers every request with 500.
fn broken_registry() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    port
}

#[test]
fn bad_input_is_refused_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let state = d.join("state");
    fs::create_dir(&state).unwrap();
    let lv = d.join("lv");
    fs::create_dir(&lv).unwrap();
    let archive = make_archive(d);
    let a = format!("docker-archive:{}", archive.display());
    let b = d.join("b");
    let bs = b.to_str().unwrap();
    let before = listing(d);

    let port = broken_registry();
    let r = format!("docker://127.0.0.1:{port}/demo/web:v1");
    assert_refused(&summon(&[bs, &r], &state), d, &before, "HTTP 500");
    assert_eq!(files_under(&state), 0, "nothing cached or recorded");

    for (vol, needle) in [
        ("lv:x:12Q:/x", "bad size"),
        ("lv:x:1M:/x", "at least 16M"),
        ("lv:x:0:/x", "at least 16M"),
        ("gfs:x:relative", "absolute"),
        ("gfs:rootfs:/r", "reserved"),
    ] {
        assert_refused(&summon(&[bs, &a, "-v", vol], &state), d, &before, needle);
    }
    assert_refused(
        &summon(&[bs, &format!("{}.missing", &a)], &state),
        d,
        &before,
        "No such file",
    );
    assert_refused(
        &summon(&[bs, "oci:/nonexistent/layout"], &state),
        d,
        &before,
        "not an OCI layout",
    );
    assert_refused(
        &summon(&[bs, &a, "-p", "80"], &state),
        d,
        &before,
        "HOSTPORT:PORT",
    );

    // A corrupt layer in a docker-archive: refused by digest; neither the
    // LV file nor the GFS directory asked for is made.
    let mut data = fs::read(&archive).unwrap();
    let at = data.windows(4).position(|w| w == b"\x7fELF").unwrap() + 4096;
    data[at] ^= 0x55;
    fs::write(&archive, &data).unwrap();
    let out = kcradle()
        .args(["summon", bs, &a, "-q", "-v", "lv:data:64M:/data"])
        .args(["-v", "gfs:new:/new"])
        .arg("--lv-root")
        .arg(&lv)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert_refused(&out, d, &before, "digest mismatch");
    assert!(listing(&lv).is_empty());
    assert!(!state.join("gfs/new").exists());
}
