//! Image references on the command line and in `FROM`.

use std::path::{Path, PathBuf};

use crate::error::{ImageError, Result};
use crate::image::Image;

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageRef {
    /// `docker-archive:PATH[:NAME[:TAG]]`
    DockerArchive {
        /// The tarball.
        path: PathBuf,
        /// Which of its images, by repo tag.
        reference: Option<String>,
    },
    /// `oci:PATH[:TAG]`
    OciLayout {
        /// The layout directory.
        path: PathBuf,
        /// The tag (`org.opencontainers.image.ref.name`).
        tag: Option<String>,
    },
    /// `docker://HOST/REPO[:TAG]` or a bare `REPO[:TAG]`: a registry.
    Registry(String),
}

/// Splits `PATH[:REST]`: the longest prefix that exists on disk is the
/// path (paths may contain `:`); otherwise everything up to the first `:`.
fn split_path(s: &str, base: &Path, must_be_dir: bool) -> (PathBuf, Option<String>) {
    let exists = |p: &str| {
        let full = base.join(p);
        if must_be_dir {
            full.is_dir()
        } else {
            full.is_file()
        }
    };
    if exists(s) {
        return (base.join(s), None);
    }
    let mut cut = s.len();
    while let Some(i) = s[..cut].rfind(':') {
        if exists(&s[..i]) {
            return (base.join(&s[..i]), Some(s[i + 1..].to_string()));
        }
        cut = i;
    }
    match s.split_once(':') {
        Some((p, r)) => (base.join(p), Some(r.to_string())),
        None => (base.join(s), None),
    }
}

impl ImageRef {
    /// Parses a reference; relative paths are taken relative to `base`.
    pub fn parse(s: &str, base: &Path) -> Result<Self> {
        let bad = |why: &str| ImageError::BadReference(s.to_string(), why.to_string());
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            if rest.is_empty() {
                return Err(bad("missing path"));
            }
            let (path, reference) = split_path(rest, base, false);
            return Ok(ImageRef::DockerArchive {
                path,
                reference: reference.filter(|r| !r.is_empty()),
            });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            if rest.is_empty() {
                return Err(bad("missing path"));
            }
            let (path, tag) = split_path(rest, base, true);
            return Ok(ImageRef::OciLayout {
                path,
                tag: tag.filter(|t| !t.is_empty()),
            });
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            if rest.is_empty() {
                return Err(bad("missing repository"));
            }
            return Ok(ImageRef::Registry(rest.to_string()));
        }
        if s.is_empty() || s.contains(char::is_whitespace) || s.contains("..") {
            return Err(bad("not a docker-archive:, oci: or registry reference"));
        }
        Ok(ImageRef::Registry(s.to_string()))
    }

    /// Opens a local image; a registry reference needs
    /// [`open_with`](Self::open_with) (it has to store layers somewhere).
    pub fn open(&self) -> Result<Image> {
        match self {
            ImageRef::DockerArchive { path, reference } => {
                crate::docker_archive::open(path, reference.as_deref())
            }
            ImageRef::OciLayout { path, tag } => crate::oci_layout::open(path, tag.as_deref()),
            ImageRef::Registry(r) => Err(ImageError::Unsupported(format!(
                "registry reference {r} without pull options"
            ))),
        }
    }

    /// Opens any image; registry layers are downloaded into
    /// `pull.cache_dir`.
    pub fn open_with(&self, pull: &crate::registry::PullOptions) -> Result<Image> {
        match self {
            ImageRef::Registry(r) => {
                let r = crate::registry::Reference::parse(r, &pull.default_registry)?;
                crate::registry::pull(&r, pull)
            }
            local => local.open(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        std::fs::create_dir(base.join("lay:out")).unwrap();
        std::fs::write(base.join("img.tar"), "").unwrap();
        assert_eq!(
            ImageRef::parse("oci:lay:out:v1", base).unwrap(),
            ImageRef::OciLayout {
                path: base.join("lay:out"),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:lay:out", base).unwrap(),
            ImageRef::OciLayout {
                path: base.join("lay:out"),
                tag: None
            }
        );
        assert_eq!(
            ImageRef::parse("docker-archive:img.tar:busybox:1", base).unwrap(),
            ImageRef::DockerArchive {
                path: base.join("img.tar"),
                reference: Some("busybox:1".into())
            }
        );
        assert_eq!(
            ImageRef::parse("/abs/x.tar", base).unwrap(),
            ImageRef::Registry("/abs/x.tar".into())
        );
        assert!(ImageRef::parse("oci:", base).is_err());
        assert!(ImageRef::parse("a b", base).is_err());
        assert!(matches!(
            ImageRef::parse("docker://127.0.0.1:5000/x", base)
                .unwrap()
                .open(),
            Err(ImageError::Unsupported(_))
        ));
    }
}
