//! Pulls from a real `docker-registry` on 127.0.0.1, filled by `skopeo`;
//! token auth through a small bearer-token gate in front of it.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use cradle_image::write::write_docker_archive;
use cradle_image::{ImageError, ImageRef, PullOptions, UnpackOptions};
use cradle_testbed::registry::{free_port, DockerRegistry};

fn push(dir: &Path, reg: &DockerRegistry, name: &str) {
    let p = dir.join("bb.tar");
    write_docker_archive(&p, &config(), &layers(), "busybox:test").unwrap();
    reg.push_from(dir, "docker-archive:bb.tar", name).unwrap();
}

fn pull(r: &str, cache: &Path) -> cradle_image::Result<tempfile::TempDir> {
    let img = ImageRef::parse(r, Path::new("/"))?.open_with(&PullOptions::new(cache))?;
    assert_eq!(img.config.argv(), config().argv());
    let root = tempfile::tempdir().unwrap();
    img.unpack(root.path(), &UnpackOptions::default())?;
    Ok(root)
}

#[test]
fn pull_by_tag_and_digest_with_a_shared_cache() {
    let reg = DockerRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    push(dir.path(), &reg, "team/bb:v1");
    let cache = tempfile::tempdir().unwrap();
    let root = pull(&format!("docker://{}/team/bb:v1", reg.addr()), cache.path()).unwrap();
    check_rootfs(root.path());
    let cached: Vec<_> = std::fs::read_dir(cache.path().join("sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 2, "two layers cached by digest");

    let inspect = tool(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{}/team/bb:v1", reg.addr()),
    ]));
    let root = pull(
        &format!("{}/team/bb@{}", reg.addr(), inspect.trim()),
        cache.path(),
    )
    .unwrap();
    check_rootfs(root.path());

    // Progress: a fresh cache reports each layer up to its size; a warm
    // cache reports each layer once, complete.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let fresh = tempfile::tempdir().unwrap();
    let mut opts = PullOptions::new(fresh.path());
    opts.progress = Some(std::sync::Arc::new(move |d, done, total| {
        log.lock().unwrap().push((d.to_string(), done, total));
    }));
    let r = ImageRef::parse(
        &format!("docker://{}/team/bb:v1", reg.addr()),
        Path::new("/"),
    )
    .unwrap();
    r.open_with(&opts).unwrap();
    let events = seen.lock().unwrap().clone();
    let finished: std::collections::BTreeSet<_> = events
        .iter()
        .filter(|(_, done, total)| done == total)
        .map(|(d, _, _)| d.clone())
        .collect();
    assert_eq!(finished.len(), 2, "{events:?}");
    assert!(events.iter().all(|(_, done, total)| done <= total));
    seen.lock().unwrap().clear();
    r.open_with(&opts).unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);

    // A corrupt cached layer is caught when unpacking.
    let mut data = std::fs::read(&cached[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 1;
    std::fs::write(&cached[0], &data).unwrap();
    let e = pull(&format!("docker://{}/team/bb:v1", reg.addr()), cache.path()).unwrap_err();
    assert!(e.to_string().contains("digest mismatch"), "{e}");

    let e = pull(
        &format!("docker://{}/team/bb:nope", reg.addr()),
        cache.path(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ImageError::Registry(ref m) if m.contains("404")),
        "{e}"
    );
    let e = pull(&format!("docker://{}/other:v1", reg.addr()), cache.path()).unwrap_err();
    assert!(matches!(e, ImageError::Registry(_)), "{e}");
}

/// One HTTP/1.1 request: (path, Authorization header).
fn read_request(s: &mut TcpStream) -> Option<(String, Option<String>)> {
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut auth = None;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    Some((path, auth))
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// A bearer-token gate in front of `upstream`: /v2/ requests need
/// `Bearer good-token`, which /token hands out for the right scope.
fn token_gate(upstream: String) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let me = addr.clone();
    std::thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { continue };
            let Some((path, auth)) = read_request(&mut s) else {
                continue;
            };
            if let Some(q) = path.strip_prefix("/token?") {
                let ok =
                    q.contains("scope=repository%3Ateam%2Fbb%3Apull") && q.contains("service=gate");
                let body: &[u8] = if ok {
                    br#"{"token":"good-token"}"#
                } else {
                    b"{}"
                };
                respond(&mut s, "200 OK", &[], body);
                continue;
            }
            if auth.as_deref() != Some("Bearer good-token") {
                let ch = format!(
                    r#"Bearer realm="http://{me}/token",service="gate",scope="repository:team/bb:pull""#
                );
                respond(
                    &mut s,
                    "401 Unauthorized",
                    &[("WWW-Authenticate".into(), ch)],
                    b"",
                );
                continue;
            }
            let resp = ureq::get(&format!("http://{upstream}{path}"))
                .set(
                    "Accept",
                    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
                )
                .call();
            match resp {
                Ok(r) => {
                    let ct = r.content_type().to_string();
                    let mut body = Vec::new();
                    let _ = r.into_reader().read_to_end(&mut body);
                    respond(&mut s, "200 OK", &[("Content-Type".into(), ct)], &body);
                }
                Err(_) => respond(&mut s, "404 Not Found", &[], b""),
            }
        }
    });
    addr
}

#[test]
fn bearer_token_auth() {
    let reg = DockerRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    push(dir.path(), &reg, "team/bb:v1");
    let gate = token_gate(reg.addr());
    let cache = tempfile::tempdir().unwrap();
    let root = pull(&format!("docker://{gate}/team/bb:v1"), cache.path()).unwrap();
    check_rootfs(root.path());
}

#[test]
fn server_errors_and_unreachable() {
    // A registry that answers 500 to everything.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { continue };
            let _ = read_request(&mut s);
            respond(&mut s, "500 Internal Server Error", &[], b"boom");
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let e = pull(&format!("docker://{addr}/x:1"), cache.path()).unwrap_err();
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    let e = pull(
        &format!("docker://127.0.0.1:{}/x:1", free_port().unwrap()),
        cache.path(),
    )
    .unwrap_err();
    assert!(matches!(e, ImageError::Registry(_)), "{e}");
}
