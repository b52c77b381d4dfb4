//! kcradle's vhost-user frontend and virtio-pci transport against the real
//! blk-lv daemon on this host, driven through the MMIO bus the way a guest
//! driver would (no guest runs: this host's KVM emulates ring 0). Checks
//! the handshake, config, activation, and that a daemon that disconnects
//! leaves its device NEEDS_RESET.

use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cradle_vmm::exit::ExitSignal;
use cradle_vmm::irq::GsiRouter;
use cradle_vmm::launch::{add_virtio_device, platform_buses};
use cradle_vmm::pci::{PciRoot, PCI_MMIO_START};
use cradle_vmm::vcpu::Buses;
use cradle_vmm::virtio::vhost_user::{DeviceSpec, VhostUserDevice};
use cradle_vmm::virtio::{STATUS_DRIVER_OK, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use cradle_vmm::vm::{Vm, VmSpec};

const KCRADLE: &str = env!("CARGO_BIN_EXE_kcradle");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn blk_lv(sock: &Path, image: &Path) -> Daemon {
    let bin = Path::new(KCRADLE).with_file_name("blk-lv");
    assert!(
        bin.exists(),
        "{} missing: cargo build -p blk-lv",
        bin.display()
    );
    Daemon(
        Command::new(bin)
            .args([
                "--socket",
                sock.to_str().unwrap(),
                "--path",
                image.to_str().unwrap(),
            ])
            .args(["--sandbox", "none", "--seccomp", "none"])
            .spawn()
            .unwrap(),
    )
}

fn w(buses: &Buses, addr: u64, data: &[u8]) {
    buses.mmio.lock().unwrap().write(addr, data);
}

fn r(buses: &Buses, addr: u64, len: usize) -> u64 {
    let mut b = vec![0u8; len];
    buses.mmio.lock().unwrap().read(addr, &mut b);
    b.resize(8, 0);
    u64::from_le_bytes(b.try_into().unwrap())
}

#[test]
fn blk_lv_is_activated_and_its_disconnect_marks_needs_reset() {
    if !Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let sock = dir.path().join("blk.sock");
    let mut daemon = blk_lv(&sock, &image);

    let vm = Vm::new(&VmSpec {
        cpus: 1,
        memory: 64 << 20,
        hugepages: false,
    })
    .unwrap();
    let exit = Arc::new(ExitSignal::new());
    let console = cradle_vmm::devices::serial::SerialConsole::new(std::io::sink()).unwrap();
    let pci = Arc::new(Mutex::new(PciRoot::new()));
    let buses = platform_buses(
        Arc::new(Mutex::new(console)),
        pci.clone(),
        &exit,
        Instant::now(),
    )
    .unwrap();
    let router = Arc::new(Mutex::new(GsiRouter::new()));
    let backend = VhostUserDevice::connect(
        &sock,
        DeviceSpec::blk(1, 128),
        vm.memory().clone(),
        Duration::from_secs(10),
    )
    .unwrap();
    add_virtio_device(&vm, &pci, &buses, &router, 0, Box::new(backend), &None).unwrap();
    let bar = PCI_MMIO_START;

    // Device config: capacity in 512-byte sectors, from the daemon.
    assert_eq!(r(&buses, bar + 0x2000, 8), (8 << 20) / 512);
    // Features: take what is offered (VERSION_1 included).
    w(&buses, bar, &0u32.to_le_bytes());
    let lo = r(&buses, bar + 4, 4);
    w(&buses, bar, &1u32.to_le_bytes());
    let hi = r(&buses, bar + 4, 4);
    assert_eq!(hi & 1, 1, "VERSION_1");
    w(&buses, bar + 20, &[1 | 2]);
    w(&buses, bar + 8, &0u32.to_le_bytes());
    w(&buses, bar + 12, &(lo as u32).to_le_bytes());
    w(&buses, bar + 8, &1u32.to_le_bytes());
    w(&buses, bar + 12, &(hi as u32).to_le_bytes());
    w(&buses, bar + 20, &[1 | 2 | STATUS_FEATURES_OK]);
    assert_eq!(
        r(&buses, bar + 20, 1) as u8 & STATUS_FEATURES_OK,
        STATUS_FEATURES_OK
    );
    // Queue 0: 128 entries, rings in guest RAM, vector 0.
    w(&buses, bar + 22, &0u16.to_le_bytes());
    w(&buses, bar + 24, &128u16.to_le_bytes());
    w(&buses, bar + 26, &0u16.to_le_bytes());
    w(&buses, bar + 32, &0x10_0000u32.to_le_bytes());
    w(&buses, bar + 40, &0x10_1000u32.to_le_bytes());
    w(&buses, bar + 48, &0x10_2000u32.to_le_bytes());
    w(&buses, bar + 28, &1u16.to_le_bytes());
    w(
        &buses,
        bar + 20,
        &[1 | 2 | STATUS_FEATURES_OK | STATUS_DRIVER_OK],
    );
    let status = r(&buses, bar + 20, 1) as u8;
    assert_eq!(status & STATUS_NEEDS_RESET, 0, "blk-lv accepted the rings");
    assert_ne!(status & STATUS_DRIVER_OK, 0);
    let generation = r(&buses, bar + 21, 1);

    // The daemon dies: the device is marked, the VM would run on.
    daemon.0.kill().unwrap();
    daemon.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while r(&buses, bar + 20, 1) as u8 & STATUS_NEEDS_RESET == 0 {
        assert!(Instant::now() < deadline, "NEEDS_RESET never set");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_ne!(
        r(&buses, bar + 21, 1),
        generation,
        "config generation moves"
    );
    assert!(!exit.is_raised());
}
