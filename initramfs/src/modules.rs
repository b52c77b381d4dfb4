//! Kernel module lookup and dependency ordering from `modules.dep`, so an
//! initramfs can `insmod` exactly what a guest needs, dependencies first.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::Error;

/// The modules of one installed kernel (`/lib/modules/VERSION`).
#[derive(Debug)]
pub struct ModuleIndex {
    root: PathBuf,
    /// Normalised module name -> (path relative to `root`, direct dependencies).
    modules: HashMap<String, (PathBuf, Vec<String>)>,
    /// Modules compiled into the kernel image: requesting them is a no-op.
    builtin: HashSet<String>,
}

/// Module names use `-` and `_` interchangeably; the kernel treats them alike.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/drivers/virtio/virtio_ring.ko` -> `virtio_ring`.
fn name_of(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    Some(normalise(stem))
}

impl ModuleIndex {
    /// Reads `modules.dep` (and `modules.builtin` when present) under `root`.
    pub fn load(root: &Path) -> Result<Self, Error> {
        let dep_path = root.join("modules.dep");
        let text = fs::read_to_string(&dep_path).map_err(|e| Error::io(&dep_path, e))?;
        let modules = Self::parse_dep(&text);
        let builtin = fs::read_to_string(root.join("modules.builtin"))
            .map(|t| t.lines().filter_map(name_of).collect())
            .unwrap_or_default();
        Ok(ModuleIndex {
            root: root.to_path_buf(),
            modules,
            builtin,
        })
    }

    fn parse_dep(text: &str) -> HashMap<String, (PathBuf, Vec<String>)> {
        text.lines()
            .filter_map(|line| {
                let (module, deps) = line.split_once(':')?;
                let name = name_of(module.trim())?;
                let deps = deps.split_whitespace().filter_map(name_of).collect();
                Some((name, (PathBuf::from(module.trim()), deps)))
            })
            .collect()
    }

    /// The directory this index was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Absolute paths of the `.ko` files needed to load `wanted`, each after
    /// everything it depends on, without duplicates. Built-in modules are
    /// skipped; an unknown module is an error.
    pub fn resolve<S: AsRef<str>>(&self, wanted: &[S]) -> Result<Vec<PathBuf>, Error> {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        for name in wanted {
            self.visit(
                &normalise(name.as_ref()),
                &mut done,
                &mut Vec::new(),
                &mut order,
            )?;
        }
        Ok(order)
    }

    /// Depth-first post-order walk: dependencies land in `order` first.
    fn visit(
        &self,
        name: &str,
        done: &mut HashSet<String>,
        stack: &mut Vec<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(Error::ModuleCycle(name.to_string()));
        }
        let Some((path, deps)) = self.modules.get(name) else {
            if self.builtin.contains(name) {
                done.insert(name.to_string());
                return Ok(());
            }
            return Err(Error::UnknownModule {
                name: name.to_string(),
                root: self.root.clone(),
            });
        };
        let ext = path.to_string_lossy();
        if !ext.ends_with(".ko") {
            return Err(Error::CompressedModule(self.root.join(path)));
        }
        stack.push(name.to_string());
        for dep in deps {
            self.visit(dep, done, stack, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(self.root.join(path));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(dep: &str, builtin: &str) -> (tempfile::TempDir, ModuleIndex) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("modules.dep"), dep).unwrap();
        fs::write(dir.path().join("modules.builtin"), builtin).unwrap();
        let idx = ModuleIndex::load(dir.path()).unwrap();
        (dir, idx)
    }

    const DEP: &str = "\
kernel/fs/fuse/virtiofs.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko kernel/fs/fuse/fuse.ko
kernel/fs/fuse/fuse.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko
kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko
kernel/virt/lib/irqbypass.ko:
";

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| name_of(&p.to_string_lossy()).unwrap())
            .collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let (_d, idx) = index(DEP, "");
        let order = idx.resolve(&["virtio_blk", "virtiofs"]).unwrap();
        assert_eq!(
            names(&order),
            ["virtio_ring", "virtio", "virtio_blk", "fuse", "virtiofs"]
        );
        assert!(order.iter().all(|p| p.starts_with(idx.root())));
    }

    #[test]
    fn dashes_and_underscores_are_the_same_name() {
        let (_d, idx) = index(DEP, "");
        let order = idx.resolve(&["kvm_amd"]).unwrap();
        assert_eq!(names(&order), ["irqbypass", "kvm", "kvm_amd"]);
    }

    #[test]
    fn builtin_modules_are_skipped_and_unknown_ones_fail() {
        let (_d, idx) = index(DEP, "kernel/drivers/net/virtio_net.ko\n");
        assert!(idx.resolve(&["virtio_net"]).unwrap().is_empty());
        let err = idx.resolve(&["no_such_module"]).unwrap_err();
        assert!(err.to_string().contains("no_such_module"), "{err}");
    }

    #[test]
    fn cycles_are_reported() {
        let (_d, idx) = index("a.ko: b.ko\nb.ko: a.ko\n", "");
        assert!(matches!(idx.resolve(&["a"]), Err(Error::ModuleCycle(_))));
    }

    #[test]
    fn the_installed_kernel_resolves_virtio_and_kvm() {
        let Ok(entries) = fs::read_dir("/lib/modules") else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.path().join("modules.dep").exists() {
                continue;
            }
            let idx = ModuleIndex::load(&entry.path()).unwrap();
            let order = idx
                .resolve(&["virtio_pci", "virtio_blk", "kvm_amd"])
                .unwrap();
            for path in &order {
                assert!(path.exists(), "{} listed but missing", path.display());
            }
            let n = names(&order);
            let pos = |m: &str| n.iter().position(|x| x == m);
            if let (Some(ring), Some(blk)) = (pos("virtio_ring"), pos("virtio_blk")) {
                assert!(ring < blk);
            }
        }
    }
}
