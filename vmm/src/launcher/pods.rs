//! Running pods: one record per `kcradle run` in `STATE/pods/ID.json`,
//! which `kcradle ps` lists and `kcradle stop` uses to find the process.
//! A record whose process is gone (kcradle was SIGKILLed) is stale: it is
//! ignored and pruned.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::net::MAX_PODS;
use super::state::StateDir;

/// `STATE/pods/ID.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Pod id.
    pub id: String,
    /// Bundle directory (absolute).
    pub dir: PathBuf,
    /// PID of `kcradle run`.
    pub pid: u32,
    /// Network allocation index.
    pub net_index: u32,
    /// Guest address.
    pub address: String,
    /// Seconds since the epoch when started.
    pub started: u64,
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

impl PodRecord {
    fn path(state: &StateDir, id: &str) -> PathBuf {
        state.pods().join(format!("{id}.json"))
    }

    /// Live records, pruning stale ones.
    pub fn list(state: &StateDir) -> Vec<PodRecord> {
        let Ok(rd) = fs::read_dir(state.pods()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match fs::read(&p)
                .ok()
                .and_then(|raw| serde_json::from_slice::<PodRecord>(&raw).ok())
            {
                Some(r) if alive(r.pid) => out.push(r),
                _ => {
                    let _ = fs::remove_file(&p);
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The live record of bundle `dir`, if it runs.
    pub fn find(state: &StateDir, dir: &Path) -> Option<PodRecord> {
        Self::list(state).into_iter().find(|r| r.dir == dir)
    }

    /// Lowest network index no live pod uses.
    pub fn free_index(state: &StateDir) -> Option<u32> {
        let used: std::collections::HashSet<u32> =
            Self::list(state).iter().map(|r| r.net_index).collect();
        (0..MAX_PODS).find(|i| !used.contains(i))
    }

    /// Writes the record atomically; fails when a live pod has this id.
    pub fn create(&self, state: &StateDir) -> std::io::Result<()> {
        fs::create_dir_all(state.pods())?;
        let path = Self::path(state, &self.id);
        if let Some(other) = fs::read(&path)
            .ok()
            .and_then(|raw| serde_json::from_slice::<PodRecord>(&raw).ok())
        {
            if alive(other.pid) && other.pid != self.pid {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("pod {} already runs (pid {})", self.id, other.pid),
                ));
            }
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        fs::rename(&tmp, &path)
    }

    /// Removes the record.
    pub fn remove(&self, state: &StateDir) {
        let _ = fs::remove_file(Self::path(state, &self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_list_find_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir {
            root: dir.path().into(),
        };
        let me = PodRecord {
            id: "a".into(),
            dir: "/b/a".into(),
            pid: std::process::id(),
            net_index: 0,
            address: "169.254.128.2".into(),
            started: 1,
        };
        me.create(&state).unwrap();
        let dead = PodRecord {
            id: "z".into(),
            pid: u32::MAX - 1,
            net_index: 1,
            ..me.clone()
        };
        fs::write(
            state.pods().join("z.json"),
            serde_json::to_vec(&dead).unwrap(),
        )
        .unwrap();
        assert_eq!(PodRecord::list(&state), std::slice::from_ref(&me));
        assert!(!state.pods().join("z.json").exists(), "stale record pruned");
        assert_eq!(PodRecord::find(&state, Path::new("/b/a")), Some(me.clone()));
        assert_eq!(PodRecord::free_index(&state), Some(1));
        me.remove(&state);
        assert!(PodRecord::list(&state).is_empty());
    }
}
