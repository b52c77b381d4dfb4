//! `bali run` through the real binary: the service replaces bali.

mod common;
use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bali_run(keydir: &Path, img: &Path, flags: &[&str], cmd: &[&str]) -> Command {
    let mut c = bali(keydir);
    c.arg("run").arg(img).args(flags).arg("--").args(cmd);
    c
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn service_has_bali_pid_and_exit_code() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let mut c = bali_run(keys.path(), &img, &[], &["echo $$; exit 7"]);
    c.stdout(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o).trim(), pid.to_string());
    // Without a command: the image's ENTRYPOINT + CMD.
    let mut c = bali(keys.path());
    c.arg("run").arg(&img);
    let o = run(c);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "default\n");
}

#[test]
fn signals_reach_the_service() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let script = "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.05; done";
    let mut c = bali_run(keys.path(), &img, &[], &[script]);
    c.stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // While it runs: its root is bali's tmpfs, visible only in its own
    // mount namespace.
    let theirs = fs::read_to_string(format!("/proc/{}/mountinfo", child.id())).unwrap();
    let root_line = theirs
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap();
    assert!(root_line.contains(" - tmpfs bali "), "{root_line}");
    assert!(!fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(" - tmpfs bali "));
    assert_ne!(
        fs::read_link(format!("/proc/{}/ns/mnt", child.id())).unwrap(),
        fs::read_link("/proc/self/ns/mnt").unwrap()
    );
    // Only the mount namespace is new.
    for ns in ["net", "pid", "user", "uts", "ipc"] {
        assert_eq!(
            fs::read_link(format!("/proc/{}/ns/{ns}", child.id())).unwrap(),
            fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            "{ns} namespace changed"
        );
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(st.code(), Some(42));

    let mut c = bali_run(keys.path(), &img, &[], &["echo ready; sleep 60"]);
    c.stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let t = Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn env_workdir_user_and_volumes() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let vol = tempfile::tempdir().unwrap();
    let ro = tempfile::tempdir().unwrap();
    fs::write(vol.path().join("in.txt"), "from host\n").unwrap();
    // The service runs as uid 1000.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(vol.path(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(ro.path().join("r.txt"), "ro\n").unwrap();
    let single = keys.path().join("single.conf");
    fs::write(&single, "one file\n").unwrap();
    let v1 = format!("{}:/data", vol.path().display());
    let v2 = format!("{}:/ro:ro", ro.path().display());
    let v3 = format!("{}:/etc/single.conf:ro", single.display());
    let script = "echo $FOO $HOSTVAR $IMGVAR $(pwd) $(id -u) $(id -g) $HOME; \
                  cat /data/in.txt /etc/single.conf; echo out > /data/out.txt; \
                  touch /ro/x 2>/dev/null && echo ro-writable; \
                  echo tmp > /tmp/t && cat /tmp/t; \
                  grep -c devpts /proc/mounts; grep -E ' /(dev/shm|run|tmp|proc|sys) ' /proc/mounts | wc -l";
    let mut c = bali_run(
        keys.path(),
        &img,
        &[
            "-e",
            "FOO=bar",
            "-e",
            "HOSTVAR",
            "-e",
            "UNSET_ON_HOST",
            "--workdir",
            "/work",
            "--user",
            "app",
            "-v",
            &v1,
            "-v",
            &v2,
            "-v",
            &v3,
        ],
        &[script],
    );
    c.env("HOSTVAR", "hv").env_remove("UNSET_ON_HOST");
    let o = run(c);
    assert!(o.status.success());
    let s = stdout(&o);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "bar hv img /work 1000 1000 /home/app");
    assert_eq!(lines[1], "from host");
    assert_eq!(lines[2], "one file");
    assert_eq!(lines[3], "tmp");
    assert_eq!(lines[4], "1");
    assert_eq!(lines[5].trim(), "5");
    assert_eq!(lines.len(), 6, "{s}");
    assert_eq!(
        fs::read_to_string(vol.path().join("out.txt")).unwrap(),
        "out\n"
    );
    assert!(!ro.path().join("x").exists());
}

/// Host mounts bali could have leaked: on /tmp itself (its staging
/// point), below this test's own dirs, or its tmpfs (source "bali").
/// Other mounts on a shared machine come and go.
fn mounts(own: &[&Path]) -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let mp = f.get(4).copied().unwrap_or("");
            mp == "/tmp"
                || own.iter().any(|d| mp.starts_with(d.to_str().unwrap()))
                || l.contains(" - tmpfs bali ")
        })
        .map(str::to_string)
        .collect()
}

fn tmp_entries() -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir("/tmp")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("bali"))
        .collect();
    v.sort();
    v
}

#[test]
fn bad_images_run_nothing_and_leave_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let good = fs::read(&img).unwrap();
    let marker = tempfile::tempdir().unwrap();
    let vol = format!("{}:/m", marker.path().display());
    let own = [keys.path(), marker.path()];
    let before_mounts = mounts(&own);
    let before_tmp = tmp_entries();
    let bad = keys.path().join("bad.tar.gz");
    let attempt = |path: &Path, flags: &[&str]| {
        let mut f = vec!["-v", vol.as_str()];
        f.extend_from_slice(flags);
        let o = run(bali_run(keys.path(), path, &f, &["touch /m/ran"]));
        assert_bad(&o);
        assert!(!marker.path().join("ran").exists(), "something ran");
        o
    };
    for off in [
        0,
        3,
        100,
        good.len() / 2,
        good.len() - 100,
        good.len() - 9,
        good.len() - 1,
    ] {
        let mut b = good.clone();
        b[off] ^= 0xff;
        fs::write(&bad, &b).unwrap();
        attempt(&bad, &[]);
    }
    fs::write(&bad, &good[..good.len() - 30]).unwrap();
    attempt(&bad, &[]);
    fs::write(&bad, b"not an image").unwrap();
    attempt(&bad, &[]);
    let other = tempfile::tempdir().unwrap();
    let o = attempt(&img, &["--key", &key_id(other.path())]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("signature does not match"));
    attempt(&keys.path().join("missing.tar.gz"), &[]);
    attempt(&img, &["-v", "/nonexistent-bali-src:/x"]);
    attempt(&img, &["-v", "relative-without-colon"]);
    attempt(&img, &["--user", "nobody"]);
    attempt(&img, &["-m", "lots"]);
    attempt(&img, &["--workdir", "relative"]);
    // The good image still runs and the marker proves it.
    let o = run(bali_run(
        keys.path(),
        &img,
        &["-v", &vol],
        &["touch /m/ran"],
    ));
    assert!(o.status.success());
    assert!(marker.path().join("ran").exists());
    assert_eq!(mounts(&own), before_mounts);
    assert_eq!(tmp_entries(), before_tmp);
}

/// Serves `body` to each connection on 127.0.0.1 in a thread.
fn serve(body: Vec<u8>, conns: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(conns) {
            let Ok(mut s) = s else { continue };
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/img.tar.gz")
}

#[test]
fn http_url_is_streamed_and_verified() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let good = fs::read(&img).unwrap();
    let url = serve(good.clone(), 2);
    let mut c = bali(keys.path());
    c.args(["verify", &url]);
    assert!(run(c).status.success());
    let mut c = bali(keys.path());
    c.args(["run", &url, "--", "echo via http; echo $$"]);
    c.stdout(Stdio::piped());
    let child = c.spawn().unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stdout(&o), format!("via http\n{pid}\n"));

    let mut b = good.clone();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    let url = serve(b, 2);
    let mut c = bali(keys.path());
    c.args(["run", &url, "--", "echo must-not-run"]);
    let o = run(c);
    assert_bad(&o);
    assert!(o.stdout.is_empty());
    let mut c = bali(keys.path());
    c.args(["verify", &url]);
    assert_bad(&run(c));

    // Nothing listens on this port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = bali(keys.path());
    c.args([
        "run",
        &format!("http://127.0.0.1:{port}/x.tar.gz"),
        "--",
        "true",
    ]);
    assert_bad(&run(c));
    let mut c = bali(keys.path());
    c.args([
        "run",
        &format!("file://{}", img.display()),
        "--",
        "echo file-url",
    ]);
    let o = run(c);
    assert_eq!(stdout(&o), "file-url\n");
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl installed (see ci/packages-bali.txt)");
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A test CA and a 127.0.0.1 server certificate it signed.
fn test_pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=bali test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-subj", "/CN=127.0.0.1"];
    csr.extend(ec);
    csr.extend(["-keyout", "srv.key", "-out", "srv.csr"]);
    openssl(dir, &csr);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "srv.pem",
        ],
    );
}

/// `openssl s_server -WWW` serving `dir` over TLS on a loopback port.
struct TlsServer(std::process::Child);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn https_url_with_the_system_trust_store() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let www = tempfile::tempdir().unwrap();
    fs::copy(&img, www.path().join("img.tar.gz")).unwrap();
    test_pki(www.path());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("openssl")
        .current_dir(www.path())
        .args([
            "s_server", "-quiet", "-WWW", "-cert", "srv.pem", "-key", "srv.key",
        ])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = TlsServer(child);
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://127.0.0.1:{port}/img.tar.gz");
    // Trusted through SSL_CERT_FILE (as an operator's CA bundle would be).
    let mut c = bali(keys.path());
    c.env("SSL_CERT_FILE", www.path().join("ca.pem"));
    c.args(["run", &url, "--", "echo via https"]);
    let o = run(c);
    assert!(o.status.success());
    assert_eq!(stdout(&o), "via https\n");
    // An untrusted server is refused before anything runs.
    let mut c = bali(keys.path());
    c.env("SSL_CERT_FILE", keys.path().join("run.tar.gz"));
    c.args(["run", &url, "--", "echo must-not-run"]);
    let o = run(c);
    assert_bad(&o);
    assert!(o.stdout.is_empty());
}

#[test]
fn memory_limit_applies_or_says_why() {
    let keys = tempfile::tempdir().unwrap();
    let img = runnable_image(keys.path(), keys.path());
    let o = run(bali_run(
        keys.path(),
        &img,
        &["-m", "64M"],
        &["echo limited"],
    ));
    if o.status.success() {
        assert_eq!(stdout(&o), "limited\n");
    } else {
        assert_bad(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("cannot apply -m"), "{err}");
        assert!(o.stdout.is_empty());
    }
}
