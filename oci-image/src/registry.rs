//! Pulling an image from a registry (Docker Registry HTTP API v2 / OCI
//! distribution): `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` or a plain
//! `REPO[:TAG]` on a default registry.
//!
//! - HTTPS, except for loopback registries (`localhost`, `127.0.0.0/8`,
//!   `[::1]`), which are spoken to in plain HTTP as docker does.
//! - Anonymous bearer-token auth: a `401` with `WWW-Authenticate: Bearer
//!   realm=...,service=...,scope=...` is answered by fetching a token from
//!   the realm and retrying once.
//! - An index (manifest list) is resolved to its linux/amd64 manifest.
//! - Every manifest, config and layer is checked against its digest; layers
//!   land in a cache (`CACHE/sha256/HEX`) only once verified, and are
//!   shared by every later pull.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::config::ImageConfig;
use crate::digest::{read_verified, Digest, DigestReader};
use crate::error::{ImageError, Result};
use crate::image::{DigestOf, Image, Layer};

/// Biggest manifest or config we accept.
const JSON_LIMIT: u64 = 8 << 20;
/// Nested indexes followed at most this deep.
const MAX_DEPTH: usize = 4;
/// What we accept for a manifest, in preference order.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The registry docker uses for names without a host.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed registry reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryRef {
    /// `host[:port]` as written (Docker Hub normalised to `docker.io`).
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// Digest pinning the manifest.
    pub digest: Option<Digest>,
}

fn valid_repo(r: &str) -> bool {
    !r.is_empty()
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        })
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RegistryRef {
    /// Parses `HOST[:PORT]/REPO[:TAG|@DIGEST]` or `REPO[:TAG|@DIGEST]`;
    /// names without a host go to `default_registry`.
    pub fn parse(s: &str, default_registry: &str) -> Result<Self> {
        let bad = |why: &str| ImageError::BadReference(s.to_string(), why.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        // The first component is a host when it looks like one (docker's rule).
        let (registry, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), p)
            }
            _ => (default_registry.to_string(), rest),
        };
        let (repo, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, Some(t.to_string())),
            _ => (path, None),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            _ => registry,
        };
        let repository = if registry == DOCKER_HUB && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo.to_string()
        };
        if !valid_repo(&repository) {
            return Err(bad("repository must be lowercase [a-z0-9._-] components"));
        }
        if let Some(t) = &tag {
            if !valid_tag(t) {
                return Err(bad("bad tag"));
            }
        }
        if registry.is_empty() || registry.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(bad("bad registry host"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(RegistryRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The base URL of the registry's API: plain HTTP for loopback hosts.
    pub fn base_url(&self) -> String {
        let host = if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        };
        let scheme = if is_loopback(host) { "http" } else { "https" };
        format!("{scheme}://{host}")
    }

    /// The manifest reference: the digest when pinned, else the tag.
    fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

impl std::fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub fn is_loopback(host_port: &str) -> bool {
    let host = if let Some(rest) = host_port.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Told about each layer as a pull goes; the CLI draws progress bars.
pub trait PullProgress {
    /// A layer starts downloading (`cached` when it is already in the cache).
    fn layer_start(&mut self, digest: &Digest, size: u64, cached: bool);
    /// `n` more bytes of the current layer arrived.
    fn layer_bytes(&mut self, n: u64);
    /// The current layer is verified and cached.
    fn layer_done(&mut self);
}

/// Progress that nobody watches.
pub struct NoProgress;

impl PullProgress for NoProgress {
    fn layer_start(&mut self, _: &Digest, _: u64, _: bool) {}
    fn layer_bytes(&mut self, _: u64) {}
    fn layer_done(&mut self) {}
}

/// Pulls images into a layer cache.
pub struct Puller {
    agent: ureq::Agent,
    cache: PathBuf,
    token: Option<String>,
}

fn http_err(url: &str, e: ureq::Error) -> ImageError {
    match e {
        ureq::Error::Status(code, resp) => ImageError::Registry {
            url: url.to_string(),
            msg: format!("HTTP {code} {}", resp.status_text()),
        },
        ureq::Error::Transport(t) => {
            let text = t.to_string();
            let line = text.lines().next().unwrap_or("");
            ImageError::Registry {
                url: url.to_string(),
                msg: line.replacen(&format!("{url}: "), "", 1),
            }
        }
    }
}

/// Splits `Bearer realm="x",service="y"` into its parameters.
fn auth_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix("Bearer ")?;
    let mut out = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let v = v.trim_start();
        let (val, tail) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            match v.find(',') {
                Some(i) => (&v[..i], &v[i..]),
                None => (v, ""),
            }
        };
        out.push((k.trim().to_string(), val.to_string()));
        s = tail.trim_start_matches([',', ' ']);
    }
    Some(out)
}

impl Puller {
    /// A puller caching layers under `cache` (created when missing).
    pub fn new(cache: &Path) -> Result<Self> {
        fs::create_dir_all(cache.join("tmp")).map_err(|e| ImageError::io(cache, e))?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("cradle-image/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Puller {
            agent,
            cache: cache.to_path_buf(),
            token: None,
        })
    }

    /// Where a verified blob lives in the cache.
    pub fn cached_path(&self, d: &Digest) -> PathBuf {
        self.cache.join(d.algorithm_name()).join(d.hex())
    }

    /// GET with the token, answering one 401 challenge.
    fn get(&mut self, url: &str, accept: Option<&str>) -> Result<ureq::Response> {
        for attempt in 0..2 {
            let mut req = self.agent.get(url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            if let Some(t) = &self.token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if attempt == 0 => {
                    let challenge = resp.header("www-authenticate").unwrap_or("").to_string();
                    self.token = Some(self.fetch_token(url, &challenge)?);
                }
                Err(e) => return Err(http_err(url, e)),
            }
        }
        Err(ImageError::Registry {
            url: url.to_string(),
            msg: "unauthorized (anonymous token refused)".into(),
        })
    }

    fn fetch_token(&self, url: &str, challenge: &str) -> Result<String> {
        let params = auth_params(challenge).ok_or_else(|| ImageError::Registry {
            url: url.to_string(),
            msg: format!("unauthorized, and no bearer challenge to answer ({challenge:?})"),
        })?;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let realm = get("realm").ok_or_else(|| ImageError::Registry {
            url: url.to_string(),
            msg: "bearer challenge without realm".into(),
        })?;
        let mut req = self.agent.get(realm);
        for k in ["service", "scope"] {
            if let Some(v) = get(k) {
                req = req.query(k, v);
            }
        }
        let resp = req.call().map_err(|e| http_err(realm, e))?;
        let mut body = Vec::new();
        resp.into_reader()
            .take(JSON_LIMIT)
            .read_to_end(&mut body)
            .map_err(|e| ImageError::io(realm, e))?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| ImageError::Json {
            what: format!("token from {realm}"),
            msg: e.to_string(),
        })?;
        v.get("token")
            .or_else(|| v.get("access_token"))
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| ImageError::Registry {
                url: realm.to_string(),
                msg: "token response without a token".into(),
            })
    }

    /// Fetches a manifest or index by tag or digest; the bytes are checked
    /// against the pinned digest or the registry's `Docker-Content-Digest`.
    fn manifest(&mut self, r: &RegistryRef, reference: &str) -> Result<(String, Vec<u8>)> {
        let url = format!("{}/v2/{}/manifests/{reference}", r.base_url(), r.repository);
        let resp = match self.get(&url, Some(ACCEPT)) {
            Err(ImageError::Registry { msg, .. }) if msg.starts_with("HTTP 404") => {
                return Err(ImageError::NotFound(format!(
                    "image {r} (no such manifest)"
                )))
            }
            other => other?,
        };
        let media = resp.content_type().to_string();
        let expected = match Digest::parse(reference) {
            Ok(d) => Some(d),
            Err(_) => resp
                .header("docker-content-digest")
                .and_then(|h| Digest::parse(h).ok()),
        };
        let mut body = Vec::new();
        resp.into_reader()
            .take(JSON_LIMIT)
            .read_to_end(&mut body)
            .map_err(|e| ImageError::io(&url, e))?;
        if body.len() as u64 >= JSON_LIMIT {
            return Err(ImageError::Unsupported(format!(
                "manifest at {url} is too large"
            )));
        }
        if let Some(d) = expected {
            read_verified(
                &body[..],
                &d,
                Some(body.len() as u64),
                JSON_LIMIT,
                "manifest",
            )?;
        }
        // The JSON's own mediaType wins over the header when present.
        let inner = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string));
        Ok((inner.unwrap_or(media), body))
    }

    /// Downloads one blob into the cache unless it is there, verifying it.
    fn fetch_blob(
        &mut self,
        r: &RegistryRef,
        d: &Digest,
        size: u64,
        progress: &mut dyn PullProgress,
    ) -> Result<PathBuf> {
        let dest = self.cached_path(d);
        if dest.is_file() {
            progress.layer_start(d, size, true);
            progress.layer_done();
            return Ok(dest);
        }
        progress.layer_start(d, size, false);
        let url = format!("{}/v2/{}/blobs/{d}", r.base_url(), r.repository);
        let resp = self.get(&url, None)?;
        let tmp_dir = self.cache.join("tmp");
        let mut tmp =
            tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| ImageError::io(&tmp_dir, e))?;
        let what = format!("layer {d}");
        let mut reader = DigestReader::new(resp.into_reader(), d.clone(), Some(size), &what);
        let mut buf = vec![0u8; 128 << 10];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ImageError::io(&url, e)),
            };
            tmp.write_all(&buf[..n])
                .map_err(|e| ImageError::io(tmp.path(), e))?;
            progress.layer_bytes(n as u64);
        }
        reader.finish()?;
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| ImageError::io(parent, e))?;
        }
        tmp.persist(&dest)
            .map_err(|e| ImageError::io(&dest, e.error))?;
        progress.layer_done();
        Ok(dest)
    }

    /// Pulls `r`: resolves the linux/amd64 manifest, reads the config and
    /// caches every layer; the returned image reads its layers from the
    /// cache (verified again as they are unpacked).
    pub fn pull(&mut self, r: &RegistryRef, progress: &mut dyn PullProgress) -> Result<Image> {
        let mut reference = r.reference();
        let mut depth = 0;
        let manifest = loop {
            let (media, body) = self.manifest(r, &reference)?;
            if media.ends_with("image.index.v1+json") || media.ends_with("manifest.list.v2+json") {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(ImageError::Unsupported("indexes nested too deep".into()));
                }
                let index = ImageIndex::from_reader(&body[..]).map_err(|e| ImageError::Json {
                    what: "image index".into(),
                    msg: e.to_string(),
                })?;
                let pick = crate::oci_layout::pick_platform(index.manifests(), "image index")?;
                reference = pick.digest().to_string();
                continue;
            }
            // Docker schema 1 (signed or not) has no content-addressed config.
            if media.contains("distribution.manifest.v1") {
                return Err(ImageError::Unsupported(format!("manifest type {media}")));
            }
            break ImageManifest::from_reader(&body[..]).map_err(|e| ImageError::Json {
                what: "image manifest".into(),
                msg: e.to_string(),
            })?;
        };
        let cd = Digest::parse(manifest.config().digest().as_ref())?;
        let url = format!("{}/v2/{}/blobs/{cd}", r.base_url(), r.repository);
        let resp = self.get(&url, None)?;
        let raw = read_verified(
            resp.into_reader(),
            &cd,
            Some(manifest.config().size()),
            JSON_LIMIT,
            "image config",
        )?;
        let oci = oci_spec::image::ImageConfiguration::from_reader(&raw[..]).map_err(|e| {
            ImageError::Json {
                what: "image config".into(),
                msg: e.to_string(),
            }
        })?;
        let mut layers = Vec::new();
        for l in manifest.layers() {
            let m = l.media_type().to_string();
            if m.contains("zstd") {
                return Err(ImageError::Unsupported(format!("layer media type {m}")));
            }
            let digest = Digest::parse(l.digest().as_ref())?;
            let file = self.fetch_blob(r, &digest, l.size(), progress)?;
            layers.push(Layer {
                file,
                offset: 0,
                size: l.size(),
                digest,
                digest_of: DigestOf::Stored,
            });
        }
        Ok(Image {
            config: ImageConfig::from_oci(&oci),
            layers,
        })
    }
}

/// Removes a cached blob (e.g. one that failed verification on unpack).
pub fn evict(cache: &Path, d: &Digest) {
    let _ = fs::remove_file(cache.join(d.algorithm_name()).join(d.hex()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_references() {
        let r = RegistryRef::parse("busybox", DOCKER_HUB).unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.base_url(), "https://registry-1.docker.io");
        let r = RegistryRef::parse("127.0.0.1:5000/demo/web:v1", DOCKER_HUB).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("127.0.0.1:5000", "demo/web", Some("v1"))
        );
        assert_eq!(r.base_url(), "http://127.0.0.1:5000");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = RegistryRef::parse(&format!("localhost/x@{d}"), DOCKER_HUB).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.unwrap().to_string(), d);
        let r = RegistryRef::parse("web:2", "reg.example:8443").unwrap();
        assert_eq!(r.to_string(), "reg.example:8443/web:2");
        assert!(RegistryRef::parse("UPPER/x", DOCKER_HUB).is_err());
        assert!(RegistryRef::parse("x:bad/tag:", DOCKER_HUB).is_err());
        assert!(RegistryRef::parse("x@sha256:zz", DOCKER_HUB).is_err());
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("example.com:5000"));
    }

    #[test]
    fn bearer_challenge() {
        let p = auth_params(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        assert!(auth_params("Basic realm=x").is_none());
    }
}
