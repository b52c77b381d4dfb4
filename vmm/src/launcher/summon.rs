//! `kcradle summon DIR IMAGE`: from an image to a bundle.
//!
//! Everything is built in a hidden sibling directory (`.NAME.summon-XXXX`)
//! and renamed to `DIR` only at the end, with `RENAME_NOREPLACE`, so a
//! failed or interrupted summon leaves no `DIR`, and two summons racing
//! for the same `DIR` cannot both win. Volumes created outside the bundle
//! (a new GFS directory, an LV file under `--lv-root`) are removed again
//! when summon fails after creating them.

use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use cradle_image::registry::{pull, Progress, PullOptions, Reference};
use cradle_image::{Image, ImageError, ImageRef, UnpackOptions};

use super::bundle::{Bundle, BundleImage, BundleVolume, Layout, BUNDLE_VERSION};
use super::pod::{self, ProcessOverrides};
use super::spec::{PublishSpec, VolumeSpec};
use super::state::StateDir;
use crate::config::MIN_MEMORY;

/// Everything `kcradle summon` was asked for.
#[derive(Clone, Debug)]
pub struct SummonOptions {
    /// The bundle directory to create.
    pub dir: PathBuf,
    /// The image reference.
    pub image: String,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Volumes.
    pub volumes: Vec<VolumeSpec>,
    /// Published ports.
    pub publish: Vec<PublishSpec>,
    /// Entrypoint, cmd and env overrides.
    pub process: ProcessOverrides,
    /// Root of GFS volumes; `STATE/gfs` when absent.
    pub gfs_root: Option<PathBuf>,
    /// Where LV files go; `DIR/volumes` when absent.
    pub lv_root: Option<PathBuf>,
    /// Registry for references without a host.
    pub default_registry: String,
    /// The state directory (layer cache, default GFS root).
    pub state: StateDir,
}

/// Why summon failed; nothing of the bundle is left behind.
#[derive(Debug, thiserror::Error)]
pub enum SummonError {
    /// The options contradict each other or the machine.
    #[error("{0}")]
    Invalid(String),
    /// The bundle directory exists already.
    #[error("{0}: already exists")]
    Exists(PathBuf),
    /// The image could not be read, pulled or unpacked.
    #[error("image {reference}: {source}")]
    Image {
        /// The reference given.
        reference: String,
        /// What went wrong.
        source: ImageError,
    },
    /// Writing the bundle failed.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
}

impl SummonError {
    /// 2 for anything about the input (options, image, registry), 1 for
    /// a failure of this machine (writing files).
    pub fn exit_code(&self) -> u8 {
        match self {
            SummonError::Io(..) => 1,
            _ => 2,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SummonError + '_ {
    move |e| SummonError::Io(path.to_path_buf(), e)
}

/// Paths created outside the bundle, removed on drop unless disarmed.
#[derive(Default)]
struct Undo {
    dirs: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Drop for Undo {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// A pod id from the bundle's directory name: `[A-Za-z0-9_.-]`, other
/// characters become `-`.
pub fn pod_id(dir: &Path) -> String {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    if id.is_empty() || id.starts_with('.') {
        id.insert_str(0, "pod");
    }
    id
}

fn check_options(o: &SummonOptions) -> Result<(), SummonError> {
    let bad = |m: String| Err(SummonError::Invalid(m));
    if o.cpus == 0 {
        return bad("--cpus must be at least 1".into());
    }
    if o.memory < MIN_MEMORY {
        return bad(format!(
            "--memory {}M is below the minimum of {}M",
            o.memory >> 20,
            MIN_MEMORY >> 20
        ));
    }
    let mut names = std::collections::HashSet::new();
    let mut mounts = std::collections::HashSet::new();
    let mut serials = std::collections::HashSet::new();
    for v in &o.volumes {
        // Its daemon would be fs-rootfs, the image's own (socket, log, unit).
        if matches!(v, VolumeSpec::Gfs { .. }) && v.name() == pod::ROOTFS_TAG {
            return bad(format!(
                "GFS volume name {:?} is reserved for the image",
                pod::ROOTFS_TAG
            ));
        }
        if !names.insert(v.name().to_string()) {
            return bad(format!("volume name {:?} is used twice", v.name()));
        }
        let mp = match v {
            VolumeSpec::Gfs { mount_point, .. } | VolumeSpec::Lv { mount_point, .. } => mount_point,
        };
        if !mounts.insert(mp.clone()) {
            return bad(format!("mount point {} is used twice", mp.display()));
        }
        if matches!(v, VolumeSpec::Lv { .. }) && !serials.insert(pod::lv_serial(v.name())) {
            return bad(format!(
                "LV volume {:?}: its first 17 characters clash with another LV volume",
                v.name()
            ));
        }
    }
    let mut ports = std::collections::HashSet::new();
    for p in &o.publish {
        if !ports.insert((p.host_port, p.proto)) {
            return bad(format!(
                "host port {}/{} is published twice",
                p.host_port,
                p.proto.as_str()
            ));
        }
    }
    Ok(())
}

/// Opens or pulls the image.
fn open_image(o: &SummonOptions, progress: Option<Progress>) -> Result<Image, SummonError> {
    let wrap = |source| SummonError::Image {
        reference: o.image.clone(),
        source,
    };
    let cwd = std::env::current_dir().map_err(io(Path::new(".")))?;
    match ImageRef::parse(&o.image, &cwd).map_err(wrap)? {
        ImageRef::Registry(r) => {
            let r = Reference::parse(&r, &o.default_registry).map_err(wrap)?;
            let mut opts = PullOptions::new(o.state.blobs());
            opts.default_registry = o.default_registry.clone();
            opts.progress = progress;
            pull(&r, &opts).map_err(wrap)
        }
        local => local.open().map_err(wrap),
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(from)?, c(to)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the
    // call; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates the volumes; paths are the final ones (inside `dir` for the
/// default LV root), files are made in `staging` when they live there.
fn make_volumes(
    o: &SummonOptions,
    dir: &Path,
    staging: &Path,
    undo: &mut Undo,
) -> Result<Vec<BundleVolume>, SummonError> {
    let mut out = Vec::new();
    for v in &o.volumes {
        match v {
            VolumeSpec::Gfs {
                name,
                mount_point,
                read_only,
            } => {
                let root = o.gfs_root.clone().unwrap_or_else(|| o.state.gfs());
                let path = root.join(name);
                if !path.is_dir() {
                    let mut missing = Vec::new();
                    let mut p = path.as_path();
                    while !p.exists() {
                        missing.push(p.to_path_buf());
                        match p.parent() {
                            Some(parent) => p = parent,
                            None => break,
                        }
                    }
                    fs::create_dir_all(&path).map_err(io(&path))?;
                    undo.dirs.extend(missing.into_iter().rev());
                }
                out.push(BundleVolume::Gfs {
                    name: name.clone(),
                    host_path: path,
                    mount_point: mount_point.clone(),
                    read_only: *read_only,
                });
            }
            VolumeSpec::Lv {
                name,
                size,
                mount_point,
            } => {
                let file = format!("{name}.img");
                let (final_path, make_at) = match &o.lv_root {
                    Some(root) => (root.join(&file), root.join(&file)),
                    None => (
                        Layout::new(dir).volumes().join(&file),
                        Layout::new(staging).volumes().join(&file),
                    ),
                };
                if let Some(parent) = make_at.parent() {
                    if !parent.is_dir() {
                        if o.lv_root.is_some() {
                            return Err(SummonError::Invalid(format!(
                                "--lv-root {}: not a directory",
                                parent.display()
                            )));
                        }
                        fs::create_dir_all(parent).map_err(io(parent))?;
                    }
                }
                match fs::metadata(&make_at) {
                    Ok(m) if m.len() == *size => {} // an existing volume, reused
                    Ok(m) => {
                        return Err(SummonError::Invalid(format!(
                            "LV volume {}: exists with {} bytes, not the {size} asked for",
                            make_at.display(),
                            m.len()
                        )))
                    }
                    Err(_) => {
                        let f = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&make_at)
                            .map_err(io(&make_at))?;
                        undo.files.push(make_at.clone());
                        f.set_len(*size).map_err(io(&make_at))?;
                    }
                }
                out.push(BundleVolume::Lv {
                    name: name.clone(),
                    host_path: final_path,
                    size: *size,
                    mount_point: mount_point.clone(),
                });
            }
        }
    }
    Ok(out)
}

fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<(), SummonError> {
    let mut data = serde_json::to_vec_pretty(v)
        .map_err(|e| SummonError::Io(path.to_path_buf(), std::io::Error::other(e)))?;
    data.push(b'\n');
    fs::write(path, data).map_err(io(path))
}

/// Makes the bundle. On error nothing of it exists.
pub fn summon(o: &SummonOptions, progress: Option<Progress>) -> Result<Bundle, SummonError> {
    check_options(o)?;
    let cwd = std::env::current_dir().map_err(io(Path::new(".")))?;
    let dir = cwd.join(&o.dir);
    if dir.symlink_metadata().is_ok() {
        return Err(SummonError::Exists(o.dir.clone()));
    }
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(SummonError::Invalid(format!(
            "{}: not a directory name",
            o.dir.display()
        )));
    };
    if !parent.is_dir() {
        return Err(SummonError::Invalid(format!(
            "{}: parent directory does not exist",
            o.dir.display()
        )));
    }
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.summon-", name.to_string_lossy()))
        .tempdir_in(parent)
        .map_err(io(parent))?;
    let st = Layout::new(staging.path());

    let image = open_image(o, progress)?;
    let rootfs = st.rootfs();
    fs::create_dir(&rootfs).map_err(io(&rootfs))?;
    image
        .unpack(&rootfs, &UnpackOptions::default())
        .map_err(|source| SummonError::Image {
            reference: o.image.clone(),
            source,
        })?;

    let process = pod::process(&image.config, &o.process);
    if process["entrypoint"]
        .as_array()
        .is_none_or(|a| a.is_empty())
        && process["cmd"].as_array().is_none_or(|a| a.is_empty())
    {
        return Err(SummonError::Invalid(
            "the image has no entrypoint or cmd; give --entrypoint or --cmd".into(),
        ));
    }
    let mut undo = Undo::default();
    let volumes = make_volumes(o, &dir, staging.path(), &mut undo)?;
    let id = pod_id(&dir);
    write_json(
        &st.pod_json(),
        &pod::pod_config(&id, &o.image, process, &volumes),
    )?;
    write_json(&st.image_json(), &image.config)?;
    let bundle = Bundle {
        version: BUNDLE_VERSION,
        id,
        image: BundleImage {
            reference: o.image.clone(),
            layers: image.layers.len(),
        },
        cpus: o.cpus,
        memory_mib: o.memory >> 20,
        volumes,
        publish: o.publish.clone(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    write_json(&st.bundle_json(), &bundle)?;
    for d in [st.run(), st.logs()] {
        fs::create_dir_all(&d).map_err(io(&d))?;
    }
    rename_noreplace(staging.path(), &dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            SummonError::Exists(o.dir.clone())
        } else {
            SummonError::Io(dir.clone(), e)
        }
    })?;
    // The staging directory is now DIR: do not let its guard remove it.
    let _ = staging.keep();
    std::mem::take(&mut undo.dirs);
    std::mem::take(&mut undo.files);
    Ok(bundle)
}
