//! The pod: its containers' roots, their supervisors, the exit status rule
//! and the orderly stop.
//!
//! Exit status of the pod: the exit code of the first critical container
//! to end for good; without one, when every container has ended, 0 if all
//! exited 0, else the code of the first failed container in config order;
//! when stopped from outside (SIGTERM/SIGINT to cradle-init), 128+signal.

use crate::config::{ContainerConfig, PodConfig, RootfsSource, VolumeConfig, VolumeSource};
use crate::container::Container;
use crate::exec::Exec;
use crate::rootfs::{self, PreparedRoot, RootfsSpec};
use chrono::{DateTime, Utc};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Events worth telling the VMM about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// A container's command was exec'd.
    ContainerStarted,
}

/// Why a pod could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A container's rootfs.
    #[error("container {0}: {1}")]
    Rootfs(String, rootfs::RootfsError),
    /// A source this mode cannot provide.
    #[error("{0}")]
    Source(String),
    /// Run directory trouble.
    #[error("run directory {0}: {1}")]
    RunDir(PathBuf, std::io::Error),
}

/// Turns config sources into directories: the host-mode resolver handles
/// `dir` and `tmpfs`; PID-1 mode adds virtiofs and block devices.
pub trait Sources {
    /// Directory of an image rootfs.
    fn image(&self, src: &RootfsSource) -> Result<PathBuf, PodError>;
    /// Directory of a volume that is not a tmpfs.
    fn volume(&self, v: &VolumeConfig) -> Result<PathBuf, PodError>;
}

/// Host mode: only local directories.
pub struct HostSources;

impl Sources for HostSources {
    fn image(&self, src: &RootfsSource) -> Result<PathBuf, PodError> {
        match src {
            RootfsSource::Dir(p) => Ok(p.clone()),
            RootfsSource::Virtiofs(tag) => Err(PodError::Source(format!(
                "image rootfs virtiofs tag {tag:?} is only available inside a VM"
            ))),
        }
    }
    fn volume(&self, v: &VolumeConfig) -> Result<PathBuf, PodError> {
        match &v.source {
            VolumeSource::Dir { path } => Ok(path.clone()),
            _ => Err(PodError::Source(format!(
                "volume {:?}: only dir and tmpfs volumes exist in host mode",
                v.name
            ))),
        }
    }
}

/// A running pod.
pub struct Pod {
    /// Its config.
    pub config: PodConfig,
    /// Its containers, in config order.
    pub containers: Vec<Arc<Container>>,
    /// Exec instances by id.
    pub execs: Mutex<HashMap<String, Arc<Exec>>>,
    /// When it started.
    pub started: DateTime<Utc>,
    /// The pod's addresses (for `/etc/hosts` and vdocker).
    pub addresses: Vec<IpAddr>,
    roots: Mutex<Vec<PreparedRoot>>,
    tmpfs: Mutex<Vec<PathBuf>>,
    run_dir: PathBuf,
    stop: watch::Sender<Option<i32>>,
}

impl Pod {
    /// Prepares every container's rootfs under `run_dir`.
    pub fn create(
        config: PodConfig,
        run_dir: &Path,
        sources: &dyn Sources,
        mirror: bool,
        milestone: Arc<dyn Fn(Milestone) + Send + Sync>,
    ) -> Result<Arc<Self>, PodError> {
        std::fs::create_dir_all(run_dir).map_err(|e| PodError::RunDir(run_dir.into(), e))?;
        let addresses: Vec<IpAddr> = config
            .network
            .interfaces
            .iter()
            .flat_map(|i| i.addresses.iter())
            .filter_map(|a| crate::config::parse_cidr(a).ok().map(|(ip, _)| ip))
            .collect();
        let mut pod = Pod {
            containers: Vec::new(),
            execs: Mutex::new(HashMap::new()),
            started: Utc::now(),
            addresses,
            roots: Mutex::new(Vec::new()),
            tmpfs: Mutex::new(Vec::new()),
            run_dir: run_dir.to_path_buf(),
            stop: watch::channel(None).0,
            config: config.clone(),
        };
        match pod.build(&config, sources, mirror, milestone) {
            Ok(()) => Ok(Arc::new(pod)),
            Err(e) => {
                pod.release();
                Err(e)
            }
        }
    }

    fn build(
        &mut self,
        config: &PodConfig,
        sources: &dyn Sources,
        mirror: bool,
        milestone: Arc<dyn Fn(Milestone) + Send + Sync>,
    ) -> Result<(), PodError> {
        let mut volume_dirs = HashMap::new();
        for v in &config.volumes {
            let dir = match v.source {
                VolumeSource::Tmpfs => {
                    let d = self.run_dir.join("volumes").join(&v.name);
                    std::fs::create_dir_all(&d).map_err(|e| PodError::RunDir(d.clone(), e))?;
                    mount(
                        Some("tmpfs"),
                        &d,
                        Some("tmpfs"),
                        MsFlags::empty(),
                        Some("mode=755"),
                    )
                    .map_err(|e| PodError::Source(format!("tmpfs volume {}: {e}", v.name)))?;
                    self.lock_tmpfs().push(d.clone());
                    d
                }
                _ => sources.volume(v)?,
            };
            volume_dirs.insert(v.name.clone(), dir);
        }
        let hostname = config.hostname().to_string();
        let etc = |c: &ContainerConfig| {
            let _ = c;
            [
                ("hostname", format!("{hostname}\n")),
                ("hosts", rootfs::hosts_file(&hostname, &self.addresses)),
                (
                    "resolv.conf",
                    rootfs::resolv_conf(&config.network.nameservers, &config.network.search),
                ),
            ]
        };
        let mut containers = Vec::new();
        for c in &config.containers {
            let image = sources.image(&c.image.rootfs)?;
            let upper = c
                .image
                .upper_volume
                .as_ref()
                .and_then(|v| volume_dirs.get(v))
                .map(|d| d.join(&c.name));
            let spec = RootfsSpec {
                image: &image,
                overlay: c.image.overlay,
                upper: upper.as_deref(),
                etc: etc(c),
                volumes: config
                    .volumes
                    .iter()
                    .filter_map(|v| {
                        let at = v.mount_point.clone()?;
                        Some((volume_dirs.get(&v.name)?.clone(), at, v.read_only))
                    })
                    .collect(),
            };
            let root = PreparedRoot::prepare(&self.run_dir.join(&c.name), &spec)
                .map_err(|e| PodError::Rootfs(c.name.clone(), e))?;
            let m = milestone.clone();
            containers.push(Arc::new(Container::new(
                &config.id,
                c.clone(),
                &hostname,
                root.rootfs.clone(),
                1 << 20,
                mirror,
                Box::new(move || m(Milestone::ContainerStarted)),
            )));
            self.roots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(root);
        }
        self.containers = containers;
        Ok(())
    }

    fn lock_tmpfs(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.tmpfs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Finds a container by full id, unique id prefix, or name (with or
    /// without Docker's leading `/`).
    pub fn find(&self, key: &str) -> Option<Arc<Container>> {
        let key = key.strip_prefix('/').unwrap_or(key);
        if let Some(c) = self.containers.iter().find(|c| c.name() == key) {
            return Some(c.clone());
        }
        let mut hits = self.containers.iter().filter(|c| c.id.starts_with(key));
        match (hits.next(), hits.next()) {
            (Some(c), None) if !key.is_empty() => Some(c.clone()),
            _ => None,
        }
    }

    /// Asks the pod to stop with exit status `status`.
    pub fn request_stop(&self, status: i32) {
        self.stop.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(status);
                true
            } else {
                false
            }
        });
    }

    /// Runs the containers until the pod ends; stops what still runs and
    /// releases the roots. Returns the pod's exit status.
    pub async fn run(self: &Arc<Self>) -> i32 {
        let mut set = tokio::task::JoinSet::new();
        for (i, c) in self.containers.iter().enumerate() {
            let c = c.clone();
            set.spawn(async move { (i, c.clone().supervise().await) });
        }
        let mut results: Vec<Option<i32>> = vec![None; self.containers.len()];
        let mut stop = self.stop.subscribe();
        let status = loop {
            tokio::select! {
                r = set.join_next() => match r {
                    None => {
                        break results
                            .iter()
                            .flatten()
                            .copied()
                            .find(|c| *c != 0)
                            .unwrap_or(0);
                    }
                    Some(Ok((i, code))) => {
                        results[i] = Some(code);
                        if self.containers[i].config.critical {
                            tracing::info!(container = self.containers[i].name(), code, "critical container ended: stopping the pod");
                            break code;
                        }
                    }
                    Some(Err(e)) => tracing::error!("supervisor failed: {e}"),
                },
                r = stop.wait_for(|s| s.is_some()) => {
                    break r.map(|s| s.unwrap_or(0)).unwrap_or(0);
                }
            }
        };
        self.stop_all().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while set.join_next().await.is_some() {}
        })
        .await;
        self.release();
        status
    }

    /// SIGTERM to every container, SIGKILL after the grace period.
    pub async fn stop_all(&self) {
        let grace = Duration::from_secs(self.config.shutdown_grace_secs);
        futures_util::future::join_all(self.containers.iter().map(|c| c.shutdown(grace))).await;
    }

    fn release(&self) {
        let mut roots = self.roots.lock().unwrap_or_else(|p| p.into_inner());
        for mut r in roots.drain(..) {
            r.release();
        }
        for d in self.lock_tmpfs().drain(..) {
            let _ = umount2(&d, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}
