//! Pulling from a registry (Docker Registry HTTP API v2 / OCI distribution).
//!
//! HTTPS, or plain HTTP for loopback registries; anonymous or basic
//! credentials exchanged for a bearer token when the registry asks
//! (`WWW-Authenticate: Bearer realm=...`), or basic auth when it asks for
//! that. Indexes are resolved to linux/amd64. Manifests and the config are
//! checked against their digests on download; layers are stored by digest in
//! a cache directory (verified while downloading, shared between pulls) and
//! verified again when unpacked.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::image::{ImageIndex, ImageManifest};

use crate::config::ImageConfig;
use crate::digest::{read_verified, Digest, DigestReader};
use crate::error::{ImageError, Result};
use crate::image::{DigestOf, Image, Layer};

/// Biggest manifest or config we read.
const JSON_LIMIT: u64 = 16 << 20;
/// Every manifest type we understand, for the Accept header.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
/// The registry Docker Hub names resolve to.
pub const DOCKER_HUB: &str = "docker.io";

/// Called while a layer downloads: (layer digest, bytes so far, total).
/// A cached layer reports (digest, total, total) once.
pub type Progress = std::sync::Arc<dyn Fn(&Digest, u64, u64) + Send + Sync>;

/// How to pull.
#[derive(Clone)]
pub struct PullOptions {
    /// Where layer blobs are kept, by digest (`DIR/sha256/HEX`).
    pub cache_dir: PathBuf,
    /// Registry for references without a host (`busybox:1`).
    pub default_registry: String,
    /// Username and password, exchanged for a token or sent as basic auth.
    pub credentials: Option<(String, String)>,
    /// Network timeout per request.
    pub timeout: Duration,
    /// Progress reports for layer downloads (a caller's progress bars).
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("cache_dir", &self.cache_dir)
            .field("default_registry", &self.default_registry)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(u, _)| (u, "***")),
            )
            .field("timeout", &self.timeout)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// Passes bytes through, reporting the running count.
struct Counting<R> {
    inner: R,
    done: u64,
    total: u64,
    digest: Digest,
    report: Progress,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.report)(&self.digest, self.done, self.total);
        Ok(n)
    }
}

impl PullOptions {
    /// Docker Hub as default registry, anonymous, 60 s timeout.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        PullOptions {
            cache_dir: cache_dir.into(),
            default_registry: DOCKER_HUB.into(),
            credentials: None,
            timeout: Duration::from_secs(60),
            progress: None,
        }
    }
}

/// A parsed registry reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]` as written (Docker Hub normalised to `docker.io`).
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag (default `latest`) unless a digest is given.
    pub tag: Option<String>,
    /// `@sha256:...`
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `[HOST[:PORT]/]REPO[:TAG][@DIGEST]`.
    pub fn parse(s: &str, default_registry: &str) -> Result<Self> {
        let bad = |why: &str| ImageError::BadReference(s.to_string(), why.to_string());
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d)?)),
            None => (s, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains(['.', ':']) || h == "localhost" => (h.to_string(), p),
            _ => (default_registry.to_string(), rest),
        };
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t.to_string())),
            _ => (path, None),
        };
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
        if path.is_empty() || !path.chars().all(valid) || path.contains("..") {
            return Err(bad("bad repository name"));
        }
        if tag.as_ref().is_some_and(|t| {
            t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        }) {
            return Err(bad("bad tag"));
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `https://HOST` or, for loopback registries, `http://HOST`.
    pub fn base_url(&self) -> String {
        let host = if self.registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        };
        let name = host
            .strip_prefix('[')
            .and_then(|h| h.split_once(']'))
            .map(|(h, _)| h)
            .unwrap_or_else(|| host.rsplit_once(':').map_or(host, |(h, _)| h));
        let loopback = name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if loopback { "http" } else { "https" };
        format!("{scheme}://{host}")
    }

    fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }
}

/// One registry session: base URL, repository and the token once we have one.
struct Client<'a> {
    agent: ureq::Agent,
    base: String,
    repo: String,
    auth: Option<String>,
    opts: &'a PullOptions,
}

fn err(url: &str, e: ureq::Error) -> ImageError {
    match e {
        ureq::Error::Status(code, r) => {
            let what = if code == 404 {
                "not found".to_string()
            } else {
                r.status_text().to_string()
            };
            ImageError::Registry(format!("{url}: HTTP {code} {what}"))
        }
        ureq::Error::Transport(t) => ImageError::Registry(format!("{url}: {t}")),
    }
}

/// The key="value" parameters of a WWW-Authenticate challenge.
fn challenge_params(h: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = h;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_string(), &q[end + 1..]),
                None => (q.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(c) => (after[..c].to_string(), &after[c..]),
                None => (after.to_string(), ""),
            }
        };
        out.push((key.to_ascii_lowercase(), val));
        rest = next;
    }
    out
}

fn basic(user: &str, pass: &str) -> String {
    let raw = format!("{user}:{pass}");
    format!("Basic {}", data_encoding::BASE64.encode(raw.as_bytes()))
}

impl Client<'_> {
    fn get(&mut self, path: &str, accept: &str) -> Result<ureq::Response> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repo);
        // Boxed: ureq's error carries a whole response.
        let call =
            |auth: &Option<String>| -> std::result::Result<ureq::Response, Box<ureq::Error>> {
                let mut req = self.agent.get(&url).set("Accept", accept);
                if let Some(a) = auth {
                    req = req.set("Authorization", a);
                }
                req.call().map_err(Box::new)
            };
        match call(&self.auth) {
            Ok(r) => Ok(r),
            Err(e) => match *e {
                ureq::Error::Status(401, resp) if self.auth.is_none() => {
                    let h = resp.header("www-authenticate").unwrap_or("").to_string();
                    self.auth = Some(self.authenticate(&h, &url)?);
                    call(&self.auth).map_err(|e| err(&url, *e))
                }
                e => Err(err(&url, e)),
            },
        }
    }

    /// Answers a 401 challenge: a bearer token from the realm, or basic.
    fn authenticate(&self, challenge: &str, url: &str) -> Result<String> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let params = challenge_params(params);
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => match &self.opts.credentials {
                Some((u, p)) => Ok(basic(u, p)),
                None => Err(ImageError::Registry(format!(
                    "{url}: registry wants credentials"
                ))),
            },
            "bearer" => {
                let realm = get("realm").ok_or_else(|| {
                    ImageError::Registry(format!("{url}: bearer challenge without realm"))
                })?;
                let scope = get("scope").unwrap_or(format!("repository:{}:pull", self.repo));
                let mut req = self.agent.get(&realm).query("scope", &scope);
                if let Some(service) = get("service") {
                    req = req.query("service", &service);
                }
                if let Some((u, p)) = &self.opts.credentials {
                    req = req.set("Authorization", &basic(u, p));
                }
                let resp = req.call().map_err(|e| err(&realm, e))?;
                let mut body = Vec::new();
                resp.into_reader()
                    .take(JSON_LIMIT)
                    .read_to_end(&mut body)
                    .map_err(|e| ImageError::io(&realm, e))?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| ImageError::Json {
                        what: format!("token from {realm}"),
                        msg: e.to_string(),
                    })?;
                let token = v["token"]
                    .as_str()
                    .or_else(|| v["access_token"].as_str())
                    .ok_or_else(|| ImageError::Registry(format!("{realm}: no token in reply")))?;
                Ok(format!("Bearer {token}"))
            }
            _ => Err(ImageError::Registry(format!(
                "{url}: unsupported authentication {scheme:?}"
            ))),
        }
    }

    /// A manifest or index: body, its digest and media type.
    fn manifest(&mut self, reference: &str, expect: Option<&Digest>) -> Result<(Vec<u8>, String)> {
        let resp = self.get(&format!("manifests/{reference}"), MANIFEST_TYPES)?;
        let ctype = resp.content_type().to_string();
        let mut body = Vec::new();
        resp.into_reader()
            .take(JSON_LIMIT)
            .read_to_end(&mut body)
            .map_err(|e| ImageError::io(reference, e))?;
        if let Some(d) = expect {
            read_verified(
                &body[..],
                d,
                Some(body.len() as u64),
                JSON_LIMIT,
                "manifest",
            )?;
        }
        let media = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or(ctype);
        Ok((body, media))
    }

    /// Downloads a blob into `dest` (via a temp file), verifying it.
    fn blob_to_file(&mut self, d: &Digest, size: u64, dest: &Path) -> Result<()> {
        if fs::metadata(dest).is_ok_and(|m| m.len() == size) {
            if let Some(p) = &self.opts.progress {
                p(d, size, size);
            }
            return Ok(()); // cached; verified again on unpack
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| ImageError::io(dir, e))?;
        let tmp = dir.join(format!(".{}.{}.part", d.hex(), std::process::id()));
        let res = (|| {
            let resp = self.get(&format!("blobs/{d}"), "*/*")?;
            let body: Box<dyn Read> = match &self.opts.progress {
                Some(p) => Box::new(Counting {
                    inner: resp.into_reader(),
                    done: 0,
                    total: size,
                    digest: d.clone(),
                    report: p.clone(),
                }),
                None => Box::new(resp.into_reader()),
            };
            let mut r = DigestReader::new(body, d.clone(), Some(size), "blob");
            let mut f = File::create(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
            io::copy(&mut r, &mut f).map_err(|e| ImageError::io(&tmp, e))?;
            r.finish()?;
            f.sync_all().map_err(|e| ImageError::io(&tmp, e))?;
            fs::rename(&tmp, dest).map_err(|e| ImageError::io(dest, e))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}

fn is_index(m: &str) -> bool {
    m.ends_with("image.index.v1+json") || m.ends_with("manifest.list.v2+json")
}

/// Pulls `r`: manifest and config now, layers into the cache.
pub fn pull(r: &Reference, opts: &PullOptions) -> Result<Image> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(opts.timeout)
        .build();
    let mut c = Client {
        agent,
        base: r.base_url(),
        repo: r.repository.clone(),
        auth: None,
        opts,
    };
    let (mut body, mut media) = c.manifest(&r.manifest_ref(), r.digest.as_ref())?;
    if is_index(&media) {
        let index = ImageIndex::from_reader(&body[..]).map_err(|e| ImageError::Json {
            what: "image index".into(),
            msg: e.to_string(),
        })?;
        let desc = index
            .manifests()
            .iter()
            .find(|d| {
                d.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
                })
            })
            .ok_or_else(|| ImageError::NotFound("a linux/amd64 manifest in the index".into()))?;
        let d = Digest::parse(desc.digest().as_ref())?;
        (body, media) = c.manifest(&d.to_string(), Some(&d))?;
    }
    if media.contains("manifest.v1+prettyjws")
        || media.ends_with("manifest.v1+json") && !media.contains("oci")
    {
        return Err(ImageError::Unsupported(format!("manifest type {media}")));
    }
    let manifest = ImageManifest::from_reader(&body[..]).map_err(|e| ImageError::Json {
        what: "image manifest".into(),
        msg: e.to_string(),
    })?;
    let cd = Digest::parse(manifest.config().digest().as_ref())?;
    let resp = c.get(&format!("blobs/{cd}"), "*/*")?;
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
        let d = Digest::parse(l.digest().as_ref())?;
        let file = opts.cache_dir.join(d.algorithm_name()).join(d.hex());
        c.blob_to_file(&d, l.size(), &file)?;
        layers.push(Layer {
            file,
            offset: 0,
            size: l.size(),
            digest: d,
            digest_of: DigestOf::Stored,
        });
    }
    Ok(Image {
        config: ImageConfig::from_oci(&oci),
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = Reference::parse("busybox", DOCKER_HUB).unwrap();
        assert_eq!(r.repository, "library/busybox");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.base_url(), "https://registry-1.docker.io");
        let r = Reference::parse("127.0.0.1:5000/a/b:v1", DOCKER_HUB).unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b")
        );
        assert_eq!(r.base_url(), "http://127.0.0.1:5000");
        let r = Reference::parse("localhost:5000/x", DOCKER_HUB).unwrap();
        assert_eq!(r.base_url(), "http://localhost:5000");
        let r = Reference::parse("[::1]:5000/x", DOCKER_HUB).unwrap();
        assert_eq!(r.base_url(), "http://[::1]:5000");
        let r = Reference::parse("reg.example:443/x", DOCKER_HUB).unwrap();
        assert_eq!(r.base_url(), "https://reg.example:443");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("quay.io/x/y@{d}"), DOCKER_HUB).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), d);
        let r = Reference::parse("myrepo:3", "127.0.0.1:5000").unwrap();
        assert_eq!(r.repository, "myrepo");
        assert!(Reference::parse("UPPER", DOCKER_HUB).is_err());
        assert!(Reference::parse("x:bad tag", DOCKER_HUB).is_err());
        assert!(Reference::parse("x@sha256:zz", DOCKER_HUB).is_err());
    }

    #[test]
    fn challenges() {
        let p = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#,
        );
        assert_eq!(p[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(p[1].1, "registry.example");
        assert_eq!(p[2].1, "repository:a:pull");
    }
}
