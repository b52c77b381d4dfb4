//! The transport driven the way Linux's virtio_pci_modern driver drives
//! it, against a real KVM VM (for the ioeventfds, irqfds and MSI routes)
//! and a backend that records what it is given.

use super::*;
use crate::pci::config::REG_ID;
use crate::virtio::{STATUS_ACKNOWLEDGE, STATUS_DRIVER};

#[derive(Debug, Default)]
struct Record {
    activated: Option<(u64, Vec<(usize, QueueState)>)>,
    resets: usize,
    config_writes: Vec<(u64, Vec<u8>)>,
}

struct Recorder {
    record: Arc<Mutex<Record>>,
    fail: bool,
}

const FEATURES: u64 = VIRTIO_F_VERSION_1 | (1 << 9) | (1 << 2);

impl VirtioBackend for Recorder {
    fn device_type(&self) -> u16 {
        2
    }
    fn features(&self) -> u64 {
        FEATURES
    }
    fn num_queues(&self) -> u16 {
        2
    }
    fn max_queue_size(&self) -> u16 {
        256
    }
    fn config_len(&self) -> u32 {
        8
    }
    fn read_config(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        self.record
            .lock()
            .unwrap()
            .config_writes
            .push((offset, data.to_vec()));
    }
    fn activate(&mut self, features: u64, queues: &[ActiveQueue<'_>]) -> Result<(), String> {
        // The kick eventfd is live: signal it and read it back.
        for q in queues {
            q.kick.write(1).unwrap();
            assert_eq!(q.kick.read().unwrap(), 1);
        }
        let qs = queues.iter().map(|q| (q.index, q.state)).collect();
        self.record.lock().unwrap().activated = Some((features, qs));
        if self.fail {
            Err("backend refused".into())
        } else {
            Ok(())
        }
    }
    fn reset(&mut self) {
        self.record.lock().unwrap().resets += 1;
    }
}

const BAR: u64 = 0xc000_0000;

fn device(fail: bool) -> Option<(VirtioPciDevice, Arc<Mutex<Record>>)> {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: /dev/kvm is absent on this machine");
        return None;
    }
    let kvm = kvm_ioctls::Kvm::new().unwrap();
    let vm = Arc::new(kvm.create_vm().unwrap());
    vm.create_irq_chip().unwrap();
    let record = Arc::new(Mutex::new(Record::default()));
    let backend = Recorder {
        record: record.clone(),
        fail,
    };
    let router = Arc::new(Mutex::new(GsiRouter::new()));
    let dev = VirtioPciDevice::new(Box::new(backend), BAR, vm, router).unwrap();
    Some((dev, record))
}

fn w32(dev: &mut VirtioPciDevice, off: u64, v: u32) {
    dev.write(off, &v.to_le_bytes());
}
fn w16(dev: &mut VirtioPciDevice, off: u64, v: u16) {
    dev.write(off, &v.to_le_bytes());
}
fn w8(dev: &mut VirtioPciDevice, off: u64, v: u8) {
    dev.write(off, &[v]);
}
fn r32(dev: &mut VirtioPciDevice, off: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read(off, &mut b);
    u32::from_le_bytes(b)
}
fn r16(dev: &mut VirtioPciDevice, off: u64) -> u16 {
    let mut b = [0u8; 2];
    dev.read(off, &mut b);
    u16::from_le_bytes(b)
}
fn r8(dev: &mut VirtioPciDevice, off: u64) -> u8 {
    let mut b = [0u8; 1];
    dev.read(off, &mut b);
    b[0]
}

/// Capability (id, cfg_type or 0, offset-in-BAR) found by walking the list.
fn capabilities(dev: &mut VirtioPciDevice) -> Vec<(u8, u8, u32)> {
    let mut caps = Vec::new();
    let mut ptr = (dev.read_config(REG_CAP_PTR) & 0xff) as usize;
    while ptr != 0 && caps.len() < 16 {
        let head = dev.read_config(ptr / 4);
        let (id, next) = (head as u8, (head >> 8) as u8);
        let kind = if id == 0x09 { (head >> 24) as u8 } else { 0 };
        let offset = dev.read_config(ptr / 4 + if id == 0x09 { 2 } else { 1 });
        caps.push((id, kind, offset));
        ptr = usize::from(next);
    }
    caps
}

/// ACK, DRIVER, features, FEATURES_OK, queue 0 set up.
fn negotiate(dev: &mut VirtioPciDevice) {
    w8(dev, 20, STATUS_ACKNOWLEDGE);
    w8(dev, 20, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w32(dev, 8, 0);
    w32(dev, 12, (FEATURES & 0xffff_ffff) as u32);
    w32(dev, 8, 1);
    w32(dev, 12, (FEATURES >> 32) as u32);
    w8(
        dev,
        20,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    w16(dev, 22, 0);
    w16(dev, 24, 64);
    w16(dev, 26, 1);
    w32(dev, 32, 0x10_0000);
    w32(dev, 36, 0);
    w32(dev, 40, 0x10_1000);
    w32(dev, 48, 0x10_2000);
    w16(dev, 28, 1);
}

#[test]
fn config_space_identifies_a_modern_virtio_device() {
    let Some((mut dev, _)) = device(false) else {
        return;
    };
    assert_eq!(dev.read_config(REG_ID), 0x1042_1af4);
    assert_ne!(dev.read_config(REG_COMMAND) & STATUS_CAP_LIST, 0);
    let caps = capabilities(&mut dev);
    assert_eq!(
        caps,
        vec![
            (0x09, 1, 0x0000),
            (0x09, 3, 0x1000),
            (0x09, 4, 0x2000),
            (0x09, 2, 0x3000),
            (0x11, 0, 0x4000),
        ]
    );
    // MSI-X: 3 vectors (2 queues + config).
    assert_eq!((dev.read_config(CAP_MSIX / 4) >> 16) & 0x7ff, 2);
    // BAR sizing probe, then the VMM's address stays.
    dev.write_config(REG_BAR0, 0, &u32::MAX.to_le_bytes());
    assert_eq!(dev.read_config(REG_BAR0), !(BAR0_SIZE - 1));
    dev.write_config(REG_BAR0, 0, &(BAR as u32).to_le_bytes());
    assert_eq!(dev.read_config(REG_BAR0), BAR as u32);
    dev.write_config(REG_BAR0, 0, &0xd000_0000u32.to_le_bytes());
    assert_eq!(
        dev.read_config(REG_BAR0),
        BAR as u32,
        "relocation is refused"
    );
}

#[test]
fn driver_ok_activates_the_backend_with_the_queues_set_up() {
    let Some((mut dev, record)) = device(false) else {
        return;
    };
    assert_eq!(r32(&mut dev, 4), (FEATURES & 0xffff_ffff) as u32);
    w32(&mut dev, 0, 1);
    assert_eq!(r32(&mut dev, 4), 1, "VERSION_1 in the high word");
    assert_eq!(r16(&mut dev, 18), 2);
    negotiate(&mut dev);
    assert_eq!(r8(&mut dev, 20) & STATUS_FEATURES_OK, STATUS_FEATURES_OK);
    assert_eq!(r16(&mut dev, 24), 64);
    assert_eq!(r16(&mut dev, 30), 0, "queue_notify_off");
    // MSI-X vector 1 programmed and unmasked: the route goes to KVM.
    w32(&mut dev, MSIX_TABLE_OFFSET + 16, 0xfee0_0000);
    w32(&mut dev, MSIX_TABLE_OFFSET + 16 + 4, 0);
    w32(&mut dev, MSIX_TABLE_OFFSET + 16 + 8, 0x41);
    w32(&mut dev, MSIX_TABLE_OFFSET + 16 + 12, 0);
    assert_eq!(r32(&mut dev, MSIX_TABLE_OFFSET + 16 + 8), 0x41);
    assert_eq!(
        r32(&mut dev, MSIX_TABLE_OFFSET + 12),
        1,
        "vector 0 still masked"
    );

    w8(
        &mut dev,
        20,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    let (features, queues) = record.lock().unwrap().activated.clone().unwrap();
    assert_eq!(features, FEATURES);
    assert_eq!(queues.len(), 1, "only the enabled queue");
    let (index, q) = queues[0];
    assert_eq!(index, 0);
    assert_eq!((q.size, q.msix_vector), (64, 1));
    assert_eq!((q.desc, q.avail, q.used), (0x10_0000, 0x10_1000, 0x10_2000));
    assert_eq!(dev.status() & STATUS_NEEDS_RESET, 0);

    // Queue registers are frozen while running.
    w16(&mut dev, 24, 128);
    assert_eq!(r16(&mut dev, 24), 64);
    // Device config is the backend's, at 0x2000.
    assert_eq!(r8(&mut dev, DEVICE_CFG_OFFSET + 3), 3);
    dev.write(DEVICE_CFG_OFFSET + 7, &[1]);
    assert_eq!(record.lock().unwrap().config_writes, vec![(7, vec![1])]);

    // Reset.
    w8(&mut dev, 20, 0);
    assert_eq!(record.lock().unwrap().resets, 1);
    assert_eq!((r8(&mut dev, 20), r16(&mut dev, 24)), (0, 256));
}

#[test]
fn features_without_version_1_are_refused() {
    let Some((mut dev, _)) = device(false) else {
        return;
    };
    w8(&mut dev, 20, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w32(&mut dev, 8, 0);
    w32(&mut dev, 12, 1 << 9);
    w8(
        &mut dev,
        20,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(r8(&mut dev, 20) & STATUS_FEATURES_OK, 0);
    // Nor features the device does not offer.
    w32(&mut dev, 8, 1);
    w32(&mut dev, 12, 1 | 2);
    w8(
        &mut dev,
        20,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(r8(&mut dev, 20) & STATUS_FEATURES_OK, 0);
}

#[test]
fn a_failed_activation_sets_needs_reset() {
    let Some((mut dev, _)) = device(true) else {
        return;
    };
    negotiate(&mut dev);
    w8(
        &mut dev,
        20,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    assert_ne!(r8(&mut dev, 20) & STATUS_NEEDS_RESET, 0);
}

#[test]
fn hostile_accesses_are_harmless() {
    let Some((mut dev, _)) = device(false) else {
        return;
    };
    // Out-of-range queue select, vectors and sizes.
    w16(&mut dev, 22, 99);
    w16(&mut dev, 24, 64);
    assert_eq!(r16(&mut dev, 24), 0);
    w16(&mut dev, 22, 0);
    w16(&mut dev, 24, 100); // not a power of two
    w16(&mut dev, 24, 1024); // above max
    assert_eq!(r16(&mut dev, 24), 256);
    w16(&mut dev, 26, 7);
    assert_eq!(r16(&mut dev, 26), NO_VECTOR);
    // MSI-X beyond the table, odd widths, the PBA.
    w32(&mut dev, MSIX_TABLE_OFFSET + 16 * 40, 1);
    dev.write(MSIX_TABLE_OFFSET, &[1, 2]);
    w32(&mut dev, MSIX_PBA_OFFSET, 1);
    assert_eq!(r32(&mut dev, MSIX_TABLE_OFFSET), 0);
    // Kicks past the last queue.
    w16(&mut dev, NOTIFY_OFFSET + 4 * 10, 10);
    dev.write(0x7ff0, &[0xff; 8]);
}

/// Writes the MSI-X message control word the way Linux does (16 bits at
/// byte 2 of the capability's first dword).
fn msix_control(dev: &mut VirtioPciDevice, enable: bool, function_mask: bool) {
    let mut v = 0u32;
    if enable {
        v |= MSIX_ENABLE;
    }
    if function_mask {
        v |= MSIX_FUNCTION_MASK;
    }
    dev.write_config(CAP_MSIX / 4, 2, &((v >> 16) as u16).to_le_bytes());
}

fn msix_program(dev: &mut VirtioPciDevice, vector: u64, data: u32) {
    let entry = MSIX_TABLE_OFFSET + 16 * vector;
    w32(dev, entry, 0xfee0_0000);
    w32(dev, entry + 4, 0);
    w32(dev, entry + 8, data);
}

fn msix_mask(dev: &mut VirtioPciDevice, vector: u64, masked: bool) {
    w32(dev, MSIX_TABLE_OFFSET + 16 * vector + 12, u32::from(masked));
}

/// The daemon's side: signal vector `v`'s eventfd.
fn signal(dev: &VirtioPciDevice, v: usize) {
    dev.msix.call(v).unwrap().write(1).unwrap();
}

/// Whether vector `v`'s eventfd still holds a signal (consumes it). KVM's
/// irqfd consumes each signal as it injects, so after a fresh signal this
/// tells whether the vector's irqfd is attached.
fn still_signalled(dev: &VirtioPciDevice, v: usize) -> bool {
    dev.msix.call(v).unwrap().read().is_ok()
}

#[test]
fn a_masked_vector_holds_its_message_as_pending_until_unmasked() {
    let Some((mut dev, _)) = device(false) else {
        return;
    };
    msix_control(&mut dev, true, false);
    msix_program(&mut dev, 0, 0x41);
    // Entries start masked: the signal waits, the PBA shows it.
    signal(&dev, 0);
    assert_eq!(r32(&mut dev, MSIX_TABLE_OFFSET + 12), 1);
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0b1);
    let mut qword = [0u8; 8];
    dev.read(MSIX_PBA_OFFSET, &mut qword);
    assert_eq!(u64::from_le_bytes(qword), 0b1, "64-bit PBA read");

    // Unmask: the irqfd is attached (KVM injects the waiting message) and
    // the bit clears; a new signal goes straight to KVM.
    msix_mask(&mut dev, 0, false);
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0);
    signal(&dev, 0);
    assert!(
        !still_signalled(&dev, 0),
        "an unmasked vector's irqfd consumes the signal"
    );

    // Masked again: signals wait once more, and only this vector's bit.
    msix_mask(&mut dev, 0, true);
    signal(&dev, 0);
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0b1);
    assert!(still_signalled(&dev, 0));
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0, "nothing left pending");
}

#[test]
fn the_function_mask_and_msix_enable_gate_every_vector() {
    let Some((mut dev, _)) = device(false) else {
        return;
    };
    for v in 0..3 {
        msix_program(&mut dev, v, 0x40 + v as u32);
        msix_mask(&mut dev, v, false);
    }
    // MSI-X still disabled: every vector is masked.
    signal(&dev, 1);
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0b010);

    // Enabled with the function mask set: still masked.
    msix_control(&mut dev, true, true);
    signal(&dev, 2);
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0b110);

    // Function mask cleared: both are delivered, nothing pending, and new
    // signals reach KVM.
    msix_control(&mut dev, true, false);
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0);
    for v in 0..3 {
        signal(&dev, v);
        assert!(!still_signalled(&dev, v), "vector {v}");
    }

    // Disabling MSI-X masks them all again.
    msix_control(&mut dev, false, false);
    signal(&dev, 0);
    assert_eq!(r32(&mut dev, MSIX_PBA_OFFSET), 0b001);
}
