//! The registry client against a small registry served here on 127.0.0.1:
//! it demands a bearer token (from the realm it names) and serves an index
//! with an arm64 and an amd64 manifest, so token auth and platform
//! selection are exercised over real HTTP. (The tests of `kcradle summon`
//! use the real `docker-registry`, which has neither.)

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cradle_image::registry::{NoProgress, Puller, RegistryRef};
use cradle_image::write::write_oci_layout;
use cradle_image::{ImageConfig, UnpackOptions};
use serde_json::{json, Value};

const TOKEN: &str = "t0k3n";

fn layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(6);
    h.set_cksum();
    b.append_data(&mut h, "hello.txt", &b"amd64\n"[..]).unwrap();
    b.into_inner().unwrap()
}

/// Serves `routes` (path → (content type, body)) behind a bearer token;
/// counts token requests.
fn serve(routes: HashMap<String, (String, Vec<u8>)>, tokens: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let mut auth = String::new();
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.strip_prefix("Authorization: ") {
                    auth = v.trim().to_string();
                }
            }
            let (status, extra, ctype, body): (&str, String, String, Vec<u8>) = if path
                .starts_with("/token?")
            {
                assert!(
                    path.contains("scope=repository%3Ademo%2Fweb%3Apull"),
                    "{path}"
                );
                tokens.fetch_add(1, Ordering::SeqCst);
                (
                    "200 OK",
                    String::new(),
                    "application/json".into(),
                    json!({"token": TOKEN}).to_string().into_bytes(),
                )
            } else if auth != format!("Bearer {TOKEN}") {
                ("401 Unauthorized",
                     format!("WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"test\",scope=\"repository:demo/web:pull\"\r\n"),
                     "application/json".into(), b"{}".to_vec())
            } else if let Some((t, b)) = routes.get(&path) {
                ("200 OK", String::new(), t.clone(), b.clone())
            } else {
                (
                    "404 Not Found",
                    String::new(),
                    "application/json".into(),
                    b"{}".to_vec(),
                )
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(&body);
        }
    });
    port
}

fn routes_from_layout(dir: &Path) -> HashMap<String, (String, Vec<u8>)> {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let m = &index["manifests"][0];
    let mdigest = m["digest"].as_str().unwrap().to_string();
    let mut routes = HashMap::new();
    for e in fs::read_dir(dir.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let d = format!("sha256:{}", p.file_name().unwrap().to_str().unwrap());
        let body = fs::read(&p).unwrap();
        if d == mdigest {
            routes.insert(
                format!("/v2/demo/web/manifests/{d}"),
                ("application/vnd.oci.image.manifest.v1+json".into(), body),
            );
        } else {
            routes.insert(
                format!("/v2/demo/web/blobs/{d}"),
                ("application/octet-stream".into(), body),
            );
        }
    }
    let other = format!("sha256:{}", "1".repeat(64));
    let idx = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other,
             "size": 100, "platform": {"os": "linux", "architecture": "arm64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdigest,
             "size": m["size"], "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    });
    routes.insert(
        "/v2/demo/web/manifests/v1".into(),
        (
            "application/vnd.oci.image.index.v1+json".into(),
            idx.to_string().into_bytes(),
        ),
    );
    routes
}

#[test]
fn token_auth_and_amd64_from_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let cfg = ImageConfig {
        cmd: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    write_oci_layout(&layout, &cfg, &[layer()], "v1", true).unwrap();
    let tokens = Arc::new(AtomicUsize::new(0));
    let port = serve(routes_from_layout(&layout), tokens.clone());
    let r = RegistryRef::parse(&format!("127.0.0.1:{port}/demo/web:v1"), "docker.io").unwrap();
    let cache = dir.path().join("cache");
    let mut puller = Puller::new(&cache).unwrap();
    let img = puller.pull(&r, &mut NoProgress).unwrap();
    assert_eq!(
        img.config.cmd.as_deref(),
        Some(&["/bin/true".to_string()][..])
    );
    assert_eq!(
        tokens.load(Ordering::SeqCst),
        1,
        "one token for the whole pull"
    );
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    img.unpack(&root, &UnpackOptions::default()).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("hello.txt")).unwrap(),
        "amd64\n"
    );
    // A fresh puller on the same cache: the layer is not downloaded again.
    let mut again = Puller::new(&cache).unwrap();
    struct Count(usize, usize);
    impl cradle_image::registry::PullProgress for Count {
        fn layer_start(&mut self, _: &cradle_image::Digest, _: u64, cached: bool) {
            if cached {
                self.0 += 1;
            } else {
                self.1 += 1;
            }
        }
        fn layer_bytes(&mut self, _: u64) {}
        fn layer_done(&mut self) {}
    }
    let mut c = Count(0, 0);
    again.pull(&r, &mut c).unwrap();
    assert_eq!((c.0, c.1), (1, 0));
    // Unknown tag: not found.
    let r = RegistryRef::parse(&format!("127.0.0.1:{port}/demo/web:v9"), "docker.io").unwrap();
    let err = Puller::new(&cache)
        .unwrap()
        .pull(&r, &mut NoProgress)
        .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}
