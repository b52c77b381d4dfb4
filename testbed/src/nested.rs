//! `NestedHost`: an L1 Linux under QEMU TCG with an emulated AMD SVM CPU, so
//! KVM works inside it. The VMM's end-to-end tests run `kcradle` in L1 and
//! boot an L2 guest on L1's `/dev/kvm`.

use std::path::Path;
use std::time::Duration;

use crate::{GuestRun, Kernel, QemuGuest, TestbedError};

/// Guest path where [`NestedHost::l2_kernel`] puts the L2 kernel.
pub const L2_KERNEL: &str = "/l2/vmlinuz";
/// Guest path where [`NestedHost::l2_vmlinux`] puts the L2 kernel's ELF.
pub const L2_VMLINUX: &str = "/l2/vmlinux";
/// Guest path where [`NestedHost::l2_initramfs`] puts the L2 initramfs.
pub const L2_INITRAMFS: &str = "/l2/initrd";

/// Firmware QEMU's microvm machine loads.
const QEMU_MICROVM_BIOS: &str = "/usr/share/qemu/bios-microvm.bin";

/// An L1 host with KVM. Files and binaries given here are copied into L1;
/// the script runs in L1 after `kvm_amd` is loaded and `/dev/kvm` exists.
///
/// ```no_run
/// use cradle_testbed::NestedHost;
/// let run = NestedHost::new()
///     .binary("/usr/local/bin/kcradle")
///     .run("kcradle probe-kvm")?;
/// assert!(run.output.contains("serial: cradle-kvm-ok"));
/// # Ok::<(), cradle_testbed::TestbedError>(())
/// ```
#[derive(Debug, Clone)]
pub struct NestedHost {
    guest: QemuGuest,
}

impl Default for NestedHost {
    fn default() -> Self {
        Self::new()
    }
}

impl NestedHost {
    /// L1 with one vCPU, 2 GiB, SVM and nested paging, a 300 s timeout.
    pub fn new() -> Self {
        NestedHost {
            guest: QemuGuest::new()
                .cpu_model("qemu64,+svm,+npt")
                .memory_mib(2048)
                .modules(&["kvm_amd"])
                .timeout(Duration::from_secs(300)),
        }
    }

    /// Gives access to the underlying L1 guest configuration (devices,
    /// vCPUs, memory, timeout).
    pub fn configure(mut self, f: impl FnOnce(QemuGuest) -> QemuGuest) -> Self {
        self.guest = f(self.guest);
        self
    }

    /// Copies a host binary (and its libraries) into L1 at the same path.
    pub fn binary(mut self, host: impl AsRef<Path>) -> Self {
        self.guest = self.guest.binary(host);
        self
    }

    /// Like [`NestedHost::binary`], installed at `guest` in L1.
    pub fn binary_at(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.guest = self.guest.binary_at(host, guest);
        self
    }

    /// Copies a host file into L1 for this run.
    pub fn file(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.guest = self.guest.file(host, guest);
        self
    }

    /// Puts the ELF `vmlinux` inside `kernel`'s bzImage at [`L2_VMLINUX`]
    /// in L1 (for ELF/PVH boot).
    pub fn l2_vmlinux(mut self, kernel: &Kernel) -> Result<Self, TestbedError> {
        self.guest = self.guest.cached_file(kernel.vmlinux()?, L2_VMLINUX);
        Ok(self)
    }

    /// Puts `kernel`'s image at [`L2_KERNEL`] in L1.
    pub fn l2_kernel(mut self, kernel: &Kernel) -> Self {
        self.guest = self.guest.cached_file(&kernel.image, L2_KERNEL);
        self
    }

    /// Puts an initramfs for L2 at [`L2_INITRAMFS`] in L1.
    pub fn l2_initramfs(mut self, path: impl AsRef<Path>) -> Self {
        self.guest = self.guest.cached_file(path, L2_INITRAMFS);
        self
    }

    /// Copies QEMU (`qemu-system-x86_64` and the microvm firmware) into L1,
    /// so a script can boot the peer VMM: `qemu-system-x86_64 -M microvm
    /// -accel kvm ...`.
    pub fn with_qemu(mut self) -> Self {
        self.guest = self
            .guest
            .binary("/usr/bin/qemu-system-x86_64")
            .cached_file(QEMU_MICROVM_BIOS, QEMU_MICROVM_BIOS);
        self
    }

    /// Runs `script` in L1; fails if `/dev/kvm` did not appear or the script
    /// exits nonzero.
    pub fn run(&self, script: &str) -> Result<GuestRun, TestbedError> {
        self.guest.run(&Self::wrap(script))
    }

    /// Runs `script` in L1 and returns whatever status it exited with
    /// (status 97 means `/dev/kvm` never appeared).
    pub fn run_status(&self, script: &str) -> Result<GuestRun, TestbedError> {
        self.guest.run_status(&Self::wrap(script))
    }

    fn wrap(script: &str) -> String {
        format!(
            "if [ ! -c /dev/kvm ]; then echo 'nested: /dev/kvm missing in L1 (kvm_amd did not load)'; exit 97; fi\n{script}"
        )
    }
}
